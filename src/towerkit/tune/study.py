"""``towerkit tune``: a hyperparameter search with Optuna over a config's keys.

A *space file* names config keys with ranges or choices::

    params:
      train.lr: {low: 0.0005, high: 0.005, log: true}      # a float range (log scale)
      model.n_layers: {low: 1, high: 3}                    # an int range (both ends ints)
      model.dropout: {low: 0.2, high: 0.6, step: 0.1}
      negatives.kind: {choices: [full, sampled]}
      negatives.n: {low: 64, high: 1024, log: true, when: {negatives.kind: sampled}}
    fixed: {train.epochs: 20}                              # every trial's, not searched
    budget: {pruner: hyperband, min_epochs: 2, reduction_factor: 3}
    sampler: {seed: 0, startup_trials: 8}

A param with ``when`` is sampled only when the earlier params it names took one of the given
values (otherwise the config's own value stands).

The study (:func:`tune`) lives in a directory: Optuna's SQLite storage ``study.db``, the base
config and the space as given, one run directory per trial under ``trials/``, and when it ends
``best.yaml`` (the best trial's resolved config), ``summary.json`` and ``study.html`` (its
history, learning curves, parameter importances, offline). The objective is the config's
``train.monitor`` on the **validation** stage: trials are trained with the test stage never
read (:func:`towerkit.pipeline.train` with ``test=False``); the best trial alone is then
ranked once on the test stage (:func:`towerkit.pipeline.test_run`).

Budget: the TPE sampler proposes, a multi-fidelity pruner (Hyperband by default; the resource
is the epoch) reads every epoch's validation metric through the trainer and stops trials that
trail the others at the same epoch; a trial that is not pruned trains in full, so the best
trial's run is a full training (re-training it would repeat the same seeded computation).

``workers`` processes share the storage, each with ``cores / workers`` torch threads; trials
are counted under a file lock, so a study of N trials has exactly N (failed trials count;
trials cut by Ctrl-C do not, and ``resume`` runs the study on to N).
"""

from __future__ import annotations

import contextlib
import fcntl
import html
import json
import logging
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from towerkit import pipeline
from towerkit.config import (
    Config,
    ConfigError,
    config_from_dict,
    parse_overrides,
    read_config_tree,
    set_key,
)
from towerkit.errors import MissingExtra, RunInterrupted, TowerkitError
from towerkit.files import atomic_write
from towerkit.sections import MAX_SEED, Section, unbounded

logger = logging.getLogger(__name__)

STORAGE_FILE = "study.db"
CONFIG_FILE = "config.yaml"
SPACE_FILE = "space.yaml"
TRIALS_DIR = "trials"
BEST_FILE = "best.yaml"
SUMMARY_FILE = "summary.json"
PAGE_FILE = "study.html"
WORKERS_DIR = "workers"
STUDY_NAME = "towerkit"


class TuneError(TowerkitError):
    """A study that cannot run: a bad space file, a study directory in the way or missing, no
    trial that completed, a worker that failed (the message names the file)."""


def _optuna():
    try:
        import optuna
    except ImportError:
        raise MissingExtra("tuning needs optuna: pip install 'towerkit[tune]'") from None
    optuna.logging.disable_default_handler()  # its records go through our logging
    optuna.logging.enable_propagation()
    return optuna


# -- the space file -----------------------------------------------------------------------------

Scalar = str | int | float | bool | None


class _Param(Section):
    when: dict[str, Scalar | list[Scalar]] = Field(
        default_factory=dict, description="sampled only when these earlier params match"
    )

    def applies(self, values: dict[str, Any]) -> bool:
        for key, wanted in self.when.items():
            allowed = wanted if isinstance(wanted, list) else [wanted]
            if key not in values or values[key] not in allowed:
                return False
        return True


_END = unbounded("an end of a range of a config key: each is checked as that key's value")


class FloatRange(_Param):
    low: float = Field(json_schema_extra=_END)
    high: float = Field(json_schema_extra=_END)
    log: bool = False
    step: float | None = Field(
        default=None, gt=0, json_schema_extra=unbounded("a step within [low, high]")
    )

    @model_validator(mode="after")
    def _check(self) -> FloatRange:
        _check_range(self.low, self.high, self.log, self.step)
        return self

    def suggest(self, trial: Any, key: str) -> float:
        return trial.suggest_float(key, self.low, self.high, log=self.log, step=self.step)

    def examples(self) -> list[Any]:
        return [self.low, self.high]


class IntRange(_Param):
    low: int = Field(json_schema_extra=_END)
    high: int = Field(json_schema_extra=_END)
    log: bool = False
    step: int = Field(default=1, ge=1, json_schema_extra=unbounded("a step within [low, high]"))

    @model_validator(mode="after")
    def _check(self) -> IntRange:
        _check_range(self.low, self.high, self.log, None if self.step == 1 else self.step)
        return self

    def suggest(self, trial: Any, key: str) -> int:
        return trial.suggest_int(key, self.low, self.high, log=self.log, step=self.step)

    def examples(self) -> list[Any]:
        return [self.low, self.high]


class Choice(_Param):
    choices: list[Any] = Field(min_length=1)

    @property
    def _scalar(self) -> bool:
        return all(isinstance(c, Scalar) for c in self.choices)

    def suggest(self, trial: Any, key: str) -> Any:
        if self._scalar:
            return trial.suggest_categorical(key, self.choices)
        # Optuna stores scalars only: lists and mappings are chosen by their JSON text.
        text = trial.suggest_categorical(key, [json.dumps(c) for c in self.choices])
        return json.loads(text)

    def examples(self) -> list[Any]:
        return list(self.choices)


def _check_range(low: float, high: float, log: bool, step: float | None) -> None:
    if not low <= high:
        raise ValueError(f"low {low} is above high {high}")
    if log and low <= 0:
        raise ValueError(f"a log range needs low > 0, got {low}")
    if log and step is not None:
        raise ValueError("a log range takes no step")


Param = FloatRange | IntRange | Choice


class Budget(Section):
    """How trials are cut short: the pruner reads the validation metric after every epoch."""

    pruner: Literal["hyperband", "median", "none"] = Field(
        default="hyperband",
        description="hyperband: successive halving over epochs in brackets (Li et al. 2018); "
        "median: stop a trial below the median of earlier ones at the same epoch; none",
    )
    min_epochs: int = Field(
        default=1, ge=1, le=100_000, description="epochs every trial trains at least"
    )
    reduction_factor: int = Field(default=3, ge=2, le=1000, description="hyperband: 1/this go on")


class SamplerSettings(Section):
    # Optuna's samplers take numpy's 32-bit seeds, and worker k adds k
    seed: int = Field(
        default=0, ge=0, le=MAX_SEED // 2, description="worker k samples with seed + k"
    )
    startup_trials: int = Field(
        default=10, ge=0, le=100_000, description="random trials before TPE"
    )


class Space(Section):
    """A space file (see the module docstring)."""

    params: dict[str, Param] = Field(min_length=1)
    fixed: dict[str, Any] = Field(default_factory=dict)
    budget: Budget = Field(default_factory=Budget)
    sampler: SamplerSettings = Field(default_factory=SamplerSettings)

    @model_validator(mode="before")
    @classmethod
    def _kinds(cls, tree: Any) -> Any:
        """Each param's kind from its keys: ``choices``; else ints at both ends; else floats."""
        if not isinstance(tree, dict) or not isinstance(tree.get("params"), dict):
            return tree
        params = {}
        for key, raw in tree["params"].items():
            if isinstance(raw, dict) and "choices" not in raw:
                ints = all(
                    isinstance(raw.get(end), int) and not isinstance(raw.get(end), bool)
                    for end in ("low", "high")
                ) and isinstance(raw.get("step", 1), int)
                params[key] = (IntRange if ints else FloatRange).model_validate(raw)
            elif isinstance(raw, dict):
                params[key] = Choice.model_validate(raw)
            else:
                raise ValueError(
                    f"params.{key}: a range {{low: .., high: ..}} or {{choices: [..]}}, not {raw!r}"
                )
        return {**tree, "params": params}

    @model_validator(mode="after")
    def _conditions(self) -> Space:
        seen: list[str] = []
        for key, param in self.params.items():
            for other in param.when:
                if other not in seen:
                    raise ValueError(
                        f"params.{key}: its condition names {other}, which is not a param "
                        "listed before it"
                    )
            seen.append(key)
            if key in self.fixed:
                raise ValueError(f"{key} is both a param and fixed")
        return self

    def sample(self, trial: Any) -> dict[str, Any]:
        """The values of one trial (conditional params only where their condition holds)."""
        values: dict[str, Any] = {}
        for key, param in self.params.items():
            if param.applies(values):
                values[key] = param.suggest(trial, key)
        return values


def read_space(path: str | Path) -> Space:
    """Read and validate a space file.

    Raises:
        TuneError: a missing or unreadable file, bad YAML, an unknown key, a bad range.
    """
    path = Path(path)
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise TuneError(f"{path}: cannot read the space file ({err.strerror})") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise TuneError(f"{path}: not a valid YAML space file ({err})") from None
    if not isinstance(tree, dict):
        raise TuneError(f"{path}: a space file is a mapping with params (see towerkit tune --help)")
    try:
        return Space.model_validate(tree)
    except ValidationError as err:
        problems = []
        for error in err.errors()[:3]:
            where = ".".join(str(p) for p in error["loc"] if not str(p).startswith("function-"))
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = "unknown key (a space file has params, fixed, budget and sampler)"
            problems.append(f"{where + ': ' if where else ''}{message}")
        raise TuneError(f"{path}: {'; '.join(problems)}") from None


def trial_config(base: dict, space: Space, values: dict[str, Any], source: str) -> Config:
    """The config of one trial: the base config, the space's fixed keys, the trial's values."""
    tree = json.loads(json.dumps(base))
    for key, value in {**space.fixed, **values}.items():
        set_key(tree, key, value)
    return config_from_dict(tree, source=source)


def check_space(base: dict, space: Space, source: str) -> Config:
    """Refuse a space whose keys the config does not have, before any trial: each param at
    each end of its range (each choice), the others at their first value and conditions met.
    A failure that names another key, and persists without this one, is left to that key.
    Returns the base config with the fixed keys."""
    first = {key: param.examples()[0] for key, param in space.params.items()}
    for key, param in space.params.items():
        for value in param.examples():
            values = {**first, key: value}
            values = {k: v for k, v in values.items() if space.params[k].applies(values)}
            try:
                trial_config(base, space, values, source)
            except ConfigError as err:
                if key in str(err) or not _fails_without(base, space, values, key, source):
                    raise TuneError(
                        f"{source}: params.{key} = {value!r}: {_one_line(err)}"
                    ) from None
    try:
        return trial_config(base, space, {}, source)
    except ConfigError as err:
        raise TuneError(f"{source}: fixed: {_one_line(err)}") from None


def _one_line(err: ConfigError) -> str:
    """A config error's problems on one line, without its source (the caller names it)."""
    return "; ".join(err.problems)


def _fails_without(base, space, values, key, source) -> bool:
    """Whether the config fails without ``key`` too (the error is not this key's)."""
    try:
        trial_config(base, space, {k: v for k, v in values.items() if k != key}, source)
    except ConfigError:
        return True
    return False


# -- the study directory ----------------------------------------------------------------------


@dataclass
class StudyDir:
    """A study's directory (see the module docstring)."""

    path: Path

    @property
    def storage_url(self) -> str:
        return f"sqlite:///{(self.path / STORAGE_FILE).absolute()}"

    def exists(self) -> bool:
        return (self.path / STORAGE_FILE).exists()

    def base(self) -> dict:
        return yaml.safe_load((self.path / CONFIG_FILE).read_text())

    def space(self) -> Space:
        return read_space(self.path / SPACE_FILE)

    def trial_dir(self, number: int) -> Path:
        return self.path / TRIALS_DIR / f"{number:04d}"

    @contextlib.contextmanager
    def lock(self, name: str = ".ask.lock", *, wait: bool = True) -> Iterator[None]:
        """An exclusive file lock (``wait=False``: TuneError when another process holds it)."""
        with open(self.path / name, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                raise TuneError(
                    f"{self.path}: the study is running in another process; wait for it or stop "
                    "it first"
                ) from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def load(self, seed: int | None = None, pruner: Any = None) -> Any:
        optuna = _optuna()
        space = self.space()
        sampler = optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=space.sampler.startup_trials, constant_liar=True
        )
        return optuna.load_study(
            study_name=STUDY_NAME, storage=self.storage_url, sampler=sampler, pruner=pruner
        )


def _pruner(space: Space, base: Config) -> Any:
    optuna = _optuna()
    b = space.budget
    if b.pruner == "none":
        return optuna.pruners.NopPruner()
    if b.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=b.min_epochs - 1)
    epochs = "auto" if "train.epochs" in space.params else base.train.epochs
    return optuna.pruners.HyperbandPruner(
        min_resource=b.min_epochs, max_resource=epochs, reduction_factor=b.reduction_factor
    )


def describe_budget(space: Space, base: Config) -> str:
    """The study's budget in words (its summary says it)."""
    b = space.budget
    epochs = "sampled" if "train.epochs" in space.params else str(base.train.epochs)
    if b.pruner == "none":
        return f"no pruning: every trial trains its {epochs} epochs (or until early stopping)"
    if b.pruner == "median":
        return (
            f"median pruning: after epoch {b.min_epochs}, a trial below the median of earlier "
            f"trials at the same epoch stops; the others train their {epochs} epochs"
        )
    return (
        f"Hyperband over epochs (at least {b.min_epochs}, at most {epochs}, 1/"
        f"{b.reduction_factor} go on at each rung): trials that trail at a rung stop there; "
        "those not pruned train in full, on every user"
    )


# -- a worker ---------------------------------------------------------------------------------


class _Pruning:
    """The validation evaluator, reporting each epoch's objective to the trial."""

    def __init__(self, valid: Any, trial: Any, metric: str) -> None:
        self.valid, self.trial, self.metric = valid, trial, metric
        self.epoch = 0

    @property
    def last_seconds(self) -> float:
        return self.valid.last_seconds

    def evaluate(self, model: Any, similarity: Any, device: Any) -> dict[str, float]:
        metrics = self.valid.evaluate(model, similarity, device)
        self.epoch += 1
        value = metrics[self.metric]
        self.trial.report(value, self.epoch)
        if self.trial.should_prune():
            optuna = _optuna()
            raise optuna.TrialPruned(f"{self.metric} {value:.4f} at epoch {self.epoch}")
        return metrics


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _signals_as_interrupt() -> Iterator[None]:
    """Within: SIGTERM is handled as Ctrl-C (the running trial is failed as interrupted), and
    SIGINT is Ctrl-C even in a process started with it ignored (in the background). The
    handlers before are restored after."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def _counted(study: Any, *, running: bool = True) -> int:
    """Trials that count towards the study's size: all but those cut by an interruption
    (``running=False``: those finished only, for the progress bar)."""
    optuna = _optuna()
    return sum(
        1
        for t in study.get_trials(deepcopy=False)
        if not t.user_attrs.get("interrupted")
        and (running or t.state != optuna.trial.TrialState.RUNNING)
    )


def work(
    study_dir: str | Path,
    trials: int,
    *,
    worker: int = 0,
    threads: int = 1,
    deadline: float | None = None,
) -> int:
    """Run trials of the study in ``study_dir`` until it has ``trials`` (or ``deadline``, a
    ``time.time()``, passes). Returns the number of trials this worker ran.

    Trial errors a user can cause (a sampled config that is invalid, a loss that became NaN)
    fail the trial, with the message kept as its ``error`` attribute, and the search goes on.
    Ctrl-C fails the running trial as interrupted (it does not count) and is raised.
    """
    optuna = _optuna()
    import torch

    study_dir = StudyDir(Path(study_dir))
    space, base_tree = study_dir.space(), study_dir.base()
    base = trial_config(base_tree, space, {}, str(study_dir.path / CONFIG_FILE))
    study = study_dir.load(seed=space.sampler.seed + worker, pruner=_pruner(space, base))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    prepared: dict[str, Any] = {}
    ran = 0
    with _signals_as_interrupt(), _restored(lambda: torch.set_num_threads(before)):
        while True:
            with study_dir.lock():
                full = _counted(study) >= trials
                if full or (deadline is not None and time.time() >= deadline):
                    return ran
                trial = study.ask()
            ran += 1
            _run_trial(study, trial, study_dir, space, base_tree, threads, prepared, optuna)


@contextlib.contextmanager
def _restored(restore) -> Iterator[None]:
    try:
        yield
    finally:
        restore()


def _run_trial(study, trial, study_dir: StudyDir, space, base_tree, threads, prepared, optuna):
    number = trial.number
    try:
        values = space.sample(trial)
        config = trial_config(base_tree, space, values, f"trial {number}").on_machine(
            threads=threads, progress=False
        )
    except ConfigError as err:
        logger.warning("trial %d: %s", number, _one_line(err))
        trial.set_user_attr("error", _one_line(err))
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return
    run = study_dir.trial_dir(number)
    trial.set_user_attr("run", str(run.relative_to(study_dir.path)))
    trial.set_user_attr("config", config.experiment())
    key = json.dumps(config.data.model_dump(mode="json"), sort_keys=True)
    try:
        if key not in prepared:
            prepared.clear()  # one data set at a time in memory
            prepared[key] = pipeline.prepare(config.data, progress=False)
        metric = config.train.monitor
        outcome = pipeline.train(
            config, prepared[key], run=run, test=False,
            validate=lambda valid, _test: _Pruning(valid, trial, metric),
        )  # fmt: skip
    except optuna.TrialPruned as pruned:
        logger.info("trial %d pruned: %s", number, pruned)
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        return
    except TowerkitError as err:
        logger.warning("trial %d failed: %s", number, err)
        trial.set_user_attr("error", str(err))
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return
    except BaseException:
        trial.set_user_attr("interrupted", True)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        raise
    result = outcome.result
    trial.set_user_attr("best_epoch", result.best_epoch)
    trial.set_user_attr("epochs", len(result.epochs))
    trial.set_user_attr("valid", result.best_valid)
    trial.set_user_attr("train_seconds", round(result.train_seconds, 2))
    value = result.best_valid[metric]
    logger.info("trial %d: %s %.4f (%s)", number, metric, value, _params_text(values))
    study.tell(trial, value)


def _params_text(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_short(v)}" for k, v in values.items()) or "no params"


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# -- the study --------------------------------------------------------------------------------


@dataclass
class StudySummary:
    """What a finished (or stopped) study found; ``summary.json`` holds it."""

    path: Path
    metric: str
    trials: int
    complete: int
    pruned: int
    failed: int
    budget: str
    wall_seconds: float
    trial_seconds: float
    best_trial: int
    best_value: float
    best_params: dict[str, Any]
    best_valid: dict[str, float]
    best_run: str
    test: dict[str, float] | None
    popularity: dict[str, float] | None

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(self).items()}


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
    study_dir = StudyDir(Path(out))
    if resume:
        _check_resume(study_dir, config, space, overrides)
    else:
        _create(study_dir, config, space, overrides, optuna)
    space_, base_tree = study_dir.space(), study_dir.base()
    base = trial_config(base_tree, space_, {}, str(study_dir.path / CONFIG_FILE))
    start = time.time()
    with _signals_as_interrupt(), study_dir.lock(".study.lock", wait=False):
        _fail_stale(study_dir, optuna)
        deadline = None if timeout is None else start + timeout
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        threads = max(1, (base.train.threads or cores or 1) // workers)
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
        return _finish(study_dir, base, space_, final=final)


def _create(study_dir: StudyDir, config, space, overrides, optuna) -> None:
    if config is None or space is None:
        raise TuneError("a new study needs a CONFIG and --space (or --resume an existing one)")
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
    optuna.create_study(study_name=STUDY_NAME, storage=study_dir.storage_url, direction="maximize")


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
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    procs = []
    for k in range(workers):
        command = [
            sys.executable, "-m", "towerkit", "tune-worker", str(study_dir.path),
            "--trials", str(trials), "--worker", str(k), "--threads", str(threads),
        ]  # fmt: skip
        if deadline is not None:
            command += ["--deadline", repr(deadline)]
        log = open(logs / f"worker-{k}.log", "a")  # noqa: SIM115 (closed below)
        # Their own session: a terminal's Ctrl-C reaches this process, which stops them.
        proc = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        procs.append((proc, log))
    study = study_dir.load()
    bar = tqdm(total=trials, desc="trials", disable=not progress)
    try:
        while any(p.poll() is None for p, _ in procs):
            time.sleep(1.0)
            done = _counted(study, running=False)
            if done > bar.n:
                bar.update(done - bar.n)
    except KeyboardInterrupt:
        for p, _ in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p, _ in procs:
            p.wait()
        raise
    finally:
        bar.close()
        for _, log in procs:
            log.close()
    failed = [k for k, (p, _) in enumerate(procs) if p.returncode != 0]
    if failed:
        names = ", ".join(str(logs / f"worker-{k}.log") for k in failed)
        raise TuneError(
            f"{len(failed)} worker(s) stopped or failed (see {names}); the study's finished "
            f"trials are kept: go on with towerkit tune --resume --out {study_dir.path} "
            f"--trials {trials}"
        )


def _finish(study_dir: StudyDir, base: Config, space: Space, *, final: bool):
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
        from towerkit.runs import RunDir

        metrics = RunDir(run).metrics
        if "test" in metrics:  # ranked once already (a resumed study whose best held)
            test, popularity = metrics["test"], metrics.get("popularity")
        else:
            found = pipeline.test_run(run)
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
    )
    data = summary.to_dict()
    text = json.dumps(data, indent=2)
    atomic_write(study_dir.path / SUMMARY_FILE, lambda tmp: tmp.write_text(text))
    write_page(study, summary, study_dir.path / PAGE_FILE)
    return summary


def _span(trials: list) -> float:
    """Seconds from the first trial's start to the last one's end (over every session)."""
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    ends = [t.datetime_complete for t in trials if t.datetime_complete is not None]
    return (max(ends) - min(starts)).total_seconds() if starts and ends else 0.0


def _duration(trial) -> float:
    if trial.datetime_start is None or trial.datetime_complete is None:
        return 0.0
    return (trial.datetime_complete - trial.datetime_start).total_seconds()


# -- the page ---------------------------------------------------------------------------------


def write_page(study: Any, summary: StudySummary, out: Path) -> None:
    """The study's page: its summary, and Optuna's charts (history, learning curves with the
    pruned trials, parameter importances, parallel coordinates, slices), Plotly embedded."""
    from towerkit.report import plotly_js

    js = plotly_js()
    optuna = _optuna()
    vis = optuna.visualization
    figures = [
        ("optimization history", vis.plot_optimization_history),
        ("validation per epoch (pruned trials stop early)", vis.plot_intermediate_values),
        ("parameter importances", vis.plot_param_importances),
        ("parallel coordinates", vis.plot_parallel_coordinate),
        ("each parameter against the objective", vis.plot_slice),
    ]
    e = html.escape
    parts = []
    for title, plot in figures:
        try:
            with warnings.catch_warnings():  # Optuna's doubts about few trials per value
                warnings.simplefilter("ignore")
                figure = plot(study)
        except (ValueError, RuntimeError) as err:  # e.g. importances of a single trial
            parts.append(f"<h2>{e(title)}</h2><p class='note'>{e(str(err))}</p>")
            continue
        figure.update_layout(title=None, height=420, margin={"t": 30})
        if plot is vis.plot_intermediate_values:
            figure.update_layout(xaxis_title="epoch", yaxis_title=f"validation {summary.metric}")
        chart = figure.to_html(full_html=False, include_plotlyjs=False)
        parts.append(f"<h2>{e(title)}</h2>{chart}")
    rows = [
        ("objective", f"validation {summary.metric}"),
        (
            "trials",
            f"{summary.trials} ({summary.complete} complete, {summary.pruned} pruned, "
            f"{summary.failed} failed)",
        ),
        ("budget", summary.budget),
        ("wall time", f"{summary.wall_seconds:.0f} s (trials {summary.trial_seconds:.0f} s)"),
        ("best trial", f"{summary.best_trial}: {summary.metric} {summary.best_value:.4f}"),
        ("best settings", _params_text(summary.best_params)),
    ]
    if summary.test is not None:
        rows.append(("test (once, best trial)", _metrics_text(summary.test)))
    if summary.popularity:
        rows.append(("popularity baseline", _metrics_text(summary.popularity)))
    table = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows)
    parts.append("<h2>trials</h2>" + _trials_table(study))
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>towerkit study {e(str(summary.path))}</title><style>"
        "body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1100px;color:#222}"
        "th{text-align:left;padding-right:1em;vertical-align:top}.note{color:#666}"
        ".trials td,.trials th{border-bottom:1px solid #eee;padding:2px 8px;font-size:0.9em}"
        f"</style><script>{js}</script></head><body>"
        f"<h1>towerkit study: {e(str(summary.path))}</h1><table>{table}</table>"
        + "".join(parts)
        + "</body></html>"
    )
    atomic_write(out, lambda tmp: tmp.write_text(page, encoding="utf-8"))


def _trials_table(study: Any) -> str:
    """Every trial: state, objective, epochs trained, settings, and why it failed."""
    e = html.escape
    head = "<tr><th>trial</th><th>state</th><th>value</th><th>epochs</th><th>settings</th></tr>"
    rows = []
    for t in study.get_trials(deepcopy=False):
        state = "interrupted" if t.user_attrs.get("interrupted") else t.state.name.lower()
        value = t.value if t.value is not None else None
        epochs = len(t.intermediate_values)
        note = t.user_attrs.get("error", "")
        rows.append(
            f"<tr><td>{t.number}</td><td>{e(state)}</td>"
            f"<td>{'' if value is None else f'{value:.4f}'}</td><td>{epochs}</td>"
            f"<td>{e(_params_text(t.params))}{'<br>' + e(note) if note else ''}</td></tr>"
        )
    return f"<table class='trials'>{head}{''.join(rows)}</table>"


def _metrics_text(metrics: dict[str, float]) -> str:
    keys = [k for k in ("hr@10", "ndcg@10", "hr@50", "mrr@10") if k in metrics]
    return ", ".join(f"{k} {metrics[k]:.4f}" for k in keys)
