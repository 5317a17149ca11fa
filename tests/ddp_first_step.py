"""One training step's loss and gradients, run alone or under torchrun by test_distributed.py.

Usage: ``python ddp_first_step.py CONFIG OUT [CONFIG OUT ...]``: for each config in turn, one
first step (rank 0 saves ``{"loss", "grads", "world"}`` to its OUT). The cases share one
process group, so the interpreters and the rendezvous start once for all of them.
"""

from __future__ import annotations

import sys

import torch

from towerkit import distributed
from towerkit.config import load_config
from towerkit.distributed import RankBatches
from towerkit.runs import pipeline
from towerkit.training import Trainer

# float64, so that the comparison measures the algorithm, not float32 summation order
torch.set_default_dtype(torch.float64)
cases = list(zip(sys.argv[1::2], sys.argv[2::2], strict=True))
ctx = None
for path, out in cases:
    config = load_config(path)
    ctx = ctx or distributed.setup(config.train.device)
    prepared = pipeline.prepare(config.data, progress=False)
    torch.manual_seed(config.train.seed)
    model = pipeline.build_model(config, prepared)
    task = pipeline.build_task(config, model, prepared)
    batches = pipeline.build_batches(config, prepared, model)
    trainer = Trainer(model, task, config.train)
    if ctx.active:
        batches = RankBatches(batches, ctx)
    loss = trainer.step_loss(next(iter(batches.epoch(0))))
    loss.backward()
    value = distributed.all_reduce_mean(float(loss.detach()))
    grads = {name: p.grad.to_dense() for name, p in model.named_parameters() if p.grad is not None}
    grads.update(
        {f"task.{name}": p.grad for name, p in task.named_parameters() if p.grad is not None}
    )
    del trainer  # before the next case's model, and before leaving the process group
    if ctx.main:
        torch.save({"loss": value, "grads": grads, "world": ctx.world}, out)
distributed.teardown()
