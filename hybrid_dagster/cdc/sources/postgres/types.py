"""PostgreSQL types to Arrow: the type mapping and vectorized conversion of text values.

The wal2json decoder, the snapshot and pgoutput in text mode read every value in PostgreSQL's text
output form; pgoutput in binary mode (:mod:`.binary`) decodes the types of
:data:`~hybrid_dagster.cdc.sources.postgres.binary.BINARY_TYPES` straight to their Arrow type. The rules
that keep every path identical:

* One conversion of text (:func:`text_to_arrow`) for everything that is still text, so a row reads the
  same whichever path it took. A binary value is decoded to exactly what its text form converts to, and
  a value whose text does not convert (``infinity`` dates and timestamps, years outside 1..9999) is
  *invalid* there too: the segment keeps its PostgreSQL text (:attr:`TextSegment.invalid`) and its row is
  rejected as in text mode, with the same raw text in the dead letter (:func:`pg_text` renders the row's
  typed values as PostgreSQL prints them).
* :func:`build_table_changes` converts only what is still text. A typed array of another type (from
  before an ``ALTER COLUMN TYPE``) is cast safely when both are integers, else it goes through its
  PostgreSQL text and :func:`text_to_arrow`, which is what text mode does with it (e.g. ``real`` widened
  to ``double precision`` reads ``1.1`` as 1.1, not as the float32 nearest to it).

Types without a lossless Arrow counterpart (unconstrained numeric, time, interval, arrays, enums, ...)
stay strings.

The session that decodes must use the settings in :data:`SESSION_SETTINGS` (UTC, ISO dates, hex bytea).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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


# --- PostgreSQL text output of typed values (dead letters, and typed values read under another type) ---

_UNIX_DAYS_AT_PG_EPOCH = 10_957
PG_DATE_MIN, PG_DATE_MAX = -(2**31), 2**31 - 1
"""``-infinity`` and ``infinity`` of a binary ``date`` (days since 2000-01-01)."""
PG_TIMESTAMP_MIN, PG_TIMESTAMP_MAX = -(2**63), 2**63 - 1
"""``-infinity`` and ``infinity`` of a binary ``timestamp``/``timestamptz`` (microseconds since 2000)."""


def _civil(unix_days: int) -> tuple[int, int, int]:
    """Proleptic Gregorian (astronomical year, month, day) of a day count from 1970-01-01, any range."""
    z = unix_days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (month <= 2), month, day


def _ymd(unix_days: int) -> tuple[str, bool]:
    year, month, day = _civil(unix_days)
    bc = year <= 0
    return f"{1 - year if bc else year:04d}-{month:02d}-{day:02d}", bc


def pg_date_text(pg_days: int) -> str:
    """PostgreSQL's ISO text of a binary ``date`` (days since 2000-01-01), e.g. ``0044-03-15 BC``."""
    if pg_days in (PG_DATE_MIN, PG_DATE_MAX):
        return "-infinity" if pg_days == PG_DATE_MIN else "infinity"
    text, bc = _ymd(pg_days + _UNIX_DAYS_AT_PG_EPOCH)
    return f"{text} BC" if bc else text


def pg_timestamp_text(pg_us: int, *, tz: bool) -> str:
    """PostgreSQL's ISO text (TimeZone UTC) of a binary ``timestamp[tz]`` (microseconds since 2000)."""
    if pg_us in (PG_TIMESTAMP_MIN, PG_TIMESTAMP_MAX):
        return "-infinity" if pg_us == PG_TIMESTAMP_MIN else "infinity"
    days, us = divmod(pg_us, 86_400_000_000)
    date, bc = _ymd(days + _UNIX_DAYS_AT_PG_EPOCH)
    seconds, fraction = divmod(us, 1_000_000)
    text = f"{date} {seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    if fraction:
        text += f".{fraction:06d}".rstrip("0")
    return text + ("+00" if tz else "") + (" BC" if bc else "")


def pg_float_text(value: float, *, float4: bool = False) -> str:
    """PostgreSQL's ``float8out``/``float4out`` (shortest exact digits, ``extra_float_digits`` > 0)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    scalar = np.float32(value) if float4 else np.float64(value)
    mantissa, _, exp_text = np.format_float_scientific(scalar, unique=True, trim="-").partition("e")
    sign = "-" if mantissa.startswith("-") else ""
    digits, exp = mantissa.lstrip("-").replace(".", ""), int(exp_text)
    if -4 <= exp < (6 if float4 else 15):
        if exp < 0:
            return f"{sign}0.{'0' * (-exp - 1)}{digits}"
        whole, fraction = digits[: exp + 1].ljust(exp + 1, "0"), digits[exp + 1 :]
        return f"{sign}{whole}.{fraction}" if fraction else f"{sign}{whole}"
    head = digits[0] + (f".{digits[1:]}" if len(digits) > 1 else "")
    return f"{sign}{head}e{'-' if exp < 0 else '+'}{abs(exp):02d}"


def pg_text(value: Any, arrow_type: pa.DataType) -> str | None:
    """PostgreSQL's text output (session :data:`SESSION_SETTINGS`) of one value of a typed array.

    Example:
        >>> pg_text(1e16, pa.float64()), pg_text(True, pa.bool_()), pg_text(1.5, pa.float32())
        ('1e+16', 't', '1.5')
    """
    if value is None:
        return None
    if pa.types.is_boolean(arrow_type):
        return "t" if value else "f"
    if pa.types.is_floating(arrow_type):
        return pg_float_text(value, float4=pa.types.is_float32(arrow_type))
    if pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type):
        return "\\x" + bytes(value).hex()
    if isinstance(value, dt.datetime):
        unix_us = (value.replace(tzinfo=None) - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1)
        return pg_timestamp_text(unix_us - PG_EPOCH_US, tz=value.tzinfo is not None)
    if isinstance(value, dt.date):
        return pg_date_text((value - dt.date(2000, 1, 1)).days)
    return str(value)


def typed_to_text(values: pa.Array) -> pa.Array:
    """A typed array as PostgreSQL's text output (one Python call per value: schema changes only)."""
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        return values
    return pa.array([pg_text(v, values.type) for v in values.to_pylist()], pa.string())


WINDOW = 16
"""Zero bytes a buffer handed to :func:`strings_from_slices` must end with (fixed-width windows)."""


def values_at(buf: np.ndarray, pos: np.ndarray, dtype: str) -> np.ndarray:
    """The ``dtype`` values (1, 2, 4 or 8 bytes, any byte order) at byte offsets ``pos`` of ``buf``, with
    offsets clipped into it (callers check bounds themselves): one gather through a view that starts a
    value at every byte, no copy per value.

    Example:
        >>> values_at(np.frombuffer(b"\\x00\\x01\\x02", np.uint8), np.array([0, 1]), ">u2").tolist()
        [1, 258]
    """
    size = np.dtype(dtype).itemsize
    if len(buf) < size:
        buf = np.concatenate([buf, np.zeros(size - len(buf), np.uint8)])
    every_byte = np.ndarray((len(buf) - size + 1,), dtype=dtype, buffer=buf, strides=(1,))
    return every_byte[np.clip(pos, 0, len(buf) - size)]


_LOW_BYTES = np.array([(1 << (8 * k)) - 1 for k in range(9)], dtype=np.uint64)
"""``_LOW_BYTES[k]``: the mask of a little-endian word's ``k`` lowest bytes."""


def strings_from_slices(
    buf: np.ndarray, starts: np.ndarray, lengths: np.ndarray, valid: np.ndarray, *, binary: bool = False
) -> pa.Array:
    """Build a string array from ``buf[starts[i] : starts[i] + lengths[i]]`` (null where not ``valid``).

    Builds Arrow string *views* over ``buf`` (short values inline, long ones by offset) and lets Arrow
    compact them: numpy work per value, not per byte, and no Python loop. ``buf`` must end with
    :data:`WINDOW` zero bytes. Raises ``pa.ArrowInvalid`` on invalid UTF-8. With ``binary=True`` the
    result is a binary array (raw bytes, no UTF-8 check).
    """
    n = len(starts)
    if len(buf) >= 2**31:
        return _strings_by_gather(buf, starts, lengths, valid, binary=binary)
    lengths = np.where(valid, lengths, 0).astype(np.uint64)
    starts = np.where(valid, starts, 0).astype(np.uint64)
    # a view is two little-endian words: length | first 4 bytes << 32, then bytes 4..11 (inline, short
    # values) or the offset << 32 in buffer 0 (long values); bytes past a short value's length are zero
    head, tail = values_at(buf, starts, "<u8"), values_at(buf, starts + 4, "<u8")  # WINDOW bytes hold both
    views = np.empty((n, 2), dtype="<u8")
    views[:, 0] = lengths | ((head & _LOW_BYTES[np.minimum(lengths, 4)]) << 32)
    views[:, 1] = np.where(lengths <= 12, tail & _LOW_BYTES[np.clip(lengths, 4, 12) - 4], starts << 32)
    validity = None if valid.all() else pa.py_buffer(np.packbits(valid, bitorder="little"))
    view_type, small, large = (
        (pa.binary_view(), pa.binary(), pa.large_binary())
        if binary
        else (pa.string_view(), pa.string(), pa.large_string())
    )
    arr = pa.Array.from_buffers(view_type, n, [validity, pa.py_buffer(views), pa.py_buffer(buf)])
    out = arr.cast(large if int(lengths.sum()) >= 2**31 else small)
    out.validate(full=True)
    return out


def _strings_by_gather(
    buf: np.ndarray, starts: np.ndarray, lengths: np.ndarray, valid: np.ndarray, *, binary: bool = False
) -> pa.Array:
    n = len(starts)
    lengths = np.where(valid, lengths, 0).astype(np.int64)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])
    index = np.repeat(starts.astype(np.int64) - offsets[:-1], lengths) + np.arange(total, dtype=np.int64)
    validity = None if valid.all() else pa.py_buffer(np.packbits(valid, bitorder="little"))
    arr = pa.Array.from_buffers(
        pa.large_binary() if binary else pa.large_string(),
        n,
        [validity, pa.py_buffer(offsets), pa.py_buffer(buf[index])],
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
    """Rows of one table decoded under one column layout.

    ``values[name]`` is an array per column of ``columns`` (a column missing from the dict is all null):
    a string array of PostgreSQL text output, or (pgoutput binary mode) an array already of the column's
    Arrow type. ``unchanged[name]`` marks rows whose value the source did not send; ``old_key[name]``
    holds the previous key where ``old_key_mask`` is set. ``invalid[name]`` maps rows whose binary value
    does not convert to the Arrow type (null in ``values``) to the value's PostgreSQL text: such a row is
    rejected as its text would be. ``old_key_invalid[name]`` marks the same in ``old_key``.
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
    invalid: dict[str, dict[int, str]] | None = None
    old_key_invalid: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.ops)


@dataclass(frozen=True)
class Rejected:
    """A change left out of its table because a value did not convert: position, raw text, reason."""

    position: str
    raw: str
    reason: str


def _raw_text(seg: TextSegment, name: str, arr: pa.Array, i: int) -> str | None:
    """The PostgreSQL text of ``seg.values[name][i]`` (what text mode holds)."""
    invalid = (seg.invalid or {}).get(name)
    if invalid is not None and i in invalid:
        return invalid[i]
    return pg_text(arr[i].as_py(), arr.type)


def _rejected(
    segments: list[TextSegment], bad: np.ndarray, commit: np.ndarray, event: np.ndarray
) -> list[Rejected]:
    out = []
    base = 0
    for seg in segments:
        for i in np.nonzero(bad[base : base + len(seg)])[0]:
            raw = {name: _raw_text(seg, name, arr, int(i)) for name, arr in seg.values.items()}
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


def _invalid_mask(invalid: dict[int, str] | None, n: int) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    if invalid:
        mask[list(invalid)] = True
    return mask


def _is_text(arr: pa.Array) -> bool:
    return pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)


def _text_part(text: pa.Array, column: PgColumn) -> tuple[pa.Array, np.ndarray]:
    """:func:`text_to_arrow`, with the rows that do not convert nulled and marked."""
    try:
        return text_to_arrow(text, column), np.zeros(len(text), dtype=bool)
    except ConversionError as err:
        nulled = pc.if_else(pa.array(err.bad), pa.scalar(None, text.type), text)
        return text_to_arrow(nulled, column), err.bad


def _typed_part(part: pa.Array, column: PgColumn) -> tuple[pa.Array, np.ndarray]:
    """A typed array of another type (read before an ``ALTER COLUMN TYPE``) as ``column``'s type: an
    integer widening is a safe cast; anything else (or an integer out of range) goes through its text,
    as text mode would read it."""
    target = column.arrow_type
    if pa.types.is_integer(part.type) and pa.types.is_integer(target):
        try:
            return pc.cast(part, target), np.zeros(len(part), dtype=bool)
        except pa.ArrowInvalid:
            pass
    return _text_part(typed_to_text(part), column)


def _to_arrow(
    parts: list[pa.Array], invalid: list[np.ndarray], column: PgColumn
) -> tuple[pa.Array, np.ndarray]:
    """One column's parts (text or typed, one per segment) as the column's Arrow type; the mask marks
    rows that do not convert (text that :func:`text_to_arrow` refuses, and invalid binary values)."""
    target = column.arrow_type
    if all(_is_text(p) for p in parts):  # text mode: one conversion over all segments
        arr, bad = _text_part(_concat_text(parts), column)
        return arr, bad | np.concatenate(invalid)
    out, bads = [], []
    for part, part_invalid in zip(parts, invalid, strict=True):
        if part.type == target or (_is_text(part) and pa.types.is_string(target)):
            converted, bad = part, np.zeros(len(part), dtype=bool)
        elif _is_text(part):
            converted, bad = _text_part(part, column)
        else:
            converted, bad = _typed_part(part, column)
        out.append(converted)
        bads.append(bad | part_invalid)
    if all(_is_text(p) for p in out):
        return _concat_text(out), np.concatenate(bads)
    return pa.concat_arrays(out) if len(out) > 1 else out[0], np.concatenate(bads)


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
        parts = [_column_text(s, column.name) for s in segments]
        invalid = [_invalid_mask((s.invalid or {}).get(column.name), len(s)) for s in segments]
        data[column.name], column_bad = _to_arrow(parts, invalid, column)
        bad |= column_bad
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
        invalid = [
            (s.old_key_invalid or {}).get(key, np.zeros(len(s), bool))
            if s.old_key_mask is not None
            else np.zeros(len(s), bool)
            for s in segments
        ]
        child, key_bad = _to_arrow(parts, invalid, by_name[key])
        key_children.append(child)
        bad |= key_bad & old_mask
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
