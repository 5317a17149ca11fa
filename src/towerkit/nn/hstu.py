"""HSTU's layer (Zhai et al., ICML 2024, "Actions Speak Louder than Words"): pointwise
aggregated attention with gating, and no feed-forward block.

One layer, for ``x [B, L, D]``::

    u, v, q, k = SiLU(LayerNorm(x) @ W)                         # one projection, split
    A[i, j]   = SiLU(q_i . k_j + bias[i - j] + time[b(t_i - t_j)]) / N
                                                    for keys j <= i that are real items, else 0
    y         = x + W_o(dropout(u * LayerNorm(A @ v)))

The attention weights are not a softmax: they do not sum to one, so how much a history says
(its length, how many of its items agree) survives into the output. ``N`` is a constant, the
longest history the model reads (``max_len``), as the reference divides by its padded length:
so every position computes what its prefix alone would, and left padding changes nothing (the
same property as :mod:`towerkit.nn.attention`). ``bias`` is a learned value per query-key
distance, one table per layer shared by its heads (the paper's relative position bias).

``time`` is the paper's relative time bias, when the layer has one: a learned value per bucket
of the time gap between the moment query ``i`` is made, ``t_i`` (the time of the item it
predicts; at serving, now), and when item ``j`` was seen. Buckets are logarithmic, as in the
reference: ``b(g) = floor(ln(max(|g|, 1)) / 0.301)``, at most :data:`TIME_BUCKETS` (a gap of
one second is bucket 0, an hour bucket 27, a year bucket 57).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from towerkit.nn.attention import distances

#: the last time bucket: every gap past e^(0.301 x 128) seconds falls in it
TIME_BUCKETS = 128


def time_buckets(at: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
    """``at [B, Q]`` query times and ``times [B, L]`` item times (seconds) -> ``[B, Q, L]``
    the bucket of each gap, ``floor(ln(max(|at - t|, 1)) / 0.301)``, at most
    :data:`TIME_BUCKETS`."""
    gap = (at[:, :, None] - times[:, None, :]).abs().clamp(min=1).to(torch.float32)
    return (gap.log() / 0.301).long().clamp(max=TIME_BUCKETS)


class HSTULayer(nn.Module):
    """One HSTU layer (the module docstring's formula).

    Args:
        dim: D, the width of the residual stream.
        n_heads: H.
        attention_dim: the query and key width per head.
        value_dim: the value and gate width per head.
        dropout: on the gated output before ``W_o``.
        max_len: N, the longest sequence (the distances learned, and the normaliser).
        time_bias: learn a relative time bias (:func:`time_buckets`); ``forward`` then takes
            the buckets.
    """

    def __init__(
        self,
        dim: int,
        n_heads: int,
        attention_dim: int,
        value_dim: int,
        dropout: float,
        max_len: int,
        time_bias: bool = False,
    ) -> None:
        super().__init__()
        self.n_heads, self.attention_dim, self.value_dim = n_heads, attention_dim, value_dim
        self.max_len, self.dim = max_len, dim
        widths = (n_heads * value_dim, n_heads * value_dim, n_heads * attention_dim)
        self.widths = (*widths, n_heads * attention_dim)  # u, v, q, k
        self.uvqk = nn.Linear(dim, sum(self.widths), bias=False)
        nn.init.normal_(self.uvqk.weight, std=0.02)
        self.out = nn.Linear(n_heads * value_dim, dim)
        nn.init.xavier_uniform_(self.out.weight)
        self.drop = nn.Dropout(dropout)
        self.position_bias = nn.Parameter(torch.empty(max_len).normal_(std=0.02))
        self.time_bias = (
            nn.Parameter(torch.empty(TIME_BUCKETS + 1).normal_(std=0.02)) if time_bias else None
        )

    def forward(
        self,
        x: torch.Tensor,
        real: torch.Tensor,
        last: bool = False,
        buckets: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``x [B, L, D]``, ``real [B, L]`` (which positions hold an item) -> ``[B, L, D]``, or
        ``[B, 1, D]`` (the last position alone, reading every position's keys and values)
        with ``last``. A layer with a time bias takes ``buckets [B, Q, L]``
        (:func:`time_buckets` of the queries' times and the items')."""
        b, length, _ = x.shape
        normed = F.layer_norm(x, (self.dim,), eps=1e-6)  # widths as constants: ONNX
        if last:  # the gate and query of the last position; values and keys of all
            w_u, w_v, w_q, w_k = self.uvqk.weight.split(self.widths)
            tail = normed[:, -1:]
            u, q = F.silu(F.linear(tail, w_u)), F.silu(F.linear(tail, w_q))
            v, k = F.silu(F.linear(normed, w_v)), F.silu(F.linear(normed, w_k))
        else:
            u, v, q, k = F.silu(self.uvqk(normed)).split(self.widths, dim=-1)
        queries = q.shape[1]
        heads = self.n_heads
        q = q.view(b, queries, heads, self.attention_dim).transpose(1, 2)  # (B, H, Q, dqk)
        k = k.view(b, length, heads, self.attention_dim).transpose(1, 2)  # (B, H, L, dqk)
        v = v.view(b, length, heads, self.value_dim).transpose(1, 2)  # (B, H, L, dv)
        distance = distances(length, x.device)[-queries:]  # (Q, L)
        position = torch.arange(length, device=x.device)
        causal = position[-queries:, None] >= position[None, :]  # (Q, L)
        keep = (causal[None] & real[:, None, :]).to(x.dtype)  # (B, Q, L)
        logits = q @ k.transpose(-1, -2) + self.position_bias[distance]  # (B, H, Q, L)
        if self.time_bias is not None:
            if buckets is None:
                raise ValueError("this HSTU layer has a time bias: give the time buckets")
            logits = logits + self.time_bias[buckets[:, None, -queries:]]  # shared by heads
        weights = F.silu(logits) * (keep[:, None] / self.max_len)
        attended = (weights @ v).transpose(1, 2).reshape(b, queries, heads * self.value_dim)
        gated = u * F.layer_norm(attended, (heads * self.value_dim,), eps=1e-6)
        return x[:, -queries:] + self.out(self.drop(gated))


__all__ = ["TIME_BUCKETS", "HSTULayer", "time_buckets"]
