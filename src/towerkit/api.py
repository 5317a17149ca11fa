"""towerkit from Python: train, open, resume and compare runs, and use one, in a few calls.

The names here are the package's face (``towerkit.train``, ``towerkit.Run``, ...), imported on
first use. They are a thin layer over the same run directories and lifecycle as the CLI: a run
trained here is one ``towerkit report`` or ``towerkit serve`` reads, and the other way round.

The examples in these docstrings run as tests (``tests/test_docstrings.py``), each in an
empty folder; a log of your own is a DataFrame with columns ``user``, ``item`` and
``timestamp`` (``pd.read_csv("log.csv")``):

>>> import towerkit
>>> log = towerkit.example_log(users=100, items=50, interactions=2_000)
>>> run = towerkit.train({"train": {"epochs": 2, "progress": False}}, data=log, out="runs/a")
>>> sorted(run.metrics["test"])[:3]
['coverage@10', 'coverage@50', 'hr@10']
>>> run.recommend([1, 2], k=3).columns.tolist()  # the top 3 of users 1 and 2
['user', 'rank', 'item', 'score']
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from towerkit.errors import TowerkitError

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from towerkit.config.schema import Config
    from towerkit.reports.compare import Comparison
    from towerkit.retrieval.retriever import Recommendations, Retriever
    from towerkit.runs.rundir import RunDir

logger = logging.getLogger(__name__)

__all__ = ["Run", "compare", "example_log", "load_config", "open_run", "resume", "train"]


def load_config(
    source: str | Path | Mapping[str, Any] | Config, overrides: Sequence[str] = ()
) -> Config:
    """A validated config from a YAML file, a dict (the same tree as the YAML) or a config,
    with ``KEY=VALUE`` overrides applied.

    >>> config = towerkit.load_config({"model": {"name": "dssm"}}, ["train.epochs=3"])
    >>> config.model.name, config.train.epochs, config.similarity.name
    ('dssm', 3, 'cosine')
    >>> towerkit.load_config({"train": {"epoch": 3}})
    Traceback (most recent call last):
    ...
    towerkit.config.explain.ConfigError: the config given: train.epoch: unknown key; ...

    A YAML file reads the same way: ``towerkit.load_config("configs/ml-1m/sasrec.yaml")``.

    Raises:
        ConfigError: an unreadable file, an unknown key, a value out of range (one line
            naming the key).
    """
    from towerkit.config import Config, config_from_dict
    from towerkit.config import load_config as load_file

    if isinstance(source, Config):
        if not overrides:
            return source
        return config_from_dict(source.model_dump(mode="json"), list(overrides))
    if isinstance(source, Mapping):
        return config_from_dict(dict(source), list(overrides), source="the config given")
    return load_file(source, list(overrides))


def train(
    config: str | Path | Mapping[str, Any] | Config,
    data: pd.DataFrame | pa.Table | str | Path | None = None,
    out: str | Path | None = None,
    *,
    warm_start: Run | str | Path | None = None,
) -> Run:
    """Train a model and return its finished :class:`Run`.

    Args:
        config: a config, a YAML file or a dict (see :func:`load_config`); keys left out take
            their defaults.
        data: the log, when the config does not name it: a pandas DataFrame or a pyarrow
            Table (its columns named as ``data.columns`` says: ``user``, ``item``,
            ``timestamp`` by default; the run directory carries a copy, so it resumes and
            evaluates without it), or the path of a log file. None: the config's
            ``data.dataset`` or ``data.path`` (ML-1M when it names neither).
        out: the run directory to write (it must not hold anything), or a URL
            (``s3://bucket/runs/a``: an empty prefix; published there with its manifest
            last). None: a new temporary directory, kept after the call (``run.path`` says
            where).
        warm_start: a finished run to continue on this (newer) log, as ``towerkit train
            --from RUN`` does: its users and items keep their vectors, new ones get new rows,
            its weights and optimiser state are loaded. The config must describe the same
            model (model keys, ``data.max_len``, side features).

    >>> log = towerkit.example_log(users=100, items=50, interactions=2_000)
    >>> run = towerkit.train(
    ...     {"model": {"name": "youtube_dnn", "embedding_dim": 16}, "train": {"epochs": 2}},
    ...     data=log,
    ...     out="runs/ytdnn",
    ... )
    >>> run.path.name, run.config.model.embedding_dim
    ('ytdnn', 16)
    >>> 0 < run.metrics["test"]["ndcg@10"] < 1
    True

    A config file names its data: ``towerkit.train("configs/ml-1m/youtube_dnn.yaml")``.

    The next day, on a log with new users and items, the run goes on from yesterday's:

    >>> newer = towerkit.example_log(users=120, items=60, interactions=2_400, seed=1)
    >>> later = towerkit.train(run.config, data=newer, out="runs/ytdnn-2", warm_start=run)
    >>> Path(later.parent) == run.path.absolute(), len(later.lineage)
    (True, 2)

    Raises:
        ConfigError, DataError, RunDirError: as ``towerkit train`` reports them (one line).
        RunInterrupted: Ctrl-C; the run directory is kept, and :func:`resume` goes on.
    """
    from towerkit import storage
    from towerkit.config import Config, config_from_dict
    from towerkit.runs import CARRIED_LOG_FILE, lifecycle, pipeline
    from towerkit.runs.preparation import prepare

    base = load_config(config) if not isinstance(config, Config) else config
    target = storage.location(out) if out is not None else _temporary_run()
    warm = None
    if warm_start is not None:
        warm = pipeline.WarmStart(warm_start.path if isinstance(warm_start, Run) else warm_start)
    if data is None:
        lifecycle.train(base, target, warm=warm)
        return Run(target)
    tree = base.model_dump(mode="json")
    tree["data"].pop("dataset", None)
    if isinstance(data, str | Path):
        given = storage.location(data)
        tree["data"]["path"] = given if storage.is_url(given) else str(Path(given).absolute())
        lifecycle.train(config_from_dict(tree, source="the config given"), target, warm=warm)
        return Run(target)
    with tempfile.TemporaryDirectory(prefix="towerkit-log-") as folder:
        staged = Path(folder) / CARRIED_LOG_FILE
        _write_log(data, staged)
        tree["data"].update(path=str(staged), format="parquet")
        staged_config = config_from_dict(tree, source="the config given")
        if warm is not None:  # a bad config fails before the log is read
            warm.check_config(staged_config)
        prepared = prepare(
            staged_config.data,
            progress=staged_config.train.progress,
            base=warm.vocabs if warm is not None else None,
        )
        # the run's config names the copy it carries, where it will be once created
        local = storage.work_path(str(target)) if storage.is_url(target) else Path(target)
        tree["data"]["path"] = str((local / CARRIED_LOG_FILE).absolute())
        carried = config_from_dict(tree, source="the config given")
        lifecycle.train(carried, target, prepared=prepared, log=staged, warm=warm)
    return Run(target)


def _temporary_run() -> Path:
    path = Path(tempfile.mkdtemp(prefix="towerkit-run-")) / "run"
    logger.info("the run is written to %s (pass out= to choose)", path)
    return path


def _write_log(data: Any, path: Path) -> None:
    """A DataFrame or Table as Parquet, as the readers read it (one clear error otherwise)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if isinstance(data, pa.Table):
        table = data
    elif hasattr(data, "to_parquet") and hasattr(data, "columns"):  # a pandas DataFrame
        try:
            table = pa.Table.from_pandas(data, preserve_index=False)
        except (pa.ArrowException, TypeError, ValueError) as err:
            raise TowerkitError(f"data: a DataFrame Arrow cannot store ({err})") from None
    else:
        raise TowerkitError(
            f"data: a pandas DataFrame, a pyarrow Table or a path, not {type(data).__name__}"
        )
    pq.write_table(table, path)


def example_log(
    users: int = 500, items: int = 200, interactions: int = 20_000, *, seed: int = 0
) -> pd.DataFrame:
    """A synthetic interaction log to try towerkit on, with structure a model can learn:
    users mix a few topics of a long-tailed catalogue, and sessions follow item orders
    (``towerkit data synth`` writes such logs, at any size, as Parquet).

    Columns ``user``, ``item`` (integer ids) and ``timestamp`` (seconds), sorted by user and
    time. Like a log of purchases or first views, a user meets an item once: of the
    ``interactions`` drawn, repeats of a (user, item) pair are dropped (the first kept), so
    there are somewhat fewer rows. The rows depend only on the arguments.

    >>> log = towerkit.example_log(users=100, items=50, interactions=2_000)
    >>> list(log.columns), len(log) <= 2_000
    (['user', 'item', 'timestamp'], True)
    >>> bool(log.duplicated(["user", "item"]).any())
    False

    Raises:
        DataError: sizes that cannot be met (fewer than 5 interactions per user).
    """
    from towerkit.data.synth import SynthSpec, log_table

    frame = log_table(SynthSpec(users, items, interactions, seed=seed)).to_pandas()
    return frame.drop_duplicates(["user", "item"]).reset_index(drop=True)


def open_run(path: str | Path) -> Run:
    """A run directory written before (by :func:`train` or ``towerkit train``).

    >>> log = towerkit.example_log(users=100, items=50, interactions=2_000)
    >>> _ = towerkit.train({"train": {"epochs": 1}}, data=log, out="runs/ytdnn")
    >>> run = towerkit.open_run("runs/ytdnn")  # in a later session, or on another machine
    >>> len(run.recommend([1, 2], k=5))
    10
    >>> towerkit.open_run("runs/missing")
    Traceback (most recent call last):
    ...
    towerkit.runs.rundir.RunDirError: runs/missing: not a run directory ...

    Raises:
        RunDirError: not a run directory.
    """
    return Run(path)


def resume(path: str | Path) -> Run:
    """Continue an unfinished run from its last checkpoint, and return it finished (the
    result is the one training straight through gives).

    A run stopped by Ctrl-C (or a crash, or a machine that went away) keeps its last
    checkpoint, and goes on from it:

    >>> run = towerkit.resume("runs/ytdnn")  # doctest: +SKIP

    Raises:
        RunDirError: not a run, finished already, or its data are not found.
    """
    from towerkit.runs import lifecycle

    lifecycle.resume(path)
    return Run(path)


def compare(
    a: str | Path | Run, b: str | Path | Run, *, resamples: int = 1000, seed: int = 0
) -> Comparison:
    """Paired comparison of run ``b`` against run ``a`` on the same test users: each metric's
    mean difference with a bootstrap interval and a paired t-test (``b="popularity"``: ``a``
    against its popularity baseline).

    >>> log = towerkit.example_log(users=100, items=50, interactions=2_000)
    >>> a = towerkit.train({"train": {"epochs": 2}}, data=log, out="runs/a")
    >>> result = towerkit.compare(a, "popularity", resamples=200)
    >>> first = result.differences[0]
    >>> first.metric, first.n, first.low <= first.mean <= first.high
    ('hr@10', 100, True)

    Raises:
        ReportError: a run that cannot be read, or two runs of different data.
    """
    from towerkit.reports.compare import compare_runs

    def where(run: str | Path | Run) -> str | Path:
        return run.path if isinstance(run, Run) else run

    return compare_runs(where(a), where(b), resamples=resamples, seed=seed)


class Run:
    """A finished run: its metrics and config, and the model to recommend with.

    >>> log = towerkit.example_log(users=100, items=50, interactions=2_000)
    >>> run = towerkit.train({"train": {"epochs": 2}}, data=log, out="runs/ytdnn")
    >>> run.metrics["test"]["hr@10"] >= run.metrics["test"]["ndcg@10"]
    True
    >>> run.recommend([1, 2], k=5).shape  # the top items of known users, seen ones left out
    (10, 4)
    >>> bool(run.recommend(history=[3, 4, 5], k=5)["user"].isna().all())  # a new user's items
    True
    >>> run.similar([3], k=5)["query"].tolist()  # the items nearest to item 3
    [3, 3, 3, 3, 3]
    >>> run.report("report.html").stat().st_size > 10_000  # one offline HTML page
    True
    >>> (run.export("export") / "manifest.json").is_file()  # the ONNX tower, for towerkit serve
    True

    Raises:
        RunDirError: not a run directory, or an unfinished run (resume it).
    """

    def __init__(self, path: str | Path) -> None:
        from towerkit.runs.rundir import RunDir

        self._dir: RunDir = RunDir(path)
        self._dir.require_finished()

    @property
    def path(self) -> Path:
        """The run directory."""
        return self._dir.path

    @property
    def config(self) -> Config:
        """The experiment config the run was trained with."""
        return self._dir.config

    @property
    def metrics(self) -> dict[str, Any]:
        """Validation and test metrics, the popularity baseline and the per-epoch log
        (``metrics.json``)."""
        return self._dir.metrics

    @property
    def parent(self) -> str | None:
        """The run this one continued (``warm_start``, ``towerkit train --from``), or None."""
        return self._dir.parent

    @property
    def lineage(self) -> list[dict[str, Any]]:
        """The generations of a warm-started run, the first first and this one last: each
        one's run directory (None for this one), data fingerprint, users, items and
        interactions. Empty for a run trained from scratch."""
        return self._dir.lineage

    def __repr__(self) -> str:
        test = self.metrics.get("test") or {}
        shown = ", ".join(f"{k} {v:.4f}" for k, v in list(test.items())[:2])
        model = getattr(self.config.model, "name", "?")
        return f"Run({str(self.path)!r}, {model}{', ' + shown if shown else ''})"

    @cached_property
    def retriever(self) -> Retriever:
        """The model over exact search (:class:`~towerkit.retrieval.Retriever`)."""
        from towerkit.retrieval.retriever import Retriever

        return Retriever.from_run(self._dir)

    def recommend(
        self,
        users: Sequence[Any] | None = None,
        k: int = 10,
        *,
        history: Sequence[Any] | None = None,
        where: str | None = None,
        times: Sequence[int] | None = None,
        at: int | None = None,
    ) -> pd.DataFrame:
        """Top-``k`` items of known users (their seen items left out), or of one new user's
        ``history`` (raw item ids, oldest first), as a table: ``user`` (the raw id; None for
        a history), ``rank``, ``item``, ``title`` (when the items have one) and ``score``.
        ``where`` filters on item attributes (``'label == "Comedy"'``). A model that reads
        times (HSTU's ``model.time_bias``) takes the history's ``times`` (epoch seconds, one
        per item) and when the query is made (``at``; default: the last time known).

        Raises:
            UnknownError: a user or item id the model never saw.
            FilterError: a filter that cannot be read.
        """
        if (users is None) == (history is None):
            raise TowerkitError("give users (known raw ids) or history (raw item ids), not both")
        if users is not None:
            users = list(users)
            found = self.retriever.recommend(users, k, where=where, at=at)
            return _table(found, users)
        found = self.retriever.recommend_history(
            [list(history or [])], k, where=where,
            times=None if times is None else [list(times)], at=[at],
        )  # fmt: skip
        return _table(found, [None])

    def similar(
        self, items: Sequence[Any], k: int = 10, *, where: str | None = None
    ) -> pd.DataFrame:
        """The ``k`` items nearest to each of ``items`` (raw ids) by their vectors, the item
        itself left out: ``query`` (the item asked about), ``rank``, ``item``, ``score``.

        Raises:
            UnknownError: an item id the model never saw.
        """
        import numpy as np

        retriever = self.retriever
        ids = retriever.item_vocab.encode(list(items))
        found = retriever.similar(ids, k, [np.array([i]) for i in ids], where=where)
        return _table(found, list(items), key="query")

    def recommend_all(
        self,
        out: str | Path,
        k: int = 100,
        *,
        users: Sequence[Any] | None = None,
        where: str | None = None,
        shard: tuple[int, int] = (0, 1),
        batch: int = 10_000,
        vectors: bool = False,
        index: str = "exact",
        **index_options: Any,
    ) -> Path:
        """Write the top-``k`` items of every known user (or of ``users``, in their order),
        seen items left out, to the Parquet file ``out``: ``user``, ``rank``, ``item``,
        ``score``. In parts of ``batch`` users; a stopped call goes on where it stopped when
        made again with the same arguments. ``shard=(i, n)`` writes the ``i``-th of ``n``
        slices of the users; ``vectors`` also writes their query vectors (``OUT.vectors.parquet``).

        >>> import pandas as pd
        >>> run = towerkit.train({"train": {"epochs": 1}}, towerkit.example_log(100, 50, 2_000))
        >>> recs = pd.read_parquet(run.recommend_all("recs.parquet", k=5))
        >>> len(recs) == 5 * 100, recs.columns.tolist()
        (True, ['user', 'rank', 'item', 'score'])

        Raises:
            UnknownError: a user the model never saw (nothing is written).
            RunInterrupted: Ctrl-C (the finished parts are kept).
        """
        from towerkit.retrieval.bulk import UserShard, recommend_run

        return recommend_run(
            self.path, out, k=k, users=users, where=where, shard=UserShard(*shard),
            batch=batch, vectors=vectors, index=index, index_options=index_options,
            progress=self.config.train.progress,
        )  # fmt: skip

    def report(self, out: str | Path) -> Path:
        """The run's report page (training curves, metrics at every K, where it fails, the
        item map), one offline HTML file."""
        from towerkit.reports import write_report

        write_report([self.path], out)
        return Path(out)

    def export(
        self,
        out: str | Path,
        *,
        index: str | None = None,
        quantize: str | None = None,
        **index_options: Any,
    ) -> Path:
        """An export directory for ``towerkit serve``: the user tower in ONNX (``quantize``:
        ``"int8"`` or ``"fp16"`` for a smaller one), the vectors and an index (by default the
        run's ``eval.index``)."""
        from towerkit.retrieval.export import export_run

        return Path(export_run(self._dir, out, index=index, quantize=quantize,
                               index_options=index_options or None))  # fmt: skip


def _table(found: Recommendations, queries: list[Any], key: str = "user") -> pd.DataFrame:
    import numpy as np
    import pandas as pd

    rows, k = found.items.shape
    frame = pd.DataFrame({
        key: np.repeat(np.asarray(queries + [None] * (rows - len(queries)), dtype=object), k),
        "rank": np.tile(np.arange(1, k + 1), rows),
        "item": found.items.reshape(-1),
        **({"title": found.titles.reshape(-1)} if found.titles is not None else {}),
        "score": found.scores.reshape(-1),
    })  # fmt: skip
    return frame[frame["item"].notna()].reset_index(drop=True)
