"""Causal self-attention with learned per-distance position biases (SASRec's encoder block).

Positions are learned as a bias on the attention logits per distance between query and key
(``distance = query position - key position``, one learned value per head, block and distance),
instead of absolute position embeddings added to the inputs. With absolute positions, the query
at position ``j`` of a training window sees its own most recent item at a different position id
than the same prefix would at inference, and left padding shifts every id. With distances,
every position of a window computes exactly what its prefix alone would compute, and extra left
padding changes nothing.

A block may also mix in a *frequency filter* beside attention (BSARec, Shin et al., AAAI 2024:
"beyond self-attention"): each position's low-frequency part of its own history (the lowest
Fourier components over a ``max_len`` period, an average that changes slowly with position) plus
a learned per-channel gain on the rest. BSARec filters the whole padded sequence with an FFT and
trains on the last position of every prefix; here the same filter is a causal convolution (the
last row of the FFT projector, read as a kernel over distances), so it keeps the property above
and every position of a window still trains at once.
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


def low_pass_kernel(period: int, frequencies: int) -> torch.Tensor:
    """``[period]``: weight of the item ``d`` positions back in the low-pass filter that keeps
    the lowest ``frequencies`` Fourier components (the constant one included) of a sequence of
    length ``period``, evaluated at its last position. ``d = 0`` is the position itself."""
    if not 1 <= frequencies <= period // 2 + 1:
        raise ValueError(
            f"filter_frequencies must be between 1 and max_len // 2 + 1 = {period // 2 + 1}, "
            f"got {frequencies}"
        )
    d = torch.arange(period, dtype=torch.float64)
    f = torch.arange(frequencies, dtype=torch.float64)
    # A real signal's frequency f > 0 (below Nyquist) stands for the pair +-f: weight 2.
    weight = torch.where((f == 0) | (2 * f == period), 1.0, 2.0)
    kernel = (weight[:, None] * torch.cos(2 * torch.pi * f[:, None] * d[None] / period)).sum(0)
    return (kernel / period).float()


class FrequencyFilter(nn.Module):
    """Causal low-pass filter with a learned gain on the high frequencies (BSARec's
    ``FrequencyLayer``): ``low + beta**2 * (x - low)``, where ``low`` at position ``j`` is
    ``sum_{s <= j, s real} kernel[j - s] * x[s]``."""

    def __init__(self, dim: int, max_len: int, frequencies: int) -> None:
        super().__init__()
        self.register_buffer("kernel", low_pass_kernel(max_len, frequencies), persistent=False)
        self.sqrt_beta = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor, real: torch.Tensor, last: bool = False) -> torch.Tensor:
        """``x [B, L, D]`` -> ``[B, L, D]``, or ``[B, 1, D]`` (the last position) with
        ``last``."""
        length = x.shape[1]
        position = torch.arange(length, device=x.device)
        weights = torch.where(
            position[:, None] >= position[None, :],
            self.kernel[distances(length, x.device)],
            torch.zeros((), device=x.device),
        )  # (L, L): lower-triangular Toeplitz
        if last:
            weights = weights[-1:]  # (1, L): the last position's row
        low = weights @ (x * real[..., None].to(x.dtype))
        return low + self.sqrt_beta**2 * (x[:, -low.shape[1] :] - low)


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
        filter_mix: float = 0.0,
        filter_frequencies: int = 3,
    ) -> None:
        super().__init__()
        if not 0.0 <= filter_mix <= 1.0:
            raise ValueError(f"filter_mix must be between 0 and 1, got {filter_mix}")
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
        # The token mixer: attention, or a blend of attention and a frequency filter.
        self.filter_mix = filter_mix
        self.filter = FrequencyFilter(dim, max_len, filter_frequencies) if filter_mix > 0 else None

    def _attend(self, x: torch.Tensor, mask: torch.Tensor, last: bool = False) -> torch.Tensor:
        b, length, dim = x.shape
        heads = (self.n_heads, dim // self.n_heads)
        bias = self.distance_bias[:, distances(length, x.device)]  # (H, L, L)
        if last:  # one query, the last position: its key and value projections over all
            weight, b_ = self.qkv.weight, self.qkv.bias
            q = F.linear(x[:, -1:], weight[:dim], b_[:dim]).view(b, 1, *heads)
            k, v = F.linear(x, weight[dim:], b_[dim:]).view(b, length, 2, *heads).unbind(2)
            bias, mask, length = bias[:, -1:], mask[:, :, -1:], 1
        else:
            q, k, v = self.qkv(x).view(b, length, 3, *heads).unbind(2)
        logits_bias = torch.where(mask, bias[None], float("-inf"))  # (B, H, L or 1, L)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            attn_mask=logits_bias,
            dropout_p=self.dropout if self.training else 0.0,
        )  # (B, H, L, D/H)
        return self.out(out.transpose(1, 2).reshape(b, length, dim))

    def _mix(
        self, x: torch.Tensor, mask: torch.Tensor, real: torch.Tensor | None, last: bool
    ) -> torch.Tensor:
        if self.filter is None:
            return self._attend(x, mask, last)
        if real is None:
            raise ValueError("a block with a frequency filter needs the real-item mask")
        a = self.filter_mix
        filtered = self.filter(x, real, last)
        return filtered if a == 1.0 else a * filtered + (1 - a) * self._attend(x, mask, last)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        real: torch.Tensor | None = None,
        last: bool = False,
    ) -> torch.Tensor:
        """``x [B, L, D]``, ``mask`` from :func:`causal_padding_mask`, ``real [B, L]`` (which
        positions hold an item; needed by the frequency filter) -> ``[B, L, D]``.

        With ``last``, only the last position is computed (its query reads every position's
        key and value): ``[B, 1, D]``, equal to the last row of the whole output. A tower
        that reads the most recent position only runs its last block this way."""
        tail = x[:, -1:] if last else x
        if self.layer_norm == "pre":
            tail = tail + self.drop(self._mix(self.norm1(x), mask, real, last))
            return tail + self.drop(self.ffn(self.norm2(tail)))
        tail = self.norm1(tail + self.drop(self._mix(x, mask, real, last)))
        return self.norm2(tail + self.drop(self.ffn(tail)))
