"""The retrieval task: query vectors and positive ids in, one training loss out.

Everything that stays fixed during a run is chosen once, when the task is built: the item
tower, the similarity, the temperature, the objective (the training mode), the negative
strategy (which owns the random source of the negatives it draws), the log-q correction and
accidental-hit masking. Its call takes a batch's :class:`~towerkit.types.TrainingPairs`
whole. One ordered pipeline serves every strategy (as in TensorFlow Recommenders'
``tasks.Retrieval``)::

    candidates (the strategy) -> scores, scaled by 1 / temperature -> - log q -> mask -> objective

- **scale**: the similarity multiplies by ``1 / temperature`` on the query side, which is
  exactly ``score / temperature`` and cheaper than dividing the ``[Q, N]`` block;
- **log-q**: subtract the log probability with which each candidate (and each positive) was
  drawn, so a sampled softmax estimates the full one (Yi et al. 2019);
- **mask**: a candidate equal to the query's positive (an accidental hit) does not count as its
  negative; in-batch candidates never count against their own query; with ``exclude_seen``,
  neither do the items the query has already seen (its history): the evaluation masks them
  from every ranking, so training need not push them down either;
- **objective**: point-wise BCE, pair-wise BPR or list-wise softmax CE over the kept entries.

With the list-wise objective over the whole catalogue the task computes one fused
cross-entropy instead (the same loss: the positive appears once among the catalogue's scores).

Example: the seed document's sample, one positive at cosine 1 and three negatives at -1,
whose list-wise loss is 0.3408 at temperature 1 and 0.000136 at 0.2 (the training page
explains it):

    >>> import torch
    >>> from towerkit.task.negatives import FullNegatives
    >>> from towerkit.types import TrainingPairs
    >>> items = torch.tensor([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [-2.0, 0.0], [-3.0, 0.0]])
    >>> task = RetrievalTask(lambda ids: items[ids], negatives=FullNegatives(4),
    ...                      similarity="cosine", temperature=0.2)
    >>> task.loss(TrainingPairs(torch.tensor([[2.0, 0.0]]), torch.tensor([1])))  # [Q, D], [Q]
    tensor(0.0001)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from towerkit import distributed
from towerkit.similarity import Similarity, Temperature, get_similarity
from towerkit.task.negatives import BatchContext, Candidates, Negatives, Shard
from towerkit.task.objectives import Mode, get_objective, parse_mode
from towerkit.types import Seen, SeenPolicy, TrainingPairs

ItemEncoder = Callable[[torch.Tensor], torch.Tensor]


class RetrievalTask(nn.Module):
    """One loss for every model, mode and negative strategy (see the module docstring).

    Args:
        encode_items: the model's item tower, ids ``[N]`` -> vectors ``[N, D]``.
        negatives: the candidate strategy (:mod:`towerkit.task.negatives`).
        similarity: how vectors are scored (a :class:`Similarity` or its name).
        temperature: divides the scores (a float: fixed).
        mode: ``"pointwise"``, ``"pairwise"``, ``"listwise"`` or the seed's ``0 / 1 / 2``.
        logq: subtract each candidate's and each positive's log sampling probability.
        mask_hits: drop candidates equal to the query's positive.
        seen: the seen-items policy (:class:`~towerkit.types.SeenPolicy`, or
            ``exclude_seen``'s true / false / window): any but ``NONE`` drops the candidates
            the query has already seen (the pairs' ``seen`` ids, which the batches built with
            the same policy carry), except its own positive.
    """

    def __init__(
        self,
        encode_items: ItemEncoder,
        *,
        negatives: Negatives,
        similarity: Similarity | str = "cosine",
        temperature: Temperature | float = 1.0,
        mode: Mode | str | int = Mode.LISTWISE,
        logq: bool = False,
        mask_hits: bool = True,
        seen: SeenPolicy | bool | str = SeenPolicy.NONE,
    ) -> None:
        super().__init__()
        if logq and negatives.exhaustive:
            raise ValueError("log-q corrects sampled candidates; the full softmax samples none")
        self.encode_items = encode_items
        self.negatives = negatives
        self.similarity = get_similarity(similarity)
        self.temperature = (
            temperature if isinstance(temperature, Temperature) else Temperature(temperature)
        )
        self.mode = parse_mode(mode)
        self.objective = get_objective(self.mode)
        self.logq, self.mask_hits = logq, mask_hits
        self.seen = SeenPolicy.parse(seen)
        # The exact softmax over the catalogue is one fused cross-entropy (chosen once, here).
        self.fused = self.mode is Mode.LISTWISE and negatives.exhaustive

    @property
    def exclude_seen(self) -> bool:
        """Whether the queries' seen items are masked out of their negatives (the policy)."""
        return self.seen.excludes

    def loss(self, pairs: TrainingPairs) -> torch.Tensor:
        """The mean loss of a batch's pairs (under torchrun: this rank's share of the global
        batch's mean, see :mod:`towerkit.distributed`).

        Args:
            pairs: ``queries [Q, D]``, ``positives [Q]`` and, where they apply, the windows'
                ``layout`` (so that sampled negatives can be shared per window), the pairs'
                ``weights`` (a weighted mean) and the items each query has ``seen`` (required
                with ``exclude_seen``, ignored otherwise); see
                :class:`~towerkit.types.TrainingPairs`.
        """
        queries, positives, layout, weights, seen = pairs
        if self.exclude_seen and seen is None:
            raise ValueError("exclude_seen needs the items each query has seen (pairs.seen)")
        seen = seen if self.exclude_seen else None
        ctx = distributed.context()
        if not ctx.active:
            return self._loss(queries, positives, layout, weights, seen, None)
        # Under torchrun: candidates of the global batch, and this rank's mean loss weighted by
        # its share of the global batch, so that DDP's average of the ranks' gradients is the
        # gradient of the global mean.
        mass = float(weights.sum()) if weights is not None else float(len(positives))
        windows = 0 if layout is None else len(layout)
        table = distributed.sizes(len(positives), windows, mass, device=positives.device)
        shard = Shard(ctx.rank, table[:, 0].astype(np.int64), table[:, 1].astype(np.int64))
        loss = self._loss(queries, positives, layout, weights, seen, shard)
        return loss * (mass * ctx.world / float(table[:, 2].sum()))

    def _loss(self, queries, positives, layout, weights, seen, shard) -> torch.Tensor:
        scale = self.temperature.inverse()
        if self.fused:
            (full,) = self.negatives.candidates(BatchContext(positives))
            scores = self.similarity.pairwise(queries, self.encode_items(full.ids), scale)
            if seen is not None:  # column j holds item j + 1
                hide = self._hide(seen, len(full.ids), positives)
                scores = scores.masked_fill(hide[:, 1:], float("-inf"))
            if weights is None:
                return F.cross_entropy(scores, positives - 1)  # column j holds item j + 1
            rows = F.cross_entropy(scores, positives - 1, reduction="none")
            return (rows * weights).sum() / weights.sum()
        positive_vectors = self.encode_items(positives)  # (Q, D)
        pos = self.similarity.rowwise(queries, positive_vectors, scale)  # (Q,)
        if self.logq:
            pos = pos - self.negatives.log_q(positives)
        negs, masks = [], []
        batch = BatchContext(positives, positive_vectors, layout, shard)
        for candidates in self.negatives.candidates(batch):
            neg, mask = self._negatives(queries, positives, candidates, scale, layout, seen)
            negs.append(neg)
            masks.append(mask)
        neg, mask = (
            (negs[0], masks[0]) if len(negs) == 1 else (torch.cat(negs, 1), torch.cat(masks, 1))
        )
        return self.objective(pos, neg, mask=mask, weights=weights)

    def _negatives(
        self,
        queries: torch.Tensor,
        positives: torch.Tensor,
        candidates: Candidates,
        scale: torch.Tensor,
        layout: torch.Tensor | None,
        seen: Seen | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaled, corrected ``[Q, N]`` logits of one candidate set and the mask of the ones
        that count (with ``seen``, no item the query has seen counts, its positive aside)."""
        ids = candidates.ids
        vectors = candidates.vectors
        if vectors is None:
            vectors = self.encode_items(ids.reshape(-1)).reshape(*ids.shape, -1)
        if candidates.sharing == "batch":
            neg = self.similarity.pairwise(queries, vectors, scale)  # (Q, N)
        elif candidates.sharing == "query":
            neg = self.similarity.rowwise(queries, vectors, scale)  # (Q, N)
        else:  # one set per window: score each window's positions against its own set
            padded = queries.new_zeros(*layout.shape, queries.shape[-1])  # (W, T, D)
            padded[layout] = queries
            neg = self.similarity.pairwise(padded, vectors, scale)[layout]  # (Q, N)
        if self.logq:
            neg = neg - self._per_query(candidates.log_q, candidates, len(positives), layout)
        ids = self._per_query(ids, candidates, len(positives), layout)  # (Q, N)
        if self.mask_hits:  # an accidental hit is not a negative (nor, in-batch, the own column)
            mask = ids != positives[:, None]
        else:
            mask = torch.ones_like(ids, dtype=torch.bool)
            if candidates.includes_positives:  # query i's own positive is column own_offset + i
                own = candidates.own_offset + torch.arange(len(positives), device=ids.device)
                mask = torch.arange(ids.shape[1], device=ids.device)[None, :] != own[:, None]
        if seen is not None:
            mask = mask & ~self._seen(seen, ids, positives)
        return neg, mask

    @staticmethod
    def _hide(seen: Seen, n_items: int, positives: torch.Tensor) -> torch.Tensor:
        """``[Q, n_items + 1]`` boolean: the items each query has seen, its positive excepted
        (for the full softmax, whose ``[Q, n_items]`` scores are as large)."""
        device = positives.device
        hide = torch.zeros(len(positives), n_items + 1, dtype=torch.bool, device=device)
        hide.scatter_(1, seen.items, True)
        if seen.before is not None:  # one row per window, read by each of its queries
            windows = torch.zeros(len(seen.before), n_items + 1, dtype=torch.bool, device=device)
            hide |= windows.scatter_(1, seen.before, True)[seen.window]
        hide[torch.arange(len(positives), device=device), positives] = False
        return hide

    @staticmethod
    def _seen(seen: Seen, ids: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
        """``[Q, N]`` boolean: candidate ``ids[q, n]`` was seen by query ``q`` and is not its
        positive. Membership of (row, item) keys, so no ``[Q, catalogue]`` table is built."""
        stride = int(max(ids.max(), seen.items.max())) + 1
        if seen.before is not None:
            stride = max(stride, int(seen.before.max()) + 1)
        rows = torch.arange(len(ids), device=ids.device)[:, None] * stride
        keys = rows + seen.items
        found = torch.isin(rows + ids, keys[seen.items > 0])
        if seen.before is not None:
            windows = torch.arange(len(seen.before), device=ids.device)[:, None] * stride
            before = (windows + seen.before)[seen.before > 0]
            found |= torch.isin(seen.window[:, None] * stride + ids, before)
        return found & (ids > 0) & (ids != positives[:, None])

    @staticmethod
    def _per_query(
        values: torch.Tensor, candidates: Candidates, n_queries: int, layout: torch.Tensor | None
    ) -> torch.Tensor:
        """Per-candidate values (ids, log q) spread to the ``[Q, N]`` layout of the logits."""
        if candidates.sharing == "batch":
            return values[None, :].expand(n_queries, -1)
        if candidates.sharing == "query":
            return values
        return values[:, None, :].expand(-1, layout.shape[1], -1)[layout]

    def extra_repr(self) -> str:
        return (
            f"mode={self.mode.value}, similarity={self.similarity!r}, "
            f"negatives={type(self.negatives).__name__}, logq={self.logq}, "
            f"mask_hits={self.mask_hits}, seen={self.seen.value}, fused={self.fused}"
        )
