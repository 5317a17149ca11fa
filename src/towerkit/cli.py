"""The ``towerkit`` command.

Only this module configures logging and prints. Every error a user can cause (towerkit's own
errors, and the machine's ``OSError``: a full disk, a missing file) ends as one line ``error: ...``
on stderr and exit status 1, never a traceback. Anything else is a bug and says so: a short
"internal error" line (exit status 2), and its traceback under ``-v``. Ctrl-C (or SIGTERM) during
training keeps the last finished epoch's checkpoint, prints the command that resumes it and
exits with status 130. Text that comes from the user (paths, ids, titles, messages) is escaped
before rich renders it, so ``[exp1]`` prints as itself.
"""

from __future__ import annotations

import inspect
import logging
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from towerkit import datasets
from towerkit.errors import RunStopped, TowerkitError
from towerkit.files import check_writable, os_reason
from towerkit.sections import MAX_LENGTH, MAX_SEED

# The range of the command line's numbers, as the config's keys have theirs (a test walks
# every numeric option and fails on one without both ends): far beyond any real use, short of
# a request that could never end or fit.
MAX_IDS = 1 << 31  # users or items of a synthetic log
MAX_INTERACTIONS = 10**11
MAX_PROCESSES = 1024  # processes of --nproc and --workers, threads
MAX_TRIALS = 100_000
MAX_SECONDS = 366 * 86_400  # a year
MAX_EPOCH_SECONDS = 10**11  # a time.time() (the year 5138)
MAX_K = 100_000  # a cut-off, or items recommended per user
MAX_RESAMPLES = 100_000  # bootstrap resamples

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
_state = {"progress": True, "verbose": False}


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
    if not verbose:  # other libraries' notes (faiss's loader, Milvus Lite's server) only with -v
        terminal.addFilter(lambda r: r.name.startswith("towerkit") or r.levelno >= logging.WARNING)
    logging.basicConfig(level=min(level, logging.INFO), handlers=[terminal], force=True)
    _state["progress"] = not quiet
    _state["verbose"] = verbose


@data_app.command("list")
def data_list() -> None:
    """List the known data sets and whether they are cached."""
    table = Table(
        "name", "description", "cached", title=escape(f"data sets ({datasets.towerkit_home()})")
    )
    for name, spec in datasets.DATASETS.items():
        table.add_row(name, escape(spec.description), "yes" if datasets.is_cached(name) else "no")
    console.print(table)


@data_app.command("fetch")
def data_fetch(
    name: Annotated[str, typer.Argument(help="A data set name (see `towerkit data list`).")],
    force: Annotated[bool, typer.Option(help="Fetch again even if the cache is valid.")] = False,
) -> None:
    """Download, verify, normalise and cache a data set (a valid cache is used as is)."""
    path = datasets.fetch(name, force=force, progress=_state["progress"])
    console.print(escape(f"{name}: cached at {path} (source: {datasets.source_of(name)})"))


@data_app.command("info")
def data_info(
    name: Annotated[str, typer.Argument(help="A data set name (see `towerkit data list`).")],
) -> None:
    """Print the size, activity and time span of a known data set (fetched if needed)."""
    _print_report(name, datasets.load(name, progress=_state["progress"]))
    console.print(escape(f"source: {datasets.source_of(name)}"))


def _print_report(label: str, interactions) -> object:
    from towerkit.data.inspect import inspect_log

    report = inspect_log(interactions)
    table = Table("", escape(label), show_header=False)
    for key, value in report.rows_to_show():
        table.add_row(key, escape(value))
    console.print(table)
    return report


@data_app.command("inspect")
def data_inspect(
    log: Annotated[
        str,
        typer.Argument(
            help="A log file, a directory of Parquet shards, or a known data set's name."
        ),
    ],
    format: Annotated[
        str | None,
        typer.Option(help="csv, tsv, parquet, jsonl or sequences (default: from the suffix)."),
    ] = None,
    sep: Annotated[str | None, typer.Option(help="The separator of a text file.")] = None,
    user: Annotated[str, typer.Option(help="The user column.")] = "user",
    item: Annotated[str, typer.Option(help="The item column.")] = "item",
    timestamp: Annotated[
        str | None, typer.Option(help="The time column; --no-time: none, the file is in order.")
    ] = "timestamp",
    no_time: Annotated[bool, typer.Option("--no-time", help="The log has no time column.")] = False,
    unit: Annotated[str, typer.Option(help="Unit of numeric times: s, ms, us, ns.")] = "s",
    rating: Annotated[str | None, typer.Option(help="The rating column, if any.")] = None,
    weight: Annotated[str | None, typer.Option(help="The weight column, if any.")] = None,
    write_config: Annotated[
        Path | None,
        typer.Option("--write-config", help="Write a starter config for this log to FILE."),
    ] = None,
) -> None:
    """What to check before training: rows, users, items, density, interactions per user and
    per item, time span, duplicates, users too short to split; and a starter config."""
    from towerkit.config import ConfigError
    from towerkit.config.starter import starter_config
    from towerkit.data.readers import detect_format, read_interactions

    if write_config is not None and write_config.exists():
        raise ConfigError(f"{write_config}: exists already; pick another file")
    path = Path(log)
    if log in datasets.DATASETS and not path.exists():
        interactions = datasets.load(log, progress=_state["progress"])
        data = {"dataset": log}
    else:
        # a .txt file of sequences is recognised by its lines: it has no times either
        if (format or (path.exists() and detect_format(path, sep))) == "sequences" or no_time:
            timestamp = None
        frame = read_interactions(
            path, user=user, item=item, timestamp=timestamp, rating=rating, weight=weight,
            format=format, sep=sep, timestamp_unit=unit,
        )  # fmt: skip
        from towerkit.data import Interactions

        interactions = Interactions(frame, has_time=timestamp is not None)
        columns = {"user": user, "item": item, "timestamp": timestamp}
        columns.update({k: v for k, v in (("rating", rating), ("weight", weight)) if v})
        if unit != "s":
            columns["timestamp_unit"] = unit
        data = {"path": str(path.absolute()), **({"format": format} if format else {}),
                **({"sep": sep} if sep else {}), "columns": columns}  # fmt: skip
    report = _print_report(log, interactions)
    if write_config is not None:
        text = starter_config(report, data)
        write_config.parent.mkdir(parents=True, exist_ok=True)
        write_config.write_text(text)
        console.print(escape(f"starter config written to {write_config}"))


@data_app.command("synth")
def data_synth(
    users: Annotated[int, typer.Option(min=1, max=MAX_IDS, help="Users.")],
    items: Annotated[int, typer.Option(min=2, max=MAX_IDS, help="Items.")],
    interactions: Annotated[
        int, typer.Option(min=1, max=MAX_INTERACTIONS, help="Interactions in all.")
    ],
    out: Annotated[Path, typer.Option(help="A new directory for the shards and item table.")],
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED, help="The random seed.")] = 0,
    topics: Annotated[
        int, typer.Option(min=0, max=MAX_LENGTH, help="Latent topics (0: about sqrt(items) / 2).")
    ] = 0,
    shard_rows: Annotated[
        int, typer.Option(min=1, max=MAX_INTERACTIONS, help="Interactions per shard.")
    ] = 4_000_000,
) -> None:
    """Write a synthetic log a model can learn (latent topics, drifting users, power-law
    popularity and activity, sessions, timestamps) as Parquet shards."""
    from towerkit.data.synth import SynthSpec, synthesize

    spec = SynthSpec(
        users=users, items=items, interactions=interactions, seed=seed, topics=topics,
        shard_rows=shard_rows,
    )  # fmt: skip
    synthesize(spec, out, progress=_state["progress"])
    console.print(
        escape(
            f"{interactions:,} interactions written to {out / 'interactions'} (items: "
            f"{out / 'items.parquet'}); train on them with data.path: {out / 'interactions'}"
        )
    )


def _metrics_table(title: str, rows: dict[str, dict[str, float]], ks: list[int]) -> Table:
    names = [f"hr@{k}" for k in ks] + [f"ndcg@{k}" for k in ks]
    names += [f"mrr@{ks[0]}", f"coverage@{ks[-1]}"]
    table = Table("", *names, title=escape(title))
    for label, metrics in rows.items():
        table.add_row(label, *(f"{metrics.get(n, float('nan')):.4f}" for n in names))
    return table


@app.command()
def train(
    config: Annotated[
        Path | None,
        typer.Argument(help="A YAML config, e.g. configs/ml-1m/dssm.yaml (not with --resume)."),
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a key: --set train.epochs=3 (repeatable)."),
    ] = None,
    out: Annotated[
        str | None,
        typer.Option(
            help="The run directory (default runs/CONFIG-TIMESTAMP), or a URL: s3://bucket/runs/a "
            "(an empty prefix; published with its manifest last)."
        ),
    ] = None,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume", help="Continue an unfinished run from its last checkpoint.", metavar="RUN"
        ),
    ] = None,
    warm: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Continue a finished run on a newer log (a warm start): its ids keep their "
            "vectors, new ids get new rows, its weights and optimiser state are loaded.",
            metavar="RUN",
        ),
    ] = None,
    nproc: Annotated[
        int,
        typer.Option(
            "--nproc",
            min=1,
            max=MAX_PROCESSES,
            help="Train in N processes on this machine (launches torchrun --standalone).",
        ),
    ] = 1,
    device: Annotated[
        str | None,
        typer.Option(
            help="Train on this device (cpu, cuda, cuda:N, mps): --set train.device=D, or for "
            "--resume a device other than the run's (a GPU run resumes on a CPU with cpu).",
        ),
    ] = None,
) -> None:
    """Fetch, prepare, train (checkpointing every epoch), evaluate on the test stage, and write
    a run directory; or resume an unfinished one. Under torchrun every process runs this same
    command; rank 0 writes the run directory. With --from RUN, the new run continues a finished
    one (yesterday's model on today's log)."""
    from towerkit.config import ConfigError, load_config
    from towerkit.runs import RunDir, lifecycle, pipeline
    from towerkit.storage import is_url

    if (config is None) == (resume is None):
        raise typer.BadParameter("give a CONFIG to start a run, or --resume RUN to continue one")
    if resume is not None and (overrides or out or warm):
        raise ConfigError(
            "--resume continues a run as it was configured: no --set, --out or --from"
        )
    progress = _state["progress"]
    if resume is not None and is_url(resume):  # downloaded as the bucket holds it, then resumed
        outcome = lifecycle.resume(resume, device=device, progress=progress, nproc=nproc)
        if outcome is None:
            if nproc == 1:
                console.print(escape(f"{resume}: the run was finished; its upload is complete now"))
            return
        cfg = outcome.config
    elif resume is not None:
        run = RunDir(resume)  # a clear error for a folder that is not a run, before any data
        if run.finished:
            raise ConfigError(f"{resume}: the run is finished already; there is nothing to resume")
        cfg = pipeline.resumed_config(run, device=device, progress=progress)
        outcome = lifecycle.resume(run, device=cfg.train.device, progress=progress, nproc=nproc)
    else:
        overrides = [*(overrides or []), *([f"train.device={device}"] if device else [])]
        cfg = load_config(config, overrides)  # a bad config fails before any data is read
        if not progress:
            cfg = cfg.on_machine(progress=False)
        out = out or str(Path("runs") / f"{config.stem}-{time.strftime('%Y%m%d-%H%M%S')}")
        parent = pipeline.WarmStart(warm) if warm is not None else None  # before any data
        outcome = lifecycle.train(cfg, out, nproc=nproc, warm=parent)
    if outcome is None or not outcome.main:  # launched processes, or a rank other than 0
        return
    rows = {
        "valid (best epoch)": outcome.metrics["valid"],
        "test": outcome.metrics["test"],
        "popularity (test)": outcome.popularity,
    }
    title = f"{cfg.model.name}, {cfg.train.mode.value}, {cfg.negatives.kind} negatives"
    console.print(_metrics_table(title, rows, cfg.eval.ks))
    console.print(f"run written to {escape(outcome.run.location)}")


@app.command()
def tune(
    config: Annotated[
        Path | None,
        typer.Argument(help="The base config (with --resume: the study's own, if left out)."),
    ] = None,
    space: Annotated[
        Path | None,
        typer.Option(
            help="The space file: params: {KEY: {low: A, high: B, log: true} or "
            "{choices: [...]}} (docs: Tuning)."
        ),
    ] = None,
    trials: Annotated[
        int,
        typer.Option(
            min=1, max=MAX_TRIALS, help="The study's size: trials in all, over every session."
        ),
    ] = 20,
    out: Annotated[
        str | None,
        typer.Option(help="The study directory, or a URL (s3://bucket/studies/a)."),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1, max=MAX_PROCESSES, help="Processes sharing the study (threads split among them)."
        ),
    ] = 1,
    timeout: Annotated[
        float | None,
        typer.Option(min=1, max=MAX_SECONDS, help="Seconds after which no new trial starts."),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Go on with the study in --out up to --trials.")
    ] = False,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a key of the base config (repeatable)."),
    ] = None,
    final: Annotated[
        bool,
        typer.Option(help="Rank the best trial once on the test stage when the study ends."),
    ] = True,
) -> None:
    """Search a config's settings with Optuna (TPE, Hyperband pruning over epochs, SQLite
    storage in --out) on the validation stage; write best.yaml, summary.json and study.html,
    and rank the best trial once on the test stage."""
    from towerkit.tune import TuneError
    from towerkit.tune import tune as run_tune

    if out is None:
        raise TuneError("--out STUDY is required: the study's directory")
    summary = run_tune(
        config, space, out, trials=trials, workers=workers, timeout=timeout, resume=resume,
        overrides=overrides or [], final=final, progress=_state["progress"],
    )  # fmt: skip
    table = Table("", "", show_header=False, title=escape(f"study {summary.path}"))
    table.add_row(
        "trials",
        f"{summary.trials} ({summary.complete} complete, {summary.pruned} pruned, "
        f"{summary.failed} failed)",
    )
    table.add_row("budget", escape(summary.budget))
    table.add_row("wall time", f"{summary.wall_seconds:.0f} s")
    table.add_row("best trial", f"{summary.best_trial}: {summary.metric} {summary.best_value:.4f}")
    if summary.base_trial is not None:
        value = "pruned" if summary.base_value is None else f"{summary.base_value:.4f}"
        table.add_row("base config", f"{summary.base_trial}: {summary.metric} {value}")
    for key, value in summary.best_params.items():
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        table.add_row(escape(key), escape(shown))
    console.print(table)
    ks = sorted({int(k.partition("@")[2]) for k in summary.best_valid if "@" in k}) or [10]
    rows = {"valid (best trial)": summary.best_valid}
    if summary.test is not None:
        rows["test (once)"] = summary.test
        rows["popularity (test)"] = summary.popularity or {}
    console.print(_metrics_table("the best trial", rows, ks))
    console.print(
        escape(
            f"best config: {summary.path / 'best.yaml'}; page: {summary.path / 'study.html'}; "
            f"run: {summary.best_run}"
        )
    )
    if out is not None and "://" in out:
        console.print(escape(f"study published to {out} (each finished trial under trials/)"))


@app.command("tune-worker", hidden=True)
def tune_worker(
    study: Annotated[Path, typer.Argument()],
    trials: Annotated[int, typer.Option(min=1, max=MAX_TRIALS)],
    worker: Annotated[int, typer.Option(min=0, max=MAX_PROCESSES)] = 0,
    threads: Annotated[int, typer.Option(min=1, max=MAX_PROCESSES)] = 1,
    deadline: Annotated[float | None, typer.Option(min=0, max=MAX_EPOCH_SECONDS)] = None,
) -> None:
    """One process of `towerkit tune --workers W` (started by it)."""
    from towerkit.tune import work

    work(study, trials, worker=worker, threads=threads, deadline=deadline)


IndexOption = Annotated[
    str,
    typer.Option(
        "--index",
        help="exact, annoy, faiss-flat, faiss-hnsw, faiss-ivf or milvus (ANN needs its extra).",
    ),
]
IndexOptions = Annotated[
    list[str] | None,
    typer.Option(
        "--option",
        "-o",
        help="An index option: -o n_trees=100, -o ef_search=256, -o nprobe=32, "
        "-o uri=items.db (repeatable).",
    ),
]


def _parse_options(items: list[str] | None, what: str = "index option") -> dict:
    """``KEY=VALUE`` strings to a dict; values are read as YAML (numbers, booleans, ...)."""
    import yaml

    from towerkit.config import ConfigError

    options = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{what} {item!r} is not KEY=VALUE")
        try:
            options[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"{what} {item!r}: the value is not valid YAML") from None
    return options


@app.command()
def evaluate(
    run_dir: Annotated[
        str, typer.Argument(help="A run directory written by `towerkit train` (or its URL).")
    ],
    index: IndexOption = "exact",
    options: IndexOptions = None,
    save: Annotated[
        bool,
        typer.Option(
            "--save", help="(Re)write the run's per-user outcomes (what report and compare read)."
        ),
    ] = False,
) -> None:
    """Re-evaluate a finished run (full catalogue, seen items masked), exactly or through an
    approximate index (then also its recall against exact search). The data are prepared
    anew and must be the data the run was trained on."""
    from towerkit.runs import RunDir, pipeline

    index_options = _parse_options(options)
    run = RunDir(run_dir)
    run.require_finished()
    metrics = pipeline.evaluate_run(run, index=index, index_options=index_options, save=save)
    ks = run.config.eval.ks
    console.print(_metrics_table(f"{run_dir} ({index})", metrics, ks))
    if index != "exact":
        names = [f"index_recall@{k}" for k in ks]
        table = Table("", *(n.replace("index_", "") for n in names),
                      title=escape(f"{index} against exact search"))  # fmt: skip
        for stage, m in metrics.items():
            table.add_row(stage, *(f"{m[n]:.4f}" for n in names))
        console.print(table)


@app.command()
def report(
    runs: Annotated[
        list[str], typer.Argument(help="One or more finished run directories (or their URLs).")
    ],
    out: Annotated[Path, typer.Option("--out", help="The HTML file to write.")] = Path(
        "report.html"
    ),
    projection: Annotated[
        str, typer.Option(help="The item map's projection: pca, or umap (its extra).")
    ] = "pca",
) -> None:
    """Write one self-contained HTML page of what the runs learned: training curves, metrics
    at every K, where they fail, what they recommend, an item map (several runs overlay)."""
    from towerkit.reports import write_report

    start = time.perf_counter()
    write_report(runs, out, projection=projection)
    console.print(
        f"report of {len(runs)} run(s) written to {escape(str(out))} "
        f"({time.perf_counter() - start:.1f} s)"
    )


@app.command()
def compare(
    run_a: Annotated[str, typer.Argument(help="Run A (the reference; a directory or a URL).")],
    run_b: Annotated[
        str, typer.Argument(help="Run B, or `popularity` for A's popularity baseline.")
    ],
    k: Annotated[
        list[int] | None,
        typer.Option(
            "-k", "--k", min=1, max=MAX_K, help="A cut-off (repeatable; default eval.ks)."
        ),
    ] = None,
    resamples: Annotated[
        int, typer.Option(min=10, max=MAX_RESAMPLES, help="Bootstrap resamples.")
    ] = 1000,
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED, help="The bootstrap's seed.")] = 0,
    out: Annotated[
        Path | None, typer.Option("--out", help="Also write the table and its chart as HTML.")
    ] = None,
) -> None:
    """Paired per-user comparison of two runs on the same test users: each metric's mean
    difference (B - A), its bootstrap 95% interval and the paired t-test's p-value."""
    from towerkit.reports.compare import compare_runs, write_comparison

    if out is not None:
        check_writable(out)  # before the work, not after it
    start = time.perf_counter()
    result = compare_runs(run_a, run_b, ks=k, resamples=resamples, seed=seed)
    seconds = time.perf_counter() - start
    title = f"{result.b} vs {result.a}: {result.users:,} test users, paired"
    table = Table("metric", "A", "B", "B - A", "95% interval", "p", "", title=escape(title))
    for d in result.differences:
        verdict = ("B better" if d.low > 0 else "A better") if d.significant else "no difference"
        table.add_row(d.metric, f"{d.mean_a:.4f}", f"{d.mean_b:.4f}", f"{d.mean:+.4f}",
                      f"[{d.low:+.4f}, {d.high:+.4f}]", f"{d.p_value:.3g}", verdict)  # fmt: skip
    console.print(table)
    console.print(f"{resamples:,} bootstrap resamples in {seconds:.2f} s")
    if out is not None:
        write_comparison(result, out)
        console.print(f"written to {escape(str(out))}")


@app.command()
def recommend(
    run_dir: Annotated[
        str, typer.Argument(help="A run directory written by `towerkit train` (or its URL).")
    ],
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
    feature: Annotated[
        list[str] | None,
        typer.Option(
            "--feature",
            "-f",
            help="A side feature of the new user of --history: -f gender=F -f age=25 "
            "(repeatable; features not given count as missing).",
        ),
    ] = None,
    k: Annotated[int, typer.Option("-k", "--k", min=1, max=MAX_K, help="How many items.")] = 10,
    where: Annotated[
        str | None,
        typer.Option(
            "--filter",
            help="Only items whose attributes pass: 'label == \"Comedy\" and count >= 100' "
            "(Milvus's syntax; the attributes are the run's items.parquet columns).",
        ),
    ] = None,
    index: IndexOption = "exact",
    options: IndexOptions = None,
    all_users: Annotated[
        bool,
        typer.Option(
            "--all-users",
            help="Write the top K of every known user (or of --users) to --out as Parquet: "
            "user, rank, item, score. In parts of --batch-users users; a stopped job goes on "
            "where it stopped when run again.",
        ),
    ] = False,
    users_file: Annotated[
        Path | None,
        typer.Option(
            "--users",
            help="With --all-users: only these users, in this order (a text file of one id "
            "per line, or a Parquet file's user column).",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="With --all-users: the Parquet file to write.")
    ] = None,
    vectors: Annotated[
        bool,
        typer.Option(
            "--vectors",
            help="With --all-users: also write each user's query vector "
            "(OUT.vectors.parquet: user, vector).",
        ),
    ] = False,
    shard: Annotated[
        str,
        typer.Option(
            "--shard",
            help="With --all-users: write the I-th of N contiguous slices of the users "
            "(0-based: 0/4 to 3/4); the shards concatenated in order are one whole job.",
        ),
    ] = "0/1",
    batch_users: Annotated[
        int,
        typer.Option(
            "--batch-users",
            min=1,
            max=10_000_000,
            help="With --all-users: users per part (each part is searched and written whole).",
        ),
    ] = 10_000,
) -> None:
    """Top-K items for a known user (seen items excluded) or for a history of items, or with
    --all-users for every user, into a Parquet file. Reads the run directory only: no data set
    is fetched or prepared."""
    from towerkit.index import make_index
    from towerkit.retrieval import Retriever, parse_id_list

    bulk_only = {"--users": users_file is not None, "--out": out is not None,
                 "--vectors": vectors, "--shard": shard != "0/1",
                 "--batch-users": batch_users != 10_000}  # fmt: skip
    if all_users:
        if user or history is not None or feature:
            raise typer.BadParameter("--all-users recommends for known users: drop --user, "
                                     "--history and --feature")  # fmt: skip
        if out is None:
            raise typer.BadParameter("--all-users writes a Parquet file: give --out FILE")
        _recommend_all(
            run_dir, out, k=k, users_file=users_file, where=where, shard=shard,
            batch=batch_users, vectors=vectors, index=index, options=options,
        )  # fmt: skip
        return
    given = [name for name, used in bulk_only.items() if used]
    if given:
        raise typer.BadParameter(f"{', '.join(given)}: for --all-users only")
    if not user and history is None:
        raise typer.BadParameter("give --user (one or more) or --history")
    if user and history is not None:
        raise typer.BadParameter("give either --user (one or more) or --history, not both")
    if history is not None and not history.strip():
        raise typer.BadParameter("--history is empty: give raw item ids, oldest first")
    if feature and history is None:
        raise typer.BadParameter("--feature describes the new user of --history")
    index_options = _parse_options(options)
    features = _parse_options(feature, "feature")
    make_index(index, **index_options)  # bad options fail before anything loads
    # The ids and the filter are checked against exact search first: another index (a
    # Milvus database) is written only for a question it can answer.
    retriever = Retriever.from_run(run_dir)
    if where is not None:
        where = retriever.index.parse_filter(where)
    if user:
        retriever.encode_users(user)
    else:
        items = parse_id_list(retriever.item_vocab, history)
    if index != "exact" or index_options:
        retriever.use_index(index, **index_options)
    if user:
        labels = [f"user {u}" for u in user]
        recs = retriever.recommend(user, k, where=where)
    else:
        labels = [f"history of {len(items)} item(s)"]
        recs = retriever.recommend_history([items], k, features=[features], where=where)
    retriever.index.close()
    show_titles = recs.titles is not None and (recs.titles != recs.items).any()
    for row, label in enumerate(labels):
        columns = ["rank", "item", *(["title"] if show_titles else []), "score"]
        shown = f"{label}: top {k} ({index}" + (f", {where}" if where is not None else "") + ")"
        table = Table(*columns, title=escape(shown))
        for rank in range(k):
            item = recs.items[row, rank]
            if item is None:
                break
            cells = [str(rank + 1), escape(str(item))]
            if show_titles:
                cells.append(escape(str(recs.titles[row, rank])))
            table.add_row(*cells, f"{recs.scores[row, rank]:.4f}")
        console.print(table)


@app.command()
def embed(
    run_dir: Annotated[str, typer.Argument(help="A finished run directory (or its URL).")],
    items: Annotated[
        Path,
        typer.Option(
            "--items",
            help="New items and their side features: Parquet, CSV or TSV with an item column "
            "and one column per item feature the model reads (multi-valued: a list, or text "
            "joined by |).",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="The Parquet file to write: item, vector.")],
) -> None:
    """Vectors for items the run never saw, from their side features (models whose item tower
    reads item features: dssm; sasrec and gru4rec with data.item_features)."""
    from towerkit.retrieval.embed import embed_items

    written = embed_items(run_dir, items, out)
    console.print(f"{_pq_rows(written):,} item vector(s) written to {written}", highlight=False)


def _recommend_all(
    run_dir: str, out: Path, *, k: int, users_file: Path | None, where: str | None, shard: str,
    batch: int, vectors: bool, index: str, options: list[str] | None,
) -> None:  # fmt: skip
    from towerkit.retrieval.bulk import UserShard, read_users, recommend_run, vectors_path

    written = recommend_run(
        run_dir, out, k=k, users=read_users(users_file) if users_file is not None else None,
        where=where, shard=UserShard.parse(shard), batch=batch, vectors=vectors, index=index,
        index_options=_parse_options(options), progress=_state["progress"],
    )  # fmt: skip
    rows = _pq_rows(written)
    extra = f" and their vectors to {vectors_path(written)}" if vectors else ""
    console.print(f"{rows:,} recommendations written to {written}{extra}", highlight=False)


def _pq_rows(path: Path) -> int:
    """Rows of a Parquet file, from its footer."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


@app.command()
def export(
    run_dir: Annotated[str, typer.Argument(help="A finished run directory (or its URL).")],
    out: Annotated[
        str | None,
        typer.Option(
            "--out",
            help="The export directory to write, or a URL (s3://bucket/exports/a: published "
            "with its manifest last; an export there before is replaced).",
        ),
    ] = None,
    to: Annotated[
        tuple[str, str] | None,
        typer.Option(
            "--to",
            metavar="milvus URI",
            help="Also (or only, without --out) write the item vectors, ids, titles and "
            "attributes to a Milvus collection: `--to milvus items.db` (Milvus Lite, a local "
            "file) or `--to milvus http://host:19530` (a server; token in "
            "TOWERKIT_MILVUS_TOKEN).",
        ),
    ] = None,
    collection: Annotated[
        str,
        typer.Option(
            help="The collection's name with --to: an alias, switched to the new collection "
            "once it is written and loaded."
        ),
    ] = "towerkit_items",
    index: Annotated[
        str | None, typer.Option(help="The index to ship (default: the run's eval.index).")
    ] = None,
    options: IndexOptions = None,
    quantize: Annotated[
        str | None,
        typer.Option(
            metavar="int8|fp16",
            help="Ship a smaller user tower: int8 weights (onnxruntime's dynamic quantization) "
            "or fp16; its size, difference and top-10 agreement with fp32 go in the manifest.",
        ),
    ] = None,
) -> None:
    """Write a run as an export: the user tower as ONNX (checked against PyTorch), the item and
    user vectors, vocabularies, titles, the index, and a manifest with checksums; with --to,
    the items go to a vector database, which the export's server then searches."""
    from towerkit.config import ConfigError

    index_options = _parse_options(options) if options else None
    if to is not None:
        if to[0] != "milvus":
            raise ConfigError(f"--to {to[0]}: the vector databases known are: milvus")
        if index not in (None, "milvus"):
            raise ConfigError(f"--to milvus ships a milvus index, not --index {index}")
        index, index_options = "milvus", {**(index_options or {}), "uri": to[1],
                                          "collection": collection}  # fmt: skip
    elif out is None:
        raise ConfigError("give --out DIR (an export directory), --to milvus URI, or both")
    if out is None:  # the collection alone
        from towerkit.retrieval.export import publish_items

        built = publish_items(run_dir, **index_options)
        built.close()
        console.print(escape(f"{len(built):,} items of {run_dir} in Milvus at {to[1]}: "
                             f"collection {built.pinned} (alias {collection})"))  # fmt: skip
        return
    _require_serving()
    from towerkit.retrieval.export import ExportDir, export_run

    written = export_run(run_dir, out, index=index, index_options=index_options, quantize=quantize)
    manifest = ExportDir(written).manifest
    where = ""
    if manifest["index"]["kind"] == "milvus":
        shipped = manifest["index"]["options"]
        where = f" in Milvus at {shipped['uri']} (collection {shipped['pinned']}, alias " \
                f"{shipped['collection']})"  # fmt: skip
    console.print(
        escape(
            f"exported {run_dir} to {out}: {manifest['model']} model {manifest['model_version']}, "
            f"{manifest['index']['kind']} index{where}, ONNX within "
            f"{manifest['onnx']['parity']:.1e} of PyTorch"
        )
    )
    shrunk = manifest["onnx"].get("quantized")
    if shrunk:
        console.print(
            f"user tower {shrunk['kind']}: {shrunk['fp32_bytes'] / 1e6:.2f} MB -> "
            f"{shrunk['bytes'] / 1e6:.2f} MB, top-10 agreement with fp32 "
            f"{shrunk['agreement@10']:.3f}"
        )


@app.command()
def serve(
    directory: Annotated[
        str,
        typer.Argument(
            help="A run or export directory, or its URL (s3://bucket/exports/a: downloaded to "
            "a local cache, checked against its manifest; a reload takes a newer one)."
        ),
    ],
    index: Annotated[
        str | None,
        typer.Option(
            help="exact, annoy, faiss-flat, faiss-hnsw, faiss-ivf or milvus (default: the "
            "export's, or the run's eval.index; -o pinned=NAME -o uri=URI searches a Milvus "
            "collection written before)."
        ),
    ] = None,
    options: IndexOptions = None,
    host: Annotated[str, typer.Option(help="The address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65_535, help="The port to listen on.")] = 8000,
    admin_token: Annotated[
        str | None,
        typer.Option(
            "--admin-token",
            envvar="TOWERKIT_ADMIN_TOKEN",
            help="Enable POST /admin/reload for requests bearing this token.",
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=MAX_PROCESSES,
            help="Threads of the user tower and the index (default: every core but one, which "
            "the event loop keeps).",
        ),
    ] = None,
) -> None:
    """Serve recommendations over HTTP (OpenAPI at /docs, a page at /, metrics at /metrics).
    The user tower runs in onnxruntime; SIGHUP reloads the directory."""
    _require_serving()
    # Before torch and onnxruntime load: OpenMP reads its wait policy once, when it loads.
    from towerkit.serve.threads import configure

    configure(threads)
    from towerkit.serve import serve as run_server

    console.print(escape(f"loading {directory}; then serving on http://{host}:{port}"))
    run_server(
        directory,
        host=host,
        port=port,
        index=index,
        index_options=_parse_options(options),
        admin_token=admin_token,
        threads=threads,
    )


def _require_serving() -> None:
    """Fail before any work when the serving extra is missing (the message names the pip
    command that installs it)."""
    import towerkit.serve  # noqa: F401  (raises MissingExtra)


def _error(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def _reflow(text: str) -> str:
    """A docstring as help text: the lines of each paragraph joined, so that the terminal
    wraps them at its own width (a docstring's line breaks, kept, made the help ragged);
    paragraphs, list items and indented lines stay as written."""
    paragraphs = []
    for paragraph in inspect.cleandoc(text).split("\n\n"):
        lines = paragraph.splitlines()
        kept = any(line.startswith(("- ", "* ", " ")) for line in lines)
        paragraphs.append(paragraph if kept else " ".join(line.strip() for line in lines))
    return "\n\n".join(paragraphs)


def _reflow_help(typer_app: typer.Typer) -> None:
    for command in typer_app.registered_commands:
        text = command.help or (command.callback.__doc__ if command.callback else None)
        if text:
            command.help = _reflow(text)
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _reflow_help(group.typer_instance)


_reflow_help(app)


def main() -> None:
    """Entry point: run the app; a user's error is one line and exit status 1, a command line
    that does not parse (an unknown option, a value out of its range) one line and exit status
    2, a bug an "internal error" line (its traceback with ``-v``) and exit status 2."""
    try:
        code = app(standalone_mode=False)
    except typer.Abort:  # end of input at a prompt
        _error("aborted")
        sys.exit(1)
    except typer.TyperException as err:  # the command line itself (click's usage errors)
        ctx, message = getattr(err, "ctx", None), err.format_message()
        if message:  # (none when the help was shown for a command given no arguments)
            where = f" (see {ctx.command_path} --help)" if ctx is not None else ""
            _error(f"{message}{where}")
        sys.exit(getattr(err, "exit_code", 2))
    except RunStopped as err:  # said already, or says what was kept and how to resume
        if str(err):
            err_console.print(escape(str(err)), highlight=False, soft_wrap=True)
        sys.exit(err.exit_code)
    except TowerkitError as err:
        _error(err.args[0] if isinstance(err, KeyError) and err.args else str(err))
        sys.exit(1)
    except OSError as err:  # the machine's: a full disk, a missing or unreadable file
        _error(f"{err.filename}: {os_reason(err)}" if err.filename else str(err))
        sys.exit(1)
    except Exception as err:  # a bug: towerkit raised what it did not mean to
        if _state["verbose"]:
            err_console.print_exception()
        else:
            first = str(err).splitlines()[0] if str(err) else ""
            _error(
                f"internal error: {type(err).__name__}{': ' if first else ''}{first} (a bug in "
                "towerkit; rerun with -v for the traceback, and report it)"
            )
        sys.exit(2)
    if isinstance(code, int) and code:  # typer.Exit(code), and 130 for Ctrl-C
        sys.exit(code)


if __name__ == "__main__":
    main()
