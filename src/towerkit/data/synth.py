"""Synthetic interaction logs with structure a model can learn, at any size.

``towerkit data synth --users U --items I --interactions N --seed S --out DIR`` writes Parquet
shards (``DIR/interactions/part-NNNNN.parquet``: ``user``, ``item``, ``timestamp``) and an item
table (``DIR/items.parquet``: ``item``, ``topic``) from this generative model:

- **Topics.** Items belong to ``T`` latent topics of power-law sizes; inside a topic, item
  popularity follows a power law (Zipf, exponent 1: the rank is log-uniform), so the catalogue
  has a long tail. Item ids are a random relabelling: an id says nothing about its topic.
- **Users** have power-law activity (Pareto-distributed lengths, at least ``min_length``) and
  mix 1 to 4 topics with Dirichlet weights, chosen in proportion to topic popularity.
- **Drift.** At a random point of each user's life one of their topics is replaced by another:
  the recent past predicts the next item better than the whole history.
- **Sessions.** A user's log is a run of sessions; each session stays on one of the user's
  topics. Inside a session, an item is either a fresh draw from the topic's popularity or (with
  probability ``follow``) the item after the previous one in the topic's order: sequences carry
  signal that order-aware models can use.
- **Timestamps.** Users start at uniform times over ``span_days``; gaps are exponential, short
  inside a session and long between sessions; a user whose log would outlast the span is
  squeezed into it, so every time lies within two spans of the start.

Everything is vectorised over chunks of users (no Python loop over interactions) and seeded per
chunk, so the output depends only on the arguments. Written to a temporary directory and
renamed at the end: an interrupted run leaves nothing.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from towerkit.errors import DataError
from towerkit.files import staging_dir

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SynthSpec:
    """The size and shape of a synthetic log (see the module docstring).

    Attributes:
        users, items, interactions: the sizes; every user gets at least ``min_length``
            interactions and every item a topic (an item may never be drawn).
        seed: the random seed.
        topics: latent topics (default: about ``sqrt(items) / 2``, at least 4).
        min_length: the shortest user log (leave-one-out needs 4).
        activity: Pareto shape of user activity (smaller: heavier tail).
        follow: chance that an item is the one after the previous in its topic's order.
        session: mean session length (interactions).
        drift: share of users whose topic mix changes once.
        span_days: the time span users start in.
        shard_rows: interactions per Parquet shard.
    """

    users: int
    items: int
    interactions: int
    seed: int = 0
    topics: int = 0
    min_length: int = 5
    activity: float = 1.2
    follow: float = 0.4
    session: float = 8.0
    drift: float = 0.5
    span_days: float = 365.0
    shard_rows: int = 4_000_000

    def __post_init__(self) -> None:
        if self.users < 1 or self.items < 2:
            raise DataError("a synthetic log needs at least 1 user and 2 items")
        if self.interactions < self.users * self.min_length:
            raise DataError(
                f"{self.interactions:,} interactions cannot give {self.users:,} users "
                f"{self.min_length} each; ask for at least {self.users * self.min_length:,}"
            )
        if self.shard_rows < 1:
            raise DataError("shard_rows must be >= 1")

    @property
    def n_topics(self) -> int:
        """The number of latent topics: ``topics``, or about ``sqrt(items) / 2`` (at least 4)."""
        return self.topics or max(4, round(np.sqrt(self.items) / 2))


def user_lengths(spec: SynthSpec, rng: np.random.Generator) -> np.ndarray:
    """Power-law user activity summing to exactly ``spec.interactions``."""
    extra = spec.interactions - spec.users * spec.min_length
    share = rng.pareto(spec.activity, spec.users) + 1e-3
    cap = max(1.0, 100.0 * extra / spec.users)  # the most active user: 100x the mean
    for _ in range(20):  # clip the tail and spread the rest until the sum holds
        share = np.minimum(share / share.sum() * extra, cap)
        if share.sum() >= extra * (1 - 1e-9):
            break
    share = share / share.sum() * extra
    lengths = np.floor(share).astype(np.int64)
    # Hand out the rounding remainder to the largest fractional parts.
    rest = extra - int(lengths.sum())
    if rest:
        lengths[np.argsort(lengths - share)[:rest]] += 1
    return lengths + spec.min_length


@dataclass(frozen=True)
class Catalogue:
    """Topics as contiguous ranges of internal item positions, and the public id of each."""

    starts: np.ndarray  # int64 [T + 1]
    weights: np.ndarray  # float64 [T]: topic popularity
    ids: np.ndarray  # int64 [items]: public id of internal position


def catalogue(spec: SynthSpec, rng: np.random.Generator) -> Catalogue:
    """The topics of ``spec``'s items (power-law sizes and popularities) and a random relabelling of
    item ids."""
    n_topics = min(spec.n_topics, spec.items)
    sizes = 1.0 / np.arange(1, n_topics + 1) ** 0.5  # power-law topic sizes
    sizes = np.maximum(1, np.floor(sizes / sizes.sum() * spec.items)).astype(np.int64)
    sizes[0] += spec.items - sizes.sum()
    order = rng.permutation(n_topics)
    sizes = sizes[order]
    starts = np.zeros(n_topics + 1, dtype=np.int64)
    np.cumsum(sizes, out=starts[1:])
    weights = 1.0 / (1 + rng.permutation(n_topics)) ** 0.8
    ids = rng.permutation(spec.items).astype(np.int64) + 1
    return Catalogue(starts, weights / weights.sum(), ids)


def _user_topics(n_users: int, cat: Catalogue, rng: np.random.Generator) -> np.ndarray:
    """``[n_users, 5]`` topics: four interest slots and the topic a drifting user moves to."""
    return rng.choice(len(cat.weights), size=(n_users, 5), p=cat.weights)


def generate_chunk(
    spec: SynthSpec,
    cat: Catalogue,
    first_user: int,
    lengths: np.ndarray,
    rng: np.random.Generator,
) -> pa.Table:
    """The interactions of users ``first_user .. first_user + len(lengths) - 1``."""
    n_users, total = len(lengths), int(lengths.sum())
    offsets = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    row_user = np.repeat(np.arange(n_users), lengths)
    step = np.arange(total) - offsets[row_user]  # position inside the user's log

    # Interests: 1-4 topics with Dirichlet weights; a drifting user swaps slot 0 at one point.
    topics = _user_topics(n_users, cat, rng)
    k = rng.integers(1, 5, n_users)
    mix = rng.dirichlet(np.ones(4), n_users) * (np.arange(4)[None, :] < k[:, None])
    mix /= mix.sum(1, keepdims=True)
    drift_at = np.where(
        rng.random(n_users) < spec.drift,
        (rng.uniform(0.3, 0.8, n_users) * lengths).astype(np.int64),
        np.iinfo(np.int64).max,
    )

    # Sessions: a new one starts at a user's first step and then with probability 1 / session.
    starts = (step == 0) | (rng.random(total) < 1.0 / spec.session)
    session = np.cumsum(starts) - 1  # session index over the chunk
    session_user = row_user[starts]
    cdf = np.cumsum(mix[session_user], 1)
    slot = (rng.random(len(session_user))[:, None] > cdf).sum(1).clip(0, 3)
    session_topic = topics[session_user, slot]
    session_step = step[starts]
    drifted = (slot == 0) & (session_step >= drift_at[session_user])
    session_topic = np.where(drifted, topics[session_user, 4], session_topic)
    topic = session_topic[session]

    # Items: a fresh popularity draw, or the item after the last fresh one in topic order.
    size = cat.starts[topic + 1] - cat.starts[topic]
    rank = np.floor(np.exp(rng.random(total) * np.log(size + 1.0))).astype(np.int64) - 1
    fresh = starts | (rng.random(total) >= spec.follow)
    last_fresh = np.maximum.accumulate(np.where(fresh, np.arange(total), 0))
    rank = (rank[last_fresh] + (np.arange(total) - last_fresh)) % size
    item = cat.ids[cat.starts[topic] + rank]

    # Time: users start uniformly over the span; minutes apart in a session, days between.
    day = 86_400.0
    begin = 1_600_000_000 + rng.uniform(0, spec.span_days * day, n_users)
    gaps = np.where(starts, rng.exponential(3 * day, total), rng.exponential(300.0, total))
    gaps[step == 0] = 0.0
    elapsed = np.cumsum(gaps)
    elapsed -= elapsed[offsets[:-1]][row_user]
    # A very active user's life is squeezed into the span (times keep their order).
    span = spec.span_days * day
    squeeze = np.minimum(1.0, span / np.maximum(elapsed[offsets[1:] - 1], 1.0))
    elapsed *= squeeze[row_user]
    timestamp = (begin[row_user] + elapsed).astype(np.int64)
    return pa.table(
        {
            "user": pa.array(first_user + row_user + 1, pa.int64()),
            "item": pa.array(item, pa.int64()),
            "timestamp": pa.array(timestamp, pa.int64()),
        }
    )


def _chunks(spec: SynthSpec) -> tuple[Catalogue, Iterator[pa.Table]]:
    """The catalogue of ``spec`` and its log, one table of whole users per shard (each shard
    seeded on its own, so the log depends only on ``spec``)."""
    rng = np.random.default_rng([spec.seed, 0])
    lengths = user_lengths(spec, rng)
    cat = catalogue(spec, rng)
    cuts = np.searchsorted(
        np.cumsum(lengths), np.arange(spec.shard_rows, spec.interactions, spec.shard_rows)
    )
    bounds = np.unique(np.concatenate([[0], cuts + 1, [spec.users]]).clip(0, spec.users))

    def tables() -> Iterator[pa.Table]:
        for index, (a, b) in enumerate(itertools.pairwise(bounds)):
            chunk_rng = np.random.default_rng([spec.seed, 1, index])
            yield generate_chunk(spec, cat, int(a), lengths[a:b], chunk_rng)

    return cat, tables()


def log_table(spec: SynthSpec) -> pa.Table:
    """The log of ``spec`` in memory (``user``, ``item``, ``timestamp``): the same rows that
    :func:`synthesize` writes.

    >>> table = log_table(SynthSpec(users=100, items=40, interactions=1_000, seed=1))
    >>> table.num_rows, table.column_names
    (1000, ['user', 'item', 'timestamp'])
    """
    return pa.concat_tables(list(_chunks(spec)[1]))


def synthesize(spec: SynthSpec, out: Path, *, progress: bool = True) -> Path:
    """Write the log of ``spec`` to ``out`` (which must not exist or be empty); see the module
    docstring for the layout. Returns ``out``."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out}: exists and is not an empty directory; pick another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = staging_dir(out)
    try:
        cat, chunks = _chunks(spec)
        shards = tmp / "interactions"
        shards.mkdir()
        bar = tqdm(total=spec.interactions, unit=" rows", disable=not progress, desc="synth")
        for index, table in enumerate(chunks):
            pq.write_table(table, shards / f"part-{index:05d}.parquet")
            bar.update(table.num_rows)
        bar.close()
        topic_of = np.repeat(np.arange(len(cat.weights)), np.diff(cat.starts))
        topic_rank = np.arange(spec.items) - cat.starts[topic_of]
        items = pa.table(
            {"item": cat.ids, "topic": topic_of, "topic_rank": topic_rank}  # the ground truth
        )
        pq.write_table(items.sort_by("item"), tmp / "items.parquet")
        (tmp / "synth.json").write_text(json.dumps(asdict(spec), indent=2) + "\n")
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info(
        "%s interactions of %s users over %s items (%d topics) written to %s",
        f"{spec.interactions:,}", f"{spec.users:,}", f"{spec.items:,}", len(cat.weights), out,
    )  # fmt: skip
    return out
