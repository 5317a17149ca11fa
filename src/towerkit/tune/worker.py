"""A worker of a study: asks Optuna for a trial, trains it with its test stage never read, and
reports every epoch's validation metric to the pruner."""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from towerkit.config import (
    ConfigError,
)
from towerkit.errors import RunInterrupted, TowerkitError
from towerkit.runs import lifecycle, pipeline
from towerkit.runs.processes import signals_as_interrupt
from towerkit.tune.space import _one_line, trial_config
from towerkit.tune.study import CONFIG_FILE, StudyDir, _counted, _optuna, _pruner

logger = logging.getLogger(__name__)


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
    with (
        signals_as_interrupt(signal.SIGTERM, signal.SIGINT),
        _restored(lambda: torch.set_num_threads(before)),
    ):
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
        # A trial is a run like any other: its lifecycle owns the directory, the log and
        # the signals; a pruned trial's run is kept as it stopped.
        outcome = lifecycle.train(
            config, run, prepared=prepared[key], test=False,
            validate=lambda valid, _test: _Pruning(valid, trial, metric),
            keep_on=(optuna.TrialPruned,),
        )  # fmt: skip
    except optuna.TrialPruned as pruned:
        logger.info("trial %d pruned: %s", number, pruned)
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        return
    except (KeyboardInterrupt, RunInterrupted):  # Ctrl-C, SIGTERM: the trial does not count
        trial.set_user_attr("interrupted", True)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        raise KeyboardInterrupt from None
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
