"""Micro-batching: concurrent requests wait a moment (a millisecond or two) to run as one batch.

The user tower and the index answer a batch of queries for little more than one query, so
under load a batch of 32 concurrent requests costs one tower call and one search instead of 32.
Work runs in one worker thread, so the event loop stays free to accept requests meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

Job = TypeVar("Job")


class MicroBatcher(Generic[Job]):
    """Collects jobs for up to ``max_wait`` seconds (or ``max_batch`` jobs) and hands them to
    ``run`` together, in a worker thread.

    Args:
        run: ``jobs -> results``, one result per job in order (an exception for a job may be
            returned in its place and is raised to that job's caller).
        max_batch: the most jobs in one batch.
        max_wait: the longest a job waits for others, in seconds.
    """

    def __init__(
        self,
        run: Callable[[Sequence[Job]], Sequence[Any]],
        *,
        max_batch: int = 256,
        max_wait: float = 0.002,
    ) -> None:
        self.run, self.max_batch, self.max_wait = run, max_batch, max_wait
        self._pending: list[tuple[Job, asyncio.Future]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="towerkit-batch")
        self.batches = 0

    async def submit(self, job: Job) -> Any:
        """Queue a job and wait for its result."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((job, future))
        if len(self._pending) >= self.max_batch:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.max_wait, self._flush)
        result = await future
        if isinstance(result, BaseException):
            raise result
        return result

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending, []
        if batch:
            asyncio.get_running_loop().create_task(self._run(batch))

    async def _run(self, batch: list[tuple[Job, asyncio.Future]]) -> None:
        jobs = [job for job, _ in batch]
        loop = asyncio.get_running_loop()
        self.batches += 1
        try:
            results = await loop.run_in_executor(self._executor, self.run, jobs)
        except BaseException as err:  # the whole batch failed: every caller hears it
            results = [err] * len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` in the worker thread now (work that is one batch already)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
