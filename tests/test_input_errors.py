"""Every exception a dependency raises on bad input is mapped to one line naming the input
(``towerkit.errors.INPUT_ERRORS``), and what a user can leave on disk never ends in "internal
error": damaged run files, logs Arrow cannot parse on the out-of-core path."""

from __future__ import annotations

import importlib
import json
import shutil
import sqlite3
from pathlib import Path

import pytest
import yaml

from conftest import towerkit
from towerkit.errors import INPUT_ERRORS, DataError, TowerkitError, input_reason, naming


def _sqlalchemy(garbage: Path):
    import sqlalchemy

    with sqlalchemy.create_engine(f"sqlite:///{garbage}").connect() as connection:
        connection.execute(sqlalchemy.text("select * from sqlite_master"))


def _mlflow(folder: Path):
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=str(folder)).search_experiments()


def _milvus(_: Path):
    from pymilvus.exceptions import MilvusException

    raise MilvusException(code=1, message="collection not found")


#: each entry of INPUT_ERRORS, provoked from its dependency with bad input
PROVOKE = {
    "sqlite3.DatabaseError": lambda g: sqlite3.connect(g).execute("select * from sqlite_master"),
    "sqlalchemy.exc.DatabaseError": _sqlalchemy,
    "pyarrow.lib.ArrowException": lambda g: __import__("pyarrow.parquet").parquet.read_table(g),
    "builtins.RecursionError": lambda g: json.loads("[" * 100_000),
    "mlflow.exceptions.MlflowException": lambda g: _mlflow(g.parent / "store"),
    "pymilvus.exceptions.MilvusException": _milvus,
    "builtins.UnicodeError": lambda g: b"caf\xe9".decode("utf-8"),
    "json.decoder.JSONDecodeError": lambda g: json.loads("{not json"),
    "yaml.error.YAMLError": lambda g: yaml.safe_load("key: [unclosed"),
}


def test_every_mapped_exception_is_provoked_here():
    assert set(PROVOKE) == set(INPUT_ERRORS)


@pytest.mark.parametrize("name", sorted(INPUT_ERRORS))
def test_a_mapped_exception_is_one_line_naming_the_input(name, tmp_path, monkeypatch):
    """The class still exists where the map says (a dependency that moves it fails here, not
    in a user's hands), the dependency raises it (or a subclass) on bad input, and ``naming``
    makes it one DataError line: the input, the reason, the dependency's first line."""
    module, _, qualname = name.rpartition(".")
    cls = getattr(importlib.import_module(module), qualname)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    garbage = tmp_path / "input.db"
    garbage.write_bytes(b"this is no database, no Parquet file and no store" * 40)
    with pytest.raises(cls) as raised:
        PROVOKE[name](garbage)
    assert input_reason(raised.value) == INPUT_ERRORS[name]
    with pytest.raises(DataError) as named, naming("the/input.file"):
        raise raised.value
    message = str(named.value)
    assert message.startswith(f"the/input.file: {INPUT_ERRORS[name]} (")
    assert "\n" not in message and named.value.__cause__ is raised.value


def test_anything_else_passes_through_unchanged():
    """A bug stays a bug (the CLI's "internal error"), and towerkit's own errors keep their
    message."""
    with pytest.raises(ZeroDivisionError), naming("x"):
        1 / 0  # noqa: B018
    own = TowerkitError("already one line")
    with pytest.raises(TowerkitError) as kept, naming("x"):
        raise own
    assert kept.value is own
    assert input_reason(KeyError("k")) is None and input_reason(ValueError()) is None


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("damaged")
    log = "user,item,timestamp\n" + "".join(
        f"{u},{(u * 7 + t) % 40},{t}\n" for u in range(60) for t in range(8)
    )
    (root / "log.csv").write_text(log)
    (root / "c.yaml").write_text(yaml.safe_dump({
        "data": {"path": "log.csv", "max_len": 5},
        "model": {"embedding_dim": 8, "hidden": [8]},
        "eval": {"ks": [2]}, "train": {"epochs": 1, "monitor": "ndcg@2"},
    }))  # fmt: skip
    done = towerkit("-q", "train", str(root / "c.yaml"), "--out", str(root / "run"))
    assert done.returncode == 0, done.stderr
    return root


def one_line(done, *expected: str) -> None:
    assert done.returncode == 1, done.stdout + done.stderr
    assert "internal error" not in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    for text in expected:
        assert text in done.stderr, done.stderr


@pytest.mark.parametrize("recorded", [True, False], ids=["recorded", "older-run"])
@pytest.mark.parametrize(
    ("name", "unrecorded"),
    [
        ("data.json", "not valid JSON"),
        ("vocab/user.parquet", "not a file Arrow can read"),
        ("features/item.parquet", "not a file Arrow can read"),
    ],
)
def test_a_damaged_run_file_is_one_line_naming_it(run, tmp_path, name, unrecorded, recorded):
    """Checked against run.json's record; a run written before the record existed still
    gets one line from the mapping, not a JSONDecodeError or ArrowInvalid."""
    copy = shutil.copytree(run / "run", tmp_path / "run")
    if not recorded:
        state = json.loads((copy / "run.json").read_text())
        del state["files"]
        (copy / "run.json").write_text(json.dumps(state))
    (copy / name).write_text("garbage")
    expected = "not the file the run wrote" if recorded else unrecorded
    one_line(towerkit("evaluate", str(copy)), f"{copy / name}: {expected}")
    one_line(towerkit("export", str(copy), "--out", str(tmp_path / "x")), str(copy / name))
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("tail", "message"),
    [
        (b"5,6,7,8\n", "line 482: 4 fields where the header has 3"),
        (b"1,caf\xe9,3\n", "line 482: byte b'\\xe9' is not valid utf-8"),
        (b'1,2,"open\n', "line 482: a quoted field opens here and is never closed"),
    ],
)
def test_a_log_arrow_cannot_parse_names_its_line_on_the_out_of_core_path(
    run, tmp_path, tail, message
):
    """A plain CSV is read in record batches by Arrow, whose parse errors were internal
    errors; the in-memory reader now reads it and names the line."""
    log = tmp_path / "log.csv"
    log.write_bytes((run / "log.csv").read_bytes() + tail)
    config = yaml.safe_load((run / "c.yaml").read_text())
    config["data"]["path"] = str(log)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    done = towerkit("-q", "train", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "r"))
    one_line(done, f"{log}: {message}")
    assert not (tmp_path / "r").exists()


def test_a_parquet_log_arrow_cannot_read_is_one_line(run, tmp_path):
    log = tmp_path / "log.parquet"
    log.write_bytes(b"PAR1" + b"\0" * 64 + b"PAR1")
    config = yaml.safe_load((run / "c.yaml").read_text())
    config["data"]["path"] = str(log)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    done = towerkit("-q", "train", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "r"))
    one_line(done, str(log))
    assert not (tmp_path / "r").exists()
