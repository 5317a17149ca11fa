"""Run directories that outlive their machine: a run trained on a GPU loads, recommends, exports
and serves on a CPU; an older layout is read through the migration hook; data paths travel with
the run; opening a run deletes nothing."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from conftest import small_config
from towerkit.config import ConfigError, config_from_dict
from towerkit.evaluation.outcomes import Outcomes
from towerkit.retrieval import Retriever
from towerkit.retrieval.export import ExportDir, export_run
from towerkit.runs import FORMAT_VERSION, RunDir, RunDirError, pipeline
from towerkit.runs import rundir as runs


def _gpu_config(**sections):
    """small_config as a GPU machine reads it: train.device cuda (not checked here)."""
    tree = small_config(**sections).model_dump(mode="json")
    tree["train"]["device"] = "cuda"
    return config_from_dict(tree, machine=False)


def _as_format_1(run: RunDir, config) -> None:
    """Rewrite a run as towerkit wrote it before format 2: the whole config, machine settings
    included, in config.yaml; no format, machine or data paths in run.json."""
    text = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    (run.path / "config.yaml").write_text(text)
    status = json.loads((run.path / "run.json").read_text())
    for key in ("format", "machine", "data_paths", "files"):
        status.pop(key)
    status["config_sha256"] = hashlib.sha256(text.encode()).hexdigest()
    (run.path / "run.json").write_text(json.dumps(status))


@pytest.fixture(scope="module")
def gpu_runs(walk_prepared, tmp_path_factory):
    """A finished run whose config says ``train.device: cuda``, in today's layout and in
    format 1's (device inside config.yaml). Trained here on the CPU, written as a GPU machine
    writes it: the run directory is created from the cuda config."""
    root = tmp_path_factory.mktemp("gpu-runs")
    out = {}
    for layout in ("today", "format-1"):
        cuda = _gpu_config()
        run = RunDir.create(root / layout, cuda, walk_prepared)
        pipeline.train(small_config(), walk_prepared, run=run)
        if layout == "format-1":
            _as_format_1(run, cuda)
        out[layout] = run.path
    return out


@pytest.mark.parametrize("layout", ["today", "format-1"])
def test_a_gpu_run_loads_recommends_exports_and_serves_on_a_cpu(
    gpu_runs, walk_prepared, tmp_path, layout
):
    from test_serve import Server

    path = gpu_runs[layout]
    run = RunDir(path)
    assert run.machine["train"]["device"] == "cuda"  # recorded, not applied
    assert run.config.train.device == "cpu"
    if layout == "format-1":
        assert "device: cuda" in (path / "config.yaml").read_text()  # the file as written
    model = run.load_model()
    assert all(p.device.type == "cpu" for p in model.parameters())
    raw = walk_prepared.encoded.user_vocab.raw[:5]
    recs = Retriever.from_run(path).recommend(raw, 5)
    assert recs.ids.shape == (5, 5) and (recs.ids > 0).all()
    export = export_run(path, tmp_path / "export")
    assert ExportDir(export).manifest["onnx"]["parity"] <= 1e-5
    server = Server(path)
    try:
        served = server.post("/recommend", {"user": str(raw[0]), "k": 5}).json()["items"]
        assert [item["id"] for item in served] == recs.items[0].tolist()
        # The serving flag that leaves a user's own items out has its own name (the old one
        # is still read).
        unfiltered = Retriever.from_run(path).recommend(raw[:1], 5, filter_seen=False)
        for flag in ("filter_seen", "exclude_seen"):
            body = {"user": str(raw[0]), "k": 5, flag: False}
            served = server.post("/recommend", body).json()["items"]
            assert [item["id"] for item in served] == unfiltered.items[0].tolist()
    finally:
        server.stop()
    # The CLI too: every command that reads a run.
    from test_cli import towerkit

    done = towerkit("recommend", str(path), "--user", str(raw[0]), "-k", "3")
    assert done.returncode == 0, done.stderr


def test_a_gpu_run_resumes_on_a_cpu_only_when_asked(walk_prepared, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the refusal cannot be shown")
    run = RunDir.create(tmp_path / "run", _gpu_config(), walk_prepared)
    with pytest.raises(ConfigError, match=r"trained on cuda; .*no cuda device.*--device cpu"):
        pipeline.resume(run, walk_prepared)
    outcome = pipeline.resume(run, walk_prepared, device="cpu")
    straight = pipeline.train(small_config(), walk_prepared)
    assert outcome.metrics == straight.metrics  # the same experiment, whatever the machine
    assert RunDir(run.path).finished


def test_a_renamed_key_is_read_through_the_migration_hook(gpu_runs, tmp_path, monkeypatch):
    """Simulate a later release that calls ``data.max_len`` ``data.history_length``: runs of
    today's format are rewritten by one migration step, in memory."""
    path = shutil.copytree(gpu_runs["today"], tmp_path / "run")
    before = RunDir(path).config

    def rename_back(run: dict, config: dict) -> None:  # what today's format called the key
        config["data"]["max_len"] = config["data"].pop("history_length")

    # Pretend today's files were written with the new name, by a towerkit one format older.
    text = (path / "config.yaml").read_text().replace("  max_len:", "  history_length:")
    (path / "config.yaml").write_text(text)
    status = json.loads((path / "run.json").read_text())
    status["config_sha256"] = hashlib.sha256(text.encode()).hexdigest()
    (path / "run.json").write_text(json.dumps(status))
    with pytest.raises(RunDirError, match=r"data\.history_length: unknown key"):
        _ = RunDir(path).config  # without the step, the old key is unknown
    monkeypatch.setattr(runs, "FORMAT_VERSION", FORMAT_VERSION + 1)
    monkeypatch.setitem(runs.MIGRATIONS, FORMAT_VERSION, rename_back)
    run = RunDir(path)
    assert run.config == before
    assert run.load_model() is not None  # the weights fit the migrated config
    assert run._run["format"] == FORMAT_VERSION + 1
    assert json.loads((path / "run.json").read_text())["format"] == FORMAT_VERSION  # untouched


def test_a_run_of_a_newer_format_is_refused(gpu_runs, tmp_path):
    path = shutil.copytree(gpu_runs["today"], tmp_path / "run")
    status = json.loads((path / "run.json").read_text())
    (path / "run.json").write_text(json.dumps({**status, "format": FORMAT_VERSION + 1}))
    with pytest.raises(RunDirError, match=f"format {FORMAT_VERSION + 1}.*newer towerkit"):
        RunDir(path)


def test_every_output_is_checked_against_what_the_run_recorded(gpu_runs, tmp_path):
    """run.json keeps the sha256 of data.json, the vocabularies and features, model.pt, and the
    rows too of users, items and outcomes; a file replaced or cut short is one line naming it
    when read back, not a quiet wrong answer."""
    path = shutil.copytree(gpu_runs["today"], tmp_path / "run")
    files = json.loads((path / "run.json").read_text())["files"]
    on_disk = {p.relative_to(path).as_posix() for p in path.rglob("*.parquet")}
    assert set(files) == on_disk | {"model.pt", "data.json"}
    assert files["items.parquet"]["rows"] == len(RunDir(path).item_vocab)
    for name, entry in files.items():
        assert entry["sha256"] == hashlib.sha256((path / name).read_bytes()).hexdigest()

    other = shutil.copytree(gpu_runs["today"], tmp_path / "other")
    state = torch.load(other / "model.pt")
    state["state_dict"] = {k: v + 1 for k, v in state["state_dict"].items()}
    torch.save(state, path / "model.pt")  # weights that fit, but are not the run's
    with pytest.raises(RunDirError, match=r"model\.pt: not the file the run wrote"):
        RunDir(path).load_model()
    shutil.copy(other / "model.pt", path / "model.pt")
    users = pq.read_table(path / "users.parquet")
    pq.write_table(users.slice(0, 10), path / "users.parquet")
    with pytest.raises(RunDirError, match=r"users\.parquet: 10 rows where the run wrote"):
        Retriever.from_run(path)
    shutil.copy(other / "users.parquet", path / "users.parquet")
    assert Retriever.from_run(path).recommend([1], 5).ids.shape == (1, 5)

    # evaluate --save rewrites the outcomes and their record together
    outcomes = Outcomes.read(path / "outcomes.parquet")
    (path / "outcomes.parquet").write_bytes(b"")
    RunDir(path).write_outcomes(outcomes)
    recorded = json.loads((path / "run.json").read_text())["files"]["outcomes.parquet"]
    assert RunDir(path).checked("outcomes.parquet") == path / "outcomes.parquet"
    assert recorded["rows"] == pq.read_metadata(path / "outcomes.parquet").num_rows


def test_data_paths_travel_with_the_run(tmp_path):
    """A log given by path is saved relative to the run: the run and its data moved together
    evaluate; the data gone is one error naming the key."""
    from conftest import walk_log

    data = tmp_path / "project" / "data"
    data.mkdir(parents=True)
    log = walk_log(np.random.default_rng(3).integers(8, 16, 60), 60, seed=3)
    log.frame[["user", "item", "timestamp"]].to_csv(data / "log.csv", index=False)
    config = small_config(data={"dataset": None, "path": str(data / "log.csv"), "max_len": 10})
    run = pipeline.train(config, run=tmp_path / "project" / "runs" / "a").run
    saved = yaml.safe_load((run.path / "config.yaml").read_text())
    assert saved["data"]["path"] == "../../data/log.csv"
    assert "device" not in saved["train"]  # the machine's settings are not the experiment's
    moved = tmp_path / "elsewhere"
    shutil.move(tmp_path / "project", moved)
    again = RunDir(moved / "runs" / "a")
    assert again.config.data.path == moved / "data" / "log.csv"
    metrics = pipeline.evaluate_run(again)
    assert metrics["test"] == json.loads((again.path / "metrics.json").read_text())["test"]
    (moved / "data" / "log.csv").unlink()
    with pytest.raises(RunDirError, match=r"data\.path of the run is not found at .*log\.csv"):
        pipeline.evaluate_run(RunDir(moved / "runs" / "a"))


def test_an_export_manifest_is_read_through_its_migration_hook(gpu_runs, tmp_path, monkeypatch):
    from towerkit.retrieval import export as export_module
    from towerkit.retrieval.export import ExportError

    out = export_run(gpu_runs["today"], tmp_path / "export")
    manifest = json.loads((out / "manifest.json").read_text())
    version = manifest["format"]
    manifest["history_length"] = manifest.pop("max_len")  # as a format-older export said it
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(KeyError, match="max_len"):
        ExportDir(out).retriever()
    monkeypatch.setattr(export_module, "FORMAT_VERSION", version + 1)

    def rename_back(manifest: dict, path) -> None:
        manifest["max_len"] = manifest.pop("history_length")

    monkeypatch.setitem(export_module.MANIFEST_MIGRATIONS, version, rename_back)
    retriever = ExportDir(out).retriever()
    assert retriever.max_len == 10 and len(retriever.recommend([1], 3).items[0]) == 3
    manifest["format"] = version + 2
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ExportError, match="upgrade towerkit"):
        ExportDir(out)


@pytest.mark.parametrize("interests", [None, 1, 3])
def test_every_consumer_reads_the_declared_interests(walk_prepared, tmp_path, interests):
    """A model declares how many vectors a user gets (None: one, [B, D]; K: [B, K, D], K = 1
    included); training, evaluation, retrieval, the export and its format-1 migration read the
    declaration."""
    model = (
        {"name": "youtube_dnn", "embedding_dim": 16, "hidden": [32]}
        if interests is None
        else {"name": "comirec_sa", "embedding_dim": 16, "interests": interests}
    )
    outcome = pipeline.train(small_config(model=model), walk_prepared, run=tmp_path / "run")
    assert outcome.model.n_interests == interests
    retriever = Retriever.from_run(outcome.run)
    assert retriever.interests == interests
    expected = retriever.recommend(walk_prepared.encoded.user_vocab.raw[:4], 5).items
    out = export_run(outcome.run.path, tmp_path / "export")
    assert json.loads((out / "manifest.json").read_text())["interests"] == interests
    assert (
        ExportDir(out)
        .retriever()
        .recommend(walk_prepared.encoded.user_vocab.raw[:4], 5)
        .items.tolist()
        == expected.tolist()
    )
    # An export of format 1 (no declaration) is migrated: K from the stored vectors' width.
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["interests"]
    (out / "manifest.json").write_text(json.dumps({**manifest, "format": 1}))
    old = ExportDir(out)
    assert old.manifest["interests"] == interests and old.manifest["format"] == 2
    _, test = pipeline.evaluators(small_config(model=model), walk_prepared)
    users = test.user_vectors(outcome.model)
    with pytest.raises(ValueError, match="declares"):
        wrong = None if interests is not None else 2
        test.evaluate_vectors(users, test.item_vectors(outcome.model), retriever.similarity,
                              interests=wrong)  # fmt: skip


def test_library_callers_train_through_the_same_lifecycle(walk_prepared, tmp_path, monkeypatch):
    """towerkit.runs.lifecycle runs what `towerkit train` runs: the run directory, its train.log,
    resume; and pipeline.train refuses a torchrun process that has not joined the group."""
    import logging

    from towerkit.runs import lifecycle

    logging.getLogger("towerkit").setLevel(logging.INFO)
    try:
        outcome = lifecycle.train(small_config(), tmp_path / "run", prepared=walk_prepared)
    finally:
        logging.getLogger("towerkit").setLevel(logging.NOTSET)
    assert outcome.main and outcome.run.finished
    assert "test: HR@10" in (tmp_path / "run" / "train.log").read_text()
    with pytest.raises(RunDirError, match="not empty"):
        lifecycle.train(small_config(), tmp_path / "run", prepared=walk_prepared)
    with pytest.raises(RunDirError, match="finished already"):
        lifecycle.resume(tmp_path / "run", prepared=walk_prepared)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="not in its process group"):
        pipeline.train(small_config(), walk_prepared)


def test_a_file_where_a_run_directory_goes_is_named_as_a_file(tmp_path):
    taken = tmp_path / "run"
    taken.write_text("notes")
    with pytest.raises(RunDirError, match=r"run: is a file, not a directory"):
        RunDir.check_new(taken)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(RunDirError, match="exists and is not empty"):
        RunDir.check_new(tmp_path / "full")


def test_files_written_whole_get_the_mode_of_any_new_file(tmp_path):
    """atomic_write's temporary file is private (mkstemp); the file it puts in place is not:
    it has the mode the umask gives any new file, so another account can read a run."""
    import os

    from towerkit.files import atomic_write, current_umask, staging_dir

    before = os.umask(0o027)
    try:
        assert current_umask() == 0o027
        atomic_write(tmp_path / "a.txt", lambda tmp: tmp.write_text("x"))
        (tmp_path / "plain.txt").write_text("x")
        staged = staging_dir(tmp_path / "run")
        (tmp_path / "plain").mkdir()
    finally:
        os.umask(before)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "plain.txt").stat().st_mode & 0o777 == 0o640
    assert staged.stat().st_mode & 0o777 == (tmp_path / "plain").stat().st_mode & 0o777 == 0o750
