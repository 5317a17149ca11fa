"""``towerkit tune``: create or resume a study, run its workers (in this process or in
``--workers`` processes), and finish it: the best trial's config, its test stage once, the
summary and the page."""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

import yaml

from towerkit import storage
from towerkit.config import (
    Config,
    config_from_dict,
    parse_overrides,
    read_config_tree,
    set_key,
)
from towerkit.errors import RunInterrupted
from towerkit.files import atomic_write
from towerkit.runs import RUN_FILE, RunDir, pipeline
from towerkit.runs.processes import cores, run_workers, signals_as_interrupt, towerkit_command
from towerkit.storage import MANIFEST_NAME, is_url
from towerkit.tune.page import write_page
from towerkit.tune.space import Space, TuneError, check_space, read_space, trial_config
from towerkit.tune.study import (
    BEST_FILE,
    CONFIG_FILE,
    PAGE_FILE,
    SPACE_FILE,
    STUDY_NAME,
    SUMMARY_FILE,
    TRIALS_DIR,
    WORKERS_DIR,
    StudyDir,
    StudySummary,
    _counted,
    _optuna,
    describe_budget,
)
from towerkit.tune.worker import work

logger = logging.getLogger(__name__)


def tune(
    config: str | Path | None,
    space: str | Path | None,
    out: str | Path,
    *,
    trials: int,
    workers: int = 1,
    timeout: float | None = None,
    resume: bool = False,
    overrides: list[str] = (),
    final: bool = True,
    progress: bool = True,
) -> StudySummary:
    """Run (or resume) a study into ``out`` and finish it: ``best.yaml``, the best trial's
    test stage (``final``), ``summary.json`` and ``study.html``.

    Args:
        config, space: the base config and the space file (with ``resume``: the study's own,
            and when given they must be the same).
        trials: the study's size: trials are run until it has this many (all workers
            together, counted over every session of the study).
        workers: processes sharing the storage (1: in this process).
        timeout: seconds after which no new trial starts (running ones finish).
        overrides: ``KEY=VALUE`` settings applied to the base config.

    Raises:
        TuneError, ConfigError: a bad space or config, a study in the way or missing, no trial
            completed, a worker failed.
        RunInterrupted: Ctrl-C (the message says how to resume).
    """
    optuna = _optuna()
    if trials < 1 or workers < 1:
        raise TuneError(f"--trials and --workers must be at least 1 (got {trials}, {workers})")
    if is_url(out):
        return _tune_remote(
            str(out), config, space, trials=trials, workers=workers, timeout=timeout,
            resume=resume, overrides=overrides, final=final, progress=progress,
        )  # fmt: skip
    study_dir = StudyDir(Path(out))
    if resume:
        _check_resume(study_dir, config, space, overrides)
    else:
        _create(study_dir, config, space, overrides, optuna)
    space_, base_tree = study_dir.space(), study_dir.base()
    base = trial_config(base_tree, space_, {}, str(study_dir.path / CONFIG_FILE))
    start = time.time()
    with (
        signals_as_interrupt(signal.SIGTERM, signal.SIGINT),
        study_dir.lock(".study.lock", wait=False),
    ):
        _fail_stale(study_dir, optuna)
        deadline = None if timeout is None else start + timeout
        threads = max(1, (base.train.threads or cores()) // workers)
        logger.info(
            "study %s: %d trial(s) with %d worker(s) of %d thread(s); %s",
            study_dir.path, trials, workers, threads, describe_budget(space_, base),
        )  # fmt: skip
        try:
            if workers == 1:
                work(study_dir.path, trials, threads=threads, deadline=deadline)
            else:
                _run_workers(study_dir, trials, workers, threads, deadline, progress)
        except KeyboardInterrupt:
            raise RunInterrupted(
                f"the study was stopped; its finished trials are kept in {study_dir.path}; go "
                f"on with: towerkit tune --resume --out {study_dir.path} --trials {trials}"
            ) from None
        return _finish(study_dir, base, space_, final=final, progress=progress)


def _tune_remote(url: str, config, space, *, trials: int, resume: bool, **kwargs) -> StudySummary:
    """A study whose home is a bucket: run in a local working copy (with ``resume``: the
    bucket's, downloaded), then published: each finished trial as a run of its own
    (``URL/trials/NNNN``, readable by ``recommend`` and ``compare``), the study last. Stopped
    early, what it holds is uploaded without a manifest, to go on from with ``--resume``."""
    local = storage.working_copy(url)
    if resume:
        storage.download_prefix(url, local, skip=lambda name: name.endswith(MANIFEST_NAME))
    elif storage.objects_under(url):
        raise TuneError(f"{url}: holds objects already; pick a new --out")
    study_dir = StudyDir(local)
    uploader = storage.Uploader(url)
    try:
        summary = tune(config, space, local, trials=trials, resume=resume, **kwargs)
    except RunInterrupted:
        if study_dir.exists():
            uploader.unpublish()
            uploader.push(local)
        raise RunInterrupted(
            f"the study was stopped; its finished trials are kept in {url}; go on with: "
            f"towerkit tune --resume --out {url} --trials {trials}"
        ) from None
    uploader.unpublish()
    for trial in sorted((local / TRIALS_DIR).glob("*")):
        if (trial / RUN_FILE).is_file() and RunDir(trial).finished:
            name = trial.relative_to(local).as_posix()
            part = storage.Uploader(storage.join(url, name))
            part.publish(trial, last=[RUN_FILE], what="run")
            uploader.sent.update({f"{name}/{n}": digest for n, digest in part.sent.items()})
    uploader.publish(local, what="study")
    logger.info("study published to %s", url)
    return summary


def _create(study_dir: StudyDir, config, space, overrides, optuna) -> None:
    if config is None or space is None:
        raise TuneError("a new study needs a CONFIG and --space (or --resume an existing one)")
    if study_dir.path.exists() and not study_dir.path.is_dir():
        raise TuneError(f"{study_dir.path}: is a file, not a directory; pick a new --out")
    if study_dir.path.exists() and any(study_dir.path.iterdir()):
        hint = " (go on with it: --resume)" if study_dir.exists() else ""
        raise TuneError(f"{study_dir.path}: exists and is not empty{hint}; pick a new --out")
    base_tree = _base_tree(config, overrides)
    space_ = read_space(space)
    check_space(base_tree, space_, str(space))
    study_dir.path.mkdir(parents=True, exist_ok=True)
    (study_dir.path / CONFIG_FILE).write_text(yaml.safe_dump(base_tree, sort_keys=False))
    (study_dir.path / SPACE_FILE).write_text(
        yaml.safe_dump(space_.model_dump(mode="json", exclude_defaults=True), sort_keys=False)
    )
    study = optuna.create_study(
        study_name=STUDY_NAME, storage=study_dir.storage_url, direction="maximize"
    )
    # Trial 0 is the base config, where the space can take its values: the search starts from
    # what it is to improve on, and the summary shows what it gained.
    base = space_.base_values(config_from_dict(base_tree, source=str(config)))
    if base:
        study.enqueue_trial(base, user_attrs={"base": True})
        others = [key for key in space_.params if key not in base]
        logger.info(
            "trial 0 is the base config (%s)%s",
            ", ".join(f"{key}={value}" for key, value in base.items()),
            f"; {', '.join(others)} sampled (outside the space or not applicable)"
            if others else "",
        )  # fmt: skip


def _base_tree(config: str | Path, overrides) -> dict:
    """The config file's tree with the overrides set (a bad config fails here)."""
    tree = read_config_tree(config)
    for key, value in parse_overrides(list(overrides)):
        set_key(tree, key, value)
    config_from_dict(tree, source=str(config))
    return tree


def _check_resume(study_dir: StudyDir, config, space, overrides) -> None:
    if not study_dir.exists():
        raise TuneError(f"{study_dir.path}: no study to resume (start one without --resume)")
    if config is not None and _base_tree(config, overrides) != study_dir.base():
        raise TuneError(
            f"{config}: differs from the config the study in {study_dir.path} searches; resume "
            "without CONFIG, or start a new study"
        )
    if space is not None and read_space(space) != study_dir.space():
        raise TuneError(
            f"{space}: differs from the space of the study in {study_dir.path}; resume without "
            "--space, or start a new study"
        )


def _fail_stale(study_dir: StudyDir, optuna) -> None:
    """Trials left running by a process that was killed (no worker runs now: the study lock is
    held) are failed as interrupted, so that they do not count."""
    study = study_dir.load()
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
        study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        logger.info("trial %d was left running by a stopped study: failed", trial.number)


def _run_workers(study_dir: StudyDir, trials, workers, threads, deadline, progress) -> None:
    """``workers`` processes (``towerkit tune-worker``), their output in ``workers/``; a
    progress bar of the study's trials meanwhile. Ctrl-C stops them (each fails its running
    trial as interrupted) and is raised."""
    from tqdm.auto import tqdm

    logs = study_dir.path / WORKERS_DIR
    logs.mkdir(exist_ok=True)
    commands = []
    for k in range(workers):
        command = towerkit_command(
            "tune-worker", str(study_dir.path),
            "--trials", str(trials), "--worker", str(k), "--threads", str(threads),
        )  # fmt: skip
        if deadline is not None:
            command += ["--deadline", repr(deadline)]
        commands.append(command)
    study = study_dir.load()
    bar = tqdm(total=trials, desc="trials", disable=not progress)

    def tick() -> None:
        done = _counted(study, running=False)
        if done > bar.n:
            bar.update(done - bar.n)

    try:
        codes = run_workers(
            commands,
            [logs / f"worker-{k}.log" for k in range(workers)],
            env={**os.environ, "OMP_NUM_THREADS": str(threads)},
            tick=tick,
        )
    finally:
        bar.close()
    failed = [k for k, code in enumerate(codes) if code != 0]
    if failed:
        names = ", ".join(str(logs / f"worker-{k}.log") for k in failed)
        raise TuneError(
            f"{len(failed)} worker(s) stopped or failed (see {names}); the study's finished "
            f"trials are kept: go on with towerkit tune --resume --out {study_dir.path} "
            f"--trials {trials}"
        )


def _finish(study_dir: StudyDir, base: Config, space: Space, *, final: bool, progress: bool):
    optuna = _optuna()
    study = study_dir.load()
    trials = [t for t in study.get_trials() if not t.user_attrs.get("interrupted")]
    state = optuna.trial.TrialState
    complete = [t for t in trials if t.state == state.COMPLETE]
    pruned = [t for t in trials if t.state == state.PRUNED]
    failed = [t for t in trials if t.state == state.FAIL]
    if not complete:
        errors = [t.user_attrs["error"] for t in failed if "error" in t.user_attrs]
        why = f"; the first error: {errors[0]}" if errors else ""
        raise TuneError(
            f"{study_dir.path}: no trial completed ({len(pruned)} pruned, {len(failed)} "
            f"failed){why}"
        )
    best = max(complete, key=lambda t: (t.value, -t.number))
    best_config = best.user_attrs["config"]
    atomic_write(
        study_dir.path / BEST_FILE,
        lambda tmp: tmp.write_text(
            f"# the best of {len(trials)} trials (trial {best.number}, validation "
            f"{base.train.monitor} {best.value:.4f}) of the study {study_dir.path}\n"
            + yaml.safe_dump(best_config, sort_keys=False)
        ),
    )
    run = study_dir.path / best.user_attrs["run"]
    test = popularity = None
    if final:
        metrics = RunDir(run).metrics
        if "test" in metrics:  # ranked once already (a resumed study whose best held)
            test, popularity = metrics["test"], metrics.get("popularity")
        else:
            found = pipeline.test_run(run, progress=progress)
            test, popularity = found["test"], found["popularity"]
    summary = StudySummary(
        path=study_dir.path,
        metric=base.train.monitor,
        trials=len(trials),
        complete=len(complete),
        pruned=len(pruned),
        failed=len(failed),
        budget=describe_budget(space, base),
        wall_seconds=round(_span(trials), 1),
        trial_seconds=round(sum(_duration(t) for t in trials), 1),
        best_trial=best.number,
        best_value=best.value,
        best_params=best.params,
        best_valid=best.user_attrs.get("valid", {}),
        best_run=str(run),
        test=test,
        popularity=popularity,
        **_base_trial(trials),
    )
    data = summary.to_dict()
    text = json.dumps(data, indent=2)
    atomic_write(study_dir.path / SUMMARY_FILE, lambda tmp: tmp.write_text(text))
    write_page(study, summary, study_dir.path / PAGE_FILE)
    return summary


def _base_trial(trials: list) -> dict[str, Any]:
    """The base config's trial and its value (None: pruned, failed or running)."""
    for trial in trials:
        if trial.user_attrs.get("base"):
            return {"base_trial": trial.number, "base_value": trial.value}
    return {}


def _span(trials: list) -> float:
    """Seconds from the first trial's start to the last one's end (over every session)."""
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    ends = [t.datetime_complete for t in trials if t.datetime_complete is not None]
    return (max(ends) - min(starts)).total_seconds() if starts and ends else 0.0


def _duration(trial) -> float:
    if trial.datetime_start is None or trial.datetime_complete is None:
        return 0.0
    return (trial.datetime_complete - trial.datetime_start).total_seconds()
