"""Benchmark: training and evaluation against the machine's own limit (a roofline row per
config).

In one run:

1. **The peak.** ``torch.matmul`` of two 2048x2048 matrices, fp32 and bf16, at 1 thread and at
   every thread (best of 5 after a warm-up): the FLOP/s a dense kernel reaches here.
2. **Each shipped ML-1M and S3-Rec config** (``configs/ml-1m/*.yaml``, ``configs/s3rec/sasrec.yaml``
   on Amazon Beauty), built as ``towerkit train`` builds it, for one whole epoch:
   - every step's FLOPs, counted by ``torch.utils.flop_counter.FlopCounterMode`` in an untimed
     eager pass of the same batch (forward and backward; matrix products, attention,
     convolutions: what the counter knows), averaged: windows differ in length by batch;
   - every step timed in its parts: data (the next batch, moved to the device), forward (the
     loss), backward, optimizer (clipping, the step, the schedule);
   - the validation ranking after the epoch, timed and counted alone.

   Each row is an achieved FLOP/s as a fraction of the measured peak (fp32 at every thread: what
   training uses today), for the step (forward + backward + optimizer + data), the epoch
   (evaluation included) and the evaluation alone.

``--variants`` measures each config again with a faster setting: ``bf16``
(``train.precision=bf16``) or ``compile`` (``train.compile=true``). Every variant's first step is
a warm-up (torch.compile compiles there), timed apart and left out of the parts; with ``--steps``
below an epoch, the epoch is the measured steps' mean times the epoch's steps, plus the
validation.

Run:
    TOWERKIT_DATA_MIRROR=../shared/data python benchmarks/roofline.py   # results/roofline.md
    python benchmarks/roofline.py --configs configs/ml-1m/sasrec.yaml --steps 200
    python benchmarks/roofline.py --configs configs/ml-1m/youtube_dnn.yaml \
        --variants fp32 bf16 compile
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from _results import matmul_gflops, write_keeping_notes  # benchmarks/_results.py

RESULTS = Path(__file__).parent / "results" / "roofline.md"
ROOT = Path(__file__).parent.parent
CONFIGS = [*sorted((ROOT / "configs" / "ml-1m").glob("*.yaml")), ROOT / "configs/s3rec/sasrec.yaml"]
VARIANTS = {
    "fp32": [],
    "bf16": ["train.precision=bf16"],
    "compile": ["train.compile=true"],
}


def peak(dtype: torch.dtype, threads: int, n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of an n x n matrix product at ``threads`` threads (best of ``repeats``)."""
    torch.set_num_threads(threads)
    return matmul_gflops(n, n, n, repeats, dtype) * 1e9


@dataclass
class Row:
    name: str
    variant: str
    steps: int
    total_steps: int
    first_step: float
    step_flops: float
    data: float
    forward: float
    backward: float
    optimizer: float
    eval_seconds: float
    eval_flops: float

    @property
    def train_seconds(self) -> float:
        return self.data + self.forward + self.backward + self.optimizer

    @property
    def epoch_seconds(self) -> float:
        """The epoch's steps at the measured steps' mean, and the validation."""
        return self.train_seconds * self.total_steps / self.steps + self.eval_seconds


def measure(path: Path, steps: int | None, variant: str = "fp32") -> Row:
    """One epoch of the config at ``path`` (or its first ``steps`` steps), timed by part."""
    from towerkit.config import load_config
    from towerkit.runs import pipeline
    from towerkit.runs.components import build_batches, build_loss, build_model, evaluators
    from towerkit.training.trainer import Trainer

    config = load_config(path, VARIANTS[variant]).on_machine(progress=False)
    prepared = pipeline.prepare(config.data, progress=False)
    torch.manual_seed(config.train.seed)
    model = build_model(config, prepared)
    task, contrastive = build_loss(config, model, prepared)
    batches = build_batches(config, prepared, model)
    trainer = Trainer(model, task, config.train, contrastive=contrastive)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    c = config.train
    optimizer, _ = trainer.build_optimizer(len(batches))
    valid, _ = evaluators(config, prepared)
    model.train()
    times = {"data": 0.0, "forward": 0.0, "backward": 0.0, "optimizer": 0.0}
    iterator = iter(batches.epoch(0))
    batch = next(iterator).to(trainer.device)
    flops = 0.0  # summed over the measured steps: windows differ in length from batch to batch
    start = time.perf_counter()  # the warm-up: torch.compile compiles here
    loss = trainer.step_loss(batch)
    loss.backward()
    optimizer.step()
    first = time.perf_counter() - start
    done = 0
    while steps is None or done < steps:
        t0 = time.perf_counter()
        batch = next(iterator, None)
        if batch is None:
            break
        batch = batch.to(trainer.device)
        data = time.perf_counter() - t0
        with FlopCounterMode(display=False) as counter:  # untimed, eager: what it computes
            trainer.step(batch).backward()
        flops += counter.get_total_flops()
        optimizer.zero_grad()
        t1 = time.perf_counter()
        loss = trainer.step_loss(batch)
        float(loss.detach())  # (as the trainer reads it: the step's end on any device)
        t2 = time.perf_counter()
        optimizer.zero_grad()
        loss.backward()
        t3 = time.perf_counter()
        if c.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(optimizer.dense, c.clip_norm)
        optimizer.step()
        t4 = time.perf_counter()
        for part, seconds in zip(times, (data, t2 - t1, t3 - t2, t4 - t3), strict=True):
            times[part] += seconds
        done += 1
    model.eval()
    with FlopCounterMode(display=False) as counter:
        valid.evaluate(model, task.similarity, trainer.device)
    eval_flops = counter.get_total_flops()
    start = time.perf_counter()
    with trainer.precision.autocast():  # as the trainer validates
        valid.evaluate(model, task.similarity, trainer.device)
    eval_seconds = time.perf_counter() - start
    name = f"{path.parent.name}/{path.stem}"
    return Row(name, variant, done, len(batches) - 1, first, flops / max(done, 1), **times,
               eval_seconds=eval_seconds, eval_flops=float(eval_flops))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", type=Path, default=CONFIGS)
    parser.add_argument("--steps", type=int, default=None, help="steps per config (an epoch)")
    parser.add_argument("--variants", nargs="+", default=["fp32"], choices=list(VARIANTS))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    load = os.getloadavg()[0]
    cores = os.cpu_count() or 1
    peaks = {
        (dtype, threads): peak(getattr(torch, dtype), threads)
        for dtype in ("float32", "bfloat16")
        for threads in (1, cores)
    }
    for key, value in peaks.items():
        print(key, f"{value / 1e9:.1f} GFLOP/s", flush=True)
    torch.set_num_threads(cores)
    rows: list[Row] = []
    for path, variant in ((p, v) for p in args.configs for v in args.variants):
        rows.append(measure(path, args.steps, variant))
        print(rows[-1], flush=True)
        write(rows, peaks, cores, load)  # after every row: a failure keeps the rows done
    print(f"written to {RESULTS}")


def write(rows: list[Row], peaks: dict, cores: int, load: float) -> None:
    reference = peaks[("float32", cores)]
    lines = [
        "# Training against the machine's own limit",
        "",
        f"`python benchmarks/roofline.py` on {date.today()}: {platform.machine()}, {cores} cores, "
        f"torch {torch.__version__}; load average {load:.2f} before the run.",
        "",
        "## The peak: a 2048 x 2048 matrix product",
        "",
        "| dtype | 1 thread GFLOP/s | " + f"{cores} threads GFLOP/s |",
        "|---|---:|---:|",
    ]
    for dtype in ("float32", "bfloat16"):
        lines.append(
            f"| {dtype} | {peaks[(dtype, 1)] / 1e9:.0f} | {peaks[(dtype, cores)] / 1e9:.0f} |"
        )
    lines += [
        "",
        f"## Each config, one epoch at {cores} threads (the fraction: of the fp32 peak at "
        f"{cores} threads, {reference / 1e9:.0f} GFLOP/s)",
        "",
        "FLOPs are `torch.utils.flop_counter`'s (matrix products, attention; not the "
        "element-wise work, the embedding lookups or the optimizer), counted on every measured "
        "step in an untimed eager pass and averaged. A step's time is data + "
        "forward + backward + optimizer; the epoch adds the validation ranking. The first step "
        "is a warm-up (`first s`: torch.compile compiles there), left out of the parts; "
        "`steps` are those measured, and an epoch of fewer measured steps than it has is "
        "their mean times its steps.",
        "",
        "| config | variant | steps | first s | GFLOP per step | step GFLOP/s | of peak | epoch s "
        "| epoch of peak | eval s | eval GFLOP/s | eval of peak | data | forward | backward "
        "| optimizer | eval |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        step = r.step_flops * r.steps / r.train_seconds
        epoch = (r.step_flops * r.total_steps + r.eval_flops) / r.epoch_seconds
        evaluation = r.eval_flops / r.eval_seconds
        scale = r.total_steps / r.steps
        share = [r.data * scale, r.forward * scale, r.backward * scale, r.optimizer * scale,
                 r.eval_seconds]  # fmt: skip
        lines.append(
            f"| {r.name} | {r.variant} | {r.steps:,} | {r.first_step:.1f} | "
            f"{r.step_flops / 1e9:.2f} | {step / 1e9:.1f} | "
            f"{step / reference:.1%} | {r.epoch_seconds:.1f} | {epoch / reference:.1%} | "
            f"{r.eval_seconds:.1f} | {evaluation / 1e9:.1f} | {evaluation / reference:.1%} | "
            + " | ".join(f"{s / r.epoch_seconds:.0%}" for s in share)
            + " |"
        )
    lines.append("")
    write_keeping_notes(RESULTS, "\n".join(lines))


if __name__ == "__main__":
    main()
