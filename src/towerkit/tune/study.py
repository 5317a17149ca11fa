"""A study's directory: Optuna's storage, the base config and the space as given, a trial's
run directory, the lock that counts trials, the pruner, and the summary a finished study
writes."""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from towerkit.config import (
    Config,
)
from towerkit.errors import MissingExtra
from towerkit.tune.space import Space, TuneError, read_space

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


def _optuna():
    try:
        import optuna
    except ImportError:
        raise MissingExtra("tuning needs optuna: pip install 'towerkit[tune]'") from None
    optuna.logging.disable_default_handler()  # its records go through our logging
    optuna.logging.enable_propagation()
    return optuna


@dataclass
class StudyDir:
    """A study's directory (see the module docstring)."""

    path: Path

    @property
    def storage_url(self) -> str:
        """The study's SQLite storage, as Optuna names it."""
        return f"sqlite:///{(self.path / STORAGE_FILE).absolute()}"

    def exists(self) -> bool:
        """Whether the study has been created."""
        return (self.path / STORAGE_FILE).exists()

    def base(self) -> dict:
        """The base config the trials vary (a dict)."""
        return yaml.safe_load((self.path / CONFIG_FILE).read_text())

    def space(self) -> Space:
        """The search space."""
        return read_space(self.path / SPACE_FILE)

    def trial_dir(self, number: int) -> Path:
        """The run directory of trial ``number``."""
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
        """The study in Optuna's storage.

        Raises:
            TuneError: ``study.db`` is not a study Optuna can read (garbage, truncated, another
                database), named with SQLite's reason.
        """
        optuna = _optuna()
        from sqlalchemy.exc import SQLAlchemyError

        space = self.space()
        sampler = optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=space.sampler.startup_trials, constant_liar=True
        )
        storage = self.path / STORAGE_FILE
        with open(storage, "rb") as handle:  # before SQLAlchemy, which would write into it
            if handle.read(16) != b"SQLite format 3\x00":
                raise TuneError(
                    f"{storage}: not a study towerkit can read (not an SQLite database); keep "
                    "the file aside and start a new study with another --out"
                )
        try:
            study = optuna.load_study(
                study_name=STUDY_NAME, storage=self.storage_url, sampler=sampler, pruner=pruner
            )
            study.get_trials(deepcopy=False)  # a damaged file fails here, not mid-study
        except (SQLAlchemyError, KeyError, optuna.exceptions.OptunaError) as err:
            reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
            raise TuneError(
                f"{storage}: not a study towerkit can read ({reason}); keep the file aside "
                "and start a new study with another --out"
            ) from None
        return study


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
    #: the base config's trial (trial 0, where the space can take its values): its validation
    #: value, None when it was pruned or failed or the study has no such trial
    base_trial: int | None = None
    base_value: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The summary as plain values (paths as text), for JSON."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(self).items()}
