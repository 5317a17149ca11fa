"""The raw interaction log and its side tables, before any encoding."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from towerkit.errors import DataError

REQUIRED = ("user", "item", "timestamp")


@dataclass(frozen=True)
class Interactions:
    """An implicit-feedback log with optional user and item side tables.

    Attributes:
        frame: one row per interaction with columns ``user``, ``item``, ``timestamp`` (int64
            epoch seconds) and optionally ``rating``, in file order (the order breaks timestamp
            ties everywhere downstream).
        users: optional side table with a ``user`` column and one column per feature.
        items: optional side table with an ``item`` column and one column per feature
            (a list-valued column is a multi-valued feature, such as genres).
        has_time: whether ``timestamp`` holds times; False: it holds each row's position in
            the source (a log without times, whose order is the time order).
    """

    frame: pd.DataFrame
    users: pd.DataFrame | None = None
    items: pd.DataFrame | None = None
    has_time: bool = True

    def __post_init__(self) -> None:
        missing = [c for c in REQUIRED if c not in self.frame.columns]
        if missing:
            raise DataError(
                f"the interaction frame has no column {missing[0]!r} "
                f"(columns: {', '.join(map(str, self.frame.columns))})"
            )
        if len(self.frame) == 0:
            raise DataError("the interaction log is empty: there is nothing to train on")
        for name, table, key in (("user", self.users, "user"), ("item", self.items, "item")):
            if table is not None and key not in table.columns:
                raise DataError(f"the {name} side table has no {key!r} column")

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def n_users(self) -> int:
        """Distinct users in the log."""
        return int(self.frame["user"].nunique())

    @property
    def n_items(self) -> int:
        """Distinct items in the log."""
        return int(self.frame["item"].nunique())

    @property
    def time_span(self) -> tuple[pd.Timestamp, pd.Timestamp] | None:
        """First and last interaction time (UTC); None for a log without times."""
        if not self.has_time:
            return None
        ts = self.frame["timestamp"].to_numpy()
        return pd.Timestamp(int(ts.min()), unit="s"), pd.Timestamp(int(ts.max()), unit="s")

    def filter(
        self,
        *,
        min_user_interactions: int = 0,
        min_item_interactions: int = 0,
        min_rating: float | None = None,
    ) -> Interactions:
        """Keep ratings >= ``min_rating``, then repeat the count filters until both hold (k-core).

        All filters are off by default. Side tables keep only the surviving ids.

        Raises:
            DataError: nothing survives the filters.
        """
        frame = self.frame
        if min_rating is not None:
            if "rating" not in frame.columns:
                raise DataError("min_rating was given but the log has no 'rating' column")
            frame = frame[frame["rating"].to_numpy() >= min_rating]
        while min_user_interactions > 1 or min_item_interactions > 1:
            keep = np.ones(len(frame), dtype=bool)
            for column, minimum in (
                ("user", min_user_interactions),
                ("item", min_item_interactions),
            ):
                if minimum > 1:
                    counts = frame[column].map(frame[column].value_counts()).to_numpy()
                    keep &= counts >= minimum
            if keep.all():
                break
            frame = frame[keep]
        if len(frame) == 0:
            raise DataError(
                "no interaction is left after filtering (min_user_interactions="
                f"{min_user_interactions}, min_item_interactions={min_item_interactions}, "
                f"min_rating={min_rating})"
            )
        frame = frame.reset_index(drop=True)
        users = self.users
        if users is not None:
            users = users[users["user"].isin(frame["user"].unique())].reset_index(drop=True)
        items = self.items
        if items is not None:
            items = items[items["item"].isin(frame["item"].unique())].reset_index(drop=True)
        return replace(self, frame=frame, users=users, items=items)
