"""The flow of DESIGN.md as functions: prepare -> build -> train, into a run directory.

- preparing data (:mod:`towerkit.runs.preparation`): :func:`prepare` fetches a known data set or
  reads a log, filters, encodes, splits; :func:`check_data` refuses data that cannot give a
  result;
- building components (:mod:`towerkit.runs.components`): ``build_*``, one stage each (model,
  retrieval task, batches, evaluators) from the config;
- here: :func:`train` trains and evaluates one config, checkpointing into a run directory when
  given one; :func:`resume` continues an unfinished run where its last checkpoint left it;
  :func:`evaluate_run` re-evaluates a finished run on data prepared anew (its fingerprint
  must match the run's).

The lifecycle of a run (torchrun, the process group, signals, ``train.log``) is
:mod:`towerkit.runs.lifecycle`'s. The CLI, the benchmarks and the tests call the same functions
(the names of the two modules above are re-exported here). Loading a run for retrieval needs
none of this module (see :mod:`towerkit.runs` and :mod:`towerkit.retrieval`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from towerkit import distributed
from towerkit.config import Config, ConfigError
from towerkit.data import Prepared
from towerkit.data.vocab import BaseVocabs
from towerkit.errors import RunStopped
from towerkit.evaluation import Evaluator, query_vectors
from towerkit.evaluation.outcomes import Outcomes
from towerkit.index import make_index
from towerkit.models import MatchingModel
from towerkit.runs import OUTCOMES_FILE, RunDir, RunDirError
from towerkit.runs.budget import check_memory
from towerkit.runs.components import (
    build_batches,
    build_loss,
    build_model,
    build_negatives,
    build_task,
    evaluators,
    stage_evaluator,
    trains_on_windows,
)
from towerkit.runs.preparation import Log, check_data, load_log, make_split, prepare
from towerkit.runs.tracking import Trackers, require_trackers
from towerkit.runs.warm import WarmStart
from towerkit.training import Trainer, TrainResult, Validator
from towerkit.training.state import TrainState, epochs_of

logger = logging.getLogger(__name__)

__all__ = [
    "Log",
    "Prepared",
    "RunOutcome",
    "WarmStart",
    "build_batches",
    "build_model",
    "build_negatives",
    "build_task",
    "check_data",
    "check_fingerprint",
    "checked",
    "evaluate_run",
    "evaluators",
    "fit",
    "load_log",
    "make_split",
    "prepare",
    "resume",
    "resumed_config",
    "test_run",
    "train",
    "trains_on_windows",
]


@dataclass
class RunOutcome:
    config: Config
    model: MatchingModel
    result: TrainResult
    metrics: dict[str, dict[str, float]]
    popularity: dict[str, float]
    eval_seconds: float
    run: RunDir | None = None
    #: per-user ranks of the test stage (model and popularity baseline)
    outcomes: Outcomes | None = None
    #: written by rank 0 (under torchrun every rank has an outcome; rank 0's has the run)
    main: bool = True


MakeValidator = Callable[[Evaluator, Evaluator], Validator]


def train(
    config: Config,
    prepared: Prepared | None = None,
    *,
    run: RunDir | str | Path | None = None,
    validate: MakeValidator | None = None,
    test: bool = True,
    warm: WarmStart | RunDir | str | Path | None = None,
) -> RunOutcome:
    """Train and evaluate one configuration.

    Args:
        prepared: the prepared data (prepared from ``config.data`` when not given).
        run: a run directory to checkpoint into after every epoch and to finish with the model,
            vectors and metrics: a :class:`RunDir` made with :meth:`RunDir.create`, or a path
            (created; it must not hold anything). None: nothing is written.
        validate: ``validate(valid, test)`` may return the object the trainer validates with
            each epoch (anything with ``evaluate(model, similarity, device)`` and
            ``last_seconds``); by default the validation evaluator. Benchmarks use it to also
            record test metrics per epoch.
        test: rank the test stage with the best weights at the end. False: the test stage is
            never read (a search chooses on validation only; ``test`` passed to ``validate`` is
            None, and the run's metrics hold no test stage until :func:`test_run`).
        warm: a finished run to continue from (see :mod:`towerkit.runs.warm`): its
            vocabularies are extended, its weights and optimiser state loaded. ``prepared``,
            when given, must have been prepared onto its vocabularies.
    """
    warm = warm_start(warm)
    prepared = checked(config, prepared, test=test, warm=warm)
    if run is not None and not isinstance(run, RunDir) and distributed.context().main:
        record = warm.record(prepared, warm.moments(config)[1]) if warm else None
        run = RunDir.create(run, config, prepared, warm=record)
    return fit(config, prepared, run, validate=validate, test=test, warm=warm)


def warm_start(warm: WarmStart | RunDir | str | Path | None) -> WarmStart | None:
    """``warm`` as a :class:`WarmStart` (a run or its path is opened; it must be finished)."""
    return warm if warm is None or isinstance(warm, WarmStart) else WarmStart(warm)


def _require_process_group() -> None:
    """Under torchrun the process group must be joined first (by :mod:`towerkit.runs.lifecycle`,
    once), or every process would train alone and write the same run."""
    if distributed.launched() and not distributed.context().active:
        raise RuntimeError(
            "launched by torchrun but not in its process group: train through "
            "towerkit.runs.lifecycle (towerkit train), which joins it, or call "
            "towerkit.distributed.setup first"
        )


def resume(
    run: RunDir | str | Path,
    prepared: Prepared | None = None,
    *,
    progress: bool | None = None,
    device: str | None = None,
    threads: int | None = None,
    validate: MakeValidator | None = None,
) -> RunOutcome:
    """Continue an unfinished run from its last checkpoint (from the start if no epoch
    finished). The result is bit-identical to training straight through (on the same kind of
    device).

    Args:
        progress, device, threads: this machine's settings; by default the ones the run was
            started with (see :func:`resumed_config`).

    Raises:
        RunDirError: the run is finished already, its data are not found, or the data prepared
            now differ from the data it was trained on.
        ConfigError: a device this machine lacks.
    """
    run = run if isinstance(run, RunDir) else RunDir(run)
    if run.finished:
        raise RunDirError(f"{run.path}: the run is finished already; there is nothing to resume")
    config = resumed_config(run, device=device, threads=threads, progress=progress)
    prepared = checked(config, prepared, resuming=run)
    return fit(config, prepared, run, run.load_checkpoint(), validate=validate)


def checked(
    config: Config,
    prepared: Prepared | None = None,
    *,
    resuming: RunDir | None = None,
    test: bool = True,
    warm: WarmStart | None = None,
) -> Prepared:
    """Every check a run passes before anything of it is built or written, in one place:
    under torchrun the process group is joined; the trackers can be reached; the data
    (prepared from ``config.data`` when not given) can give a result and, for a run being
    resumed, are the data it was trained on; the run fits in memory. Returns the data.
    ``test``: the run will rank the test stage (False: the checks never read it either).

    Raises:
        RuntimeError: launched by torchrun without joining its process group.
        MissingExtra, ConfigError, DataError, RunDirError: a check that fails (one line).
    """
    _require_process_group()
    require_trackers(config.train.track, config.train.mlflow_uri)
    if resuming is not None:
        if distributed.context().main:  # rank 0 writes
            resuming.require_writable()
        resuming.require_data()
    if warm is not None:
        warm.check_config(config)
    prepared = prepared or prepare(
        config.data, progress=config.train.progress, base=base_vocabs(warm, resuming)
    )
    if warm is not None:
        warm.check_data(prepared)
    if resuming is not None:
        check_fingerprint(resuming, prepared)
    check_data(config, prepared, test=test)
    check_memory(config, prepared)
    return prepared


def base_vocabs(warm: WarmStart | None, run: RunDir | None) -> BaseVocabs | None:
    """The vocabularies data are prepared onto: a warm start's parent's; a warm-started run's
    own (re-preparing its log gives its ids back); None for a run trained from scratch."""
    if warm is not None:
        return warm.vocabs
    if run is not None and run.parent is not None:
        return run.base_vocabs()
    return None


def resumed_config(
    run: RunDir,
    *,
    device: str | None = None,
    threads: int | None = None,
    progress: bool | None = None,
) -> Config:
    """The config a run resumes with: its saved experiment, on this machine. The device and
    threads default to those the run was started with, checked against this machine.

    Raises:
        ConfigError: a device this machine lacks (the message says how to resume elsewhere).
    """
    recorded = run.machine.get("train", {})
    device = device or recorded.get("device")
    threads = recorded.get("threads") if threads is None else threads
    try:
        return run.config.on_machine(device=device, threads=threads, progress=progress)
    except ConfigError as err:
        raise ConfigError(
            f"{run.path}: the run was trained on {device}; {err}; resume it here with --device cpu"
        ) from None


def check_fingerprint(run: RunDir, prepared: Prepared) -> None:
    """Refuse data that differ from the data the run was trained on."""
    then, now = run.data, prepared.summary()
    if now["fingerprint"] != then["fingerprint"]:
        raise RunDirError(
            f"{run.path}: the data prepared now differ from the data the run was trained on "
            f"(now {now['n_users']:,} users, {now['n_items']:,} items, "
            f"{now['interactions']:,} interactions; then {then['n_users']:,}, "
            f"{then['n_items']:,}, {then['interactions']:,}; fingerprint "
            f"{now['fingerprint'][:12]} != {then['fingerprint'][:12]}): the data set, its "
            "cache or the config's data section changed"
        )


def fit(
    config: Config,
    prepared: Prepared,
    run: RunDir | None = None,
    state: TrainState | None = None,
    *,
    validate: MakeValidator | None = None,
    test: bool = True,
    warm: WarmStart | None = None,
) -> RunOutcome:
    """Build the run's components and train them (from ``state``, a checkpoint, when
    resuming; from ``warm``'s weights and optimiser state, when continuing a finished run),
    then rank the test stage (``test``) and finish ``run``. Checks nothing: the caller ran
    :func:`checked` (as :func:`train`, :func:`resume` and the lifecycle do).
    """
    if not distributed.context().main:
        run = None  # rank 0 writes the checkpoints and the run
    if run is not None:
        run.remove_stale()  # what a killed writer of this run left behind
    torch.manual_seed(config.train.seed)
    model = build_model(config, prepared)
    task, contrastive = build_loss(config, model, prepared)
    batches = build_batches(config, prepared, model)
    trainer = Trainer(model, task, config.train, contrastive=contrastive)
    moments = None
    if warm is not None and state is None:  # (a resumed warm run has its own checkpoint)
        warm.load(model, task)
        moments = warm.moments(config)[0]
    if test:
        valid, tester = evaluators(config, prepared)
    else:
        valid, tester = stage_evaluator(config, prepared, "valid"), None
    # rank 0 tracks; the trackers start before the first epoch and end with the run
    trackers = Trackers(config, run) if config.train.track and distributed.context().main else None

    def on_epoch(state: TrainState) -> None:
        if trackers:  # first: a stop while the checkpoint is written must not lose the epoch
            trackers.log_epoch(state.logs[-1])
        if run is not None:
            run.save_checkpoint(state)

    try:
        result = trainer.fit(
            batches,
            validate(valid, tester) if validate else valid,
            state=state,
            on_epoch=on_epoch if run is not None or trackers else None,
            on_step=trackers.log_step if trackers else None,
            moments=moments,
        )
        if tester is not None:
            outcome = _test(config, model, trainer, tester, result)
        else:
            outcome = RunOutcome(config, model, result, {"valid": result.best_valid}, {}, 0.0)
        outcome.run = run
        if run is not None:
            _finish(run, outcome, prepared, trainer.device)
    except BaseException as err:
        if trackers:
            interrupted = isinstance(err, (KeyboardInterrupt, RunStopped))
            trackers.close("KILLED" if interrupted else "FAILED")
        raise
    if trackers:
        trackers.finish(_metrics_file(outcome), result.best_epoch)
        trackers.close()
    return outcome


def _test(
    config: Config, model: MatchingModel, trainer: Trainer, test: Evaluator, result: TrainResult
) -> RunOutcome:
    """Rank the test stage with the best weights, beside the popularity baseline."""
    test_metrics, popularity, outcomes = _rank_test(
        test, model, trainer.task.similarity, trainer.device
    )
    return RunOutcome(
        config=config,
        model=model,
        result=result,
        metrics={"valid": result.best_valid, "test": test_metrics},
        popularity=popularity,
        eval_seconds=test.last_seconds,
        outcomes=outcomes,
    )


def _rank_test(
    test: Evaluator, model: MatchingModel, similarity: Any, device: torch.device | str = "cpu"
) -> tuple[dict[str, float], dict[str, float], Outcomes]:
    """The test stage's metrics, the popularity baseline's, and the per-user outcomes."""
    metrics = test.evaluate(model, similarity, device)
    logger.info(
        "test: HR@10 %.4f, NDCG@10 %.4f (%.2f s)",
        metrics.get("hr@10", float("nan")),
        metrics.get("ndcg@10", float("nan")),
        test.last_seconds,
    )
    popularity_ids = test.popularity_ids()
    return metrics, test.ranking(popularity_ids), test.outcomes(popularity_ids=popularity_ids)


def _metrics_file(outcome: RunOutcome) -> dict[str, Any]:
    """What ``metrics.json`` holds."""
    result = outcome.result
    return {
        **outcome.metrics,
        "popularity": outcome.popularity,
        "train": {"best_epoch": result.best_epoch, "epochs": epochs_of(result.epochs)},
    }


def _finish(run: RunDir, outcome: RunOutcome, prepared: Prepared, device: torch.device) -> None:
    """Write the model, the vectors and the metrics into the run, and mark it finished."""
    config, model, result = outcome.config, outcome.model.eval(), outcome.result
    encoded, split = prepared.encoded, prepared.split
    sequences = split.sequences
    users = np.arange(1, encoded.n_users + 1)
    # Each user's query at the test point: the history is everything before the test stage.
    # Made at the time of the test target (a user without one: at the last time of the log).
    last = np.maximum(sequences.offsets[users + 1] - 1, 0)
    at = sequences.timestamps[np.minimum(split.valid_end[users], last)]
    vectors = query_vectors(
        model, sequences.items, users, sequences.offsets[users], split.valid_end[users],
        max_len=config.data.max_len, batch_size=config.eval.batch_size, device=device,
        timestamps=sequences.timestamps, at=at,
    )  # fmt: skip
    with torch.no_grad():
        items = model.encode_items(torch.arange(1, encoded.n_items + 1, device=device))
    metrics = _metrics_file(outcome)
    timed = ("epoch", "seconds", "samples_per_second", "eval_seconds")
    timing = {
        "train_seconds": sum(e.seconds for e in result.epochs),
        "epochs": [{key: getattr(e, key) for key in timed} for e in result.epochs],
        "test_eval_seconds": outcome.eval_seconds,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "precision": result.precision,
        "compile": result.compiled,
    }
    run.finish(
        model,
        prepared,
        user_vectors=vectors,
        item_vectors=items,
        metrics=metrics,
        timing=timing,
        outcomes=outcome.outcomes,
    )
    logger.info("run written to %s", run.location)


def evaluate_run(
    run_dir: RunDir | str | Path,
    index: str = "exact",
    index_options: dict | None = None,
    *,
    save: bool = False,
) -> dict[str, dict[str, float]]:
    """Re-evaluate a finished run on its validation and test stages, exactly or through an
    index (see :meth:`Evaluator.evaluate_index` for what an index adds to the metrics).

    The data are prepared anew from the run's config and must match the run's fingerprint.
    ``save`` (re)writes the run's ``outcomes.parquet`` from this test ranking (what the report
    and ``towerkit compare`` read; a run from before they existed gets one this way).
    """
    make_index(index, **(index_options or {}))  # bad options fail before anything loads
    run, prepared, model = _open_finished(run_dir)
    config = run.config
    eval_config = config.eval.model_copy(
        update={"index": index, "index_options": dict(index_options or {})}
    )
    valid, test = evaluators(
        config.model_copy(update={"eval": eval_config}), prepared, index_on_test=True
    )
    similarity = config.similarity.build()
    start = time.perf_counter()
    metrics: dict[str, Any] = {
        "valid": valid.evaluate(model, similarity),
        "test": test.evaluate(model, similarity),
    }
    logger.info("evaluated %s in %.2f s", run.path, time.perf_counter() - start)
    if save:
        run.write_outcomes(test.outcomes())
        logger.info("per-user outcomes written to %s", run.path / OUTCOMES_FILE)
    return metrics


def test_run(
    run_dir: RunDir | str | Path, *, progress: bool | None = None
) -> dict[str, dict[str, float]]:
    """Rank the test stage of a finished run trained without it (``train(..., test=False)``:
    a search's trial), once: its ``metrics.json`` gains the test and popularity metrics and
    the run its ``outcomes.parquet``, as if it had been trained with its test stage.
    ``progress``: show the data's preparation (None: the run's own setting).

    Returns:
        ``{"test": ..., "popularity": ...}``.
    """
    run, prepared, model = _open_finished(run_dir, progress=progress)
    config = run.config
    test = stage_evaluator(config, prepared, "test", depth=config.eval.depth)
    metrics, popularity, outcomes = _rank_test(test, model, config.similarity.build())
    run.write_outcomes(outcomes)
    found = {"test": metrics, "popularity": popularity}
    run.update_metrics(found)
    return found


def _open_finished(
    run_dir: RunDir | str | Path, *, progress: bool | None = None
) -> tuple[RunDir, Prepared, MatchingModel]:
    """A finished run, its data prepared anew (the fingerprint must match) and its model."""
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    run.require_finished()
    run.require_data()
    run.data  # noqa: B018  (the run's own files are read, and checked, before the data)
    model = run.load_model()
    shown = run.config.train.progress if progress is None else progress
    prepared = prepare(run.config.data, progress=shown, base=base_vocabs(None, run))
    check_fingerprint(run, prepared)
    return run, prepared, model
