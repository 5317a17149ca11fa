"""Processes a run starts and the signals it answers: one home for the launchers of
``--nproc`` (:func:`launch_torchrun`) and ``tune --workers`` (:func:`run_workers`), and for
SIGTERM handled as Ctrl-C (:func:`signals_as_interrupt`).

A stopped process keeps what it finished (the last epoch's checkpoint, a study's finished
trials) only if a signal ends it through Python's ``KeyboardInterrupt``, never by the default
action that kills it where it stands; :func:`signals_as_interrupt` makes it so.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from towerkit.errors import RunInterrupted, WorkersFailed

logger = logging.getLogger(__name__)


class Terminated(KeyboardInterrupt):
    """SIGTERM (or another signal :func:`signals_as_interrupt` was given), handled as Ctrl-C."""


def _interrupt(signum: int, frame: object) -> None:
    raise Terminated


@contextmanager
def signals_as_interrupt(*signals: signal.Signals) -> Iterator[None]:
    """Within: each of ``signals`` (by default SIGTERM) raises :class:`Terminated`, a
    ``KeyboardInterrupt``. Naming SIGINT makes Ctrl-C work even in a process started with it
    ignored (in the background). The handlers before are restored after; outside the main
    thread (where Python allows no handler) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {sig: signal.signal(sig, _interrupt) for sig in signals or (signal.SIGTERM,)}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def cores() -> int:
    """The cores this process may run on (its affinity, where the OS tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def towerkit_command(*arguments: str) -> list[str]:
    """``python -m towerkit ARGUMENTS`` with this interpreter."""
    return [sys.executable, "-m", "towerkit", *arguments]


def launch_torchrun(nproc: int, arguments: list[str], progress: bool) -> None:
    """The same training under ``torchrun --standalone`` (one node, a free rendezvous port):
    ``python -m towerkit ARGUMENTS`` in ``nproc`` processes, each with cores / nproc threads.

    Raises:
        RunInterrupted: they were stopped by a signal (SIGINT, SIGTERM).
        WorkersFailed: they ended with another non-zero status.
    """
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", str(nproc), "-m", "towerkit",
               *([] if progress else ["--quiet"]), *arguments]  # fmt: skip
    env = dict(os.environ)
    # torchrun would give each process one thread; share the machine's cores instead.
    env.setdefault("OMP_NUM_THREADS", str(max(1, cores() // nproc)))
    logger.info("launching: %s", " ".join(command))
    job = subprocess.Popen(command, env=env)
    # torchrun forwards SIGTERM and SIGINT to the workers (which checkpoint and stop); a signal
    # sent to this launcher alone reaches torchrun the same way.
    forward = {sig: signal.signal(sig, lambda signum, _: job.send_signal(signum))
               for sig in (signal.SIGTERM, signal.SIGINT)}  # fmt: skip
    try:
        code = job.wait()
    finally:
        for sig, previous in forward.items():
            signal.signal(sig, previous)
    if code in (-signal.SIGINT, -signal.SIGTERM):
        raise RunInterrupted("")
    if code:
        raise WorkersFailed(code)


def run_workers(
    commands: list[list[str]],
    logs: list[Path],
    *,
    env: dict[str, str] | None = None,
    tick: Callable[[], None] | None = None,
    interval: float = 1.0,
) -> list[int]:
    """Run ``commands`` side by side, each writing to its log (appended), and return their exit
    statuses once all have ended; ``tick`` is called every ``interval`` seconds meanwhile (a
    progress bar). Each runs in a session of its own, so a terminal's Ctrl-C reaches only this
    process: on Ctrl-C (or SIGTERM handled as one) each is sent SIGINT, waited for (each keeps
    what it finished), and the interrupt is raised."""
    handles = [open(log, "a") for log in logs]  # noqa: SIM115 (closed below)
    procs = []
    try:
        for command, handle in zip(commands, handles, strict=True):
            procs.append(
                subprocess.Popen(
                    command, stdout=handle, stderr=subprocess.STDOUT, env=env,
                    start_new_session=True,
                )
            )  # fmt: skip
        while any(p.poll() is None for p in procs):
            time.sleep(interval)
            if tick is not None:
                tick()
    except KeyboardInterrupt:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            p.wait()
        raise
    finally:
        for handle in handles:
            handle.close()
    return [p.returncode for p in procs]
