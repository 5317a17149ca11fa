"""A full disk is one line naming the file, and leaves the last complete checkpoint, never a
part: on a real full file system (a small tmpfs in a user and mount namespace, where this
machine lets a test make one) and with writes made to fail with ENOSPC."""

from __future__ import annotations

import errno
import logging
import shutil
import subprocess
import sys
import textwrap

import pytest
import yaml

from conftest import small_config
from towerkit import files
from towerkit.retrieval import export
from towerkit.runs import RunDir, pipeline
from towerkit.runs import rundir as runs
from towerkit.runs.lifecycle import RunLogHandler


def _can_mount_tmpfs() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = "mkdir -p /tmp && mount -t tmpfs -o size=64k tmpfs /mnt 2>/dev/null || exit 1"
    done = subprocess.run(["unshare", "-rm", "sh", "-c", probe], capture_output=True, timeout=30)
    return done.returncode == 0


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="no user and mount namespaces here")
def test_a_disk_that_fills_mid_run_is_one_line_and_keeps_the_last_checkpoint(
    offline_ml100k, tmp_path
):
    """The issue's case: the run directory's disk fills after the first epoch. The terminal
    shows the run's one error line (and a warning that the log stops), no logging traceback;
    the run directory holds the last complete checkpoint and no model.pt."""
    config = tmp_path / "tiny.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": {"dataset": "ml-100k", "max_len": 20},
                "model": {"name": "youtube_dnn", "embedding_dim": 16, "hidden": [32]},
                "train": {"epochs": 6, "batch_size": 256, "progress": False},
            }
        )
    )
    disk, out = tmp_path / "disk", tmp_path / "out"
    disk.mkdir()
    out.mkdir()
    script = textwrap.dedent(f"""\
        mount -t tmpfs -o size=16m tmpfs {disk} || exit 99
        {sys.executable} -m towerkit.cli train {config} --out {disk}/run \\
            > {out}/stdout 2> {out}/stderr &
        pid=$!
        while [ ! -f {disk}/run/checkpoint.pt ] && kill -0 $pid 2>/dev/null; do sleep 0.02; done
        dd if=/dev/zero of={disk}/filler bs=64k 2>/dev/null  # until the disk is full
        wait $pid
        echo $? > {out}/rc
        cp -a {disk}/run {out}/run
    """)
    done = subprocess.run(["unshare", "-rm", "sh", "-c", script], timeout=300)
    assert done.returncode == 0
    rc = int((out / "rc").read_text())
    stderr = (out / "stderr").read_text()
    assert rc == 1, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {disk}/run/checkpoint.pt: No space left on device"], stderr
    assert "Traceback" not in stderr and "Logging error" not in stderr
    assert stderr.count("cannot write the log") <= 1
    names = {p.name for p in (out / "run").iterdir()}
    assert "model.pt" not in names and not [n for n in names if n.endswith(".part")]
    state = RunDir(out / "run").load_checkpoint()
    assert state is not None and 1 <= state.epoch < 6
    assert f"{state.epoch} of 6 epochs are saved" in stderr


def test_a_checkpoint_that_cannot_be_written_leaves_the_previous_one(
    walk_prepared, tmp_path, monkeypatch
):
    real = runs.atomic_write
    calls = []

    def fails_second_checkpoint(path, write):
        calls.append(path.name)
        if path.name == runs.CHECKPOINT_FILE and calls.count(path.name) == 2:

            def half_then_full(tmp):  # half of the bytes reach the disk, then it is full
                tmp.write_bytes(b"\0" * 1000)
                _enospc()

            return real(path, half_then_full)
        return real(path, write)

    monkeypatch.setattr(runs, "atomic_write", fails_second_checkpoint)
    run = tmp_path / "run"
    with pytest.raises(OSError) as caught:
        pipeline.train(small_config(), walk_prepared, run=run)
    assert caught.value.errno == errno.ENOSPC
    assert caught.value.filename == str(run / runs.CHECKPOINT_FILE)  # the CLI's one line
    assert RunDir(run).load_checkpoint().epoch == 1  # the first, whole
    assert not (run / runs.MODEL_FILE).exists()
    assert not [p for p in run.iterdir() if p.name.endswith(".part")]


def test_the_run_log_reports_a_full_disk_once_and_stops(tmp_path, caplog, capsys, monkeypatch):
    # only pytest's capture at the root: a terminal handler an earlier test left on a closed
    # stream would print its own logging error here
    monkeypatch.setattr(logging.getLogger(), "handlers", [caplog.handler])
    handler = RunLogHandler(tmp_path / "train.log")
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("towerkit.test_full_disk")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.info("before")
        handler.flush()
        handler.stream.write = _enospc  # the disk fills
        with caplog.at_level(logging.WARNING, logger="towerkit.runs.lifecycle"):
            for i in range(5):
                logger.info("after %d", i)
    finally:
        logger.removeHandler(handler)
        handler.stream.write = lambda text: len(text)
        handler.close()
    assert "Logging error" not in capsys.readouterr().err
    reports = [r.getMessage() for r in caplog.records if "cannot write the log" in r.getMessage()]
    assert reports == [
        f"{tmp_path / 'train.log'}: cannot write the log (No space left on device); it stops here"
    ]
    assert (tmp_path / "train.log").read_text() == "before\n"


def test_the_run_log_closes_quietly_when_its_last_flush_finds_the_disk_full(
    tmp_path, caplog, monkeypatch
):
    monkeypatch.setattr(logging.getLogger(), "handlers", [caplog.handler])
    handler = RunLogHandler(tmp_path / "train.log")
    record = logging.LogRecord("towerkit", logging.INFO, __file__, 1, "line", None, None)
    handler.stream.flush = _enospc  # the buffered line cannot reach the disk
    with caplog.at_level(logging.WARNING, logger="towerkit.runs.lifecycle"):
        handler.emit(record)
        handler.close()  # no OSError out of the run's finally
    assert handler.stream is None
    assert sum("cannot write the log" in r.getMessage() for r in caplog.records) == 1


def test_an_export_that_cannot_be_written_leaves_nothing(walk_prepared, tmp_path, monkeypatch):
    run = tmp_path / "run"
    pipeline.train(small_config(train={"epochs": 1}), walk_prepared, run=run)
    monkeypatch.setattr(export.pq, "write_table", _enospc)
    out = tmp_path / "export"
    with pytest.raises(export.ExportError) as caught:
        export.export_run(run, out)
    assert str(caught.value) == f"{out}: cannot write the export (No space left on device)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no export, no staging


def test_an_os_error_without_a_file_is_given_the_one_written():
    err = files.named(OSError(errno.ENOSPC, "Error writing bytes to file"), "/x/model.pt")
    assert (err.errno, err.filename, files.os_reason(err)) == (
        errno.ENOSPC,
        "/x/model.pt",
        "No space left on device",
    )
    other = FileNotFoundError(errno.ENOENT, "No such file or directory", "/y")
    assert files.named(other, "/x") is other
