"""The user tower as retrieval and serving call it: numpy in, query vectors out, run by PyTorch
(:class:`TorchTower`, a run directory's model) or by onnxruntime (:class:`OnnxTower`, an
export's ``user_tower.onnx``). Both take the same inputs, so a :class:`~towerkit.retrieval.
Retriever` does not know which it holds; :func:`~towerkit.retrieval.export.parity` compares them.

The item tower is exported too (``item_tower.onnx``, :class:`OnnxItemTower`): item ids and their
side-feature values in, item vectors out, so a server gives new items vectors from their
features without PyTorch.

A tower returns ``[B, D]`` vectors, or ``[B, K, D]`` for a model of K interests (the model
declares K: :attr:`~towerkit.models.MatchingModel.interests`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from towerkit.errors import TowerkitError
from towerkit.models import MatchingModel
from towerkit.types import Batch, FeatureTable


class QueryTower(Protocol):
    """A user tower as retrieval calls it: numpy in, ``[B, D]`` float32 query vectors out.

    Args (of the call):
        users: int64 ``[B]`` encoded users (0: a user the model never saw).
        history: int64 ``[B, max_len]`` left-padded encoded item ids.
        features: encoded side-feature values per row (see :func:`encode_user_features`), or
            None to use each known user's stored ones.
        times: int64 ``[B, max_len + 1]`` for a tower that reads times (``reads_times``): the
            epoch seconds of the history's items (0 under padding), then the time the query is
            made; None for one that does not.
    """

    reads_times: bool

    def __call__(
        self,
        users: np.ndarray,
        history: np.ndarray,
        features: dict[str, np.ndarray] | None,
        times: np.ndarray | None = None,
    ) -> np.ndarray: ...


class TimesNeeded(TowerkitError, ValueError):
    """A user tower that reads times was given a history without them."""


class TorchTower:
    """The PyTorch model's user tower, in eval mode and without gradients."""

    def __init__(self, model: MatchingModel) -> None:
        self.model = model.eval()
        self.reads_times = model.reads_times

    @torch.no_grad()
    def __call__(self, users, history, features, times=None):
        users = torch.from_numpy(np.asarray(users, dtype=np.int64))
        values = None
        if features is not None:
            values = {name: torch.from_numpy(array) for name, array in features.items()}
        history_times = at = None
        if self.reads_times:
            history_times, at = split_times(times, self.model.model_name())
        batch = Batch(users, torch.from_numpy(history), torch.zeros_like(users), values,
                      times=history_times, at=at)  # fmt: skip
        return self.model.encode_users(batch).numpy()  # the tower never reads targets


def split_times(times: np.ndarray | None, model: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, L + 1]`` (the history's times, then the query's) -> ``times [B, L]``, ``at [B]``."""
    if times is None:
        raise TimesNeeded(
            f"{model} with model.time_bias reads the times of a history and when the query "
            "is made: give them"
        )
    times = torch.from_numpy(np.asarray(times, dtype=np.int64))
    return times[:, :-1], times[:, -1]


class TowerModule(torch.nn.Module):
    """The user tower with side features as explicit inputs, for tracing to ONNX."""

    def __init__(self, model: torch.nn.Module, features: list[str]) -> None:
        super().__init__()
        self.model, self.features = model, features

    def forward(self, users: torch.Tensor, history: torch.Tensor, *values: torch.Tensor):
        times = at = None
        if self.model.reads_times:  # the second input: [B, L + 1], the query's time last
            times, at = values[0][:, :-1], values[0][:, -1]
            values = values[1:]
        given = dict(zip(self.features, values, strict=True)) if self.features else None
        batch = Batch(users, history, torch.zeros_like(users), given, times=times, at=at)
        return self.model.encode_users(batch)


class ItemTowerModule(torch.nn.Module):
    """The item tower with side features as explicit inputs, for tracing to ONNX: ids and
    values -> ``[N, D]`` (id 0, the unknown row, with the values of an item never seen)."""

    def __init__(self, model: MatchingModel, features: list[str]) -> None:
        super().__init__()
        self.model, self.features = model, features

    def forward(self, items: torch.Tensor, *values: torch.Tensor):
        if not self.features:
            return self.model.encode_items(items)
        return self.model.encode_items_with(items, dict(zip(self.features, values, strict=True)))


def stored_features(table: FeatureTable, users: np.ndarray) -> dict[str, np.ndarray]:
    """The encoded side-feature values of known users, as the exported tower takes them."""
    return {
        name: np.asarray(values[users], dtype=np.float32 if table.kinds[name] == "numeric"
                         else np.int64)
        for name, values in table.values.items()
    }  # fmt: skip


class OnnxTower:
    """The exported user tower run by onnxruntime (see :class:`~towerkit.retrieval.QueryTower`).

    Args:
        path: the ONNX file.
        user_features: the encoded user features, to feed known users' stored values.
        threads: onnxruntime's intra-op threads (0: its default).
        spin: whether its idle threads spin, waiting for work (faster for back-to-back batch
            calls; a server turns it off, so that they leave their cores to the event loop).
    """

    def __init__(
        self, path: Path, user_features: FeatureTable, threads: int = 0, *, spin: bool = True
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        if not spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.user_features = user_features
        self.reads_times = "times" in self.inputs

    def __call__(self, users, history, features, times=None):
        users = np.asarray(users, dtype=np.int64)
        if features is None:
            features = stored_features(self.user_features, users)
        feed = {"users": users, "history": np.asarray(history, dtype=np.int64), **features}
        if self.reads_times:
            if times is None:
                raise TimesNeeded(
                    "this user tower reads the times of a history and when the query is made: "
                    "give them"
                )
            feed["times"] = np.asarray(times, dtype=np.int64)
        return self.session.run(None, {k: v for k, v in feed.items() if k in self.inputs})[0]


class OnnxItemTower:
    """The exported item tower run by onnxruntime: ``(items [N], features) -> [N, D]``.

    Args:
        path: the ONNX file.
        item_features: the encoded item features the model was trained with (their kinds,
            and known items' stored values).

    Call it with encoded ids and encoded values (as
    :func:`~towerkit.retrieval.embed.encode_item_features` gives them), or with ``features``
    None for known items' stored values. Id 0 with values is an item the model never saw.
    """

    def __init__(self, path: Path, item_features: FeatureTable) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.item_features = item_features

    def __call__(
        self, items: np.ndarray, features: dict[str, np.ndarray] | None = None
    ) -> np.ndarray:
        items = np.asarray(items, dtype=np.int64)
        if features is None:
            features = stored_features(self.item_features, items)
        feed = {"items": items, **features}
        return self.session.run(None, {k: v for k, v in feed.items() if k in self.inputs})[0]


__all__ = [
    "ItemTowerModule",
    "OnnxItemTower",
    "OnnxTower",
    "QueryTower",
    "TorchTower",
    "TowerModule",
    "stored_features",
]
