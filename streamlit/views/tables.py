"""Tables for st.dataframe, made as Arrow from plain rows without pandas.

Streamlit turns a list of dicts or a DataFrame into Arrow through pandas, and importing pandas costs the
first page after a start 0.6 to 0.9 s on 2 cores (pyarrow alone a third of that; pyarrow's own
`pa.array()` imports pandas too, to ask whether it was given a Series). The columns are made here from
their buffers: text as UTF-8 with offsets, whole numbers, decimals, booleans, None as a missing cell.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Iterable, Mapping, Sequence
from itertools import accumulate

import pyarrow as pa


def table_of(rows: Iterable[Mapping[str, object]], columns: Sequence[str] | None = None) -> pa.Table:
    """The rows as a table: `columns` in that order (a column no row has is empty), or every key the rows
    have, in the order they first appear. A column is of whole numbers, decimals or booleans when every
    value in it is (None aside), else of text (a list or dict as JSON, any other value as str())."""
    rows = list(rows)
    names = list(columns) if columns is not None else list(dict.fromkeys(key for row in rows for key in row))
    return pa.Table.from_arrays([_column([row.get(name) for row in rows]) for name in names], names=names)


def _column(values: list[object]) -> pa.Array:
    present = [value for value in values if value is not None]
    nulls = len(present) < len(values)
    validity = _bits(value is not None for value in values) if nulls else None
    types = set(map(type, present))
    if types == {bool}:
        return pa.Array.from_buffers(pa.bool_(), len(values), [validity, _bits(value is True for value in values)])
    if types and types <= {int, float}:
        typecode, arrow_type = ("q", pa.int64()) if types == {int} else ("d", pa.float64())
        try:
            numbers = array(typecode, (0 if value is None else value for value in values))
        except OverflowError:  # a number beyond what 64 bits hold: the column is shown as text
            pass
        else:
            return pa.Array.from_buffers(arrow_type, len(values), [validity, pa.py_buffer(numbers)])
    encoded = [b"" if value is None else _text(value).encode() for value in values]
    offsets = array("i", accumulate(map(len, encoded), initial=0))
    return pa.Array.from_buffers(
        pa.string(), len(values), [validity, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))]
    )


def _text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple, dict)):  # an audit line's or an alert run's nested values
        return json.dumps(value, default=str, ensure_ascii=False)
    return str(value)


def _bits(flags: Iterable[bool]) -> pa.Buffer:
    """Arrow's bitmap: bit i of the buffer (least significant first) set when flag i is."""
    digits = "".join("1" if flag else "0" for flag in flags)
    return pa.py_buffer(int(digits[::-1] or "0", 2).to_bytes((len(digits) + 7) // 8 or 1, "little"))
