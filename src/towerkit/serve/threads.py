"""The server's threads: how many the tower and the index use, and how they wait.

A server process has one event loop (parsing requests, building answers) and one worker thread
that runs each micro-batch (:mod:`towerkit.serve.batching`). The worker's libraries have thread
pools of their own: torch's (the exact index) and faiss's are OpenMP teams, onnxruntime's (the
user tower) is its own. Left at their defaults, both spin after every parallel region: torch's
OpenMP team busy-waited on the core the event loop needs, and cost a by-id request 2.5-3.6 ms of
CPU instead of 1.2-1.7 ms (issue 28; ``benchmarks/serve_load.py`` measures it again).

So the server owns these settings: ``OMP_WAIT_POLICY=PASSIVE`` (workers sleep when idle), and
one core left for the event loop, the rest (at least one) for the worker's libraries. OpenMP
reads its environment once, when its runtime loads, so :func:`configure` must run before torch,
onnxruntime or faiss is imported (``towerkit serve`` calls it first); called later it still sets
torch's thread count, and says that the wait policy came too late.

This module imports nothing heavy: it runs before those libraries load.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass

logger = logging.getLogger(__name__)

#: the OpenMP and BLAS variables that size a thread pool
_POOL_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass(frozen=True)
class Threads:
    """What :func:`configure` chose.

    Attributes:
        compute: threads of the worker's libraries (torch, onnxruntime, faiss).
        cores: the cores this process may run on.
        passive: whether OpenMP's idle threads sleep (set before it loaded); False where the
            user's own ``OMP_WAIT_POLICY`` says otherwise or OpenMP had loaded already.
    """

    compute: int
    cores: int
    passive: bool


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, which a container limits)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def default_threads(cores: int) -> int:
    """One core for the event loop, the rest for the tower and the index (at least one)."""
    return max(1, cores - 1)


def configure(threads: int | None = None) -> Threads:
    """Size the worker's thread pools and make their idle threads sleep.

    Args:
        threads: the worker's threads (``towerkit serve --threads``); None: every core but
            one.

    Raises:
        ValueError: ``threads`` below 1.
    """
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    cores = available_cores()
    compute = threads or default_threads(cores)
    loaded = [name for name in ("torch", "onnxruntime", "faiss") if name in sys.modules]
    for name in _POOL_VARIABLES:
        os.environ[name] = str(compute)
    user_policy = os.environ.get("OMP_WAIT_POLICY")
    if user_policy is None:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    passive = (user_policy or "PASSIVE").upper() == "PASSIVE" and "torch" not in loaded
    if "torch" in loaded:
        import torch

        torch.set_num_threads(compute)
        logger.debug("torch was loaded before the server set OMP_WAIT_POLICY: its default holds")
    if "faiss" in loaded:
        import faiss

        faiss.omp_set_num_threads(compute)
    if _said.get("threads") != (compute, cores):  # once (the CLI configures, then the app)
        logger.info("serving threads: %d of %d cores for the tower and the index", compute, cores)
        _said["threads"] = (compute, cores)
    return Threads(compute=compute, cores=cores, passive=passive)


_said: dict[str, tuple[int, int]] = {}


__all__ = ["Threads", "available_cores", "configure", "default_threads"]
