"""One owner of a training run's lifecycle, for ``towerkit train`` and library callers alike.

It launches the N processes of ``--nproc N`` under ``torchrun``, joins the process group once
(rank 0 alone then logs, shows progress and writes), checks and creates the run directory (or
opens the one to resume), writes its ``train.log``, handles SIGTERM as Ctrl-C, and when
training stops early keeps what can be resumed: a new run with no finished epoch is removed,
otherwise the message says how to resume.

::

    from towerkit.runs import lifecycle
    outcome = lifecycle.train(load_config("configs/ml-100k/youtube_dnn.yaml"), "runs/a")
    outcome = lifecycle.resume("runs/a", device="cpu")   # after Ctrl-C, on another machine

:mod:`towerkit.runs.pipeline` holds the steps (prepare, build, fit, finish) this module runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from towerkit import distributed, storage
from towerkit.config import Config
from towerkit.errors import RunInterrupted, StorageError, WorkersFailed
from towerkit.files import os_reason, sha256_of
from towerkit.runs import pipeline
from towerkit.runs.processes import launch_torchrun, signals_as_interrupt
from towerkit.runs.rundir import CHECKPOINT_FILE, LOG_FILE, RUN_FILE, RunDir, RunDirError
from towerkit.storage import is_url

logger = logging.getLogger(__name__)

__all__ = ["RunInterrupted", "WorkersFailed", "resume", "train"]


def train(
    config: Config,
    out: str | Path,
    *,
    nproc: int = 1,
    prepared: pipeline.Prepared | None = None,
    validate: pipeline.MakeValidator | None = None,
    test: bool = True,
    keep_on: tuple[type[BaseException], ...] = (),
    log: Path | None = None,
    warm: pipeline.WarmStart | RunDir | str | Path | None = None,
) -> pipeline.RunOutcome | None:
    """Train ``config`` into a new run directory ``out`` (which must not hold anything): a
    local path, or a URL (``s3://bucket/runs/a``, an empty prefix). A run whose home is a
    bucket is written in a local working copy, its files uploaded after every epoch's
    checkpoint (so it resumes on another machine) and published with its manifest last once
    it finished (readers never see a half-written run).

    Args:
        nproc: train in this many processes on this machine (``torchrun --standalone``); the
            call then returns None once they end (rank 0 wrote the run).
        prepared: the prepared data, when the caller has them (else prepared from the config).
        validate, test: as for :func:`towerkit.runs.pipeline.train` (a search's trial
            validates through its pruner and never reads the test stage).
        keep_on: exceptions that end the run on purpose (a pruned trial): the run directory
            is kept as it is, and the exception is raised.
        log: a Parquet log the run directory carries (see :meth:`RunDir.create`), with
            ``prepared`` read from it.
        warm: a finished run to continue from (``towerkit train --from RUN``; see
            :mod:`towerkit.runs.warm`).

    Returns:
        the outcome (under torchrun, on every rank; ``outcome.run`` is rank 0's), or None when
        the processes ran under a launched torchrun.

    Raises:
        RunInterrupted: Ctrl-C or SIGTERM (the message says how to resume).
        WorkersFailed: launched processes failed.
    """
    url = str(out) if is_url(out) else None
    first = int(os.environ.get("RANK", "0")) == 0  # (before the process group is joined)
    if url is not None and first:
        _check_new_prefix(url)
    out = storage.work_path(url) if url is not None else Path(out)
    warm = pipeline.warm_start(warm)
    if nproc > 1 and (validate is not None or not test or keep_on or log is not None):
        raise ValueError("validate, test, keep_on and log are for a run in this process (nproc 1)")
    if nproc > 1 and not distributed.launched():
        with tempfile.TemporaryDirectory(prefix="towerkit-launch-") as folder:
            resolved = Path(folder) / "config.yaml"
            resolved.write_text(config.to_yaml())
            command = ["train", str(resolved), "--out", url or str(out)]
            if warm is not None:
                command += ["--from", warm.parent.location]
            launch_torchrun(nproc, command, config.train.progress)
        return None
    return _execute(
        config, None, out, prepared, validate=validate, test=test, keep_on=keep_on, log=log,
        warm=warm, url=url,
    )  # fmt: skip


def _check_new_prefix(url: str) -> None:
    """Refuse a prefix that holds a run (finished, or one to resume); remove what an attempt
    that failed before its first checkpoint left there.

    Raises:
        RunDirError: naming what is there and what to do.
    """
    names = set(storage.objects_under(url))
    if not names:
        return
    if storage.MANIFEST_NAME in names:
        raise RunDirError(f"{url}: holds a finished run already; a new run needs an empty prefix")
    if RUN_FILE in names and CHECKPOINT_FILE in names:
        raise RunDirError(
            f"{url}: holds an unfinished run; resume it with: towerkit train --resume {url} "
            "(or pick an empty prefix)"
        )
    logger.info("%s: removing what an attempt that stopped before its first epoch left", url)
    storage.remove_prefix(url)


def resume(
    run: RunDir | str | Path,
    *,
    device: str | None = None,
    progress: bool | None = None,
    nproc: int = 1,
    prepared: pipeline.Prepared | None = None,
) -> pipeline.RunOutcome | None:
    """Continue an unfinished run from its last checkpoint, on this machine (``device``: by
    default the run's own; a GPU run resumes on a CPU with ``device="cpu"``).

    A run whose home is a bucket (``run`` a URL) is downloaded as the bucket holds it (its last
    uploaded checkpoint), resumed, and published. One that finished training but whose upload
    was cut off is only published: the call then returns None.

    Raises:
        RunDirError: not a run, finished already, or its data are not found.
        ConfigError: a device this machine lacks.
        RunInterrupted, WorkersFailed: as for :func:`train`.
        StorageError: the bucket cannot be read or written.
    """
    url = str(run) if not isinstance(run, RunDir) and is_url(run) else None
    if url is not None:
        run = _download_unfinished(url)
        if run.finished:  # trained to the end; only its upload was cut off
            uploaded(run.uploader, run.path, url)
            logger.info("%s: the run was finished; its upload is complete now", url)
            return None
    run = run if isinstance(run, RunDir) else RunDir(run)
    if run.finished:
        where = run.location
        raise RunDirError(f"{where}: the run is finished already; there is nothing to resume")
    config = pipeline.resumed_config(run, device=device, progress=progress)
    if nproc > 1 and not distributed.launched():
        run.require_data()  # before starting processes (in this one, pipeline.checked does)
        command = ["train", "--resume", url or str(run.path), "--device", config.train.device]
        launch_torchrun(nproc, command, config.train.progress)
        return None
    return _execute(config, run, None, prepared, url=url)


def _download_unfinished(url: str) -> RunDir:
    """A run in a bucket with no manifest (unfinished, or its upload cut off), downloaded into
    a fresh working copy with an uploader that knows what the bucket holds already.

    Raises:
        RunDirError: a finished run (its manifest is there), or not a run.
    """
    with contextlib.suppress(StorageError):
        storage.read_manifest(url)
        raise RunDirError(f"{url}: the run is finished already; there is nothing to resume")
    rank = int(os.environ.get("RANK", "0"))  # under torchrun, each process reads its own copy
    local = storage.working_copy(url + (f"#rank{rank}" if rank else ""))
    names = storage.download_prefix(url, local)
    if RUN_FILE not in names:
        shutil.rmtree(local, ignore_errors=True)
        raise RunDirError(f"{url}: not a run (no {RUN_FILE} under it)")
    run = RunDir(local)
    if rank == 0:  # (rank 0 alone writes, and uploads)
        run.uploader = storage.Uploader(url)
        run.uploader.sent = {name: sha256_of(local / name) for name in names}
    return run


def uploaded(uploader: storage.Uploader | None, local: Path, url: str) -> None:
    """Publish a finished run's working copy (its manifest last); a failure says where the
    run is kept and how to finish the upload.

    Raises:
        StorageError: one line naming the object, the reason and the way on.
    """
    if uploader is None:
        return
    try:
        uploader.publish(local, last=[RUN_FILE], what="run")
    except StorageError as err:
        raise StorageError(
            f"{err}; the run is trained (kept in {local}); finish its upload with: towerkit "
            f"train --resume {url}"
        ) from None


def _execute(
    config: Config,
    run: RunDir | None,
    out: Path | None,
    prepared: pipeline.Prepared | None,
    *,
    validate: pipeline.MakeValidator | None = None,
    test: bool = True,
    keep_on: tuple[type[BaseException], ...] = (),
    log: Path | None = None,
    warm: pipeline.WarmStart | None = None,
    url: str | None = None,
) -> pipeline.RunOutcome:
    """The run in this process: join the process group (once), prepare, train, finish (and,
    for a run whose home is ``url``, publish it there)."""
    new = run is None
    ctx = distributed.setup(config.train.device)
    try:
        with _one_voice(ctx.main):
            if not ctx.main:  # one voice: rank 0 logs, shows progress and writes
                config = config.on_machine(progress=False)
            if new:
                out = distributed.broadcast_object(out)  # the default name holds rank 0's clock
                if ctx.main:
                    if url is not None:
                        storage.working_copy(url)  # emptied: a crashed attempt's copy goes
                    RunDir.check_new(out)
            with signals_as_interrupt():  # SIGTERM as Ctrl-C
                try:
                    # every check before the run directory is made
                    prepared = pipeline.checked(
                        config, prepared, resuming=None if new else run, test=test, warm=warm
                    )
                    if new and ctx.main:
                        record = warm.record(prepared, warm.moments(config)[1]) if warm else None
                        run = RunDir.create(out, config, prepared, log=log, warm=record)
                        if url is not None:
                            run.uploader = storage.Uploader(url)
                            run.push()
                    with _train_log(run if ctx.main else None):
                        state = None if new else run.load_checkpoint()
                        outcome = pipeline.fit(
                            config, prepared, run, state, validate=validate, test=test,
                            warm=warm,
                        )  # fmt: skip
                except keep_on:
                    raise
                except BaseException as err:
                    _stopped(run if ctx.main else None, new, err, ctx.main, url)
                    raise
            if ctx.main and url is not None:
                uploaded(run.uploader, run.path, url)
    finally:
        distributed.teardown()
    outcome.main = ctx.main
    return outcome


@contextmanager
def _one_voice(main: bool) -> Iterator[None]:
    """On the processes that are not rank 0, the terminal shows errors only."""
    if main:
        yield
        return
    handlers = logging.getLogger().handlers
    levels = [handler.level for handler in handlers]
    for handler in handlers:
        handler.setLevel(max(handler.level, logging.ERROR))
    try:
        yield
    finally:
        for handler, level in zip(handlers, levels, strict=True):
            handler.setLevel(level)


@contextmanager
def _train_log(run: RunDir | None) -> Iterator[None]:
    """The run's ``train.log``: what the ``towerkit`` logger passes (INFO and above once
    logging is configured at INFO, as the CLI does, whatever the terminal shows)."""
    if run is None:
        yield
        return
    handler = RunLogHandler(run.path / LOG_FILE)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    towerkit_logger = logging.getLogger("towerkit")
    towerkit_logger.addHandler(handler)
    try:
        yield
    finally:
        towerkit_logger.removeHandler(handler)
        handler.close()


class RunLogHandler(logging.FileHandler):
    """A run's ``train.log``. A write that fails (a full disk) is reported once, as a warning
    naming the file and the reason, and the log stops there: no ``--- Logging error ---``
    traceback per record, and the run's own error (a checkpoint that cannot be written) is
    still the one line the user reads."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, encoding="utf-8")
        self.failed = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.failed:
            super().emit(record)

    def flush(self) -> None:
        if self.failed:
            return
        try:
            super().flush()
        except OSError:
            self.handleError(None)

    def close(self) -> None:
        try:
            super().close()
        except OSError:  # the buffered tail of the log, on a disk that is full by now
            self.handleError(None)

    def handleError(self, record: logging.LogRecord | None) -> None:
        if self.failed:
            return
        self.failed = True
        err = sys.exc_info()[1]
        reason = os_reason(err) if isinstance(err, OSError) else repr(err)
        logger.warning("%s: cannot write the log (%s); it stops here", self.baseFilename, reason)


def _stopped(
    run: RunDir | None, new: bool, err: BaseException, main: bool, url: str | None = None
) -> None:
    """After training stopped early (Ctrl-C, SIGTERM, an error): keep what can be resumed,
    remove a new run that holds no finished epoch, and say which. Raises
    :class:`RunInterrupted` for an interrupt. A run whose home is a bucket keeps what its
    last checkpoint uploaded there (no manifest: no reader takes it for a run), and resumes
    from the bucket."""
    interrupted = isinstance(err, KeyboardInterrupt)
    if not main:
        if interrupted:
            raise RunInterrupted("") from None
        return
    if run is None:
        if interrupted:
            raise RunInterrupted("interrupted before training started; nothing was written")
        return
    done = run.epochs_done
    if done == 0 and new:
        shutil.rmtree(run.path, ignore_errors=True)
        if url is not None:
            storage.remove_prefix(url)
        if interrupted:
            raise RunInterrupted(
                "interrupted before the first epoch finished; nothing was kept"
            ) from None
        return
    if url is not None and isinstance(err, StorageError):
        return  # the store's one line says it all; the bucket keeps the last upload
    if interrupted or done:
        epochs = run.config.train.epochs
        where = url or run.path
        message = (
            f"{'interrupted' if interrupted else 'stopped'}: {done} of {epochs} epochs are "
            f"saved in {where}; resume with: towerkit train --resume {where}"
        )
        if interrupted:
            raise RunInterrupted(message) from None
        logger.warning(message)
