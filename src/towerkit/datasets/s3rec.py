"""The S3-Rec benchmark files (Zhou et al., CIKM 2020; RUCAIBox/CIKM2020-S3Rec, folder data/):
Amazon Beauty, Amazon Toys and Games, Yelp and LastFM, preprocessed as many later
sequential-recommendation papers use them.

Each log is one user per line, ``user item item ...``, items in time order, 5-core filtered,
integer ids from 1; ``NAME_item2attributes.json`` maps item ids to attribute ids. The files carry
no times: the order within a line is the time order (``Interactions.has_time`` is False). The
attributes become the multi-valued item feature ``attributes``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from towerkit.data.interactions import Interactions
from towerkit.data.readers import read_sequences
from towerkit.errors import DataError

BASE_URL = "https://raw.githubusercontent.com/RUCAIBox/CIKM2020-S3Rec/master/data"


def parse_s3rec(directory: Path, stem: str) -> Interactions:
    """``STEM.txt`` and ``STEM_item2attributes.json`` in ``directory`` -> interactions with
    integer ids, each row's position as its time, and an item table of attributes."""
    frame = read_sequences(directory / f"{stem}.txt")
    try:
        users = frame["user"].astype(np.int64).to_numpy()
        items = frame["item"].astype(np.int64).to_numpy()
    except ValueError:
        raise DataError(f"{directory / stem}.txt: ids must be integers") from None
    log = pd.DataFrame(
        {"user": users, "item": items, "timestamp": np.arange(len(frame), dtype=np.int64)}
    )
    attributes_path = directory / f"{stem}_item2attributes.json"
    try:
        attributes = json.loads(attributes_path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"{attributes_path}: not a readable attribute map ({err})") from None
    table = pd.DataFrame(
        {
            "item": np.asarray([int(k) for k in attributes], dtype=np.int64),
            "attributes": [[str(a) for a in values] for values in attributes.values()],
        }
    )
    return Interactions(log, items=table, has_time=False)
