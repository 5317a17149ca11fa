"""Building the components of a run from its config, each in one place: the model, the
negative strategy, the loss (the retrieval task and any contrastive term), the training
batches and the evaluators."""

from __future__ import annotations

from typing import Any

import numpy as np

from towerkit.config import Config
from towerkit.data import Prepared
from towerkit.data.batches import SequenceBatches, TrainingBatches
from towerkit.evaluation import Evaluator
from towerkit.models import MODELS, MatchingModel
from towerkit.models import build_model as build_model_from_section
from towerkit.task import RetrievalTask
from towerkit.task.negatives import (
    CatalogueSampler,
    FullNegatives,
    InBatchNegatives,
    MixedNegatives,
    Negatives,
    SampledNegatives,
)
from towerkit.task.objectives import Mode
from towerkit.training.contrastive import ContrastiveTerm, contrastive_term
from towerkit.types import SeenPolicy

__all__ = [
    "build_batches",
    "build_loss",
    "build_model",
    "build_negatives",
    "build_task",
    "evaluators",
    "trains_on_windows",
]


def build_model(config: Config, prepared: Prepared) -> MatchingModel:
    """The model of ``config.model``, sized for the prepared data."""
    encoded = prepared.encoded
    return build_model_from_section(
        config.model,
        n_users=encoded.n_users,
        n_items=encoded.n_items,
        max_len=config.data.max_len,
        user_features=encoded.user_features,
        item_features=encoded.item_features,
    )


def trains_on_windows(config: Config) -> bool:
    """Whether training batches are windows of positions (sequential models, train.windows)."""
    return MODELS[config.model.name].sequential or config.train.windows > 0


def build_negatives(config: Config, n_items: int, train_counts: np.ndarray) -> Negatives:
    """The candidate strategy of ``config.negatives``. Sampled negatives are drawn per window
    when training batches are windows, unless the config says otherwise: ``n`` per position
    would be ``[positions, n, D]`` vectors."""
    n = config.negatives
    if n.kind == "full":
        return FullNegatives(n_items)
    in_batch = InBatchNegatives.from_counts(train_counts)
    if n.kind == "in_batch":
        return in_batch
    sampler = CatalogueSampler.build(n.sampler, train_counts, n.alpha)
    shared = trains_on_windows(config) if n.shared is None else n.shared
    sampled = SampledNegatives(sampler, n.n, shared=shared, seed=config.train.seed)
    return sampled if n.kind == "sampled" else MixedNegatives(in_batch, sampled)


def build_task(config: Config, model: MatchingModel, prepared: Prepared) -> RetrievalTask:
    """The retrieval task: similarity, temperature, objective, negatives, log-q, masking."""
    n = config.negatives
    if n.kind == "full":
        logq, mask_hits = False, True
    else:
        logq = n.logq if n.logq is not None else config.train.mode is Mode.LISTWISE
        mask_hits = n.mask_hits
    return RetrievalTask(
        model.encode_items,
        negatives=build_negatives(config, prepared.encoded.n_items, prepared.train_counts),
        similarity=config.similarity.build(),
        temperature=config.temperature.build(),
        mode=config.train.mode,
        logq=logq,
        mask_hits=mask_hits,
        seen=SeenPolicy.parse(n.exclude_seen),
    )


def build_loss(
    config: Config, model: MatchingModel, prepared: Prepared
) -> tuple[RetrievalTask, ContrastiveTerm | None]:
    """Everything the loss is made of, read from the config here alone: the retrieval task
    and the contrastive term added to it (None at weight 0)."""
    task = build_task(config, model, prepared)
    return task, contrastive_term(config.train.contrastive, task.similarity)


def build_batches(
    config: Config, prepared: Prepared, model: MatchingModel
) -> TrainingBatches | SequenceBatches:
    """Independent samples, or windows of positions (sequential models; ``train.windows``)."""
    t, max_len = config.train, config.data.max_len
    seen = SeenPolicy.parse(config.negatives.exclude_seen)
    if model.sequential:
        return SequenceBatches(
            prepared.split, batch_size=t.batch_size, max_len=max_len, seed=t.seed, seen=seen,
            times=model.reads_times,
        )  # fmt: skip
    if t.windows:
        # As many windows per batch as hold batch_size samples on average (windows are often
        # shorter than train.windows: a user's first window, and users with few ratings), so a
        # step trains as many samples as a per-sample batch of the same batch_size.
        probe = SequenceBatches(prepared.split, max_len=t.windows, context=max_len - 1)
        per_window = probe.n_samples / max(probe.n_windows, 1)
        return SequenceBatches(
            prepared.split,
            batch_size=max(1, round(t.batch_size / max(per_window, 1.0))),
            max_len=t.windows,
            context=max_len - 1,
            seed=t.seed,
            seen=seen,
        )
    return TrainingBatches(
        prepared.split, batch_size=t.batch_size, max_len=max_len, seed=t.seed, seen=seen
    )


def evaluators(
    config: Config, prepared: Prepared, *, index_on_test: bool = False
) -> tuple[Evaluator, Evaluator]:
    """Validation and test evaluators. Validation ranks through ``config.eval.index``; the test
    stage is exact unless ``index_on_test`` (``towerkit evaluate --index``)."""
    index = {"index": config.eval.index, "index_options": config.eval.index_options}
    test_options = {**(index if index_on_test else {}), "depth": config.eval.depth}
    return stage_evaluator(config, prepared, "valid"), stage_evaluator(
        config, prepared, "test", **test_options
    )


def stage_evaluator(config: Config, prepared: Prepared, stage: str, **options: Any) -> Evaluator:
    """The evaluator of one stage (``"valid"``: through ``config.eval.index``; ``options``
    replace that). Only this stage's targets are read: a search validates without ever
    reading the test stage."""
    kwargs = {
        "ks": config.eval.ks,
        "max_len": config.data.max_len,
        "batch_size": config.eval.batch_size,
        "max_bytes": config.eval.max_bytes,
        "sample_users": config.eval.sample_users,
        "sample_seed": config.eval.sample_seed,
        "mask_seen": config.eval.mask_seen,
    }
    if stage == "valid":
        kwargs.update(index=config.eval.index, index_options=config.eval.index_options)
    kwargs.update(options)
    return Evaluator(prepared.split, stage, prepared.encoded.n_items, **kwargs)
