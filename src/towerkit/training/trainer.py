"""One Trainer for every model, mode and negative strategy, with checkpoints and resume.

The loop reads top to bottom: each batch turns itself into (query vectors, positive ids)
through the model, the retrieval task turns those into one loss, AdamW steps. After each epoch
the validation stage is ranked over the full catalogue; training stops early when the monitored
validation metric has not improved for ``patience`` epochs, and the best weights are restored.

After every epoch the trainer hands a :class:`TrainState` to a callback (a run directory writes
it as its checkpoint). A state holds everything the next epoch depends on: weights, optimiser
and scheduler, the epoch, the best metric and best weights, early-stopping state and every random
source (torch's, the negative sampler's, numpy's and Python's; the batch order is a function of
the seed and the epoch). Training resumed from a state gives bit-identical results to training
straight through.
"""

from __future__ import annotations

import copy
import inspect
import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from towerkit import distributed
from towerkit.config import TrainConfig
from towerkit.distributed import RankBatches
from towerkit.errors import TowerkitError
from towerkit.models.base import MatchingModel
from towerkit.similarity import Similarity
from towerkit.task import RetrievalTask
from towerkit.training.contrastive import ContrastiveTerm
from towerkit.training.speed import (
    CompiledStep,
    Precision,
    fp32,
    full_precision,
    measured,
    resolve_precision,
)
from towerkit.training.state import EpochLog, TrainState
from towerkit.types import Batch, SequenceBatch

logger = logging.getLogger(__name__)


class TrainingError(TowerkitError):
    """Training cannot go on (a non-finite loss, a state that does not fit the run)."""


class Batches(Protocol):
    """What the trainer iterates: ``TrainingBatches`` or ``SequenceBatches``."""

    n_samples: int

    def __len__(self) -> int: ...

    def epoch(self, epoch: int) -> Iterator[Batch | SequenceBatch]:
        """The batches of epoch ``epoch``."""


class Validator(Protocol):
    """What the trainer validates with: an :class:`~towerkit.evaluation.Evaluator`."""

    last_seconds: float

    def evaluate(
        self, model: MatchingModel, similarity: Similarity, device: torch.device
    ) -> dict[str, float]:
        """Validation metrics of ``model`` (``{'ndcg@10': ...}``)."""


@dataclass
class TrainResult:
    epochs: list[EpochLog]
    best_epoch: int
    best_valid: dict[str, float]
    train_seconds: float
    #: the towers' precision (``fp32``, ``bf16``) and, with ``train.precision: auto``, why
    precision: str = "fp32"
    #: with ``train.compile``: ``"compiled"``, or ``"eager: REASON"`` after a fallback
    compiled: str | None = None

    @property
    def seconds_per_epoch(self) -> float:
        """Mean seconds per epoch."""
        return sum(e.seconds for e in self.epochs) / max(len(self.epochs), 1)

    @property
    def samples_per_second(self) -> float:
        """Mean training samples per second over the epochs."""
        return sum(e.samples_per_second for e in self.epochs) / max(len(self.epochs), 1)


def _lr_lambda(schedule: str, warmup: int, total: int) -> Callable[[int], float]:
    if schedule not in ("constant", "cosine", "linear"):
        raise ValueError(f"unknown schedule {schedule!r}; use constant, cosine or linear")

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if schedule == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def _rng_state(task: RetrievalTask) -> dict[str, Any]:
    numpy_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "negatives": task.negatives.rng_state(),
        "numpy": [
            numpy_state[0],
            torch.from_numpy(numpy_state[1].astype(np.int64)),
            *numpy_state[2:],
        ],
        "python": list(random.getstate()),
    }


def _set_rng_state(task: RetrievalTask, state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():  # a GPU run resumed on a CPU has none
        torch.cuda.set_rng_state_all(state["cuda"])
    task.negatives.set_rng_state(state["negatives"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


# Newer torch renamed DDP's broadcast_buffers (and warns on the old name).
_NO_BUFFER_SYNC = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
    else {"broadcast_buffers": False}
)


def _sparse_tables(model: nn.Module) -> list[nn.Parameter]:
    """Switch every trainable embedding table of ``model`` to sparse gradients; their weights."""
    tables = []
    for module in model.modules():
        if isinstance(module, nn.Embedding) and module.weight.requires_grad:
            module.sparse = True
            tables.append(module.weight)
    return tables


class Optimizer:
    """AdamW over the dense parameters and, with ``train.sparse``, SparseAdam over the id
    tables (only the rows a step touched are read and written, so a step's cost does not grow
    with the catalogue); one learning-rate schedule for both; one state for checkpoints.

    Without sparse tables its state dicts are exactly AdamW's and LambdaLR's.
    """

    def __init__(
        self, dense: list[nn.Parameter], sparse: list[nn.Parameter], c: TrainConfig, total_steps
    ) -> None:
        self.dense = dense
        self.parts: dict[str, torch.optim.Optimizer] = {}
        if dense:
            # The fused kernel updates every parameter in one pass; the default runs a dozen
            # small ops per tensor, a tenth of a step for small models
            # (benchmarks/rechub_throughput.py).
            fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in dense)
            self.parts["dense"] = torch.optim.AdamW(
                dense, lr=c.lr, weight_decay=c.weight_decay, fused=fused or None
            )
        if sparse:
            self.parts["sparse"] = torch.optim.SparseAdam(sparse, lr=c.lr)
        factor = _lr_lambda(c.schedule, c.warmup, total_steps)
        self.schedules = {
            name: torch.optim.lr_scheduler.LambdaLR(part, factor)
            for name, part in self.parts.items()
        }

    @property
    def lr(self) -> float:
        """The learning rate the next step takes."""
        part = next(iter(self.parts.values()), None)
        return float(part.param_groups[0]["lr"]) if part is not None else float("nan")

    def zero_grad(self) -> None:
        """Clear the gradients of every part."""
        for part in self.parts.values():
            part.zero_grad(set_to_none=True)

    def step(self) -> None:
        """Step every part, then every schedule."""
        for part in self.parts.values():
            part.step()
        for schedule in self.schedules.values():
            schedule.step()

    def _state(self, objects: dict[str, Any]) -> dict[str, Any]:
        if list(objects) == ["dense"]:
            return objects["dense"].state_dict()
        return {"parts": {name: obj.state_dict() for name, obj in objects.items()}}

    def _load(self, objects: dict[str, Any], state: dict[str, Any]) -> None:
        parts = state.get("parts", {"dense": state})
        if set(parts) != set(objects):
            raise ValueError(
                f"the checkpoint holds optimiser parts {sorted(parts)}, this run {sorted(objects)}"
            )
        for name, obj in objects.items():
            obj.load_state_dict(parts[name])

    def state_dict(self) -> dict[str, Any]:
        """The parts' states, by part name (for a checkpoint)."""
        return self._state(self.parts)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the parts' states from :meth:`state_dict`."""
        self._load(self.parts, state)

    def load_moments(self, state: dict[str, Any]) -> None:
        """Start from another run's moments (a warm start): each parameter's state is copied,
        and the rows a table gained since (new ids) start at zero, as a parameter never stepped
        does. The learning rates and the schedule stay this optimiser's.

        Raises:
            ValueError: other parts, another number of parameters, or a shape that is not the
                same table with fewer rows.
        """
        parts = state.get("parts", {"dense": state})
        if set(parts) != set(self.parts):
            raise ValueError(f"optimiser parts {sorted(parts)} then, {sorted(self.parts)} now")
        for name, part in self.parts.items():
            saved = parts[name]
            params = [p for group in part.param_groups for p in group["params"]]
            indices = [i for group in saved["param_groups"] for i in group["params"]]
            if len(indices) != len(params):
                raise ValueError(f"{len(indices)} {name} parameters then, {len(params)} now")
            own = part.state_dict()
            own["state"] = {
                position: {key: _grown(value, param) for key, value in saved["state"][i].items()}
                for position, (i, param) in enumerate(zip(indices, params, strict=True))
                if i in saved["state"]
            }
            part.load_state_dict(own)

    def schedule_state_dict(self) -> dict[str, Any]:
        """The schedules' states, by part name (for a checkpoint)."""
        return self._state(self.schedules)

    def load_schedule_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the schedules' states from :meth:`schedule_state_dict`."""
        self._load(self.schedules, state)


def _grown(value: Any, param: torch.Tensor) -> Any:
    """A parameter's saved optimiser state (a moment, or the step count) for ``param``: padded
    with zero rows where ``param`` is the same table with more rows."""
    if not isinstance(value, torch.Tensor) or value.dim() == 0 or value.shape == param.shape:
        return value
    same_table = value.dim() == param.dim() and value.shape[1:] == param.shape[1:]
    if same_table and value.shape[0] < param.shape[0]:
        grown = torch.zeros(param.shape, dtype=value.dtype, device=value.device)
        grown[: value.shape[0]] = value
        return grown
    raise ValueError(f"a state of shape {tuple(value.shape)} for a parameter {tuple(param.shape)}")


class _Step(nn.Module):
    """A training step's forward pass as one module (model, task and any contrastive term), so
    that DDP sees one ``forward`` per step and reduces the gradients of every parameter it
    reaches.

    The towers run at the run's precision; the query vectors, the scores against the
    catalogue and the loss are fp32 (see :mod:`towerkit.training.speed`)."""

    def __init__(
        self,
        model: MatchingModel,
        task: RetrievalTask,
        contrastive: ContrastiveTerm | None = None,
        precision: Precision | None = None,
    ) -> None:
        super().__init__()
        self.model, self.task, self.contrastive = model, task, contrastive
        self.precision = precision or fp32()

    def forward(self, batch: Batch | SequenceBatch) -> torch.Tensor:
        with self.precision.autocast():
            pairs = batch.training_pairs(self.model)
        if self.precision.bf16:
            pairs = pairs._replace(queries=pairs.queries.float())
        with full_precision(self.precision.device_type):
            loss = self.task.loss(pairs)
        if self.contrastive is not None:  # (after the loss: the random draws keep their order)
            with self.precision.autocast():
                loss = loss + self.contrastive(self.model, batch)
        return loss


class Trainer:
    """Trains a :class:`MatchingModel` with one :class:`~towerkit.task.RetrievalTask`.

    Args:
        model: the model (its parameters and the task's learnable temperature are optimised).
        task: turns (queries, positives) into the loss; built once for the run.
        config: the ``train`` section of a config (epochs, optimiser, schedule, early stopping,
            monitor, seed, device, threads, progress).
        contrastive: a term added to the task's loss (:mod:`towerkit.training.contrastive`;
            built with the task from the config, :func:`towerkit.runs.components.build_loss`).

    Example::

        trainer = Trainer(model, task, config.train)
        result = trainer.fit(batches, validator, on_epoch=run_dir.save_checkpoint)
    """

    def __init__(
        self,
        model: MatchingModel,
        task: RetrievalTask,
        config: TrainConfig | None = None,
        *,
        contrastive: ContrastiveTerm | None = None,
    ) -> None:
        self.config = config or TrainConfig()
        self.ctx = distributed.context()
        self.device = torch.device(distributed.rank_device(self.config.device))
        self.model = model.to(self.device)
        self.task = task.to(self.device)
        # Before DDP wraps the model: it reads which tables give sparse gradients when built.
        self.sparse = _sparse_tables(self.model) if self.config.sparse else []
        self.contrastive = contrastive
        precision = resolve_precision(self.config.precision, self.device)
        self._step = _Step(self.model, self.task, self.contrastive, precision)
        if self.config.precision != "fp32" and not precision.measure:
            self._log_precision()
        self.step: nn.Module = self._step
        if self.ctx.active:  # rank 0's weights are broadcast; gradients are averaged
            self.step = DistributedDataParallel(
                self._step,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                **_NO_BUFFER_SYNC,  # buffers are fixed item features: no copy every step
            )
        self._forward = CompiledStep(self.step, self.device) if self.config.compile else self.step

    def _log_precision(self) -> None:
        reason = f" ({self.precision.reason})" if self.precision.reason else ""
        logger.info("precision: %s%s", self.precision.name, reason)

    @property
    def precision(self) -> Precision:
        """What the towers compute in (the step's; ``auto`` settles it before training)."""
        return self._step.precision

    def _use(self, precision: Precision) -> None:
        self._step.precision = precision

    def choose_precision(self, batches: Batches, optimizer: Optimizer, steps: int = 3) -> None:
        """``train.precision: auto`` on a CPU with bf16 instructions: time the first ``steps``
        batches' forward and backward in fp32 and in bf16, alternately, after one warm-up
        round, and keep the faster (:func:`~towerkit.training.speed.measured`). Nothing is
        updated and every random state is restored, so the run trains as if it had started
        in the chosen precision. Under torchrun the ranks' times are averaged: every rank
        chooses alike."""
        rng = _rng_state(self.task)
        kind = self.device.type
        candidates = {"fp32": Precision("fp32", kind), "bf16": Precision("bf16", kind)}
        seconds: dict[str, list[float]] = {name: [] for name in candidates}
        probe = []
        for batch in batches.epoch(0):
            probe.append(batch.to(self.device))
            if len(probe) == steps:
                break
        self.model.train()
        for round_ in range(2):  # the first round warms up (and compiles, with train.compile)
            for batch in probe:
                for name, precision in candidates.items():
                    self._use(precision)
                    start = time.perf_counter()
                    self.step_loss(batch).backward()
                    if round_:
                        seconds[name].append(time.perf_counter() - start)
                    optimizer.zero_grad()
        _set_rng_state(self.task, rng)
        median = {name: float(np.median(times)) for name, times in seconds.items()}
        ratio = distributed.all_reduce_mean(median["fp32"] / median["bf16"])
        self._use(measured(ratio, 1.0, kind))
        self._log_precision()

    def step_loss(self, batch: Batch | SequenceBatch) -> torch.Tensor:
        """The loss of one batch (the whole forward pass, no optimiser step); under torchrun
        this rank's share of the global batch's loss (see :mod:`towerkit.distributed`)."""
        return self._forward(batch)

    def build_optimizer(self, steps_per_epoch: int) -> tuple[Optimizer, list[nn.Parameter]]:
        """The optimiser of the model's and the task's trainable parameters (AdamW, and
        SparseAdam over the sparse id tables), its schedule over ``train.epochs`` epochs of
        ``steps_per_epoch`` steps; and those parameters."""
        c = self.config
        params = [p for p in self.model.parameters() if p.requires_grad]
        params += [p for p in self.task.parameters() if p.requires_grad]
        dense = [p for p in params if all(p is not q for q in self.sparse)]
        optimizer = Optimizer(dense, self.sparse, c, total_steps=c.epochs * steps_per_epoch)
        return optimizer, params

    def fit(
        self,
        batches: Batches,
        validator: Validator | None = None,
        *,
        state: TrainState | None = None,
        on_epoch: Callable[[TrainState], None] | None = None,
        on_step: Callable[[int, float], None] | None = None,
        moments: dict[str, Any] | None = None,
    ) -> TrainResult:
        """Train for up to ``config.epochs`` epochs; keep the best validation weights.

        Args:
            batches: the training batches (a fresh epoch order each epoch).
            validator: ranks the validation stage after every epoch; without one the best
                epoch is the one of the lowest training loss.
            state: continue from this state (see :meth:`TrainState`) instead of starting.
            on_epoch: called with the state after every finished epoch (checkpointing).
            on_step: called with the global step (from 1, counted over epochs) and the step's
                loss (the global batch's, under torchrun) after every optimiser step.
            moments: an optimiser state to start from (a warm start, see
                :meth:`Optimizer.load_moments`); ignored when ``state`` is given.

        Raises:
            TrainingError: the loss became NaN or infinite (the message names the epoch and
                step); the state of the last finished epoch is what ``on_epoch`` last received.
        """
        c = self.config
        if c.threads:
            torch.set_num_threads(c.threads)
        if self.ctx.active and not isinstance(batches, RankBatches):
            batches = RankBatches(batches, self.ctx)
        optimizer, params = self.build_optimizer(len(batches))
        if self.ctx.active:
            logger.info(
                "training in %d processes (%s): each trains 1/%d of every global batch",
                self.ctx.world, torch.distributed.get_backend(), self.ctx.world,
            )  # fmt: skip
        if state is None:
            torch.manual_seed(c.seed + self.ctx.rank)  # dropout differs by rank
            self.task.negatives.manual_seed(c.seed)  # negatives are drawn alike on every rank
            if self.precision.measure:  # (before any random draw: restored anyway)
                self.choose_precision(batches, optimizer)
            state = TrainState(
                epoch=0, model={}, task={}, optimizer={}, scheduler={}, logs=[],
                best_score=-math.inf, best_epoch=-1, best_valid={}, best_weights=None,
                stale=0, stopped=False, rng={}, precision=self.precision.name,
            )  # fmt: skip
            if moments is not None:
                try:
                    optimizer.load_moments(moments)
                except (ValueError, KeyError) as err:
                    raise TrainingError(
                        f"the optimiser state of the run continued from does not fit ({err})"
                    ) from None
        else:
            self._restore(state, optimizer)
            if self.precision.measure:  # the choice the run made when it started
                self._use(Precision(state.precision, self.device.type, "chosen at the start"))
                self._log_precision()
        start = time.perf_counter()
        epoch = state.epoch
        while epoch < c.epochs and not state.stopped:
            log = self._train_epoch(batches, epoch, optimizer, params, on_step)
            if validator is not None:
                with self.precision.autocast():  # the towers at the training's precision
                    log.valid = validator.evaluate(self.model, self.task.similarity, self.device)
                log.eval_seconds = validator.last_seconds
            epoch += 1
            self._log(log)
            self._update(state, log)
            state.epoch = epoch
            rng = self._rng_state()  # every rank's (a collective under torchrun)
            if on_epoch is not None:
                on_epoch(self._snapshot(state, optimizer, rng))
        if state.best_weights is not None:
            self.model.load_state_dict(state.best_weights["model"])
            self.task.load_state_dict(state.best_weights["task"])
        precision = self.precision.name + (
            f" ({self.precision.reason})" if self.precision.reason else ""
        )
        compiled = None
        if isinstance(self._forward, CompiledStep):
            fallback = self._forward.fallback
            compiled = "compiled" if fallback is None else f"eager: {fallback}"
        return TrainResult(
            state.logs, state.best_epoch, state.best_valid, time.perf_counter() - start,
            precision, compiled,
        )  # fmt: skip

    def _train_epoch(self, batches, epoch, optimizer: Optimizer, params, on_step) -> EpochLog:
        c = self.config
        self.model.train()
        t0 = time.perf_counter()
        total_loss, steps = 0.0, 0
        bar = tqdm(
            batches.epoch(epoch),
            total=len(batches),
            desc=f"epoch {epoch + 1}/{c.epochs}",
            disable=not (c.progress and self.ctx.main),
            leave=False,
        )
        for batch in bar:
            loss = self.step_loss(batch.to(self.device))
            value = distributed.all_reduce_mean(float(loss.detach()))  # the global batch's
            if not math.isfinite(value):
                raise TrainingError(
                    f"the training loss is {value} at epoch {epoch + 1}, step {steps + 1}; "
                    "lower train.lr or raise temperature.value"
                )
            optimizer.zero_grad()
            loss.backward()
            if c.clip_norm > 0:  # the dense parameters (sparse id tables are not clipped)
                torch.nn.utils.clip_grad_norm_(optimizer.dense, c.clip_norm)
            optimizer.step()
            total_loss += value
            steps += 1
            if on_step is not None:
                on_step(epoch * len(batches) + steps, value)
            if steps % 50 == 0:
                bar.set_postfix(loss=f"{total_loss / steps:.4f}")
        seconds = time.perf_counter() - t0
        if not all(bool(torch.isfinite(p).all()) for p in params):
            raise TrainingError(
                f"the weights became NaN or infinite in epoch {epoch + 1} (the loss was finite "
                "at every step); lower train.lr or raise temperature.value"
            )
        return EpochLog(
            epoch=epoch + 1,
            loss=total_loss / max(steps, 1),
            seconds=seconds,
            samples_per_second=batches.n_samples / seconds,
            lr=optimizer.lr,
            temperature=float(self.task.temperature.value),
        )

    def _log(self, log: EpochLog) -> None:
        recall = log.valid.get("index_recall@10")
        logger.info(
            "epoch %d: loss %.4f, valid HR@10 %.4f, NDCG@10 %.4f, %.1f s (%.0f samples/s), "
            "temperature %.4g%s",
            log.epoch,
            log.loss,
            log.valid.get("hr@10", float("nan")),
            log.valid.get("ndcg@10", float("nan")),
            log.seconds,
            log.samples_per_second,
            self.task.temperature.value,
            f", index recall@10 {recall:.4f}" if recall is not None else "",
        )

    def _update(self, state: TrainState, log: EpochLog) -> None:
        """Record an epoch: best weights, early stopping."""
        c = self.config
        state.logs.append(log)
        score = log.valid.get(c.monitor, -log.loss)
        if score > state.best_score:
            state.best_score, state.best_epoch, state.best_valid = score, log.epoch, log.valid
            state.stale = 0
            state.best_weights = copy.deepcopy(
                {"model": self.model.state_dict(), "task": self.task.state_dict()}
            )
        else:
            state.stale += 1
            if c.patience and state.stale >= c.patience:
                logger.info("early stop: no better %s for %d epochs", c.monitor, state.stale)
                state.stopped = True

    def _rng_state(self) -> dict[str, Any]:
        """This process's random sources; under torchrun also every rank's (``ranks``), so that
        each rank resumes its own dropout stream."""
        rng = _rng_state(self.task)
        if self.ctx.active:
            rng = {**rng, "ranks": distributed.all_gather_object(rng)}
        return rng

    def _snapshot(self, state: TrainState, optimizer: Optimizer, rng) -> TrainState:
        """A copy of the state now, detached from the live model and optimiser."""
        live = {
            "model": self.model.state_dict(),
            "task": self.task.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": optimizer.schedule_state_dict(),
        }
        fresh = {"rng": rng, "logs": list(state.logs), "precision": self.precision.name}
        return TrainState(**{**vars(state), **copy.deepcopy(live), **fresh})

    def _restore(self, state: TrainState, optimizer: Optimizer) -> None:
        try:
            self.model.load_state_dict(state.model)
            self.task.load_state_dict(state.task)
            optimizer.load_state_dict(state.optimizer)
            optimizer.load_schedule_state_dict(state.scheduler)
        except (RuntimeError, ValueError, KeyError) as err:
            raise TrainingError(f"the checkpoint does not fit this model ({err})") from None
        ranks = state.rng.get("ranks", [state.rng])
        if len(ranks) != self.ctx.world:
            logger.warning(
                "the checkpoint was written by %d process(es), this run has %d: training goes "
                "on, but not bit-identically to an uninterrupted run",
                len(ranks), self.ctx.world,
            )  # fmt: skip
        own = ranks[self.ctx.rank] if len(ranks) == self.ctx.world else ranks[0]
        _set_rng_state(self.task, own)
        logger.info("resuming after epoch %d", state.epoch)
