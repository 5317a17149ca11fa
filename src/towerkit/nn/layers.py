"""Layers: an MLP that never ends in an activation, masked history pooling, feature embeddings."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from towerkit.types import FeatureTable

Activation = Literal["relu", "gelu", "silu", "tanh", "prelu"]
Pooling = Literal["mean", "sum", "recency", "attention"]


def activation_layer(name: Activation) -> nn.Module:
    """The activation module of a name: ``relu``, ``gelu``, ``silu``, ``tanh`` or ``prelu``."""
    layers = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh, "prelu": nn.PReLU}
    if name not in layers:
        raise ValueError(f"unknown activation {name!r}; use one of {', '.join(layers)}")
    return layers[name]()


def padded_embedding(rows: int, dim: int, std: float = 0.05) -> nn.Embedding:
    """An id table whose row 0 (padding) is zero and never trained; the rest ~ N(0, std)."""
    table = nn.Embedding(rows, dim, padding_idx=0)
    nn.init.normal_(table.weight, std=std)
    with torch.no_grad():
        table.weight[0].zero_()
    return table


class MLP(nn.Sequential):
    """Linear -> activation -> dropout blocks, then a final *linear* layer.

    The output layer has no activation on purpose: a tower that ends in ReLU gives non-negative,
    mostly-zero vectors whose dot products cannot express dislike.

    Args:
        in_dim: input width.
        hidden: widths of the hidden layers (may be empty: one linear layer).
        out_dim: output width.
        activation: the hidden layers' activation.
        dropout: dropout after each hidden activation.
        layer_norm: LayerNorm after each hidden linear layer.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int],
        out_dim: int,
        *,
        activation: Activation = "relu",
        dropout: float = 0.0,
        layer_norm: bool = False,
    ) -> None:
        layers: list[nn.Module] = []
        width = in_dim
        for size in hidden:
            layers.append(nn.Linear(width, size))
            if layer_norm:
                layers.append(nn.LayerNorm(size))
            layers.append(activation_layer(activation))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, out_dim))
        super().__init__(*layers)


class HistoryPooling(nn.Module):
    """Pools ``[B, L, D]`` history embeddings into ``[B, D]``, ignoring padding slots.

    Histories are left-padded (most recent item last). Padding never counts: the mean divides
    by the number of real items, and learned weights are renormalised over real positions.
    An empty history pools to zeros.

    Args:
        mode: ``"mean"`` (masked mean), ``"sum"``, ``"recency"`` (a learned weight per position
            counted back from the most recent item, softmax over the real positions) or
            ``"attention"`` (a learned query attends over item + position embeddings).
        max_len: the history length (positions for recency and attention).
        dim: the embedding width.
        recent: also return the embeddings of the last ``recent`` items, in order, beside the
            pooled vector (so a tower can learn what follows what); the output is then
            ``[B, (1 + recent) * D]``.
    """

    def __init__(self, mode: Pooling, max_len: int, dim: int, recent: int = 0) -> None:
        super().__init__()
        if mode not in ("mean", "sum", "recency", "attention"):
            raise ValueError(f"unknown pooling {mode!r}; use mean, sum, recency or attention")
        if not 0 <= recent <= max_len:
            raise ValueError(f"recent items must lie in 0..max_len={max_len}, got {recent}")
        self.mode, self.recent, self.max_len = mode, recent, max_len
        self.out_dim = dim * (1 + recent)
        if mode == "recency":
            # Initialised flat with a mild preference for recent items.
            self.position_logits = nn.Parameter(-0.05 * torch.arange(max_len, dtype=torch.float32))
        elif mode == "attention":
            self.positions = nn.Embedding(max_len, dim)
            nn.init.normal_(self.positions.weight, std=0.02)
            self.query = nn.Parameter(torch.randn(dim) / math.sqrt(dim))
            self.key = nn.Linear(dim, dim)

    def forward(self, embedded: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Args: embedded ``[B, L, D]``; mask ``[B, L]``, True on real items.

        Returns ``[B, out_dim]``.
        """
        pooled = self._pool(embedded, mask)  # (B, D)
        if not self.recent:
            return pooled
        # The last k slots, most recent last; padding slots are zeroed. Padded by k first, so
        # that a history narrower than k (a server pads a batch to its longest) still gives k
        # slots; a pad rather than a branch on the width, which ONNX tracing would freeze.
        real = embedded * mask[..., None]  # (B, L, D)
        recent = F.pad(real, (0, 0, self.recent, 0))[:, -self.recent :]  # (B, k, D)
        return torch.cat([pooled, recent.flatten(1)], dim=1)

    def _pool(self, embedded: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = mask.to(embedded.dtype)  # (B, L)
        if self.mode == "sum":
            return (embedded * weights[..., None]).sum(1)
        if self.mode == "mean":
            count = weights.sum(1, keepdim=True).clamp_min(1.0)
            return (embedded * weights[..., None]).sum(1) / count
        length = embedded.shape[1]
        if self.mode == "recency":
            # position_logits[0] belongs to the most recent item (the last column).
            logits = self.position_logits[:length].flip(0)[None, :].expand_as(weights)
        else:
            back = torch.arange(length - 1, -1, -1, device=embedded.device)  # (L,)
            keys = self.key(embedded + self.positions(back)[None])  # (B, L, D)
            logits = keys @ self.query / math.sqrt(embedded.shape[-1])  # (B, L)
        logits = logits.masked_fill(~mask, float("-inf"))
        attn = torch.softmax(logits, dim=1).nan_to_num(0.0)  # empty history -> all zeros
        return (attn[..., None] * embedded).sum(1)


class FeatureEmbedding(nn.Module):
    """Embeds an entity's side features, looked up by entity id from buffers it owns, or given
    as values (for an entity the model never saw).

    Categorical features get an embedding table, multi-valued ones a masked mean of their
    values' embeddings, numeric ones a linear map of the standardised value. The outputs are
    concatenated in feature order.

    Args:
        features: the encoded feature table (arrays indexed by entity id).
        dim: embedding width per feature.
    """

    def __init__(self, features: FeatureTable, dim: int) -> None:
        super().__init__()
        self.names = list(features.values)
        self.kinds = dict(features.kinds)
        self.tables = nn.ModuleDict()
        for name in self.names:
            # On the CPU whatever the default device: the statistics below read the data (a
            # model built on the meta device to count its parameters still has them).
            values = torch.as_tensor(features.values[name], device="cpu")
            if self.kinds[name] == "numeric":
                # Standardised over the real entities (row 0 is padding), so that a year
                # and a price both enter the network near unit scale. The statistics are kept
                # to standardise values given for an entity the model never saw.
                real = values[1:].double()
                one = torch.tensor(1.0, dtype=torch.float64, device="cpu")
                std = real.std() if len(real) > 1 else one
                scale = std if std > 0 else one
                self.register_buffer(f"stats_{name}", torch.stack([real.mean(), scale.double()]))
                values = self._standardize(name, values)
                values[0] = 0.0
                self.tables[name] = nn.Linear(1, dim)
            else:
                self.tables[name] = nn.Embedding(features.cardinality(name), dim, padding_idx=0)
            self.register_buffer(f"values_{name}", values)
        self.out_dim = dim * len(self.names)

    def _standardize(self, name: str, values: torch.Tensor) -> torch.Tensor:
        mean, scale = getattr(self, f"stats_{name}")
        return ((values.double() - mean) / scale).float()

    def lookup(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """The stored values of entities ``ids [N]``, as :meth:`forward` takes them."""
        return {name: getattr(self, f"values_{name}")[ids] for name in self.names}

    def forward(
        self, ids: torch.Tensor, values: Mapping[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """``[N, out_dim]`` embeddings of entities ``ids [N]``.

        Args:
            values: encoded feature values to use instead of the stored ones (feature name ->
                ``[N]`` codes or raw numbers, ``[N, W]`` codes for multi-valued features), e.g.
                for users the model never saw. Every feature must be given.
        """
        if values is None:
            values = self.lookup(ids)
        else:
            missing = [name for name in self.names if name not in values]
            if missing:
                raise KeyError(f"no value for side feature(s) {', '.join(missing)}")
            values = {
                name: self._standardize(name, values[name])
                if self.kinds[name] == "numeric"
                else values[name]
                for name in self.names
            }
        parts = []
        for name in self.names:
            kind, table, value = self.kinds[name], self.tables[name], values[name]
            if kind == "numeric":
                parts.append(table(value[:, None]))
            elif kind == "categorical":
                parts.append(table(value))
            else:  # multi-valued: (N, W) codes, 0 = padding
                mask = (value > 0).float()
                summed = (table(value) * mask[..., None]).sum(1)
                parts.append(summed / mask.sum(1, keepdim=True).clamp_min(1.0))
        if not parts:
            return torch.zeros(len(ids), 0, device=ids.device)
        return torch.cat(parts, dim=-1)
