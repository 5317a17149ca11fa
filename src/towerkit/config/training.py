"""How to train and evaluate: ``train`` and ``eval``; and which of their keys are the machine's
(:data:`MACHINE_KEYS`), not the experiment's."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from towerkit.index import IndexKind
from towerkit.sections import MAX_LENGTH, MAX_SEED, Section, unbounded
from towerkit.task.objectives import Mode, parse_mode

_METRIC = re.compile(r"^(hr|ndcg|mrr|recall|precision)@([1-9][0-9]*)$")


class ContrastiveConfig(Section):
    """``train.contrastive``: a contrastive term between two views of each training sequence,
    for sequential models (see :mod:`towerkit.training.contrastive`)."""

    weight: float = Field(
        default=0.0, ge=0.0, le=100.0,
        description="weight of the term added to the loss (0: off, training exactly as without)",
    )  # fmt: skip
    temperature: float = Field(
        default=1.0, gt=0.0, le=100.0, description="divides the views' similarities"
    )
    views: Literal["augment", "supervised"] = Field(
        default="augment",
        description="augment: two augmented copies of the sequence (CL4SRec); supervised: the "
        "sequence and another with the same next item (DuoRec)",
    )
    augmentations: list[Literal["crop", "mask", "reorder"]] = Field(
        default_factory=lambda: ["crop", "mask", "reorder"],
        min_length=1,
        description="augment: each view takes one of these, drawn per sequence",
    )
    crop: float = Field(default=0.6, gt=0.0, le=1.0, description="share of items a crop keeps")
    mask: float = Field(default=0.3, ge=0.0, lt=1.0, description="share of items masked")
    reorder: float = Field(
        default=0.3, ge=0.0, le=1.0, description="share of items in the shuffled run"
    )

    @field_validator("augmentations")
    @classmethod
    def _augmentations(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))


class TrainConfig(Section):
    """How to train (read by :class:`~towerkit.training.Trainer` as it is)."""

    mode: Mode = Mode.LISTWISE
    epochs: int = Field(default=10, ge=1, le=100_000, description="the most epochs to run")
    batch_size: int = Field(
        default=1024,
        ge=1,
        le=MAX_LENGTH,
        description="samples per batch (sequential models: windows)",
    )
    windows: int = Field(
        default=0,
        ge=0,
        le=MAX_LENGTH,
        description="YouTubeDNN: train on windows of this many positions per user (one pass "
        "each; as many windows a batch as hold batch_size samples on average) instead of "
        "independent samples",
    )
    lr: float = Field(default=1e-3, gt=0, le=10.0, description="AdamW's learning rate")
    weight_decay: float = Field(default=0.0, ge=0, le=100.0, description="AdamW's weight decay")
    clip_norm: float = Field(
        default=1.0,
        ge=0,
        description="gradient-norm clipping (0: off)",
        json_schema_extra=unbounded("a norm: one above every gradient's never clips"),
    )
    sparse: bool = Field(
        default=False,
        description="id embedding tables get sparse gradients and SparseAdam: a step updates "
        "only the rows it touched, so its cost does not grow with the catalogue (large "
        "catalogues; weight decay and clip_norm then apply to the other parameters only)",
    )
    schedule: Literal["constant", "cosine", "linear"] = Field(
        default="constant", description="learning rate after warm-up (cosine, linear: to 0)"
    )
    warmup: int = Field(
        default=0,
        ge=0,
        description="steps of linear warm-up",
        json_schema_extra=unbounded("steps: one longer than the run keeps the rate rising"),
    )
    patience: int = Field(
        default=3,
        ge=0,
        json_schema_extra=unbounded("epochs: more than train.epochs never stops early"),
        description="epochs without a better monitor value before stopping (0: never stop "
        "early; the best epoch's weights are still kept)",
    )
    monitor: str = Field(
        default="ndcg@10", description="the validation metric that picks the best epoch"
    )
    seed: int = Field(
        default=0, ge=0, le=MAX_SEED, description="seeds initialisation, dropout and negatives"
    )
    device: str = "cpu"
    threads: int = Field(default=0, ge=0, le=1024, description="torch threads; 0 = torch's default")
    progress: bool = True
    precision: Literal["fp32", "bf16", "auto"] = Field(
        default="fp32",
        description="the towers' precision: fp32, bf16 (autocast; the scores against the "
        "catalogue, the loss and the optimizer stay fp32) or auto (bf16 on a bf16 GPU; on a "
        "CPU with bf16 instructions where the run's first steps are measured faster in it)",
    )
    compile: bool = Field(
        default=False,
        description="run the training step through torch.compile (eagerly, with a warning "
        "saying why, where compiling fails)",
    )
    track: list[Literal["tensorboard", "mlflow"]] = Field(
        default_factory=list,
        description="experiment trackers to log to: the config as parameters, the loss of every "
        "step, each epoch's metrics, the finished run's files (extras: pip install "
        "'towerkit[tensorboard]' / 'towerkit[mlflow]')",
    )
    mlflow_uri: str | None = Field(
        default=None,
        description="MLflow tracking URI: sqlite:///FILE.db, a server (http://host:5000), or "
        "a directory where MLflow allows it (MLFLOW_ALLOW_FILE_STORE=true); null: MLflow's own "
        "default ($MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)",
    )
    mlflow_experiment: str = Field(default="towerkit", description="the MLflow experiment name")
    contrastive: ContrastiveConfig = Field(
        default_factory=ContrastiveConfig,
        description="a contrastive term between two views of each sequence (sequential models)",
    )
    tensorboard_dir: str | None = Field(
        default=None,
        description="where TensorBoard event files go; null: RUN/tensorboard (./runs/TIME "
        "without a run directory)",
    )

    @field_validator("track")
    @classmethod
    def _track(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, value: Any) -> Mode:
        return parse_mode(value)

    @field_validator("device")
    @classmethod
    def _device(cls, value: str, info: ValidationInfo) -> str:
        import torch

        try:
            torch.device(value)
        except (RuntimeError, ValueError):
            raise ValueError("not a torch device; use cpu, cuda, cuda:N or mps") from None
        if (info.context or {}).get("machine", True):  # a saved run's config is not checked
            problem = device_problem(value)
            if problem:
                raise ValueError(problem)
        return value

    @field_validator("precision")
    @classmethod
    def _precision(cls, value: str, info: ValidationInfo) -> str:
        # (device is declared before precision: validated already, in info.data)
        if value == "bf16" and (info.context or {}).get("machine", True):
            problem = bf16_problem(str((info.data or {}).get("device", "cpu")))
            if problem:
                raise ValueError(f"{problem}; use fp32 or auto")
        return value

    @field_validator("monitor")
    @classmethod
    def _monitor(cls, value: str) -> str:
        if not _METRIC.match(value):
            raise ValueError(
                "the monitor is a validation metric such as ndcg@10, hr@50 or mrr@10 "
                "(hr, ndcg, mrr, recall or precision at a K of eval.ks)"
            )
        return value

    @property
    def monitor_k(self) -> int:
        """The K of ``monitor`` (10 for ``ndcg@10``)."""
        return int(self.monitor.partition("@")[2])


def device_problem(device: str) -> str | None:
    """Why ``device`` cannot be used on this machine (None: it can). Only a config about to
    train asks: a saved run's config names the machine it was trained on, not this one."""
    import torch

    kind = torch.device(device)
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": torch.backends.mps.is_available(),
    }.get(kind.type, False)
    if not available:
        return f"this machine has no {kind.type} device; use cpu"
    count = torch.cuda.device_count()
    if kind.type == "cuda" and kind.index is not None and kind.index >= count:
        return f"this machine has {count} CUDA device(s)"
    return None


def bf16_problem(device: str) -> str | None:
    """Why ``device`` cannot compute bf16 in hardware (None: it can)."""
    import torch

    kind = torch.device(device).type
    if kind == "cuda":
        return None if torch.cuda.is_bf16_supported() else "this GPU has no bf16 support"
    if kind == "cpu":
        supported = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
        if supported is not None and supported():
            return None
        return "this CPU has no bf16 instructions (avx512_bf16 or AMX)"
    return f"bf16 autocast is not supported on {kind}"


#: Settings of the machine a config trains on, not of the experiment: a run directory saves its
#: config without them (``run.json`` records where it was trained), so a run trained on a GPU
#: loads, recommends, exports and serves on a machine without one.
MACHINE_KEYS: dict[str, tuple[str, ...]] = {"train": ("device", "threads", "progress")}


class EvalConfig(Section):
    """How runs are evaluated: the cut-offs ``ks``, the memory bound of a block of scores, the index
    validation searches, a sample of users, seen items masked, and the depth the test stage keeps
    for the report."""

    ks: list[Annotated[int, Field(ge=1, le=MAX_LENGTH)]] = Field(default_factory=lambda: [10, 50])
    max_bytes: int = Field(
        default=256 * 2**20,
        ge=1 << 16,
        le=1 << 40,
        description="the most memory a block of scores may take (users x items x 4 bytes)",
    )
    batch_size: int = Field(default=1024, ge=1, le=MAX_LENGTH)
    index: IndexKind = Field(
        default="exact",
        description="validation ranks through this index every epoch (test is always exact)",
    )
    index_options: dict[str, Any] = Field(
        default_factory=dict, description="options of that index, e.g. {n_trees: 50}"
    )
    sample_users: int = Field(
        default=0,
        ge=0,
        description="rank a seeded sample of this many users at each stage (0: every user); "
        "for user bases and catalogues too large to rank everyone every epoch",
        json_schema_extra=unbounded("users: more than the data hold ranks every user"),
    )
    sample_seed: int = Field(default=0, ge=0, le=MAX_SEED, description="the seed of that sample")
    mask_seen: bool = Field(
        default=True,
        description="mask the items a user saw before the stage from their ranking (DESIGN.md's "
        "protocol); false ranks them too (ComiRec's protocol)",
    )
    depth: int = Field(
        default=200,
        ge=1,
        le=MAX_LENGTH,
        description="the final test stage ranks this many items per user (at least max(ks)) and "
        "keeps each target's rank in the run's outcomes.parquet, so that the report draws "
        "metrics at every K up to it (memory: users x depth x 8 bytes)",
    )

    @model_validator(mode="after")
    def _index(self) -> EvalConfig:
        from towerkit.index import make_index

        make_index(self.index, **self.index_options)  # a bad option fails here, not mid-run
        return self

    @field_validator("ks")
    @classmethod
    def _ks(cls, value: list[int]) -> list[int]:
        if not value:
            raise ValueError("ks must be a non-empty list of positive integers")
        return sorted(set(value))
