"""Property-based tests (Hypothesis) of what reads a user's input: the log readers, the filter
parser. Whatever the bytes or the text, the answer is a result or one towerkit error naming the
input, never another exception; and what is read means what was written. (The request bodies
are fuzzed in test_serve.py, beside the Schemathesis run, against the served app.)"""

from __future__ import annotations

import json
import math
import string
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from towerkit.data import read_interactions
from towerkit.data.cells import NA_TOKENS
from towerkit.data.stream import NotStreamable, stream_sequences
from towerkit.errors import DataError
from towerkit.index import FilterError, parse_filter

SETTINGS = settings(
    max_examples=300,
    deadline=None,
    database=None,  # no .hypothesis folder in the tree; a failure prints its example
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def written(data: bytes, suffix: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="towerkit-prop-"))
    path = folder / f"log{suffix}"
    path.write_bytes(data)
    return path


def one_line(err: Exception, path: Path) -> None:
    message = str(err)
    assert "\n" not in message.strip(), message
    assert str(path) in message or path.name in message, message


# -- the readers ---------------------------------------------------------------------------------

#: the characters that trouble a delimited reader: separators, quotes, line ends, blanks, text
FIELD = st.text(alphabet=st.sampled_from(list(',\t";\n\r \\x0é€') + list("0123456789ab")),
                max_size=6)  # fmt: skip
HEADERS = st.sampled_from(["user,item,timestamp", "user\titem\ttimestamp", "user,item", ""])


@st.composite
def delimited(draw) -> bytes:
    """A header that may or may not fit, then rows of troublesome fields."""
    header = draw(HEADERS)
    sep = draw(st.sampled_from([",", "\t"]))
    rows = draw(st.lists(st.lists(FIELD, min_size=1, max_size=5), max_size=8))
    text = header + "\n" + "".join(sep.join(row) + "\n" for row in rows)
    encoded = text.encode("utf-8")
    if draw(st.booleans()):  # a byte that is not UTF-8 somewhere
        cut = draw(st.integers(0, len(encoded)))
        encoded = encoded[:cut] + b"\xff" + encoded[cut:]
    return encoded


def check_log(frame: pd.DataFrame) -> None:
    assert list(frame.columns[:3]) == ["user", "item", "timestamp"]
    assert len(frame) > 0 and frame["timestamp"].dtype == np.int64
    assert frame["user"].notna().all() and frame["item"].notna().all()


def read_or_refused(path: Path) -> None:
    """The file reads as a log, or is refused in one line naming it."""
    try:
        frame = read_interactions(path)
    except DataError as err:
        one_line(err, path)
    else:
        check_log(frame)


@SETTINGS
@given(data=delimited(), suffix=st.sampled_from([".csv", ".tsv"]))
def test_any_delimited_text_is_a_log_or_one_line_naming_the_file(data, suffix):
    path = written(data, suffix)
    read_or_refused(path)


@SETTINGS
@given(data=delimited())
def test_the_out_of_core_reader_agrees_or_steps_aside(data):
    """Arrow's batch reader either reads the same log as the in-memory reader, hands the file
    to it (NotStreamable), or refuses it as the in-memory reader does."""
    path = written(data, ".csv")
    try:
        memory = read_interactions(path)
    except DataError:
        memory = None
    try:
        encoded, _ = stream_sequences(path, progress=False)
    except NotStreamable:
        return
    except DataError as err:
        one_line(err, path)
        assert memory is None, f"the in-memory reader read it: {err}"
        return
    assert memory is not None, "only the out-of-core reader read it"
    assert encoded.n_interactions == len(memory)
    assert sorted(map(str, encoded.user_vocab.raw)) == sorted(map(str, memory["user"].unique()))


@SETTINGS
@given(data=st.binary(max_size=400), suffix=st.sampled_from([".csv", ".jsonl", ".parquet"]))
def test_any_bytes_are_a_log_or_one_line_naming_the_file(data, suffix):
    path = written(data, suffix)
    read_or_refused(path)


JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)


@SETTINGS
@given(
    records=st.lists(
        st.fixed_dictionaries(
            {}, optional={"user": JSON_VALUE, "item": JSON_VALUE, "timestamp": JSON_VALUE}
        ),
        max_size=6,
    )
)
def test_any_json_lines_are_a_log_or_one_line_naming_the_file(records):
    text = "".join(json.dumps(record) + "\n" for record in records)
    path = written(text.encode(), ".jsonl")
    read_or_refused(path)


IDS = st.text(alphabet=string.ascii_letters + string.digits + "_-é", min_size=1, max_size=6)
#: (a bare carriage return is left out: pandas writes it unquoted, and every CSV reader,
#: Python's csv module included, takes it for the end of the line)
TITLES = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r"), max_size=8)


@SETTINGS
@given(
    rows=st.lists(
        st.tuples(IDS, IDS, st.integers(0, 4_000_000_000), TITLES),
        min_size=1,
        max_size=20,
    ),
    sep=st.sampled_from([",", "\t"]),
)
def test_a_log_written_by_pandas_reads_back_as_written(rows, sep):
    """Ids that look like numbers or not, titles with quotes and line breaks: what pandas
    writes, towerkit reads back, row for row."""
    frame = pd.DataFrame(rows, columns=["user", "item", "timestamp", "title"])
    for role in ("user", "item"):  # the spellings of a missing value are refused, not ids
        assume(not frame[role].str.strip().isin(NA_TOKENS).any())
    path = written(b"", ".csv" if sep == "," else ".tsv")
    frame.to_csv(path, index=False, sep=sep)
    read = read_interactions(path)
    assert len(read) == len(frame)
    assert read["timestamp"].tolist() == frame["timestamp"].tolist()
    assert list(map(str, read["user"])) == [_as_read(u) for u in frame["user"]]
    assert list(map(str, read["item"])) == [_as_read(i) for i in frame["item"]]


def _as_read(raw: str) -> str:
    """An id as towerkit reads it back, as text: itself, stripped (a column of integers
    spelled as such becomes int64, whose text is the same; "007" or "1e5" stay text)."""
    return raw.strip()


# -- the filter parser ---------------------------------------------------------------------------

TABLE = pd.DataFrame({
    "label": ["Comedy", "Drama", None, "Action", "Comedy", "Drama"],
    "count": [5, 120, 40, 0, 99, 1000],
    "title": ['Heat (1995)', 'Up', 'say "hi"', "it's", "", "x"],
})  # fmt: skip
FILTER_TEXT = st.lists(
    st.sampled_from([*"()[]=!<>,\"' .-", "and ", "or ", "not ", "in ", "label", "count",
                     "title", "Comedy", "5", "1e3", "\\", "#", "lambda"]),
    max_size=20,
).map("".join)  # fmt: skip


@SETTINGS
@given(text=FILTER_TEXT | st.text(max_size=60))
def test_any_filter_text_is_a_filter_or_one_filter_error(text):
    try:
        parsed = parse_filter(text, TABLE.columns)
    except FilterError as err:
        assert "\n" not in str(err).strip()
        return
    try:
        mask = parsed.mask(TABLE)
    except FilterError as err:  # text compared with a number
        assert "\n" not in str(err).strip()
        return
    assert mask.dtype == bool and mask.shape == (len(TABLE),)
    again = parse_filter(parsed.expression, TABLE.columns)  # Milvus's spelling reads the same
    np.testing.assert_array_equal(again.mask(TABLE), mask)


LABELS = st.sampled_from(["Comedy", "Drama", "Action", "Horror", 'say "hi"', "it's"])
NUMBERS = st.integers(-5, 1200) | st.floats(-5, 1200, allow_nan=False).map(lambda x: round(x, 2))
OPS = {"==": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
       "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}  # fmt: skip


def _text(value: str) -> str:
    return json.dumps(value)  # double quotes, escaped


@st.composite
def comparison(draw) -> tuple[str, callable]:
    """A comparison, and how it answers for one row (a missing value never matches)."""
    column = draw(st.sampled_from(["label", "count"]))
    literal = draw(LABELS if column == "label" else NUMBERS)
    shown = _text(literal) if column == "label" else repr(literal)
    kind = draw(st.sampled_from(["op", "flipped", "in", "not in", "range"]))
    if kind == "in" or kind == "not in":
        values = draw(st.lists(LABELS if column == "label" else NUMBERS, min_size=1, max_size=3))
        listed = ", ".join(_text(v) if column == "label" else repr(v) for v in values)

        def answer(row, values=values, negate=kind == "not in"):
            if row[column] is None:
                return False
            return (row[column] in values) != negate

        return f"{column} {kind} [{listed}]", answer
    if kind == "range" and column == "count":
        high = draw(NUMBERS)
        return (f"{shown} <= count < {high!r}",
                lambda row, lo=literal, hi=high: lo <= row["count"] < hi)  # fmt: skip
    op = draw(st.sampled_from(list(OPS)))
    if kind == "flipped":
        return (f"{shown} {op} {column}",
                lambda row: row[column] is not None and OPS[op](literal, row[column]))  # fmt: skip
    return (f"{column} {op} {shown}",
            lambda row: row[column] is not None and OPS[op](row[column], literal))  # fmt: skip


EXPRESSIONS = st.recursive(
    comparison(),
    lambda inner: st.one_of(
        inner.map(lambda e: (f"not ({e[0]})", lambda row, f=e[1]: not f(row))),
        st.tuples(inner, inner, st.sampled_from(["and", "or"])).map(
            lambda t: (
                f"({t[0][0]}) {t[2]} ({t[1][0]})",
                (lambda row, a=t[0][1], b=t[1][1]: a(row) and b(row))
                if t[2] == "and"
                else (lambda row, a=t[0][1], b=t[1][1]: a(row) or b(row)),
            )
        ),
    ),
    max_leaves=6,
)


@SETTINGS
@given(expression=EXPRESSIONS)
def test_a_filter_keeps_exactly_the_rows_its_meaning_keeps(expression):
    """Generated filters against a row-by-row reading of what they say."""
    text, answer = expression
    mask = parse_filter(text, TABLE.columns).mask(TABLE)
    records = TABLE.astype(object).where(TABLE.notna(), None).to_dict("records")
    rows = [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
        for r in records
    ]
    assert mask.tolist() == [bool(answer(row)) for row in rows], text


@pytest.mark.parametrize("depth", [100, 101, 1000, 30_000])
def test_deep_filters_are_bounded(depth):
    text = "not " * depth + 'label == "Comedy"'
    if depth < 100:
        parse_filter(text)
    else:
        with pytest.raises(FilterError, match="levels deep"):
            parse_filter(text)
