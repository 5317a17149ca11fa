"""The flow of DESIGN.md as functions: prepare -> build -> train, into a run directory.

- :func:`prepare`: fetch a known data set, filter, encode, split;
- ``build_*``: one stage each (model, retrieval task, batches, evaluators) from the config;
- :func:`train`: train and evaluate one config, checkpointing into a run directory when given
  one; :func:`resume` continues an unfinished run where its last checkpoint left it;
- :func:`evaluate_run`: re-evaluate a finished run on data prepared anew (its fingerprint must
  match the run's).

The CLI, the benchmarks and the tests call the same functions. Loading a run for retrieval needs
none of this module (see :mod:`towerkit.runs` and :mod:`towerkit.retrieval`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from towerkit import datasets, distributed
from towerkit.config import Config, ConfigError, DataConfig, SideTableConfig, SplitConfig
from towerkit.data import (
    Interactions,
    Prepared,
    Sequences,
    Split,
    encode,
    held_out_users,
    last_fraction,
    leave_one_out,
    stream,
    temporal_split,
)
from towerkit.data.batches import SequenceBatches, TrainingBatches
from towerkit.data.encoding import encode_features
from towerkit.data.readers import read_interactions, read_side_table
from towerkit.data.vocab import Vocab
from towerkit.errors import DataError
from towerkit.evaluation import Evaluator, query_vectors
from towerkit.index import make_index
from towerkit.models import MODELS, MatchingModel
from towerkit.models import build_model as build_model_from_section
from towerkit.negatives import (
    CatalogueSampler,
    FullNegatives,
    InBatchNegatives,
    MixedNegatives,
    Negatives,
    SampledNegatives,
)
from towerkit.objectives import Mode
from towerkit.runs import RunDir, RunDirError, vectors_column
from towerkit.state import TrainState, epochs_of
from towerkit.task import RetrievalTask
from towerkit.training import Trainer, TrainResult, Validator
from towerkit.types import FeatureKind, SeenPolicy

logger = logging.getLogger(__name__)

__all__ = [
    "Prepared",
    "RunOutcome",
    "build_batches",
    "build_model",
    "build_negatives",
    "build_task",
    "evaluate_run",
    "evaluators",
    "make_split",
    "prepare",
    "resume",
    "train",
]


def make_split(config: SplitConfig, sequences: Sequences) -> Split:
    """The split ``data.split`` names: leave-one-out, a global time cut, the last fraction
    of each user, or held-out users (ComiRec's protocol)."""
    if config.kind == "temporal":
        return temporal_split(sequences, config.test_start, config.valid_start)
    if config.kind == "last_fraction":
        return last_fraction(sequences, config.valid, config.test)
    if config.kind == "held_out_users":
        return held_out_users(sequences, config.valid, config.test, config.history, config.seed)
    return leave_one_out(sequences)


@dataclass(frozen=True)
class Log:
    """A log as read, with the side features to encode and their kinds."""

    interactions: Interactions
    user_features: tuple[str, ...]
    item_features: tuple[str, ...]
    kinds: dict[str, FeatureKind]


def load_log(data: DataConfig, *, progress: bool = True) -> Log:
    """The interactions and side tables of ``data``: a known data set, or files of one's own
    read with the config's column map and declared features."""
    if data.dataset is not None:
        spec = datasets.get_spec(data.dataset)
        return Log(
            datasets.load(data.dataset, progress=progress),
            tuple(spec.user_features if data.user_features is None else data.user_features),
            tuple(spec.item_features if data.item_features is None else data.item_features),
            {},
        )
    c = data.columns
    frame = read_interactions(
        data.path, user=c.user, item=c.item, timestamp=c.timestamp, rating=c.rating,
        weight=c.weight, format=data.format, sep=data.sep, timestamp_unit=c.timestamp_unit,
    )  # fmt: skip
    tables, kinds = _side_tables(data)
    has_time = c.timestamp is not None and data.format != "sequences"
    return Log(
        Interactions(frame, users=tables["users"], items=tables["items"], has_time=has_time),
        *_feature_names(data),
        kinds,
    )


def _side_tables(data: DataConfig) -> tuple[dict[str, pd.DataFrame | None], dict]:
    """The user and item side tables of an own log, and the declared kind of each feature."""
    kinds: dict[str, FeatureKind] = {}
    tables = {}
    for side in ("users", "items"):
        table = getattr(data, side)
        tables[side] = None if table is None else _side_table(table, side[:-1])
        for name, feature in (table.feature_configs() if table else {}).items():
            kinds[name] = feature.kind
    return tables, kinds


def _feature_names(data: DataConfig) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The user and item features to encode: as listed, or every declared one."""
    return (
        tuple(data.user_features if data.user_features is not None else
              (data.users.features if data.users else ())),
        tuple(data.item_features if data.item_features is not None else
              (data.items.features if data.items else ())),
    )  # fmt: skip


def _titles(items: pd.DataFrame | None, vocab: Vocab) -> np.ndarray | None:
    """Each item's title by encoded id (index 0 is padding), where the item table has them."""
    if items is None or "title" not in items.columns:
        return None
    by_item = items.set_index("item")["title"]
    titles = np.empty(len(vocab) + 1, dtype=object)
    titles[0] = ""
    titles[1:] = by_item.reindex(vocab.raw).fillna("").astype(str).to_numpy()
    return titles


def _side_table(table: SideTableConfig, key: str) -> pd.DataFrame:
    """A side table with its declared features (and, for items, the title column)."""
    features = table.feature_configs()
    columns = list(features)
    if table.title is not None and table.title not in columns:
        columns.append(table.title)
    frame = read_side_table(
        table.path,
        key=table.key,
        rename_key=key,
        columns=columns,
        list_columns=[n for n, f in features.items() if f.kind == "multi"],
        list_sep={n: f.sep for n, f in features.items()},
        numeric_columns=[n for n, f in features.items() if f.kind == "numeric"],
        format=table.format,
        sep=table.sep,
    )
    if table.title is not None:
        frame["title"] = frame[table.title].astype(str)
    return frame


def prepare(data: DataConfig, *, progress: bool = True) -> Prepared:
    """Load a known data set or one's own log, filter, encode its side features, split.

    A log of ids and whole-second times with nothing to filter (Parquet shards, one Parquet
    file, one CSV) takes the out-of-core path (:mod:`towerkit.data.stream`: record batches,
    never a frame of the whole log); anything else is read into memory. Both give the same
    prepared data for the same log."""
    if stream.streamable(data) is None:
        try:
            return _prepare_streamed(data, progress=progress)
        except stream.NotStreamable as why:
            logger.info("%s: read in memory (%s)", data.path, why)
    log = load_log(data, progress=progress)
    interactions = log.interactions
    if data.min_user_interactions or data.min_item_interactions or data.min_rating is not None:
        interactions = interactions.filter(
            min_user_interactions=data.min_user_interactions,
            min_item_interactions=data.min_item_interactions,
            min_rating=data.min_rating,
        )
    encoded = encode(
        interactions,
        user_features=log.user_features,
        item_features=log.item_features,
        feature_kinds=log.kinds,
    )
    titles = _titles(interactions.items, encoded.item_vocab)
    split = make_split(data.split, Sequences.from_encoded(encoded))
    return Prepared(encoded, split, titles)


def _prepare_streamed(data: DataConfig, *, progress: bool) -> Prepared:
    c = data.columns
    timestamp = None if data.format == "sequences" else c.timestamp
    encoded, sequences = stream.stream_sequences(
        data.path, user=c.user, item=c.item, timestamp=timestamp, sep=data.sep,
        progress=progress,
    )  # fmt: skip
    tables, kinds = _side_tables(data)
    user_features, item_features = _feature_names(data)
    encoded = dataclasses.replace(
        encoded,
        user_features=encode_features(
            tables["users"], "user", encoded.user_vocab, user_features, kinds
        ),
        item_features=encode_features(
            tables["items"], "item", encoded.item_vocab, item_features, kinds
        ),
    )
    titles = _titles(tables["items"], encoded.item_vocab)
    return Prepared(encoded, make_split(data.split, sequences), titles)


def build_model(config: Config, prepared: Prepared) -> MatchingModel:
    """The model of ``config.model``, sized for the prepared data."""
    encoded = prepared.encoded
    return build_model_from_section(
        config.model,
        n_users=encoded.n_users,
        n_items=encoded.n_items,
        max_len=config.data.max_len,
        user_features=encoded.user_features,
        item_features=encoded.item_features,
    )


def trains_on_windows(config: Config) -> bool:
    """Whether training batches are windows of positions (sequential models, train.windows)."""
    return MODELS[config.model.name].sequential or config.train.windows > 0


def build_negatives(config: Config, n_items: int, train_counts: np.ndarray) -> Negatives:
    """The candidate strategy of ``config.negatives``. Sampled negatives are drawn per window
    when training batches are windows, unless the config says otherwise: ``n`` per position
    would be ``[positions, n, D]`` vectors."""
    n = config.negatives
    if n.kind == "full":
        return FullNegatives(n_items)
    in_batch = InBatchNegatives.from_counts(train_counts)
    if n.kind == "in_batch":
        return in_batch
    sampler = CatalogueSampler.build(n.sampler, train_counts, n.alpha)
    shared = trains_on_windows(config) if n.shared is None else n.shared
    sampled = SampledNegatives(sampler, n.n, shared=shared, seed=config.train.seed)
    return sampled if n.kind == "sampled" else MixedNegatives(in_batch, sampled)


def build_task(config: Config, model: MatchingModel, prepared: Prepared) -> RetrievalTask:
    """The retrieval task: similarity, temperature, objective, negatives, log-q, masking."""
    n = config.negatives
    if n.kind == "full":
        logq, mask_hits = False, True
    else:
        logq = n.logq if n.logq is not None else config.train.mode is Mode.LISTWISE
        mask_hits = n.mask_hits
    return RetrievalTask(
        model.encode_items,
        negatives=build_negatives(config, prepared.encoded.n_items, prepared.train_counts),
        similarity=config.similarity.build(),
        temperature=config.temperature.build(),
        mode=config.train.mode,
        logq=logq,
        mask_hits=mask_hits,
        seen=SeenPolicy.parse(n.exclude_seen),
    )


def build_batches(
    config: Config, prepared: Prepared, model: MatchingModel
) -> TrainingBatches | SequenceBatches:
    """Independent samples, or windows of positions (sequential models; ``train.windows``)."""
    t, max_len = config.train, config.data.max_len
    seen = SeenPolicy.parse(config.negatives.exclude_seen)
    if model.sequential:
        return SequenceBatches(
            prepared.split, batch_size=t.batch_size, max_len=max_len, seed=t.seed, seen=seen
        )
    if t.windows:
        # As many windows per batch as hold batch_size samples on average (windows are often
        # shorter than train.windows: a user's first window, and users with few ratings), so a
        # step trains as many samples as a per-sample batch of the same batch_size.
        probe = SequenceBatches(prepared.split, max_len=t.windows, context=max_len - 1)
        per_window = probe.n_samples / max(probe.n_windows, 1)
        return SequenceBatches(
            prepared.split,
            batch_size=max(1, round(t.batch_size / max(per_window, 1.0))),
            max_len=t.windows,
            context=max_len - 1,
            seed=t.seed,
            seen=seen,
        )
    return TrainingBatches(
        prepared.split, batch_size=t.batch_size, max_len=max_len, seed=t.seed, seen=seen
    )


def evaluators(
    config: Config, prepared: Prepared, *, index_on_test: bool = False
) -> tuple[Evaluator, Evaluator]:
    """Validation and test evaluators. Validation ranks through ``config.eval.index``; the test
    stage is exact unless ``index_on_test`` (``towerkit evaluate --index``)."""
    kwargs = {
        "ks": config.eval.ks,
        "max_len": config.data.max_len,
        "batch_size": config.eval.batch_size,
        "max_bytes": config.eval.max_bytes,
        "sample_users": config.eval.sample_users,
        "sample_seed": config.eval.sample_seed,
        "mask_seen": config.eval.mask_seen,
    }
    n_items = prepared.encoded.n_items
    index = {"index": config.eval.index, "index_options": config.eval.index_options}
    return (
        Evaluator(prepared.split, "valid", n_items, **kwargs, **index),
        Evaluator(prepared.split, "test", n_items, **kwargs, **(index if index_on_test else {})),
    )


@dataclass
class RunOutcome:
    config: Config
    model: MatchingModel
    result: TrainResult
    metrics: dict[str, dict[str, float]]
    popularity: dict[str, float]
    eval_seconds: float
    run: RunDir | None = None
    #: written by rank 0 (under torchrun every rank has an outcome; rank 0's has the run)
    main: bool = True


MakeValidator = Callable[[Evaluator, Evaluator], Validator]


def train(
    config: Config,
    prepared: Prepared | None = None,
    *,
    run: RunDir | str | Path | None = None,
    validate: MakeValidator | None = None,
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
    """
    _require_process_group()
    prepared = prepared or prepare(config.data, progress=config.train.progress)
    check_data(config, prepared)
    if run is not None and not isinstance(run, RunDir) and distributed.context().main:
        run = RunDir.create(run, config, prepared)
    return _fit(config, prepared, run, None, validate)


def _require_process_group() -> None:
    """Under torchrun the process group must be joined first (by :mod:`towerkit.lifecycle`,
    once), or every process would train alone and write the same run."""
    if distributed.launched() and not distributed.context().active:
        raise RuntimeError(
            "launched by torchrun but not in its process group: train through "
            "towerkit.lifecycle (towerkit train), which joins it, or call "
            "towerkit.distributed.setup first"
        )


def check_data(config: Config, prepared: Prepared) -> None:
    """Refuse, before any training, data that cannot give a result: no training sample, no
    validation or test target, or a catalogue smaller than the longest list asked for."""
    n_items, k = prepared.encoded.n_items, max(config.eval.ks)
    if k > n_items:
        raise ConfigError(
            f"eval.ks {config.eval.ks} asks for top-{k} lists from a catalogue of {n_items} "
            f"items; keep eval.ks at most {n_items}"
        )
    split = prepared.split
    starts = split.sequences.offsets[:-1]
    samples = int(np.maximum(split.fit_end - starts - 1, 0).sum())
    longest = int(split.sequences.lengths.max(initial=0))
    what = f"the {config.data.split.kind} split"
    if samples == 0:
        raise DataError(
            f"no training samples: under {what} no user has two training interactions (the "
            f"longest sequence has {longest}; leave-one-out needs at least 4: one history item, "
            "one training target, a validation and a test item)"
        )
    counts = split.counts()
    for stage in ("valid", "test"):
        if counts[stage] == 0:
            raise DataError(f"no user has a {stage} target under {what}")


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
    _require_process_group()
    run.require_data()
    prepared = prepared or prepare(config.data, progress=config.train.progress)
    check_fingerprint(run, prepared)
    check_data(config, prepared)
    return _fit(config, prepared, run, run.load_checkpoint(), validate)


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


def _fit(
    config: Config,
    prepared: Prepared,
    run: RunDir | None,
    state: TrainState | None,
    validate: MakeValidator | None,
) -> RunOutcome:
    if not distributed.context().main:
        run = None  # rank 0 writes the checkpoints and the run
    if run is not None:
        run.remove_stale()  # what a killed writer of this run left behind
    torch.manual_seed(config.train.seed)
    model = build_model(config, prepared)
    task = build_task(config, model, prepared)
    batches = build_batches(config, prepared, model)
    trainer = Trainer(model, task, config.train)
    valid, test = evaluators(config, prepared)
    result = trainer.fit(
        batches,
        validate(valid, test) if validate else valid,
        state=state,
        on_epoch=run.save_checkpoint if run is not None else None,
    )
    test_metrics = test.evaluate(model, task.similarity, trainer.device)
    logger.info(
        "test: HR@10 %.4f, NDCG@10 %.4f (%.2f s)",
        test_metrics.get("hr@10", float("nan")),
        test_metrics.get("ndcg@10", float("nan")),
        test.last_seconds,
    )
    outcome = RunOutcome(
        config=config,
        model=model,
        result=result,
        metrics={"valid": result.best_valid, "test": test_metrics},
        popularity=test.evaluate_popularity(),
        eval_seconds=test.last_seconds,
        run=run,
    )
    if run is not None:
        _finish(run, outcome, prepared, trainer.device)
    return outcome


def _finish(run: RunDir, outcome: RunOutcome, prepared: Prepared, device: torch.device) -> None:
    """Write the model, the vectors and the metrics into the run, and mark it finished."""
    config, model, result = outcome.config, outcome.model.eval(), outcome.result
    encoded, split = prepared.encoded, prepared.split
    sequences = split.sequences
    users = np.arange(1, encoded.n_users + 1)
    # Each user's query at the test point: the history is everything before the test stage.
    vectors = query_vectors(
        model, sequences.items, users, sequences.offsets[users], split.valid_end[users],
        max_len=config.data.max_len, batch_size=config.eval.batch_size, device=device,
    )  # fmt: skip
    histories = pa.ListArray.from_arrays(
        pa.array(sequences.offsets[1:]), pa.array(encoded.item_vocab.decode(sequences.items))
    )
    with torch.no_grad():
        items = model.encode_items(torch.arange(1, encoded.n_items + 1, device=device))
    item_columns = {"item": pa.array(encoded.item_vocab.raw)}
    if prepared.titles is not None:
        item_columns["title"] = pa.array(prepared.titles[1:].astype(str))
    item_columns["vector"] = vectors_column(items)
    metrics = {
        **outcome.metrics,
        "popularity": outcome.popularity,
        "train": {"best_epoch": result.best_epoch, "epochs": epochs_of(result.epochs)},
    }
    timed = ("epoch", "seconds", "samples_per_second", "eval_seconds")
    timing = {
        "train_seconds": sum(e.seconds for e in result.epochs),
        "epochs": [{key: getattr(e, key) for key in timed} for e in result.epochs],
        "test_eval_seconds": outcome.eval_seconds,
        "device": str(device),
        "threads": torch.get_num_threads(),
    }
    run.finish(
        model,
        metrics=metrics,
        timing=timing,
        users=pa.table(
            {
                "user": pa.array(encoded.user_vocab.raw),
                "history": histories,
                "vector": vectors_column(vectors),
            }
        ),
        items=pa.table(item_columns),
    )
    logger.info("run written to %s", run.path)


def evaluate_run(
    run_dir: RunDir | str | Path, index: str = "exact", index_options: dict | None = None
) -> dict[str, dict[str, float]]:
    """Re-evaluate a finished run on its validation and test stages, exactly or through an
    index (see :meth:`Evaluator.evaluate_index` for what an index adds to the metrics).

    The data are prepared anew from the run's config and must match the run's fingerprint.
    """
    make_index(index, **(index_options or {}))  # bad options fail before anything loads
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    run.require_finished()
    run.require_data()
    config = run.config
    prepared = prepare(config.data, progress=config.train.progress)
    check_fingerprint(run, prepared)
    model = run.load_model()
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
    return metrics
