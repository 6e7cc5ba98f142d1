"""PostgreSQL types to Arrow: the type mapping and vectorized conversion of text values.

Both decoders (pgoutput, wal2json) and the snapshot read every value in PostgreSQL's text output form,
so one conversion gives identical Arrow tables whichever path a row took. Types without a lossless
Arrow counterpart (unconstrained numeric, time, interval, arrays, enums, ...) stay strings.

The session that decodes must use the settings in :data:`SESSION_SETTINGS` (UTC, ISO dates, hex bytea).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.lib.stride_tricks import sliding_window_view

from hybrid_dagster.cdc.changes import Position, TableChanges

SESSION_SETTINGS = (
    "SET TimeZone = 'UTC'",
    "SET DateStyle = 'ISO, YMD'",
    "SET bytea_output = 'hex'",
    "SET IntervalStyle = 'postgres'",
    "SET client_encoding = 'UTF8'",
)

BOOL, BYTEA, CHAR, NAME, INT8, INT2, INT4, TEXT, OID = 16, 17, 18, 19, 20, 21, 23, 25, 26
JSON, FLOAT4, FLOAT8, BPCHAR, VARCHAR, DATE = 114, 700, 701, 1042, 1043, 1082
TIMESTAMP, TIMESTAMPTZ, NUMERIC, UUID, JSONB = 1114, 1184, 1700, 2950, 3802

_FIXED: dict[int, pa.DataType] = {
    BOOL: pa.bool_(),
    BYTEA: pa.binary(),
    INT2: pa.int16(),
    INT4: pa.int32(),
    INT8: pa.int64(),
    OID: pa.int64(),
    FLOAT4: pa.float32(),
    FLOAT8: pa.float64(),
    DATE: pa.date32(),
    TIMESTAMP: pa.timestamp("us"),
    TIMESTAMPTZ: pa.timestamp("us", tz="UTC"),
}
PG_EPOCH_US = 946_684_800_000_000
"""Microseconds from the Unix epoch to the PostgreSQL epoch (2000-01-01 UTC)."""


@dataclass(frozen=True)
class PgColumn:
    """A column as the server describes it: name, type OID and type modifier (-1 when none)."""

    name: str
    type_oid: int
    typmod: int = -1

    @property
    def arrow_type(self) -> pa.DataType:
        return arrow_type(self.type_oid, self.typmod)


def arrow_type(type_oid: int, typmod: int = -1) -> pa.DataType:
    """The Arrow type a PostgreSQL column converts to.

    Example:
        >>> arrow_type(NUMERIC, numeric_typmod(10, 2))
        Decimal128Type(decimal128(10, 2))
        >>> arrow_type(NUMERIC)  # unconstrained numeric has no fixed scale: kept as text
        DataType(string)
    """
    if type_oid == NUMERIC:
        if typmod >= 4:
            precision, scale = ((typmod - 4) >> 16) & 0xFFFF, (typmod - 4) & 0xFFFF
            if 0 < precision <= 38 and 0 <= scale <= precision:
                return pa.decimal128(precision, scale)
        return pa.string()
    return _FIXED.get(type_oid, pa.string())


def numeric_typmod(precision: int, scale: int = 0) -> int:
    """The typmod PostgreSQL stores for ``numeric(precision, scale)``."""
    return ((precision << 16) | scale) + 4


_NUMERIC_NAME = re.compile(r"^(?:numeric|decimal)\((\d+)(?:,\s*(\d+))?\)$")


def typmod_from_type_name(type_name: str) -> int:
    """The typmod that matters for Arrow (numeric precision/scale) from a name like ``numeric(10,2)``."""
    match = _NUMERIC_NAME.match(type_name.strip())
    if not match:
        return -1
    return numeric_typmod(int(match.group(1)), int(match.group(2) or 0))


class ConversionError(ValueError):
    """Some values do not convert to the column's Arrow type; ``bad`` marks their rows."""

    def __init__(self, message: str, bad: np.ndarray) -> None:
        super().__init__(message)
        self.bad = bad


def text_to_arrow(values: pa.Array, column: PgColumn) -> pa.Array:
    """Convert a string array of PostgreSQL text output to the column's Arrow type, vectorized.

    Raises :class:`ConversionError` with the rows whose values do not convert (e.g. ``NaN`` into a
    decimal, ``infinity`` timestamps).

    Example:
        >>> text_to_arrow(pa.array(["t", None, "f"]), PgColumn("ok", BOOL)).to_pylist()
        [True, None, False]
    """
    target = column.arrow_type
    if pa.types.is_string(target):
        return values
    try:
        return _convert(values, column.type_oid, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
        pass
    bad = np.zeros(len(values), dtype=bool)
    for i, value in enumerate(values.to_pylist()):
        if value is None:
            continue
        try:
            _convert(pa.array([value], pa.string()), column.type_oid, target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
            bad[i] = True
    raise ConversionError(f"values of column {column.name!r} do not convert to {target}", bad)


def _convert(values: pa.Array, type_oid: int, target: pa.DataType) -> pa.Array:
    if type_oid == BOOL:  # the wire says t/f, while bool::text (snapshots) says true/false
        return pc.or_(pc.equal(values, "t"), pc.equal(values, "true"))
    if type_oid == BYTEA:
        return _hex_bytea(values)
    return pc.cast(values, target)


_HEX = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _HEX[_c] = 10 + _i


def _hex_bytea(values: pa.Array) -> pa.Array:
    """Decode ``\\x0a1b`` (bytea_output = hex) strings to binary without a Python loop."""
    if not len(values):
        return pa.array([], pa.binary())
    if pc.all(pc.starts_with(values, "\\x")).as_py() is False:
        raise ValueError("bytea value not in hex format")
    digits = pc.utf8_slice_codeunits(values, 2).cast(pa.large_string())
    digits = pa.concat_arrays([digits])  # compact the buffers
    validity, offsets_buf, data_buf = digits.buffers()
    assert offsets_buf is not None
    offsets = np.frombuffer(offsets_buf, dtype=np.int64)[digits.offset : digits.offset + len(digits) + 1]
    if np.any((offsets[1:] - offsets[:-1]) % 2):
        raise ValueError("bytea hex value of odd length")
    raw = (
        np.frombuffer(data_buf, dtype=np.uint8)[offsets[0] : offsets[-1]]
        if data_buf
        else np.zeros(0, np.uint8)
    )
    nibbles = _HEX[raw]
    if np.any(nibbles == 255):
        raise ValueError("bytea value with a non-hex digit")
    decoded = (nibbles[0::2] << 4) | nibbles[1::2]
    new_offsets = ((offsets - offsets[0]) // 2).astype(np.int32)
    if validity is not None:
        validity = pc.is_valid(digits).buffers()[1]
    return pa.Array.from_buffers(
        pa.binary(), len(digits), [validity, pa.py_buffer(new_offsets), pa.py_buffer(decoded.tobytes())]
    )


WINDOW = 16
"""Zero bytes a buffer handed to :func:`strings_from_slices` must end with (fixed-width windows)."""


def strings_from_slices(
    buf: np.ndarray, starts: np.ndarray, lengths: np.ndarray, valid: np.ndarray
) -> pa.Array:
    """Build a string array from ``buf[starts[i] : starts[i] + lengths[i]]`` (null where not ``valid``).

    Builds Arrow string *views* over ``buf`` (short values inline, long ones by offset) and lets Arrow
    compact them: numpy work per value, not per byte, and no Python loop. ``buf`` must end with
    :data:`WINDOW` zero bytes. Raises ``pa.ArrowInvalid`` on invalid UTF-8.
    """
    n = len(starts)
    if len(buf) >= 2**31:
        return _strings_by_gather(buf, starts, lengths, valid)
    lengths = np.where(valid, lengths, 0).astype("<i4")
    starts = np.where(valid, starts, 0).astype("<i4")
    window = sliding_window_view(buf, 12)[starts]
    views = np.zeros((n, 16), dtype=np.uint8)
    views[:, :4] = lengths.view(np.uint8).reshape(n, 4)
    short = lengths <= 12
    views[:, 4:16] = np.where(short[:, None] & (np.arange(12) < lengths[:, None]), window, 0)
    long_rows = ~short
    views[long_rows, 4:8] = window[long_rows, :4]
    views[long_rows, 12:16] = starts[long_rows].view(np.uint8).reshape(-1, 4)
    validity = None if valid.all() else pa.py_buffer(np.packbits(valid, bitorder="little"))
    arr = pa.Array.from_buffers(pa.string_view(), n, [validity, pa.py_buffer(views), pa.py_buffer(buf)])
    out = arr.cast(pa.large_string() if int(lengths.sum()) >= 2**31 else pa.string())
    out.validate(full=True)
    return out


def _strings_by_gather(
    buf: np.ndarray, starts: np.ndarray, lengths: np.ndarray, valid: np.ndarray
) -> pa.Array:
    n = len(starts)
    lengths = np.where(valid, lengths, 0).astype(np.int64)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])
    index = np.repeat(starts.astype(np.int64) - offsets[:-1], lengths) + np.arange(total, dtype=np.int64)
    validity = None if valid.all() else pa.py_buffer(np.packbits(valid, bitorder="little"))
    arr = pa.Array.from_buffers(
        pa.large_string(), n, [validity, pa.py_buffer(offsets), pa.py_buffer(buf[index])]
    )
    arr.validate(full=True)
    return arr


def string_array(values: Sequence[str | None]) -> pa.Array:
    """A string array from Python text values (the wal2json and snapshot paths)."""
    return pa.array(values, pa.string())


# --- assembling change tables from text columns (shared by pgoutput, wal2json and the snapshot) ---

OP_CODES = {ord("c"): "c", ord("u"): "u", ord("d"): "d", ord("r"): "r", ord("t"): "t"}


@dataclass
class TextSegment:
    """Rows of one table decoded under one column layout, values still in PostgreSQL text form.

    ``values[name]`` is a string array per column of ``columns`` (a column missing from the dict is all
    null); ``unchanged[name]`` marks rows whose value the source did not send; ``old_key[name]`` holds
    the previous key where ``old_key_mask`` is set.
    """

    columns: list[PgColumn]
    ops: np.ndarray
    commit_pos: np.ndarray
    event_pos: np.ndarray
    tx_id: np.ndarray | None
    commit_ts_us: np.ndarray | None
    values: dict[str, pa.Array]
    unchanged: dict[str, np.ndarray] | None = None
    old_key: dict[str, pa.Array] | None = None
    old_key_mask: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ops)


@dataclass(frozen=True)
class Rejected:
    """A change left out of its table because a value did not convert: position, raw text, reason."""

    position: str
    raw: str
    reason: str


def _rejected(
    segments: list[TextSegment], bad: np.ndarray, commit: np.ndarray, event: np.ndarray
) -> list[Rejected]:
    import json

    out = []
    base = 0
    for seg in segments:
        for i in np.nonzero(bad[base : base + len(seg)])[0]:
            raw = {name: arr[int(i)].as_py() for name, arr in seg.values.items()}
            position = f"{commit[base + i]}:{event[base + i]}"
            out.append(
                Rejected(position, json.dumps(raw), "a value does not convert to its column's Arrow type")
            )
        base += len(seg)
    return out


def _optional_ints(parts: list[np.ndarray | None], sizes: list[int], arrow_type: pa.DataType) -> pa.Array:
    if all(p is not None for p in parts):
        return pa.array(np.concatenate(parts).astype(np.int64), arrow_type)  # type: ignore[arg-type]
    values = np.concatenate(
        [p if p is not None else np.zeros(n, np.int64) for p, n in zip(parts, sizes, strict=True)]
    )
    mask = np.concatenate(
        [np.zeros(n, bool) if p is not None else np.ones(n, bool) for p, n in zip(parts, sizes, strict=True)]
    )
    return pa.array(values.astype(np.int64), arrow_type, mask=mask)


def _column_text(segment: TextSegment, name: str) -> pa.Array:
    arr = segment.values.get(name)
    return arr if arr is not None else pa.nulls(len(segment), pa.string())


def _concat_text(parts: list[pa.Array]) -> pa.Array:
    if any(pa.types.is_large_string(p.type) for p in parts):
        parts = [p.cast(pa.large_string()) for p in parts]
    return parts[0] if len(parts) == 1 else pa.concat_arrays(parts)


def _ops_array(codes: np.ndarray) -> pa.Array:
    offsets = np.arange(len(codes) + 1, dtype=np.int32)
    return pa.Array.from_buffers(
        pa.string(), len(codes), [None, pa.py_buffer(offsets), pa.py_buffer(codes.astype(np.uint8).tobytes())]
    )


def _unchanged_array(segments: list[TextSegment], total: int) -> pa.Array:
    list_type = pa.list_(pa.string())
    if not any(s.unchanged and any(m.any() for m in s.unchanged.values()) for s in segments):
        return pa.nulls(total, list_type)
    rows: list[list[str] | None] = [None] * total
    base = 0
    for seg in segments:
        for name, mask in (seg.unchanged or {}).items():
            for i in np.nonzero(mask)[0]:
                cell = rows[base + int(i)]
                if cell is None:
                    rows[base + int(i)] = [name]
                else:
                    cell.append(name)
        base += len(seg)
    return pa.array(rows, list_type)


def build_table_changes(
    table: str, key_columns: list[str], segments: list[TextSegment]
) -> tuple[pa.Schema, pa.Table, list[Rejected]]:
    """Concatenate ``segments`` (stream order) into one change table under the newest column layout.

    Earlier segments get nulls for columns added later and are converted with the newest type (a widened
    ``int4 -> int8`` shows as int64). Returns the data schema, the change rows (sorted by position) and
    the rows left out because a value did not convert (for the caller's dead letters).

    Example:
        >>> schema, rows, bad = build_table_changes("t", ["id"], segments)  # doctest: +SKIP
    """
    from hybrid_dagster.cdc.changes import change_schema

    newest = segments[-1].columns
    total = sum(len(s) for s in segments)
    missing = [k for k in key_columns if k not in {c.name for c in newest}]
    if missing:
        raise ValueError(
            f"table {table}: key columns {missing} are not among its columns {[c.name for c in newest]}"
        )
    bad = np.zeros(total, dtype=bool)
    data: dict[str, pa.Array] = {}
    for column in newest:
        text = _concat_text([_column_text(s, column.name) for s in segments])
        try:
            data[column.name] = text_to_arrow(text, column)
        except ConversionError as err:
            bad |= err.bad
            data[column.name] = text_to_arrow(
                pc.if_else(pa.array(err.bad), pa.scalar(None, text.type), text), column
            )
    data_schema = pa.schema([pa.field(c.name, data[c.name].type) for c in newest])
    by_name = {c.name: c for c in newest}

    old_mask = np.concatenate(
        [s.old_key_mask if s.old_key_mask is not None else np.zeros(len(s), bool) for s in segments]
    )
    key_children = []
    for key in key_columns:
        parts = [
            (s.old_key or {}).get(key, pa.nulls(len(s), pa.string()))
            if s.old_key_mask is not None
            else pa.nulls(len(s), pa.string())
            for s in segments
        ]
        text = _concat_text(parts)
        try:
            key_children.append(text_to_arrow(text, by_name[key]))
        except ConversionError as err:
            bad |= err.bad & old_mask
            key_children.append(
                text_to_arrow(pc.if_else(pa.array(err.bad), pa.scalar(None, text.type), text), by_name[key])
            )
    key_fields = [data_schema.field(k) for k in key_columns]
    old_key = pa.StructArray.from_arrays(key_children, fields=key_fields, mask=pa.array(~old_mask))

    commit_pos = np.concatenate([s.commit_pos for s in segments]).astype(np.int64)
    event_pos = np.concatenate([s.event_pos for s in segments]).astype(np.int64)
    schema = change_schema(data_schema, key_columns)
    columns = [
        _ops_array(np.concatenate([s.ops for s in segments])),
        pa.array(commit_pos, pa.int64()),
        pa.array(event_pos, pa.int64()),
        _optional_ints([s.tx_id for s in segments], [len(s) for s in segments], pa.int64()),
        _optional_ints(
            [s.commit_ts_us for s in segments], [len(s) for s in segments], pa.timestamp("us", tz="UTC")
        ),
        old_key,
        _unchanged_array(segments, total),
        *(data[c.name] for c in newest),
    ]
    rows = pa.Table.from_arrays(columns, schema=schema)
    keep = ~bad
    rejected = _rejected(segments, bad, commit_pos, event_pos) if bad.any() else []
    if bad.any():
        rows = rows.filter(pa.array(keep))
        commit_pos, event_pos = commit_pos[keep], event_pos[keep]
    if len(commit_pos) > 1:
        unsorted = (commit_pos[1:] < commit_pos[:-1]) | (
            (commit_pos[1:] == commit_pos[:-1]) & (event_pos[1:] < event_pos[:-1])
        )
        if unsorted.any():
            rows = rows.take(pa.array(np.lexsort((event_pos, commit_pos))))
    return data_schema, rows, rejected


def text_changes(
    table: str,
    keys: list[str],
    columns: list[PgColumn],
    values: dict[str, pa.Array],
    n: int,
    position: Position,
) -> TableChanges:
    """``n`` rows of text columns -> ``r`` changes at ``position``; unconvertible values raise, naming
    the columns and the count (never a value)."""
    segment = TextSegment(
        columns=columns,
        ops=np.full(n, ord("r"), dtype=np.uint8),
        commit_pos=np.full(n, position.commit, dtype=np.int64),
        event_pos=np.full(n, position.event, dtype=np.int64),
        tx_id=None,
        commit_ts_us=None,
        values=values,
    )
    data_schema, rows, rejected = build_table_changes(table, keys, [segment])
    if rejected:
        # Never row values in exception text: it leaves the plane. Name the columns and the count.
        bad_columns = []
        for column in columns:
            try:
                text_to_arrow(values[column.name], column)
            except ConversionError:
                bad_columns.append(f"{column.name!r} ({column.arrow_type})")
        raise ValueError(
            f"snapshot of {table}: {len(rejected)} rows have values that do not convert, in columns "
            f"{', '.join(bad_columns) or 'unknown'}"
        )
    return TableChanges(table, keys, data_schema, rows)
