"""Training across processes under ``torchrun``: PyTorch's own process group and DDP.

``torchrun --nproc-per-node N -m towerkit train CONFIG`` starts N copies of the same command;
each finds its rank in the environment torchrun sets (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) and :func:`setup` joins the process group:
gloo on CPU, NCCL on CUDA. Outside torchrun nothing here does anything: :func:`context` is
rank 0 of 1 and every helper is the identity.

What makes N processes train the model one process would:

- **One global batch.** ``train.batch_size`` is the global batch; each rank trains its own
  contiguous slice of every global batch (:class:`RankBatches`), so the same config trains the
  same thing under any number of processes.
- **Negatives that cross samples are global.** In-batch candidates are the positives of every
  rank, gathered with their gradients (:func:`gather`: an all-gather forward whose backward sums
  the gradients of every rank and hands each its own rows; plain ``dist.all_gather`` carries
  none). Sampled candidates are drawn from one generator seeded alike on every rank, for the
  whole global batch, and each rank keeps its rows, so ids and log-q are global.
- **The loss is the global mean.** DDP averages gradients over ranks; each rank's mean loss is
  rescaled by its share of the global batch (:func:`share`), so the average is the gradient of
  the mean over the whole global batch even when ranks hold different numbers of queries.
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Context:
    """Where this process stands: ``rank`` of ``world`` processes, ``local_rank`` on its node."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        """Whether more than one process trains."""
        return self.world > 1

    @property
    def main(self) -> bool:
        """The process that writes files and logs (rank 0)."""
        return self.rank == 0


def launched() -> bool:
    """Started by torchrun (or anything that sets its environment) with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def context() -> Context:
    """This process's place in the process group (rank 0 of 1 without one)."""
    if not (dist.is_available() and dist.is_initialized()):
        return Context()
    return Context(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def setup(device: str = "cpu", timeout_s: float = 1800.0) -> Context:
    """Join torchrun's process group if this process was launched by it (idempotent).

    Args:
        device: the configured device; ``cuda`` picks NCCL and this rank's local GPU, anything
            else gloo.
        timeout_s: how long a collective may wait for the other ranks.

    Returns:
        the context, and the device this rank trains on is :func:`rank_device`.
    """
    if not launched() or dist.is_initialized():
        return context()
    backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend, timeout=dt.timedelta(seconds=timeout_s))
    ctx = context()
    logger.info("process %d of %d joined the %s process group", ctx.rank, ctx.world, backend)
    return ctx


def rank_device(device: str) -> str:
    """Under torchrun on CUDA each rank trains on its local GPU; otherwise ``device``."""
    if launched() and torch.device(device).type == "cuda":
        return f"cuda:{os.environ.get('LOCAL_RANK', 0)}"
    return device


def teardown() -> None:
    """Leave the process group. A DDP module still alive then aborts the interpreter at exit
    ("terminate called without an active exception"), so unreferenced ones are collected
    first; drop your own references to a trainer before calling this."""
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def broadcast_object(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (the run directory's name, for one)."""
    if not context().active:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order."""
    ctx = context()
    if not ctx.active:
        return [value]
    out: list[Any] = [None] * ctx.world
    dist.all_gather_object(out, value)
    return out


def sizes(*counts: int, device: torch.device | str = "cpu") -> np.ndarray:
    """``[world, len(counts)]``: each rank's counts (one small all-gather)."""
    local = torch.tensor([counts], dtype=torch.float64, device=device)
    ctx = context()
    if not ctx.active:
        return local.cpu().numpy()
    out = [torch.empty_like(local) for _ in range(ctx.world)]
    dist.all_gather(out, local)
    return torch.cat(out).cpu().numpy()


def _gather_rows(tensor: torch.Tensor, counts: tuple[int, ...]) -> torch.Tensor:
    """All-gather rows of different counts (padded to the longest, then cut)."""
    padded = tensor.new_zeros(max(counts), *tensor.shape[1:])
    padded[: len(tensor)] = tensor
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded)
    return torch.cat([part[:n] for part, n in zip(parts, counts, strict=True)])


class _Gather(torch.autograd.Function):
    """:func:`_gather_rows` whose backward sums every rank's gradient of the gathered rows (an
    all-reduce) and keeps this rank's own."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, counts: tuple[int, ...], rank: int) -> torch.Tensor:
        ctx.counts, ctx.rank = counts, rank
        return _gather_rows(tensor, counts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous()
        dist.all_reduce(grad)
        begin = sum(ctx.counts[: ctx.rank])
        return grad[begin : begin + ctx.counts[ctx.rank]], None, None


def gather(tensor: torch.Tensor, counts: np.ndarray | None = None) -> tuple[torch.Tensor, int]:
    """Every rank's rows of ``tensor`` concatenated in rank order, and where this rank's rows
    begin. Gradients flow back to the rank each row came from (when ``tensor`` has them).

    Args:
        counts: ``[world]`` rows per rank if known (saves one all-gather).
    """
    ctx = context()
    if not ctx.active:
        return tensor, 0
    if counts is None:
        counts = sizes(len(tensor), device=tensor.device)[:, 0]
    counts = tuple(int(n) for n in counts)
    offset = sum(counts[: ctx.rank])
    if tensor.requires_grad:
        return _Gather.apply(tensor, counts, ctx.rank), offset
    return _gather_rows(tensor, counts), offset


def all_reduce_mean(value: float) -> float:
    """The mean of ``value`` over ranks (a float on every rank)."""
    ctx = context()
    if not ctx.active:
        return value
    box = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(box)
    return float(box) / ctx.world


class RankBatches:
    """This rank's share of every global batch: the same batches, in the same order, each cut
    into ``world`` contiguous slices (rank ``r`` trains slice ``r``).

    Every rank takes the same number of steps (DDP needs it). A final global batch with fewer
    samples than ranks is dropped on every rank alike.

    Args:
        batches: ``TrainingBatches`` or ``SequenceBatches`` (anything with ``batches_of(epoch)``
            and ``make_batch(indices)``) whose ``batch_size`` is the global batch.
    """

    def __init__(self, batches: Any, ctx: Context) -> None:
        self.batches, self.ctx = batches, ctx
        self.n_samples = batches.n_samples  # throughput is reported for the global batch
        # Every epoch holds batches of the same sizes, in another order.
        self._len = sum(len(b) >= ctx.world for b in batches.batches_of(0))

    def __len__(self) -> int:
        return self._len

    def epoch(self, epoch: int) -> Iterator[Any]:
        """This rank's share of each batch of epoch ``epoch`` (a batch smaller than the world is
        skipped by every rank alike)."""
        for indices in self.batches.batches_of(epoch):
            if len(indices) >= self.ctx.world:
                share = np.array_split(indices, self.ctx.world)[self.ctx.rank]
                yield self.batches.make_batch(share)
