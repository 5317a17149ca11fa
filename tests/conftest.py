"""Shared fixtures: small handmade logs, synthetic logs a model can learn, an isolated towerkit
home, and a stand-in ML-100K cache so that the command line trains offline."""

from __future__ import annotations

import os

# Under pytest-xdist every worker, and every process a test starts, computes on one thread:
# two workers of two OpenMP threads each on a 2-core machine spin against each other (the
# suite took 1.8x the CPU time). Set before anything imports torch.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import contextlib
import io
import logging
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from towerkit.config import config_from_dict
from towerkit.data import Interactions, Prepared, Sequences, encode, leave_one_out


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty towerkit home, so tests never touch the user's cache."""
    path = tmp_path / "home"
    monkeypatch.setenv("TOWERKIT_HOME", str(path))
    return path


@pytest.fixture
def tiny_log() -> pd.DataFrame:
    """Three users; user 'b' has two interactions at the same second (file order breaks it)."""
    return pd.DataFrame(
        {
            "user": ["a", "b", "a", "b", "c", "a", "b", "c", "a"],
            "item": [10, 20, 30, 10, 20, 20, 30, 40, 40],
            "timestamp": [5, 1, 6, 1, 2, 7, 3, 9, 8],
        }
    )


def walk_log(lengths: np.ndarray, n_items: int, noise: float = 0.1, seed: int = 0) -> Interactions:
    """Users walk a cycle over the items (item i is followed by item i + 1), with a share
    ``noise`` of random steps, plus user and item side tables in the ML-100K schema.

    User ``u`` starts at item ``u * n_items // n_users``, so the walks cover the catalogue.
    A model that learns "what follows what" beats popularity by far.
    """
    rng = np.random.default_rng(seed)
    n_users = len(lengths)
    user = np.repeat(np.arange(1, n_users + 1), lengths)
    step = np.arange(len(user)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    start = (np.arange(n_users) * n_items // n_users)[user - 1]
    item = (start + step) % n_items + 1
    jump = rng.random(len(item)) < noise
    item[jump] = rng.integers(1, n_items + 1, int(jump.sum()))
    frame = pd.DataFrame(
        {
            "user": user.astype(np.int64),
            "item": item.astype(np.int64),
            "rating": rng.integers(1, 6, len(user)).astype(np.float32),
            "timestamp": (875_000_000 + user * 10_000 + step).astype(np.int64),
        }
    )
    users = pd.DataFrame(
        {
            "user": np.arange(1, n_users + 1, dtype=np.int64),
            "gender": rng.choice(["F", "M"], n_users),
            "age": rng.choice([18, 25, 35, 45], n_users).astype(np.int64),
            "occupation": rng.choice(["artist", "doctor", "student"], n_users),
            "zip": [f"{z:05d}" for z in rng.integers(0, 99_999, n_users)],
        }
    )
    ids = np.arange(1, n_items + 1, dtype=np.int64)
    years = rng.integers(1950, 1999, n_items)
    items = pd.DataFrame(
        {
            "item": ids,
            "movie_id": pd.array(ids, dtype="Int64"),
            "title": [f"Film [{i}] ({y})" for i, y in zip(ids, years, strict=True)],
            "year": pd.array(years, dtype="Int64"),
            "genres": [list(g) for g in rng.choice(["Drama", "Comedy", "Action"], (n_items, 2))],
        }
    )
    return Interactions(frame, users=users, items=items)


def prepare_log(interactions: Interactions, **features) -> Prepared:
    """Encode (no side features unless asked) and split leave-one-out, as the pipeline does."""
    encoded = encode(interactions, **features)
    titles = None
    if interactions.items is not None:
        by_item = interactions.items.set_index("item")["title"]
        titles = np.concatenate([[""], by_item.reindex(encoded.item_vocab.raw).to_numpy()])
    return Prepared(encoded, leave_one_out(Sequences.from_encoded(encoded)), titles)


@pytest.fixture(scope="session")
def walk_prepared() -> Prepared:
    """120 users of 15-40 interactions over 60 items, prepared with user features."""
    lengths = np.random.default_rng(1).integers(15, 41, 120)
    return prepare_log(walk_log(lengths, 60, seed=1), user_features=["gender", "age", "occupation"])


def small_config(**sections) -> object:
    """A config that trains in a second on :func:`walk_prepared`-sized data."""
    tree = {
        "data": {"dataset": "ml-100k", "max_len": 10},
        "model": {"name": "youtube_dnn", "embedding_dim": 16, "hidden": [32]},
        "temperature": {"value": 0.1},
        "train": {"epochs": 3, "batch_size": 128, "lr": 0.01, "progress": False},
    }
    for key, value in sections.items():
        tree[key] = {**tree.get(key, {}), **value} if key != "model" else value
    return config_from_dict(tree)


def item_feature_runs(root: Path, users: int, seed: int) -> dict[str, Path]:
    """Two runs on a walk log of ``users`` users over 60 items: a DSSM whose item tower reads
    the items' genres (multi-valued) and year (numeric), and a YouTubeDNN (ids only)."""
    from towerkit.runs import pipeline

    log = walk_log(np.random.default_rng(seed).integers(10, 30, users), 60, seed=seed)
    dssm = small_config(
        data={"item_features": ["genres", "year"]},
        model={"name": "dssm", "embedding_dim": 16, "id_dim": 16, "hidden": [32]},
    )
    prepared = prepare_log(log, item_features=["genres", "year"], feature_kinds={"year": "numeric"})
    youtube = small_config(model={"name": "youtube_dnn", "embedding_dim": 16, "hidden": [32]})
    return {
        "dssm": pipeline.train(dssm, prepared, run=root / "dssm").run.path,
        "youtube_dnn": pipeline.train(youtube, prepare_log(log), run=root / "yt").run.path,
    }


# ML-100K's pinned counts: a stand-in cache must hold exactly these to count as valid.
ML100K_USERS, ML100K_ITEMS, ML100K_INTERACTIONS = 943, 1682, 100_000


def synthetic_ml100k(seed: int = 0) -> Interactions:
    """A walk log of ML-100K's exact size, in its schema."""
    lengths = np.full(ML100K_USERS, ML100K_INTERACTIONS // ML100K_USERS)
    lengths[: ML100K_INTERACTIONS - lengths.sum()] += 1
    log = walk_log(lengths, ML100K_ITEMS, seed=seed)
    assert (log.n_users, log.n_items, len(log)) == (
        ML100K_USERS,
        ML100K_ITEMS,
        ML100K_INTERACTIONS,
    )
    return log


@pytest.fixture
def offline_ml100k(home):
    """``home`` holding a valid ML-100K cache of synthetic data, so `towerkit train` with
    ``dataset: ml-100k`` runs with no network. Returns a function that rewrites the cache with
    another seed (other data of the same size)."""
    from towerkit.datasets import cache

    def write(seed: int = 0):
        cache.write(cache.cache_dir("ml-100k", home), synthetic_ml100k(seed), "synthetic (test)")
        return home

    write()
    return write


#: Debian's chromium for the browser tests (None: not installed, the tests skip)
CHROMIUM = shutil.which("chromium")


def launch_chromium(playwright):
    """Debian's chromium through Playwright, headless, with none of its background traffic
    (this machine's closed network refuses it)."""
    return playwright.chromium.launch(
        executable_path=CHROMIUM,
        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--no-first-run", "--disable-sync"],
    )  # fmt: skip


@contextlib.contextmanager
def ctrl_c_after_the_first_checkpoint():
    """Within the block, a run is stopped as by Ctrl-C right after its first epoch's
    checkpoint is saved (a KeyboardInterrupt from RunDir.save_checkpoint)."""
    from towerkit.runs import RunDir

    save = RunDir.save_checkpoint

    def stop(run, state):
        save(run, state)
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RunDir, "save_checkpoint", stop)
        yield


def free_port() -> int:
    """A TCP port free on the loopback interface now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def towerkit(
    *args: str,
    env: dict[str, str] | None = None,
    network: bool = True,
    process: bool = False,
    timeout: float = 300,
) -> subprocess.CompletedProcess:
    """``towerkit ARGS`` as a user runs it: its exit status, stdout and stderr.

    By default in this process, through the command's own ``main()`` (its one-line errors and
    exit statuses, rich and logging as with no terminal), with ``env`` as the environment for
    the call: no interpreter and no torch to start. In a subprocess (``python -m towerkit``)
    where the test needs a process of its own (``process=True``): signals, a working
    directory, or no network (``network=False``: a new network namespace, whose loopback is
    down).
    """
    if process or not network:
        command = [sys.executable, "-m", "towerkit", *args]
        if not network:
            command = ["unshare", "-rn", *command]
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    return _in_process(list(args), env)


def _in_process(args: list[str], env: dict[str, str] | None) -> subprocess.CompletedProcess:
    from towerkit import cli

    out, err = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    environ, argv = dict(os.environ), sys.argv
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else None
    code: int | str | None = 0
    try:
        if env is not None:
            os.environ.clear()
            os.environ.update(env)
        sys.argv = ["towerkit", *args]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.main()
            except SystemExit as done:
                code = done.code
    finally:
        sys.argv = argv
        os.environ.clear()
        os.environ.update(environ)
        root.handlers[:] = handlers
        root.setLevel(level)
        torch = sys.modules.get("torch")
        if torch is not None and threads is not None:
            torch.set_num_threads(threads)
    if not isinstance(code, int):
        err.write(f"{code}\n")
        code = 1 if code is not None else 0
    return subprocess.CompletedProcess(["towerkit", *args], code, out.getvalue(), err.getvalue())
