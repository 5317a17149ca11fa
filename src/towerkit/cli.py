"""The ``towerkit`` command.

Only this module configures logging and prints. Every error a user can cause ends as one line
``error: ...`` on stderr and exit status 1, never a traceback.
"""

from __future__ import annotations

import io
import logging
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from towerkit import datasets
from towerkit.errors import TowerkitError

app = typer.Typer(
    help="Train, evaluate and serve matching models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Known data sets: list, fetch, inspect.", no_args_is_help=True)
app.add_typer(data_app, name="data")

# Piped output gets a wide table rather than rich's 80-column default, which would clip labels.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)
_state = {"progress": True}


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages.")] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Log warnings only, no progress bars.")
    ] = False,
) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    # The terminal shows `level` and above; loggers still pass INFO on, so that a run's
    # train.log is complete even with --quiet.
    terminal = logging.StreamHandler(sys.stderr)
    terminal.setLevel(level)
    terminal.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=min(level, logging.INFO), handlers=[terminal], force=True)
    _state["progress"] = not quiet


@data_app.command("list")
def data_list() -> None:
    """List the known data sets and whether they are cached."""
    table = Table("name", "description", "cached", title=f"data sets ({datasets.towerkit_home()})")
    for name, spec in datasets.DATASETS.items():
        table.add_row(name, spec.description, "yes" if datasets.is_cached(name) else "no")
    console.print(table)


@data_app.command("fetch")
def data_fetch(
    name: Annotated[str, typer.Argument(help="A data set name (see `towerkit data list`).")],
    force: Annotated[bool, typer.Option(help="Fetch again even if the cache is valid.")] = False,
) -> None:
    """Download, verify, normalise and cache a data set (a valid cache is used as is)."""
    path = datasets.fetch(name, force=force, progress=_state["progress"])
    console.print(f"{name}: cached at {path} (source: {datasets.source_of(name)})")


@data_app.command("info")
def data_info(
    name: Annotated[str, typer.Argument(help="A data set name (see `towerkit data list`).")],
) -> None:
    """Print the size and time span of a data set (fetching it first if needed)."""
    interactions = datasets.load(name, progress=_state["progress"])
    first, last = interactions.time_span
    lengths = interactions.frame.groupby("user", sort=False).size()
    table = Table("", name, title=datasets.get_spec(name).description, show_header=False)
    table.add_row("interactions", f"{len(interactions):,}")
    table.add_row("users", f"{interactions.n_users:,}")
    table.add_row("items", f"{interactions.n_items:,}")
    table.add_row(
        "density", f"{len(interactions) / interactions.n_users / interactions.n_items:.2%}"
    )
    table.add_row(
        "interactions per user",
        f"min {lengths.min()}, median {int(lengths.median())}, max {lengths.max()}",
    )
    table.add_row("time span", f"{first:%Y-%m-%d %H:%M:%S} to {last:%Y-%m-%d %H:%M:%S} UTC")
    table.add_row("source", str(datasets.source_of(name)))
    console.print(table)


def _metrics_table(title: str, rows: dict[str, dict[str, float]], ks: list[int]) -> Table:
    names = [f"hr@{k}" for k in ks] + [f"ndcg@{k}" for k in ks] + ["mrr@10", f"coverage@{ks[-1]}"]
    table = Table("", *names, title=title)
    for label, metrics in rows.items():
        table.add_row(label, *(f"{metrics.get(n, float('nan')):.4f}" for n in names))
    return table


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="A YAML config, e.g. configs/ml-1m/dssm.yaml.")],
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a key: --set train.epochs=3 (repeatable)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="The run directory (default runs/CONFIG-TIMESTAMP).")
    ] = None,
) -> None:
    """Fetch, prepare, train, evaluate on the test stage, and write a run directory."""
    from towerkit import pipeline
    from towerkit.config import load_config

    cfg = load_config(config, overrides or [])
    if not _state["progress"]:
        cfg.train.progress = False
    out = out or Path("runs") / f"{config.stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    pipeline.check_run_dir(out)  # fail before training, not after
    log = io.StringIO()
    handler = logging.StreamHandler(log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    package_logger = logging.getLogger("towerkit")
    package_logger.addHandler(handler)
    try:
        prepared = pipeline.prepare(cfg.data, progress=cfg.train.progress)
        outcome = pipeline.train(cfg, prepared)
        pipeline.save_run(outcome, prepared, out, log.getvalue())
    finally:
        package_logger.removeHandler(handler)
    rows = {
        "valid (best epoch)": outcome.metrics["valid"],
        "test": outcome.metrics["test"],
        "popularity (test)": outcome.popularity,
    }
    title = f"{cfg.model.name}, {cfg.train.mode.value}, {cfg.negatives.kind} negatives"
    console.print(_metrics_table(title, rows, cfg.eval.ks))
    console.print(f"run written to {out}")


IndexOption = Annotated[
    str,
    typer.Option(
        "--index", help="exact, annoy, faiss-flat, faiss-hnsw or faiss-ivf (ANN needs its extra)."
    ),
]
IndexOptions = Annotated[
    list[str] | None,
    typer.Option(
        "--option",
        "-o",
        help="An index option: -o n_trees=100, -o ef_search=256, -o nprobe=32 (repeatable).",
    ),
]


def _parse_options(items: list[str] | None) -> dict:
    """``KEY=VALUE`` strings to a dict; values are read as YAML (numbers, booleans, ...)."""
    import yaml

    from towerkit.config import ConfigError

    options = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"index option {item!r} is not KEY=VALUE")
        options[key.strip()] = yaml.safe_load(value)
    return options


@app.command()
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `towerkit train`.")],
    index: IndexOption = "exact",
    options: IndexOptions = None,
) -> None:
    """Re-evaluate a saved run (full catalogue, seen items masked), exactly or through an
    approximate index (then also its recall against exact search and its speed)."""
    from towerkit import pipeline
    from towerkit.config import load_config

    index_options = _parse_options(options)
    metrics = pipeline.evaluate_run(run_dir, index=index, index_options=index_options)
    ks = load_config(run_dir / "config.yaml").eval.ks
    console.print(_metrics_table(f"{run_dir} ({index})", metrics, ks))
    if index != "exact":
        names = [f"index_recall@{k}" for k in ks]
        table = Table("", *(n.replace("index_", "") for n in names), "build s", "queries/s",
                      "exact queries/s", title=f"{index} against exact search")  # fmt: skip
        for stage, m in metrics.items():
            table.add_row(
                stage,
                *(f"{m[n]:.4f}" for n in names),
                f"{m['index_build_s']:.3f}",
                f"{m['index_qps']:,.0f}",
                f"{m['exact_qps']:,.0f}",
            )
        console.print(table)


@app.command()
def recommend(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `towerkit train`.")],
    user: Annotated[
        list[str] | None, typer.Option("--user", "-u", help="A known user's raw id (repeatable).")
    ] = None,
    history: Annotated[
        str | None,
        typer.Option(
            "--history",
            help="A new user's raw item ids, oldest first, comma-separated "
            '(titles may contain commas: "Godfather, The (1972),Heat (1995)").',
        ),
    ] = None,
    k: Annotated[int, typer.Option("-k", "--k", min=1, help="How many items.")] = 10,
    index: IndexOption = "exact",
    options: IndexOptions = None,
) -> None:
    """Top-K items for a known user (seen items excluded) or for a history of items."""
    from towerkit.retrieval import Retriever, parse_id_list

    if bool(user) == (history is not None):
        raise typer.BadParameter("give either --user (one or more) or --history, not both")
    retriever = Retriever.from_run(run_dir, index, **_parse_options(options))
    if user:
        labels = [f"user {u}" for u in user]
        recs = retriever.recommend(user, k)
    else:
        items = parse_id_list(retriever.encoded.item_vocab, history)
        labels = [f"history of {len(items)} item(s)"]
        recs = retriever.recommend_history([items], k)
    show_titles = recs.titles is not None and (recs.titles != recs.items).any()
    for row, label in enumerate(labels):
        columns = ["rank", "item", *(["title"] if show_titles else []), "score"]
        table = Table(*columns, title=f"{label}: top {k} ({index})")
        for rank in range(k):
            item = recs.items[row, rank]
            if item is None:
                break
            cells = [str(rank + 1), str(item)]
            if show_titles:
                cells.append(str(recs.titles[row, rank]))
            table.add_row(*cells, f"{recs.scores[row, rank]:.4f}")
        console.print(table)


def main() -> None:
    """Entry point: run the app and turn user errors into one line and exit status 1."""
    try:
        app()
    except (TowerkitError, ValueError, KeyError, OSError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
