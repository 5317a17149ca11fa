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


@app.command()
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `towerkit train`.")],
) -> None:
    """Re-evaluate a saved run (full catalogue, seen items masked)."""
    from towerkit import pipeline
    from towerkit.config import load_config

    metrics = pipeline.evaluate_run(run_dir)
    ks = load_config(run_dir / "config.yaml").eval.ks
    console.print(_metrics_table(str(run_dir), metrics, ks))


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
