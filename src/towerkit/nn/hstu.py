"""HSTU's layer (Zhai et al., ICML 2024, "Actions Speak Louder than Words"): pointwise
aggregated attention with gating, and no feed-forward block.

One layer, for ``x [B, L, D]``::

    u, v, q, k = SiLU(LayerNorm(x) @ W)                         # one projection, split
    A[i, j]   = SiLU(q_i . k_j + bias[i - j]) / N   for keys j <= i that are real items, else 0
    y         = x + W_o(dropout(u * LayerNorm(A @ v)))

The attention weights are not a softmax: they do not sum to one, so how much a history says
(its length, how many of its items agree) survives into the output. ``N`` is a constant, the
longest history the model reads (``max_len``), as the reference divides by its padded length:
so every position computes what its prefix alone would, and left padding changes nothing (the
same property as :mod:`towerkit.nn.attention`). ``bias`` is a learned value per query-key
distance, one table per layer shared by its heads (the paper's relative position bias).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from towerkit.nn.attention import distances


class HSTULayer(nn.Module):
    """One HSTU layer (the module docstring's formula).

    Args:
        dim: D, the width of the residual stream.
        n_heads: H.
        attention_dim: the query and key width per head.
        value_dim: the value and gate width per head.
        dropout: on the gated output before ``W_o``.
        max_len: N, the longest sequence (the distances learned, and the normaliser).
    """

    def __init__(
        self,
        dim: int,
        n_heads: int,
        attention_dim: int,
        value_dim: int,
        dropout: float,
        max_len: int,
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

    def forward(self, x: torch.Tensor, real: torch.Tensor, last: bool = False) -> torch.Tensor:
        """``x [B, L, D]``, ``real [B, L]`` (which positions hold an item) -> ``[B, L, D]``, or
        ``[B, 1, D]`` (the last position alone, reading every position's keys and values)
        with ``last``."""
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
        weights = F.silu(logits) * (keep[:, None] / self.max_len)
        attended = (weights @ v).transpose(1, 2).reshape(b, queries, heads * self.value_dim)
        gated = u * F.layer_norm(attended, (heads * self.value_dim,), eps=1e-6)
        return x[:, -queries:] + self.out(self.drop(gated))


__all__ = ["HSTULayer"]
