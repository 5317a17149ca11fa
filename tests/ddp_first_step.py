"""One training step's loss and gradients, run alone or under torchrun by test_distributed.py.

Usage: ``python ddp_first_step.py CONFIG OUT`` (rank 0 saves ``{"loss", "grads"}`` to OUT).
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
config, out = load_config(sys.argv[1]), sys.argv[2]
ctx = distributed.setup(config.train.device)
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
grads.update({f"task.{name}": p.grad for name, p in task.named_parameters() if p.grad is not None})
del trainer  # before leaving the process group (see distributed.teardown)
if ctx.main:
    torch.save({"loss": value, "grads": grads, "world": ctx.world}, out)
distributed.teardown()
