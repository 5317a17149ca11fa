"""Causal self-attention with learned per-distance position biases (SASRec's encoder block).

Positions are learned as a bias on the attention logits per distance between query and key
(``distance = query position - key position``, one learned value per head, block and distance),
instead of absolute position embeddings added to the inputs. With absolute positions, the query
at position ``j`` of a training window sees its own most recent item at a different position id
than the same prefix would at inference, and left padding shifts every id. With distances,
every position of a window computes exactly what its prefix alone would compute, and extra left
padding changes nothing.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

LayerNormPlacement = Literal["pre", "post"]


def distances(length: int, device: torch.device | None = None) -> torch.Tensor:
    """``[L, L]`` int64: ``query - key`` position, clamped at 0 (future keys are masked)."""
    position = torch.arange(length, device=device)
    return (position[:, None] - position[None, :]).clamp_min(0)


def causal_padding_mask(real: torch.Tensor) -> torch.Tensor:
    """``[B, 1, L, L]`` boolean attention mask: query ``i`` may see key ``j <= i`` if ``j`` is a
    real item. Every position may also see itself, so padded rows are never empty (their
    outputs are unused)."""
    position = torch.arange(real.shape[1], device=real.device)
    causal = position[:, None] >= position[None, :]  # (L, L): key j <= query i
    allowed = causal[None] & real[:, None, :]
    # Comparisons rather than tril/eye: the same mask, and an ONNX graph every runtime runs.
    allowed = allowed | (position[:, None] == position[None, :])[None]
    return allowed[:, None]


class SelfAttentionBlock(nn.Module):
    """Multi-head causal self-attention and a position-wise feed-forward network, each with a
    residual connection, dropout and LayerNorm (before the sub-layer, ``"pre"``, or after the
    residual sum, ``"post"`` as in the original SASRec and Transformer)."""

    def __init__(
        self,
        dim: int,
        n_heads: int,
        ffn_dim: int,
        dropout: float,
        layer_norm: LayerNormPlacement,
        max_len: int,
    ) -> None:
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"embedding_dim {dim} must be divisible by n_heads {n_heads}")
        if layer_norm not in ("pre", "post"):
            raise ValueError(f"layer_norm must be 'pre' or 'post', got {layer_norm!r}")
        self.n_heads, self.dropout, self.layer_norm = n_heads, dropout, layer_norm
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        # No dropout inside the feed-forward layer: its [B, L, ffn_dim] mask was the largest
        # single cost of a CPU step; the residual branch after it is still dropped out.
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), nn.Linear(ffn_dim, dim))
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        # A learned logit bias per head and query-key distance: the block's sense of position.
        # Initialised to a mild preference for recent items.
        self.distance_bias = nn.Parameter(
            -0.02 * torch.arange(max_len, dtype=torch.float32).repeat(n_heads, 1)
        )

    def _attend(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, length, dim = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.n_heads, dim // self.n_heads).unbind(2)
        bias = self.distance_bias[:, distances(length, x.device)]  # (H, L, L)
        logits_bias = torch.where(mask, bias[None], float("-inf"))  # (B, H, L, L)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            attn_mask=logits_bias,
            dropout_p=self.dropout if self.training else 0.0,
        )  # (B, H, L, D/H)
        return self.out(out.transpose(1, 2).reshape(b, length, dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.layer_norm == "pre":
            x = x + self.drop(self._attend(self.norm1(x), mask))
            return x + self.drop(self.ffn(self.norm2(x)))
        x = self.norm1(x + self.drop(self._attend(x, mask)))
        return self.norm2(x + self.drop(self.ffn(x)))
