"""A contrastive term for sequential user towers: two views of each training sequence should
meet in the embedding space, and differ from the other sequences of the batch.

The term is added to the retrieval loss as ``weight * info_nce(view_a, view_b)`` (``train.
contrastive``). A view is the tower's vector at the most recent position of a sequence (the
user vector it would serve); a batch's sequences are its training windows. Two ways to make the
views:

- ``augment`` (CL4SRec, Xie et al. ICDE 2022): each view is the sequence under one augmentation
  drawn at random per sequence and per view from ``crop`` (a random contiguous sub-sequence of
  ``ceil(crop * n)`` of its ``n`` items), ``mask`` (``floor(mask * n)`` items, chosen at random
  but for the most recent, taken out: what a [mask] token that carries no information leaves,
  in a form every tower reads) and ``reorder`` (a random contiguous sub-sequence of
  ``floor(reorder * n)`` items shuffled);
- ``supervised`` (DuoRec, Qiu et al. WSDM 2022): one view is the sequence itself (dropout makes
  it differ from the training pass), the other another sequence of the batch with the same next
  item (the sequence itself again where the batch has none); sequences with the same next item
  are not each other's negatives.

The loss over the ``2B`` views of ``B`` sequences is the NT-Xent of SimCLR: each view's logits
against the other ``2B - 1`` views (the run's similarity, divided by the term's own
temperature), cross-entropy towards its partner, averaged over the ``2B`` rows.

Everything is batch-wise tensor code: no loop over sequences. Augmentations draw from torch's
global random source, which checkpoints save, so a resumed run stays bit-identical; with weight
0 no term is built and training is exactly what it was without one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from towerkit.config.training import ContrastiveConfig
from towerkit.models.base import SequenceModel
from towerkit.similarity import Similarity
from towerkit.types import SequenceBatch


def _lengths(history: torch.Tensor) -> torch.Tensor:
    """``[B]`` real (non-padding) items per left-padded row."""
    return (history > 0).sum(1)


def crop(history: torch.Tensor, ratio: float) -> torch.Tensor:
    """``[B, L]`` left-padded ids -> ``[B, L]``: per row, a random contiguous run of
    ``ceil(ratio * n)`` of its ``n`` items (at least one), left-padded again."""
    b, length = history.shape
    n = _lengths(history)  # (B,)
    keep = torch.clamp(torch.ceil(n * ratio).long(), min=1)
    keep = torch.minimum(keep, n)
    # the run starts s items after the row's first real item, s uniform in 0 .. n - keep
    start = (torch.rand(b, device=history.device) * (n - keep + 1)).long()
    p = torch.arange(length, device=history.device)[None, :]  # (1, L)
    # output column p holds input column (L - n) + s + (p - (L - keep)) where p >= L - keep
    source = (length - n + start - length + keep)[:, None] + p
    real = p >= (length - keep)[:, None]
    picked = history.gather(1, source.clamp(0, length - 1))
    return torch.where(real, picked, torch.zeros_like(picked))


def mask(history: torch.Tensor, ratio: float) -> torch.Tensor:
    """Per row, ``floor(ratio * n)`` of its ``n`` items (at most ``n - 1``, chosen at random
    among all but the most recent) are taken out, and the row is left-padded again. The most
    recent stays: the view is read at its position."""
    real = history > 0
    n = real.sum(1)
    k = torch.minimum(torch.floor(n * ratio).long(), n - 1)
    maskable = real.clone()
    maskable[:, -1] = False
    keys = torch.rand(history.shape, device=history.device).masked_fill(~maskable, 2.0)
    rank = keys.argsort(1).argsort(1)  # each real item's place in a random order
    masked = history.masked_fill(maskable & (rank < k[:, None]), 0)
    # Left-pad again (a stable sort puts the new padding first, the items in their order):
    # every tower reads left padding, not gaps (GRU4Rec rotates leading padding away).
    return masked.gather(1, (masked > 0).to(torch.int8).argsort(dim=1, stable=True))


def reorder(history: torch.Tensor, ratio: float) -> torch.Tensor:
    """Per row, a random contiguous run of ``floor(ratio * n)`` of its ``n`` items shuffled."""
    b, length = history.shape
    n = _lengths(history)
    size = torch.floor(n * ratio).long()
    start = length - n + (torch.rand(b, device=history.device) * (n - size + 1)).long()
    p = torch.arange(length, device=history.device)[None, :].expand(b, -1)
    inside = (p >= start[:, None]) & (p < (start + size)[:, None])
    # Sort keys: column p keeps key p outside the run; inside, a random key within
    # [start - 0.5, start + size - 0.5), so the run's items shuffle among its own columns.
    random_keys = (
        start[:, None] - 0.5 + torch.rand(b, length, device=history.device) * size[:, None]
    )
    keys = torch.where(inside, random_keys, p.to(random_keys.dtype))
    return history.gather(1, keys.argsort(1))


AUGMENTATIONS = {"crop": crop, "mask": mask, "reorder": reorder}


def augment(history: torch.Tensor, ratios: dict[str, float]) -> torch.Tensor:
    """One view of each row: an augmentation of ``ratios`` (name -> ratio) drawn per row."""
    names = list(ratios)
    views = torch.stack([AUGMENTATIONS[name](history, ratios[name]) for name in names])  # (A,B,L)
    choice = torch.randint(len(names), (len(history),), device=history.device)
    return views[choice, torch.arange(len(history), device=history.device)]


def same_target_partners(targets: torch.Tensor) -> torch.Tensor:
    """``[B]`` next items -> ``[B]`` row indices: for each row, a row chosen at random among the
    *other* rows with the same next item, or the row itself where there is none."""
    b = len(targets)
    same = targets[:, None] == targets[None, :]
    same.fill_diagonal_(False)
    keys = torch.rand(b, b, device=targets.device).masked_fill(~same, -1.0)
    best = keys.argmax(1)
    return torch.where(same.any(1), best, torch.arange(b, device=targets.device))


def info_nce(
    a: torch.Tensor,
    b: torch.Tensor,
    similarity: Similarity,
    temperature: float,
    *,
    same: torch.Tensor | None = None,
) -> torch.Tensor:
    """NT-Xent of two ``[B, D]`` views: row ``i`` of ``a`` and row ``i`` of ``b`` are a
    positive pair; every other view of the batch is a negative, except views of a row ``j``
    with ``same[i, j]`` (``[B, B]`` boolean, e.g. the same next item), which are left out.

    Example (dot product, temperature 1)::

        a = [[1, 0]], b = [[0, 1]]  ->  the logits of a against (b) are [0]: loss 0
    """
    views = torch.cat([a, b])  # (2B, D)
    n = len(a)
    logits = similarity.pairwise(views, views) / temperature  # (2B, 2B)
    own = torch.eye(2 * n, dtype=torch.bool, device=a.device)
    if same is not None:
        hide = same.clone()
        hide.fill_diagonal_(False)
        own = own | hide.repeat(2, 2)
    logits = logits.masked_fill(own, float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(a.device)
    return F.cross_entropy(logits, partner)


class ContrastiveTerm(nn.Module):
    """The term ``train.contrastive`` describes, for one run.

    Args:
        config: the ``train.contrastive`` section (weight, temperature, views, augmentations
            and their ratios).
        similarity: the run's similarity (the views are compared in the space items are
            retrieved in).
    """

    def __init__(self, config: ContrastiveConfig, similarity: Similarity) -> None:
        super().__init__()
        self.config = config
        self.similarity = similarity
        self.ratios = {name: getattr(config, name) for name in config.augmentations}

    def forward(self, model: SequenceModel, batch: SequenceBatch) -> torch.Tensor:
        """The weighted term of one batch of windows (a scalar)."""
        c = self.config
        history = batch.history[:, -model.max_len :]  # (B, L): right-aligned, last column real
        if c.views == "augment":
            a = model.encode_last(augment(history, self.ratios))  # (B, D)
            b = model.encode_last(augment(history, self.ratios))  # (B, D)
            same = None
        else:
            targets = batch.targets[:, -1]  # (B,): each window's next item
            partners = same_target_partners(targets)
            both = model.encode_last(torch.cat([history, history[partners]]))
            a, b = both.split(len(history))
            same = targets[:, None] == targets[None, :]
        with torch.autocast(a.device.type, enabled=False):  # the term in fp32 under bf16
            return c.weight * info_nce(a.float(), b.float(), self.similarity, c.temperature,
                                       same=same)  # fmt: skip


def contrastive_term(config: ContrastiveConfig, similarity: Similarity) -> ContrastiveTerm | None:
    """The term, or None when its weight is 0 (nothing drawn, nothing computed)."""
    if config.weight == 0:
        return None
    return ContrastiveTerm(config, similarity)
