"""Training under torchrun (issue 14): real torchrun processes, gloo on loopback.

- one step of a 2-process run has the gradients of one process on the concatenated batch;
- a 2-process run ends where the single-process run ends, and resumes under torchrun;
- two torchrun agents (``--nnodes 2``, c10d rendezvous at 127.0.0.1) write one run directory.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import free_port, towerkit
from towerkit.distributed import Context, RankBatches

HERE = Path(__file__).parent
# Loopback only: gloo picks its interface by name, and tests never leave the machine.
ENV = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}


def torchrun(*args: str, env=None, timeout: float = 300) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", *args]
    return subprocess.run(
        command, capture_output=True, text=True, env=env or ENV, timeout=timeout, cwd=HERE
    )


# --------------------------------------------------------------------------------------------
# Each rank's share of a global batch
# --------------------------------------------------------------------------------------------


class FakeBatches:
    n_samples = 23

    def batches_of(self, epoch):
        order = np.random.default_rng(epoch).permutation(self.n_samples)
        return [order[b : b + 10] for b in range(0, self.n_samples, 10)]  # 10, 10, 3

    def make_batch(self, indices):
        return indices


@pytest.mark.parametrize("world", [2, 3, 4])
def test_ranks_split_every_global_batch_into_contiguous_shares(world):
    fake = FakeBatches()
    shares = [list(RankBatches(fake, Context(rank, world)).epoch(5)) for rank in range(world)]
    kept = [b for b in fake.batches_of(5) if len(b) >= world]
    assert all(len(s) == len(kept) == len(RankBatches(fake, Context(0, world))) for s in shares)
    for step, batch in enumerate(kept):
        assert np.array_equal(np.concatenate([s[step] for s in shares]), batch)
    # A last global batch of 3 samples is dropped by 4 ranks alike (every rank steps as often).
    assert len(kept) == (2 if world == 4 else 3)


# --------------------------------------------------------------------------------------------
# The first step: 2 processes == 1 process on the concatenated batch
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_log(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for user in range(60):
        start = rng.integers(0, 40)
        for t in range(int(rng.integers(8, 20))):
            item = (start + t) % 40 if rng.random() > 0.1 else rng.integers(0, 40)
            rows.append((user, int(item), t))
    path = tmp_path_factory.mktemp("log") / "log.csv"
    pd.DataFrame(rows, columns=["user", "item", "timestamp"]).to_csv(path, index=False)
    return path


CASES = {
    "pooled-in-batch": ("youtube_dnn", {"kind": "in_batch"}),
    "pooled-in-batch-unmasked": ("youtube_dnn", {"kind": "in_batch", "mask_hits": False}),
    "pooled-mixed": ("youtube_dnn", {"kind": "mixed", "n": 5}),
    "pooled-full": ("youtube_dnn", {"kind": "full"}),
    "sequential-mixed": ("sasrec", {"kind": "mixed", "n": 5}),
    "sequential-full": ("sasrec", {"kind": "full"}),
    "pooled-mixed-sparse": ("youtube_dnn", {"kind": "mixed", "n": 5}, {"sparse": True}),
}


@pytest.fixture(scope="module")
def first_steps(small_log, tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """Every case's first step, alone and under torchrun with 2 processes: one launch of each
    for all the cases (starting interpreters and the rendezvous dominates a step this small)."""
    folder = tmp_path_factory.mktemp("first-steps")
    outs = {}
    for case, (name, negatives, *train) in CASES.items():
        model = {"name": name, "embedding_dim": 8, "dropout": 0.0}
        model.update({"hidden": [16]} if name == "youtube_dnn" else {"n_layers": 1, "n_heads": 1})
        config = folder / f"{case}.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "data": {"path": str(small_log), "max_len": 8},
                    "model": model,
                    "negatives": negatives,
                    "temperature": {"value": 0.1, "learnable": True},
                    "train": {
                        "batch_size": 64 if name == "youtube_dnn" else 16,
                        "progress": False,
                        **(train[0] if train else {}),
                    },
                }
            )
        )
        outs[case] = (folder / f"{case}.one.pt", folder / f"{case}.two.pt")
    one = [a for case in CASES for a in (str(folder / f"{case}.yaml"), str(outs[case][0]))]
    two = [a for case in CASES for a in (str(folder / f"{case}.yaml"), str(outs[case][1]))]
    alone = subprocess.run(
        [sys.executable, "ddp_first_step.py", *one],
        capture_output=True, text=True, cwd=HERE, env=ENV, timeout=300,
    )  # fmt: skip
    assert alone.returncode == 0, alone.stderr[-3000:]
    done = torchrun("--standalone", "--nproc-per-node", "2", "ddp_first_step.py", *two)
    assert done.returncode == 0, done.stderr[-3000:]
    return outs


@pytest.mark.parametrize("case", CASES)
def test_two_processes_step_like_one_on_the_whole_batch(case, first_steps):
    """In-batch candidates gathered with their gradients, sampled ones drawn for the global
    batch, each rank's loss weighted by its share: DDP's averaged gradients equal the gradients
    of one process on the concatenated batch (float64, within 1e-6 of each tensor's scale)."""
    one, two = first_steps[case]
    a, b = torch.load(one), torch.load(two)
    assert (a["world"], b["world"]) == (1, 2)
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-9)
    assert sorted(a["grads"]) == sorted(b["grads"])
    for key, grad in a["grads"].items():
        scale = max(1.0, float(grad.abs().max()))
        assert float((grad - b["grads"][key]).abs().max()) <= 1e-6 * scale, key
    assert any(float(g.abs().max()) > 0 for g in a["grads"].values())


# --------------------------------------------------------------------------------------------
# Whole runs: towerkit train --nproc 2, resume under torchrun, two "nodes"
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def walk(tmp_path_factory):
    """An offline home, a walk log of 30,000 interactions (big enough that an epoch outlasts a
    signal's delivery, small enough that three torchrun launches stay quick), a config, and its
    single-process run."""
    from conftest import walk_log

    root = tmp_path_factory.mktemp("walk")
    log = root / "log.parquet"
    walk_log(np.full(600, 50), 800, seed=2).frame[["user", "item", "timestamp"]].to_parquet(log)
    env = {**ENV, "TOWERKIT_HOME": str(root / "home")}
    config = root / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": {"path": str(log), "max_len": 20},
                "model": {"name": "youtube_dnn", "embedding_dim": 16, "hidden": [32]},
                "negatives": {"kind": "mixed", "n": 16},
                "temperature": {"value": 0.1},
                "train": {"epochs": 3, "batch_size": 512, "lr": 0.005, "patience": 0},
            }
        )
    )
    done = towerkit(
        "-q", "train", str(config), "--out", str(root / "single"), env=env, process=True
    )
    assert done.returncode == 0, done.stderr
    return config, root / "single", env


def metrics_of(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


@pytest.fixture(scope="module")
def two_processes(walk, tmp_path_factory):
    """`towerkit train --nproc 2` of the walk config, tracked (TensorBoard and MLflow): the run,
    the command's output and the MLflow database (shared: each torchrun launch costs ~20 s)."""
    config, _, env = walk
    root = tmp_path_factory.mktemp("two")
    run = root / "run"
    trackers = ["--set", "train.track=[tensorboard,mlflow]",
                "--set", f"train.mlflow_uri=sqlite:///{root / 'mlflow.db'}"]  # fmt: skip
    done = towerkit("-q", "train", str(config), "--out", str(run), "--nproc", "2", *trackers,
                    env=env, process=True)  # fmt: skip
    return run, done, root / "mlflow.db"


def test_two_processes_train_to_the_single_process_result(walk, two_processes):
    _, single, _ = walk
    run, done, database = two_processes
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("run written to") == 1  # rank 0 alone prints
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    ours, theirs = metrics_of(run)["test"], metrics_of(single)["test"]
    assert abs(ours["hr@10"] - theirs["hr@10"]) <= 0.01
    assert ours["hr@10"] > 3 * metrics_of(run)["popularity"]["hr@10"]
    assert "training in 2 processes (gloo)" in (run / "train.log").read_text()
    # rank 0 alone tracks: one event file, one MLflow run with each epoch logged once
    assert len(list((run / "tensorboard").iterdir())) == 1
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{database}")
    (tracked,) = client.search_runs([client.get_experiment_by_name("towerkit").experiment_id])
    history = client.get_metric_history(tracked.info.run_id, "valid/hr_at_10")
    assert sorted(m.step for m in history) == [1, 2, 3]


def test_a_stopped_torchrun_resumes_under_torchrun(walk, two_processes, tmp_path):
    """SIGTERM to `towerkit train --nproc 2` after its first checkpoint stops every process;
    `--resume` under torchrun ends with the metrics of a 2-process run trained straight through
    (every rank's random state is in the checkpoint; tracking changes nothing)."""
    config, _, env = walk
    straight, done, _ = two_processes
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "stopped"
    job = subprocess.Popen(
        [sys.executable, "-m", "towerkit", "-q", "train", str(config), "--out", str(run),
         "--nproc", "2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not (run / "checkpoint.pt").exists():
            assert time.monotonic() < deadline and job.poll() is None
            time.sleep(0.05)
        job.send_signal(signal.SIGTERM)
        _, stderr = job.communicate(timeout=120)
    finally:
        job.kill()
    assert job.returncode != 0, stderr[-3000:]
    assert json.loads((run / "run.json").read_text())["status"] == "training"
    resumed = towerkit("-q", "train", "--resume", str(run), "--nproc", "2", env=env, process=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert metrics_of(run) == metrics_of(straight)
    assert "resuming after epoch" in (run / "train.log").read_text()


def test_two_nodes_on_loopback_write_one_run(walk, tmp_path):
    """Two torchrun agents, one process each, meet at a c10d rendezvous on 127.0.0.1."""
    config, _, env = walk
    run, port = tmp_path / "run", free_port()
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
        "--rdzv-backend", "c10d", "--rdzv-id", "towerkit-test",
        "--rdzv-endpoint", f"127.0.0.1:{port}", "--local-addr", "127.0.0.1",
        "-m", "towerkit", "-q", "train", str(config), "--out", str(run),
        "--set", "train.epochs=1",
    ]  # fmt: skip
    agents = [
        subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        for _ in range(2)
    ]
    outputs = [agent.communicate(timeout=300) for agent in agents]
    for agent, (_, stderr) in zip(agents, outputs, strict=True):
        assert agent.returncode == 0, stderr[-3000:]
    assert sum(out.count("run written to") for out, _ in outputs) == 1
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == ["run"]
    assert metrics_of(run)["test"]["hr@10"] > 3 * metrics_of(run)["popularity"]["hr@10"]
