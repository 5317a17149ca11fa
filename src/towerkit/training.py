"""One Trainer for every model, mode and negative strategy.

The loop reads top to bottom: encode the batch's users, let the negative strategy produce
``(pos, neg, mask)`` logits, apply the objective chosen at construction, step AdamW. After each
epoch the validation stage is ranked over the full catalogue; training stops early when
validation NDCG@10 has not improved for ``patience`` epochs, and the best weights are restored.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from towerkit.data.batches import SequenceBatch, SequenceBatches, TrainingBatches
from towerkit.evaluation import Evaluator
from towerkit.models.base import MatchingModel
from towerkit.negatives import FullNegatives, Negatives
from towerkit.objectives import Objective, listwise
from towerkit.similarity import Similarity, Temperature

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSettings:
    """How to train.

    Attributes:
        epochs: the most epochs to run.
        lr, weight_decay: AdamW's.
        clip_norm: gradient-norm clipping (0 turns it off).
        schedule: ``"constant"``, ``"cosine"`` (decay to 0) or ``"linear"`` (decay to 0), each
            after ``warmup`` steps of linear warm-up.
        patience: epochs without a better validation NDCG@10 before stopping (0: never stop
            early; the best epoch's weights are still restored).
        monitor: the validation metric that picks the best epoch.
        seed: seeds torch (dropout, initialisation) and the negative sampler.
        device: ``"cpu"``, ``"cuda"``, ...
        threads: torch's intra-op threads (0 leaves torch's default). On a small shared
            machine, more threads than free cores can make an epoch many times slower.
        progress: show a progress bar per epoch.
    """

    epochs: int = 10
    lr: float = 1e-3
    weight_decay: float = 0.0
    clip_norm: float = 1.0
    schedule: str = "constant"
    warmup: int = 0
    patience: int = 3
    monitor: str = "ndcg@10"
    seed: int = 0
    device: str = "cpu"
    threads: int = 0
    progress: bool = True


@dataclass
class EpochLog:
    epoch: int
    loss: float
    seconds: float
    samples_per_second: float
    valid: dict[str, float] = field(default_factory=dict)
    eval_seconds: float = 0.0


@dataclass
class TrainResult:
    epochs: list[EpochLog]
    best_epoch: int
    best_valid: dict[str, float]
    train_seconds: float

    @property
    def seconds_per_epoch(self) -> float:
        return sum(e.seconds for e in self.epochs) / max(len(self.epochs), 1)

    @property
    def samples_per_second(self) -> float:
        return sum(e.samples_per_second for e in self.epochs) / max(len(self.epochs), 1)


def _lr_lambda(schedule: str, warmup: int, total: int):
    if schedule not in ("constant", "cosine", "linear"):
        raise ValueError(f"unknown schedule {schedule!r}; use constant, cosine or linear")

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if schedule == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


class Trainer:
    """Trains a :class:`MatchingModel` with one objective and one negative strategy.

    Args:
        model: the model (its parameters and the temperature's are optimised).
        objective: a loss from :mod:`towerkit.objectives` (picked once).
        negatives: a strategy from :mod:`towerkit.negatives`.
        similarity: how vectors are scored.
        temperature: divides scores before the loss.
        settings: see :class:`TrainSettings`.
    """

    def __init__(
        self,
        model: MatchingModel,
        *,
        objective: Objective,
        negatives: Negatives,
        similarity: Similarity,
        temperature: Temperature,
        settings: TrainSettings | None = None,
    ) -> None:
        self.settings = settings or TrainSettings()
        self.device = torch.device(self.settings.device)
        self.model = model.to(self.device)
        self.temperature = temperature.to(self.device)
        self.objective, self.negatives, self.similarity = objective, negatives, similarity
        # List-wise over the full catalogue is one fused cross-entropy (chosen once, here).
        self.fused_softmax = isinstance(negatives, FullNegatives) and objective is listwise

    def step_loss(self, batch, generator: torch.Generator | None = None) -> torch.Tensor:
        """The loss of one batch (the whole forward pass, no optimiser step)."""
        if isinstance(batch, SequenceBatch):
            # Every real position of every window is a query: one pass, many (query, positive).
            layout = batch.targets > 0  # (W, L)
            queries = self.model.encode_positions(batch)[layout]  # (Q, D)
            positives = batch.targets[layout]  # (Q,)
        else:
            queries = self.model.encode_users(batch)  # (B, D)
            positives, layout = batch.targets, None
        if self.fused_softmax:
            return self.negatives.softmax_loss(
                queries, positives, self.model.encode_items, self.similarity, self.temperature
            )
        pos, neg, mask = self.negatives.logits(
            queries,
            positives,
            self.model.encode_items,
            self.similarity,
            self.temperature,
            generator,
            layout,
        )
        # The strategy has already divided by the temperature (and applied log-q).
        return self.objective(pos, neg, mask=mask)

    def fit(
        self, batches: TrainingBatches | SequenceBatches, evaluator: Evaluator | None = None
    ) -> TrainResult:
        """Train for up to ``settings.epochs`` epochs; keep the best validation weights."""
        s = self.settings
        if s.threads:
            torch.set_num_threads(s.threads)
        torch.manual_seed(s.seed)
        generator = torch.Generator().manual_seed(s.seed)
        params = [p for p in self.model.parameters() if p.requires_grad]
        params += [p for p in self.temperature.parameters() if p.requires_grad]
        # The fused kernel updates every parameter in one pass; the default runs a dozen small
        # ops per tensor, a tenth of a step for small models (benchmarks/rechub_throughput.py).
        fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
        optimizer = torch.optim.AdamW(
            params, lr=s.lr, weight_decay=s.weight_decay, fused=fused or None
        )
        total = s.epochs * len(batches)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, _lr_lambda(s.schedule, s.warmup, total)
        )
        logs: list[EpochLog] = []
        best_score, best_epoch, best_valid = -math.inf, -1, {}
        best_state = None
        stale = 0
        start = time.perf_counter()
        for epoch in range(s.epochs):
            self.model.train()
            t0 = time.perf_counter()
            total_loss, steps = 0.0, 0
            bar = tqdm(
                batches.epoch(epoch),
                total=len(batches),
                desc=f"epoch {epoch + 1}/{s.epochs}",
                disable=not s.progress,
                leave=False,
            )
            for batch in bar:
                batch = batch.to(self.device)
                loss = self.step_loss(batch, generator)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if s.clip_norm > 0:
                    torch.nn.utils.clip_grad_norm_(params, s.clip_norm)
                optimizer.step()
                scheduler.step()
                total_loss += float(loss.detach())
                steps += 1
                if steps % 50 == 0:
                    bar.set_postfix(loss=f"{total_loss / steps:.4f}")
            seconds = time.perf_counter() - t0
            log = EpochLog(
                epoch=epoch + 1,
                loss=total_loss / max(steps, 1),
                seconds=seconds,
                samples_per_second=batches.n_samples / seconds,
            )
            if evaluator is not None:
                log.valid = evaluator.evaluate(self.model, self.similarity, self.device)
                log.eval_seconds = evaluator.last_seconds
            logs.append(log)
            logger.info(
                "epoch %d: loss %.4f, valid HR@10 %.4f, NDCG@10 %.4f, %.1f s (%.0f samples/s), "
                "temperature %.4g%s",
                log.epoch,
                log.loss,
                log.valid.get("hr@10", float("nan")),
                log.valid.get("ndcg@10", float("nan")),
                seconds,
                log.samples_per_second,
                self.temperature.value,
                (
                    f", index recall@10 {log.valid['index_recall@10']:.4f}"
                    if "index_recall@10" in log.valid
                    else ""
                ),
            )
            score = log.valid.get(s.monitor, -log.loss)
            if score > best_score:
                best_score, best_epoch, best_valid, stale = score, epoch + 1, log.valid, 0
                best_state = copy.deepcopy(
                    {"model": self.model.state_dict(), "temp": self.temperature.state_dict()}
                )
            else:
                stale += 1
                if s.patience and stale >= s.patience:
                    logger.info("early stop: no better %s for %d epochs", s.monitor, stale)
                    break
        if best_state is not None:
            self.model.load_state_dict(best_state["model"])
            self.temperature.load_state_dict(best_state["temp"])
        return TrainResult(logs, best_epoch, best_valid, time.perf_counter() - start)
