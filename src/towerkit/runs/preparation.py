"""Preparing data: a known data set or one's own log read, filtered, encoded and split, as
a config's ``data`` section says; and the check that the prepared data can give a result.

A log of ids and whole-second times with nothing to filter takes the out-of-core path
(:mod:`towerkit.data.stream`); anything else is read into memory. Both give the same prepared
data for the same log.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from towerkit import datasets, storage
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
from towerkit.data.encoding import encode_features, onto
from towerkit.data.partitions import describe, partition_filter
from towerkit.data.readers import read_interactions, read_side_table
from towerkit.data.split import Stage
from towerkit.data.vocab import BaseVocabs, Vocab
from towerkit.errors import DataError
from towerkit.storage import is_url
from towerkit.types import FeatureKind

logger = logging.getLogger(__name__)

__all__ = ["Log", "check_data", "load_log", "make_split", "prepare"]


def make_split(config: SplitConfig, sequences: Sequences) -> Split:
    """The split ``data.split`` names: leave-one-out, a global time cut, the last fraction
    of each user, or held-out users (ComiRec's protocol)."""
    if config.kind == "temporal":
        return temporal_split(
            sequences, config.test_start, config.valid_start, config.train_start,
            config.replay, config.seed,
        )  # fmt: skip
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


def localised(data: DataConfig, *, progress: bool = True) -> tuple[DataConfig, tuple[dict, ...]]:
    """``data`` with each URL (the log, its side tables) replaced by a local view of the
    objects it names (:func:`towerkit.storage.fetch`: each object downloaded once, by ETag),
    and the record of those objects. A log's prefix gives its Parquet objects in the partitions
    asked for: the others are never downloaded.

    Raises:
        StorageError: a missing bucket or key, access denied, a network failure.
        DataError: a prefix without a Parquet object in the partitions asked for.
    """
    keep = partition_filter(data.partition_spec())
    objects: list[dict] = []
    update: dict[str, object] = {}
    if is_url(data.path):

        def shard(relative: str) -> bool:
            is_parquet = relative.lower().endswith((".parquet", ".pq"))
            return is_parquet and (keep is None or keep(relative))

        fetched = storage.fetch(str(data.path), shard, progress=progress)
        if not fetched.objects:
            asked = f" in the partitions asked for ({describe(data.partition_spec())})"
            raise DataError(f"{data.path}: no Parquet object{asked if keep else ''}")
        update["path"] = fetched.path
        objects += fetched.records()
    for side in ("users", "items"):
        table = getattr(data, side)
        if table is not None and is_url(table.path):
            fetched = storage.fetch(str(table.path), progress=progress)
            update[side] = table.model_copy(update={"path": fetched.path})
            objects += fetched.records()
    return (data.model_copy(update=update) if update else data), tuple(objects)


def load_log(data: DataConfig, *, progress: bool = True) -> Log:
    """The interactions and side tables of ``data``: a known data set, or files of one's own
    (local, or fetched from a bucket) read with the config's column map and declared
    features."""
    data, _ = localised(data, progress=progress)
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
        keep=partition_filter(data.partition_spec()),
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


#: item-table columns that are never a label to colour items by
_NOT_LABELS = {"item", "title", "movie_id", "year"}
#: a label with more values than this would not make a readable legend
MAX_LABELS = 30


def item_labels(items: pd.DataFrame | None, vocab: Vocab) -> tuple[str, np.ndarray] | None:
    """The first categorical column of the item table (strings, or lists of strings) with at
    most :data:`MAX_LABELS` values, as one label per encoded item id (index 0 is padding). An
    item with several values (a film of three genres) takes its least common one, the most
    specific. None where the table has no such column."""
    if items is None:
        return None
    for name in items.columns:
        if name in _NOT_LABELS:
            continue
        column = items[name]
        first = column.dropna().head(1).tolist()
        if not first:
            continue
        if isinstance(first[0], (list, tuple, np.ndarray)):
            exploded = column.explode()
        elif isinstance(first[0], str):
            exploded = column
        else:
            continue
        exploded = exploded.dropna().astype(str)
        frequency = exploded.value_counts()
        if not 1 < len(frequency) <= MAX_LABELS:
            continue
        # per item, the value of the lowest catalogue frequency
        ranked = pd.DataFrame({"row": exploded.index, "value": exploded.to_numpy()})
        ranked["frequency"] = frequency.reindex(ranked["value"]).to_numpy()
        chosen = ranked.sort_values(["frequency", "value"]).drop_duplicates("row")
        by_row = pd.Series(chosen["value"].to_numpy(), index=chosen["row"].to_numpy())
        by_item = pd.Series(by_row.reindex(items.index).to_numpy(), index=items["item"].to_numpy())
        labels = np.empty(len(vocab) + 1, dtype=object)
        labels[0] = ""
        labels[1:] = by_item.reindex(vocab.raw).fillna("unknown").astype(str).to_numpy()
        return name, labels
    return None


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


def prepare(data: DataConfig, *, progress: bool = True, base: BaseVocabs | None = None) -> Prepared:
    """Load a known data set or one's own log, filter, encode its side features, split.

    ``base``: the vocabularies of a run to continue (a warm start): its users, items and
    feature values keep their integers, the log's new ones are numbered after them.

    A log of ids and whole-second times with nothing to filter (Parquet shards, one Parquet
    file, one CSV) takes the out-of-core path (:mod:`towerkit.data.stream`: record batches,
    never a frame of the whole log); anything else is read into memory. Both give the same
    prepared data for the same log. A log in a bucket is downloaded first (see
    :func:`localised`), and the objects read are recorded with the prepared data."""
    data, objects = localised(data, progress=progress)
    if stream.streamable(data) is None:
        try:
            prepared = _prepare_streamed(data, progress=progress, base=base)
            return dataclasses.replace(prepared, objects=objects)
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
        if base is not None:  # the side rows of known ids the filter left out stay theirs
            interactions = dataclasses.replace(
                interactions, users=log.interactions.users, items=log.interactions.items
            )
    encoded = encode(
        interactions,
        user_features=log.user_features,
        item_features=log.item_features,
        feature_kinds=log.kinds,
        base=base,
        # HSTU's tie order sorts the log as read; the grouping by user below keeps it
        ties=getattr(data.split, "ties", "stable"),
    )
    titles = _titles(interactions.items, encoded.item_vocab)
    split = make_split(data.split, Sequences.from_encoded(encoded))
    labels = item_labels(interactions.items, encoded.item_vocab)
    return Prepared(encoded, split, titles, labels, objects)


def _prepare_streamed(
    data: DataConfig, *, progress: bool, base: BaseVocabs | None = None
) -> Prepared:
    c = data.columns
    timestamp = None if data.format == "sequences" else c.timestamp
    encoded, sequences = stream.stream_sequences(
        data.path, user=c.user, item=c.item, timestamp=timestamp, sep=data.sep,
        progress=progress, keep=partition_filter(data.partition_spec()),
    )  # fmt: skip
    if base is not None:
        users, user_vocab = onto(encoded.users, encoded.user_vocab, base.user)
        items, item_vocab = onto(encoded.items, encoded.item_vocab, base.item)
        if users is not encoded.users:  # users renumbered: regrouped (time order kept)
            sequences = Sequences.from_arrays(
                users, items, encoded.timestamps, len(user_vocab), encoded.weights
            )
        elif items is not encoded.items:  # the same grouping (the arrays are the sequences')
            sequences = dataclasses.replace(sequences, items=items)
        encoded = dataclasses.replace(
            encoded, users=users, items=items, user_vocab=user_vocab, item_vocab=item_vocab
        )
    tables, kinds = _side_tables(data)
    user_features, item_features = _feature_names(data)
    encoded = dataclasses.replace(
        encoded,
        user_features=encode_features(
            tables["users"], "user", encoded.user_vocab, user_features, kinds,
            base.user_features if base else None,
        ),
        item_features=encode_features(
            tables["items"], "item", encoded.item_vocab, item_features, kinds,
            base.item_features if base else None,
        ),
    )  # fmt: skip
    titles = _titles(tables["items"], encoded.item_vocab)
    labels = item_labels(tables["items"], encoded.item_vocab)
    return Prepared(encoded, make_split(data.split, sequences), titles, labels)


def check_data(config: Config, prepared: Prepared, *, test: bool = True) -> None:
    """Refuse, before any training, data that cannot give a result: no training sample, no
    validation or test target, a stage whose every target is masked as seen (``test``: the
    test stage is looked at too), or a catalogue smaller than the longest list asked for."""
    split = prepared.split
    samples = int(np.maximum(split.fit_end - split.first_target, 0).sum())
    longest = int(split.sequences.lengths.max(initial=0))
    what = f"the {config.data.split.kind} split"
    # The data's own shortfalls first: a log too small to train is the cause, and a catalogue
    # too small for eval.ks its symptom.
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
    if config.eval.mask_seen:
        for stage in ("valid", "test") if test else ("valid",):
            _check_reachable(split, stage, prepared.encoded.n_items)
    n_items, k = prepared.encoded.n_items, max(config.eval.ks)
    if k > n_items:
        raise ConfigError(
            f"eval.ks {config.eval.ks} asks for top-{k} lists from a catalogue of {n_items} "
            f"items; keep eval.ks at most {n_items}"
        )


def _check_reachable(split: Split, stage: Stage, n_items: int) -> None:
    """Refuse a stage whose every target is an item its user saw before: eval.mask_seen masks
    them all, and every metric would be 0 (a log with each row repeated does this to the test
    stage). The test stage is looked at only by a run that will rank it: a search never
    reads it."""
    from towerkit.evaluation.evaluator import Queries

    queries = Queries.from_split(split, stage)
    items = split.sequences.items
    # a sample of users first: one target not seen before answers, without the whole log
    if not len(queries) or not queries.sample(1000).seen_targets(items, n_items).all():
        return
    if queries.seen_targets(items, n_items).all():
        duplicates = split.sequences.repeated_rows()
        cause = (
            f"the log repeats {duplicates:,} (user, item, time) rows: drop them, or set"
            if duplicates
            else "set"
        )
        name = "validation" if stage == "valid" else "test"
        raise DataError(
            f"every {name} target is an item its user saw before, and eval.mask_seen masks "
            f"seen items from the ranking, so every metric would be 0; {cause} "
            "eval.mask_seen: false to rank them"
        )
