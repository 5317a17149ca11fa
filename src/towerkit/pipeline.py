"""The whole flow of DESIGN.md as functions: fetch -> prepare -> train -> evaluate -> save.

Each step builds one stage from the validated :class:`~towerkit.config.Config`; the CLI, the
benchmarks and the tests call the same functions.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from towerkit import datasets
from towerkit.config import Config, ConfigError, DataConfig, config_from_dict, load_config
from towerkit.data import EncodedInteractions, Sequences, Split, encode, leave_one_out
from towerkit.data.batches import SequenceBatches, TrainingBatches
from towerkit.evaluation import Evaluator
from towerkit.models import DSSM, GRU4Rec, MatchingModel, SASRec, YouTubeDNN
from towerkit.negatives import (
    CatalogueSampler,
    FullNegatives,
    InBatchNegatives,
    MixedNegatives,
    Negatives,
    SampledNegatives,
    item_counts,
)
from towerkit.objectives import Mode, get_objective
from towerkit.similarity import Similarity, Temperature, get_similarity
from towerkit.training import Trainer, TrainResult, TrainSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    """Encoded data and its leave-one-out split.

    ``titles`` holds each item's title by item id (index 0 is padding), where the data set has
    titles.
    """

    encoded: EncodedInteractions
    split: Split
    titles: np.ndarray | None = None

    @property
    def train_counts(self) -> np.ndarray:
        """Training occurrences per item id (no validation or test interaction counted)."""
        return item_counts(self.split.train().items, self.encoded.n_items)


def prepare(data: DataConfig, *, progress: bool = True) -> Prepared:
    """Load a known data set, filter, encode its side features and split it (leave-one-out)."""
    spec = datasets.get_spec(data.dataset)
    interactions = datasets.load(data.dataset, progress=progress)
    if data.min_user_interactions or data.min_item_interactions or data.min_rating is not None:
        interactions = interactions.filter(
            min_user_interactions=data.min_user_interactions,
            min_item_interactions=data.min_item_interactions,
            min_rating=data.min_rating,
        )
    user_features = spec.user_features if data.user_features is None else data.user_features
    item_features = spec.item_features if data.item_features is None else data.item_features
    encoded = encode(interactions, user_features=user_features, item_features=item_features)
    titles = None
    items = interactions.items
    if items is not None and "title" in items.columns:
        by_item = items.set_index("item")["title"]
        titles = np.empty(encoded.n_items + 1, dtype=object)
        titles[0] = ""
        titles[1:] = by_item.reindex(encoded.item_vocab.raw).fillna("").astype(str).to_numpy()
    return Prepared(encoded, leave_one_out(Sequences.from_encoded(encoded)), titles)


def build_model(config: Config, encoded: EncodedInteractions) -> MatchingModel:
    m = config.model
    shared = {} if m.share_embeddings is None else {"share_embeddings": m.share_embeddings}
    if m.name == "sasrec":
        return SASRec(
            encoded.n_items,
            embedding_dim=m.embedding_dim,
            max_len=config.data.max_len,
            n_layers=m.n_layers,
            n_heads=m.n_heads,
            ffn_dim=m.ffn_dim,
            dropout=m.dropout,
            layer_norm=m.layer_norm,
            **shared,
        )
    if m.name == "gru4rec":
        return GRU4Rec(
            encoded.n_items,
            embedding_dim=m.embedding_dim,
            hidden_size=m.hidden_size,
            n_layers=m.n_layers,
            dropout=m.dropout,
            max_len=config.data.max_len,
            **shared,
        )
    common = {
        "embedding_dim": m.embedding_dim,
        "hidden": tuple(m.hidden),
        "activation": m.activation,
        "dropout": m.dropout,
        "pooling": m.pooling,
        "max_len": config.data.max_len,
        "user_features": encoded.user_features,
        "feature_dim": m.feature_dim,
        "recent_items": m.recent_items,
    }
    if m.name == "youtube_dnn":
        return YouTubeDNN(encoded.n_items, **shared, **common)
    return DSSM(
        encoded.n_users,
        encoded.n_items,
        id_dim=m.id_dim,
        item_features=encoded.item_features,
        use_user_id=m.use_user_id,
        **common,
    )


def build_negatives(
    config: Config, n_items: int, train_counts: np.ndarray, *, sequence_batches: bool
) -> Negatives:
    """The negatives of ``config.negatives``. Sampled negatives are drawn per sequence when
    training batches are windows of positions (``sequence_batches``) unless the config says:
    ``n`` per position would be ``[positions, n, D]`` vectors."""
    n = config.negatives
    if n.kind == "full":
        return FullNegatives(n_items)
    logq = n.logq if n.logq is not None else config.train.mode is Mode.LISTWISE
    in_batch = InBatchNegatives.from_counts(train_counts, logq=logq)
    if n.kind == "in_batch":
        return in_batch
    sampler = CatalogueSampler.build(n.sampler, train_counts, n.alpha)
    shared = sequence_batches if n.shared is None else n.shared
    sampled = SampledNegatives(sampler, n.n, shared=shared, logq=logq)
    return sampled if n.kind == "sampled" else MixedNegatives(in_batch, sampled)


def build_batches(
    config: Config, prepared: Prepared, model: MatchingModel
) -> TrainingBatches | SequenceBatches:
    """Independent samples, or windows of positions (sequential models; ``train.windows``)."""
    t, max_len = config.train, config.data.max_len
    if model.sequential:
        return SequenceBatches(
            prepared.split, batch_size=t.batch_size, max_len=max_len, seed=t.seed
        )
    if t.windows:
        if not hasattr(model, "encode_positions"):
            raise ConfigError(
                f"train.windows needs a model that encodes positions (youtube_dnn, sasrec, "
                f"gru4rec), not {config.model.name}"
            )
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
        )
    return TrainingBatches(prepared.split, batch_size=t.batch_size, max_len=max_len, seed=t.seed)


def build_similarity(config: Config) -> Similarity:
    return get_similarity(config.similarity.name, normalize=config.similarity.normalize)


def build_temperature(config: Config) -> Temperature:
    t = config.temperature
    return Temperature(t.value, learnable=t.learnable, min_value=t.min_value, max_value=t.max_value)


def evaluators(
    config: Config, prepared: Prepared, *, index_on_test: bool = False
) -> tuple[Evaluator, Evaluator]:
    """Validation and test evaluators. Validation ranks through ``config.eval.index``; the test
    stage is exact unless ``index_on_test`` (``towerkit evaluate --index``)."""
    kwargs = {
        "ks": config.eval.ks,
        "max_len": config.data.max_len,
        "batch_size": config.eval.batch_size,
        "max_bytes": config.eval.max_bytes,
    }
    n_items = prepared.encoded.n_items
    index = {"index": config.eval.index, "index_options": config.eval.index_options}
    return (
        Evaluator(prepared.split, "valid", n_items, **kwargs, **index),
        Evaluator(prepared.split, "test", n_items, **kwargs, **(index if index_on_test else {})),
    )


@dataclass
class RunOutcome:
    config: Config
    model: MatchingModel
    result: TrainResult
    metrics: dict[str, dict[str, float]]
    popularity: dict[str, float]
    eval_seconds: float


def train(
    config: Config,
    prepared: Prepared | None = None,
    validate: Callable[[Evaluator, Evaluator], Any] | None = None,
) -> RunOutcome:
    """Train and evaluate one configuration (nothing written to disk).

    ``validate(valid, test)`` may return the object the trainer validates with each epoch
    (anything with ``evaluate(model, similarity, device)`` and ``last_seconds``); by default
    it is the validation evaluator. Benchmarks use it to also record test metrics per epoch.
    """
    prepared = prepared or prepare(config.data, progress=config.train.progress)
    encoded = prepared.encoded
    torch.manual_seed(config.train.seed)
    model = build_model(config, encoded)
    similarity = build_similarity(config)
    temperature = build_temperature(config)
    batches = build_batches(config, prepared, model)
    negatives = build_negatives(
        config,
        encoded.n_items,
        prepared.train_counts,
        sequence_batches=isinstance(batches, SequenceBatches),
    )
    trainer = Trainer(
        model,
        objective=get_objective(config.train.mode),
        negatives=negatives,
        similarity=similarity,
        temperature=temperature,
        settings=TrainSettings(
            epochs=config.train.epochs,
            lr=config.train.lr,
            weight_decay=config.train.weight_decay,
            clip_norm=config.train.clip_norm,
            schedule=config.train.schedule,
            warmup=config.train.warmup,
            patience=config.train.patience,
            seed=config.train.seed,
            device=config.train.device,
            threads=config.train.threads,
            progress=config.train.progress,
        ),
    )
    valid, test = evaluators(config, prepared)
    result = trainer.fit(batches, validate(valid, test) if validate else valid)
    test_metrics = test.evaluate(model, similarity, trainer.device)
    logger.info(
        "test: HR@10 %.4f, NDCG@10 %.4f (%.2f s)",
        test_metrics["hr@10"],
        test_metrics["ndcg@10"],
        test.last_seconds,
    )
    return RunOutcome(
        config=config,
        model=model,
        result=result,
        metrics={"valid": result.best_valid, "test": test_metrics},
        popularity=test.evaluate_popularity(),
        eval_seconds=test.last_seconds,
    )


# --------------------------------------------------------------------------------------------
# Run directories
# --------------------------------------------------------------------------------------------


def _vectors_table(key: str, raw_ids: np.ndarray, vectors: torch.Tensor) -> pa.Table:
    array = vectors.detach().cpu().float().numpy()
    flat = pa.array(array.reshape(-1), type=pa.float32())
    return pa.table(
        {key: raw_ids, "vector": pa.FixedSizeListArray.from_arrays(flat, array.shape[1])}
    )


def check_run_dir(out: Path) -> None:
    """Refuse a run directory that already holds something (checked before training)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(
            f"{out}: the run directory exists and is not empty; pick another --out"
        )


def save_run(outcome: RunOutcome, prepared: Prepared, out: Path, log_text: str = "") -> Path:
    """Write the run directory atomically: a staging folder renamed into place at the end.

    Contents: ``config.yaml`` (resolved), ``vocab/``, ``model.pt`` (weights + config),
    ``metrics.json``, ``users.parquet`` (each test user's query vector, history = everything
    before the test target) and ``items.parquet`` (every item's vector).
    """
    out = Path(out)
    check_run_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    try:
        config, model, encoded = outcome.config, outcome.model, prepared.encoded
        (staging / "config.yaml").write_text(config.to_yaml())
        encoded.save_vocabs(staging / "vocab")
        torch.save(
            {
                "state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
                "config": config.model_dump(mode="json"),
                "n_users": encoded.n_users,
                "n_items": encoded.n_items,
            },
            staging / "model.pt",
        )
        summary = {
            **outcome.metrics,
            "popularity": outcome.popularity,
            "train": {
                "best_epoch": outcome.result.best_epoch,
                "epochs": [vars(e) for e in outcome.result.epochs],
                "seconds": outcome.result.train_seconds,
                "device": config.train.device,
                "threads": torch.get_num_threads(),
            },
        }
        (staging / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
        (staging / "train.log").write_text(log_text)
        _, test = evaluators(config, prepared)
        device = torch.device(config.train.device)
        users = test.user_vectors(model.eval(), device)
        items = test.item_vectors(model, device)
        raw_users = encoded.user_vocab.decode(test.queries.users)
        raw_items = encoded.item_vocab.decode(np.arange(1, encoded.n_items + 1))
        pq.write_table(_vectors_table("user", raw_users, users), staging / "users.parquet")
        pq.write_table(_vectors_table("item", raw_items, items), staging / "items.parquet")
        if out.exists():
            out.rmdir()
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def load_run(run_dir: Path) -> tuple[Config, Prepared, MatchingModel]:
    """Rebuild a saved run: its config, its data (re-prepared, identical) and its model."""
    run_dir = Path(run_dir)
    if not (run_dir / "model.pt").exists():
        raise ConfigError(f"{run_dir}: not a run directory (no model.pt)")
    config = load_config(run_dir / "config.yaml")
    saved = torch.load(run_dir / "model.pt", map_location="cpu", weights_only=True)
    prepared = prepare(config.data, progress=config.train.progress)
    if (prepared.encoded.n_users, prepared.encoded.n_items) != (saved["n_users"], saved["n_items"]):
        raise ConfigError(
            f"{run_dir}: the data prepared now ({prepared.encoded.n_users} users, "
            f"{prepared.encoded.n_items} items) differs from the run's "
            f"({saved['n_users']} users, {saved['n_items']} items)"
        )
    model = build_model(config_from_dict(saved["config"]), prepared.encoded)
    model.load_state_dict(saved["state_dict"])
    return config, prepared, model.eval()


def evaluate_run(
    run_dir: Path, index: str = "exact", index_options: dict | None = None
) -> dict[str, dict[str, float]]:
    """Re-evaluate a saved run on its validation and test stages, exactly or through an index
    (see :meth:`Evaluator.evaluate_index` for what an index adds to the metrics)."""
    from towerkit.index import make_index

    make_index(index, **(index_options or {}))  # bad options fail before the model loads
    config, prepared, model = load_run(run_dir)
    eval_config = config.eval.model_copy(
        update={"index": index, "index_options": dict(index_options or {})}
    )
    config = config.model_copy(update={"eval": eval_config})
    valid, test = evaluators(config, prepared, index_on_test=True)
    similarity = build_similarity(config)
    start = time.perf_counter()
    metrics = {
        "valid": valid.evaluate(model, similarity),
        "test": test.evaluate(model, similarity),
    }
    logger.info("evaluated %s in %.2f s", run_dir, time.perf_counter() - start)
    return metrics
