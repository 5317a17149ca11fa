"""What a person checks of a log before training: sizes, density, activity, time, duplicates."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from towerkit.data.interactions import Interactions
from towerkit.data.sequences import Sequences

QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)


@dataclass(frozen=True)
class LogReport:
    """The numbers :func:`inspect_log` reports.

    Attributes:
        per_user, per_item: interactions per user and per item at :data:`QUANTILES`.
        duplicate_rows: rows repeating the (user, item, time) of an earlier row.
        repeated_pairs: rows repeating the (user, item) of an earlier row at another time.
        short_users: users with fewer than 3 interactions, too few to hold a training, a
            validation and a test interaction under leave-one-out (they get no training
            history, or no validation target).
        time_span: first and last time (UTC), or None for a log without times.
        ties_change_targets: users whose last interaction (the leave-one-out test target)
            differs between the stable order of equal times and HSTU's (``data.split.ties``);
            None for a log without times.
    """

    rows: int
    users: int
    items: int
    per_user: dict[float, float]
    per_item: dict[float, float]
    duplicate_rows: int
    repeated_pairs: int
    short_users: int
    time_span: tuple[pd.Timestamp, pd.Timestamp] | None
    ratings: dict[str, float] | None
    ties_change_targets: int | None = None

    @property
    def density(self) -> float:
        """Interactions per (user, item) pair: ``rows / (users x items)``."""
        return self.rows / max(self.users * self.items, 1)

    def rows_to_show(self) -> list[tuple[str, str]]:
        """(label, value) lines for a table."""

        def spread(values: dict[float, float]) -> str:
            return ", ".join(f"{_label(q)} {v:,.0f}" for q, v in values.items())

        out = [
            ("interactions", f"{self.rows:,}"),
            ("users", f"{self.users:,}"),
            ("items", f"{self.items:,}"),
            ("density", f"{self.density:.4%}"),
            ("interactions per user", spread(self.per_user)),
            ("interactions per item", spread(self.per_item)),
        ]
        if self.time_span is None:
            out.append(("time span", "no times (the file order is the time order)"))
        else:
            first, last = self.time_span
            out.append(("time span", f"{first:%Y-%m-%d %H:%M:%S} to {last:%Y-%m-%d %H:%M:%S} UTC"))
        out += [
            ("duplicate (user, item, time) rows", f"{self.duplicate_rows:,}"),
            ("repeated (user, item) at another time", f"{self.repeated_pairs:,}"),
            ("users with fewer than 3 interactions", f"{self.short_users:,}"),
        ]
        if self.ties_change_targets is not None:
            share = self.ties_change_targets / max(self.users, 1)
            out.append(("test targets HSTU's tie order changes",
                        f"{self.ties_change_targets:,} ({share:.1%} of users)"))  # fmt: skip
        if self.ratings is not None:
            r = self.ratings
            out.append(("ratings", f"min {r['min']:g}, mean {r['mean']:.2f}, max {r['max']:g}"))
        return out


def _label(q: float) -> str:
    return {0.0: "min", 0.5: "median", 1.0: "max"}.get(q, f"p{round(q * 100)}")


def inspect_log(interactions: Interactions) -> LogReport:
    """Sizes, activity quantiles, time span, duplicates and short users of a log."""
    frame = interactions.frame
    per_user = frame.groupby("user", sort=False).size()
    per_item = frame.groupby("item", sort=False).size()
    duplicate_rows = int(frame.duplicated(["user", "item", "timestamp"]).sum())
    repeated = int(frame.duplicated(["user", "item"]).sum()) - duplicate_rows
    ratings = None
    if "rating" in frame.columns:
        values = frame["rating"].to_numpy(dtype=np.float64)
        ratings = {"min": values.min(), "mean": values.mean(), "max": values.max()}
    return LogReport(
        rows=len(frame),
        users=len(per_user),
        items=len(per_item),
        per_user={q: float(per_user.quantile(q)) for q in QUANTILES},
        per_item={q: float(per_item.quantile(q)) for q in QUANTILES},
        duplicate_rows=duplicate_rows,
        repeated_pairs=repeated,
        short_users=int((per_user < 3).sum()),
        time_span=interactions.time_span,
        ratings=ratings,
        ties_change_targets=None if interactions.time_span is None else ties_change_targets(
            frame["user"].to_numpy(), frame["item"].to_numpy(), frame["timestamp"].to_numpy()
        ),
    )  # fmt: skip


def ties_change_targets(users: np.ndarray, items: np.ndarray, times: np.ndarray) -> int:
    """How many users' last interaction (their leave-one-out test target) differs between
    the stable order of equal times and HSTU's (:meth:`Sequences.from_arrays`, ``ties``)."""
    users = pd.factorize(users)[0] + 1  # ids 1..n, as sequences number users
    items = pd.factorize(items)[0] + 1
    times = np.asarray(times).astype(np.int64)  # datetimes as their integer nanoseconds
    n_users = int(users.max(initial=0))
    last = []
    for ties in ("stable", "hstu"):
        sequences = Sequences.from_arrays(users, items, times, n_users, ties=ties)
        last.append(sequences.items[sequences.offsets[2:] - 1])
    return int((last[0] != last[1]).sum())
