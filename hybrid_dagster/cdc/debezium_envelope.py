"""Parse one Debezium change event (Kafka key + value JSON) into a normalized change.

Accepted value layouts: the JsonConverter ``{"schema": ..., "payload": {...}}`` wrapper (schemas
enabled), ``{"payload": {...}}``, and the bare envelope ``{"before", "after", "source", "op", ...}``.
The result is one of:

* :class:`ParsedChange` for ops ``c``/``u``/``d``/``r``/``t``;
* :class:`Skipped` for events that carry no row change: tombstones (a null value, an empty value, or the
  pre-KAFKA-3832 ``{"schema": null, "payload": null}``), transaction metadata (``BEGIN``/``END``) and
  logical decoding messages (op ``m``);
* :class:`Malformed` with a reason naming what is wrong. Parsing never raises.

Positions (:func:`event_position`) are normalized to ``Position(commit, event)`` so that sorting by
commit then event is the source's commit order, even across interleaved transactions:

* PostgreSQL: ``source.sequence`` = ``'["<last commit LSN>", "<event LSN>"]'`` (either may be null; a
  null falls back to ``source.lsn``), then ``source.lsn`` alone (older connectors: not monotonic across
  interleaved transactions, nothing better exists in the event).
* MySQL: the binlog is written in commit order, so ``commit = file_number << 40 | pos`` and
  ``event = row``.
* SQL Server: ``commit = pack(commit_lsn)``; ``event`` orders ``change_lsn`` then ``event_serial_no``
  inside the commit (see :func:`pack_sqlserver_lsn`).
* Otherwise ``source.ts_ms`` (then the envelope ``ts_ms``) as ``Position(ts_ms, 0)``.

Duplicate object keys (they occur in Debezium's own documentation examples) follow Python's ``json``
module: **the last value wins**. Example: the SQL Server create example has ``ts_ms`` three times in the
envelope; this parser reads ``1559729471739876149``. Source fields are not affected in that example.

Example:
    >>> r = parse_event('{"op": "c", "after": {"id": 1}, "source": {"db": "d", "table": "t", "lsn": 7}}')
    >>> (r.table, r.op, r.position, r.row)
    ('d.t', 'c', Position(commit=7, event=7), {'id': 1})
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import decimal
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from hybrid_dagster.cdc.changes import OP_DELETE, OP_INSERT, OP_READ, OP_TRUNCATE, OP_UPDATE, Position

UNAVAILABLE_VALUE = "__debezium_unavailable_value"
"""Debezium's default ``unavailable.value.placeholder`` (unchanged TOAST columns)."""

OP_MESSAGE = "m"
_ROW_OPS = (OP_INSERT, OP_UPDATE, OP_DELETE, OP_READ)
_INT64_MAX = 2**63 - 1
_INT_RANGES = {"int8": 7, "int16": 15, "int32": 31, "int64": 63}
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_EPOCH_DATE = dt.date(1970, 1, 1)


@dataclass(frozen=True)
class ParsedChange:
    """One row change, with data values already converted for :attr:`data_schema` (if known).

    ``row`` is the after-image for ``c``/``u``/``r``, the before-image (or the event key) for ``d`` and
    empty for ``t``. ``data_schema`` is None when the event had no schema: the caller infers types
    (:func:`infer_schema`). ``unchanged`` lists columns that held the unavailable-value placeholder;
    they are None in ``row``.
    """

    table: str
    op: str
    position: Position
    row: dict[str, Any]
    before: dict[str, Any] | None = None
    key: dict[str, Any] | None = None
    data_schema: pa.Schema | None = None
    tx_id: int | None = None
    commit_ts: dt.datetime | None = None
    unchanged: tuple[str, ...] = ()
    position_from: str = "log"
    """'log' (LSN, binlog or SQL Server LSN fields) or 'ts_ms' (the timestamp fallback)."""

    def old_key(self, key_columns: list[str]) -> dict[str, Any] | None:
        """The before-image key of an update that changed its key, else None."""
        if self.op != OP_UPDATE or not key_columns or self.before is None:
            return None
        if any(k not in self.before or k not in self.row for k in key_columns):
            return None
        if all(self.before[k] == self.row[k] for k in key_columns):
            return None
        return {k: self.before[k] for k in key_columns}


@dataclass(frozen=True)
class Skipped:
    """An event without a row change (tombstone, transaction marker, logical decoding message)."""

    reason: str


@dataclass(frozen=True)
class Malformed:
    """An event that cannot be parsed; ``reason`` names what is wrong."""

    reason: str
    table: str | None = None


EventResult = ParsedChange | Skipped | Malformed


class EventError(ValueError):
    """Raised inside the parser; turned into :class:`Malformed` at the public boundary."""


def _reject_constant(name: str) -> Any:
    raise EventError(f"invalid JSON constant {name}")


def decode_json(text: str | bytes) -> Any:
    """Strict JSON decode (no NaN/Infinity literals); duplicate keys: last wins. Raises EventError."""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        return json.loads(text, parse_constant=_reject_constant)
    except EventError:
        raise
    except (ValueError, RecursionError) as exc:
        raise EventError(f"not valid JSON: {exc}") from None


def parse_event(
    value: str | bytes | None,
    key: str | bytes | None = None,
    *,
    placeholder: str = UNAVAILABLE_VALUE,
) -> EventResult:
    """Parse a raw Kafka value (and optional key) as Debezium JSON. Never raises."""
    if value is None or not value.strip():
        return Skipped("tombstone (null value)")
    try:
        value_obj = decode_json(value)
    except EventError as exc:
        return Malformed(f"value is {exc}")
    key_obj: Any = None
    if key is not None and key.strip():
        try:
            key_obj = decode_json(key)
        except EventError as exc:
            return Malformed(f"key is {exc}")
    return parse_envelope(value_obj, key_obj, placeholder=placeholder)


def parse_envelope(value: Any, key: Any = None, *, placeholder: str = UNAVAILABLE_VALUE) -> EventResult:
    """Parse an already JSON-decoded value (and key). Never raises."""
    table: str | None = None
    try:
        payload, schema = _unwrap(value)
        if payload is None:
            return Skipped("tombstone (null payload)")
        if not isinstance(payload, dict):
            raise EventError(f"payload is a JSON {_json_kind(payload)}, not an object")
        if "op" not in payload:
            if payload.get("status") in ("BEGIN", "END") and "id" in payload:
                return Skipped(f"transaction {payload['status']} marker")
            raise EventError("missing 'op'")
        op = payload["op"]
        if op == OP_MESSAGE:
            return Skipped("logical decoding message (op 'm')")
        if op not in (*_ROW_OPS, OP_TRUNCATE):
            raise EventError(f"unknown op {op!r} (expected c, u, d, r, t or m)")
        source = payload.get("source")
        if not isinstance(source, dict):
            raise EventError("missing 'source' object")
        table = table_name(source)
        return _parse_change(payload, schema, source, op, table, key, placeholder)
    except EventError as exc:
        return Malformed(str(exc), table)
    except (ValueError, TypeError, ArithmeticError, RecursionError, KeyError) as exc:  # defensive net
        return Malformed(f"unexpected {type(exc).__name__} while parsing the event", table)


def _unwrap(value: Any) -> tuple[Any, dict[str, Any] | None]:
    if value is None:
        return None, None
    if not isinstance(value, dict):
        raise EventError(f"value is a JSON {_json_kind(value)}, not an object")
    if "payload" in value and "op" not in value:
        schema = value.get("schema")
        if schema is not None and not isinstance(schema, dict):
            raise EventError("'schema' is not an object")
        return value["payload"], schema
    return value, None


def _json_kind(value: Any) -> str:
    return {
        dict: "object",
        list: "array",
        str: "string",
        bool: "boolean",
        int: "number",
        float: "number",
    }.get(type(value), "null" if value is None else type(value).__name__)


def table_name(source: dict[str, Any]) -> str:
    """``schema.table`` (PostgreSQL, SQL Server), else ``db.table`` (MySQL), else ``table``."""
    table = source.get("table") or source.get("collection")
    if not isinstance(table, str) or not table:
        raise EventError("source.table is missing or empty")
    for prefix_field in ("schema", "db"):
        prefix = source.get(prefix_field)
        if isinstance(prefix, str) and prefix:
            return f"{prefix}.{table}"
    return table


def _parse_change(
    payload: dict[str, Any],
    schema: dict[str, Any] | None,
    source: dict[str, Any],
    op: str,
    table: str,
    key: Any,
    placeholder: str,
) -> ParsedChange:
    position = event_position(source, payload)
    position_from = "log" if _has_log_position(source) else "ts_ms"
    tx_id = _opt_int(source.get("txId"), "source.txId")
    commit_ts = _commit_ts(source)
    row_fields = _row_fields(schema)
    data_schema = pa.schema([_arrow_field(f) for f in row_fields]) if row_fields is not None else None
    convert = _row_converter(row_fields, placeholder)
    key_row = _parse_key(key)

    before_raw, after_raw = payload.get("before"), payload.get("after")
    unchanged: tuple[str, ...] = ()
    before = None
    if before_raw is not None:
        if not isinstance(before_raw, dict):
            raise EventError(f"'before' is a JSON {_json_kind(before_raw)}, not an object")
        before, _ = convert(before_raw, "before")
    if op == OP_TRUNCATE:
        row: dict[str, Any] = {}
    elif op == OP_DELETE:
        if before is not None:
            row = before
        elif key_row is not None:
            row = key_row
        else:
            raise EventError("op 'd' without 'before' and without a key")
    else:
        if not isinstance(after_raw, dict):
            what = "missing" if after_raw is None else f"a JSON {_json_kind(after_raw)}"
            raise EventError(f"op {op!r} needs an 'after' object, but it is {what}")
        row, unchanged = convert(after_raw, "after")
    return ParsedChange(
        table=table,
        op=op,
        position=position,
        row=row,
        before=before,
        key=key_row,
        data_schema=data_schema,
        tx_id=tx_id,
        commit_ts=commit_ts,
        unchanged=unchanged,
        position_from=position_from,
    )


def _parse_key(key: Any) -> dict[str, Any] | None:
    if key is None:
        return None
    if isinstance(key, dict) and "payload" in key and ("schema" in key or len(key) == 1):
        key = key["payload"]
        if key is None:
            return None
    if not isinstance(key, dict):
        raise EventError(f"key is a JSON {_json_kind(key)}, not an object")
    return key


# --- positions -------------------------------------------------------------------------------------------


def _has_log_position(source: dict[str, Any]) -> bool:
    return any(source.get(f) is not None for f in ("sequence", "lsn", "commit_lsn", "change_lsn")) or (
        source.get("file") is not None and source.get("pos") is not None
    )


def event_position(source: dict[str, Any], payload: dict[str, Any] | None = None) -> Position:
    """Normalize the connector-specific position fields (see the module docstring)."""
    if source.get("sequence") is not None or source.get("lsn") is not None:
        return _postgres_position(source)
    if source.get("commit_lsn") is not None or source.get("change_lsn") is not None:
        return _sqlserver_position(source)
    if source.get("file") is not None and source.get("pos") is not None:
        return _mysql_position(source)
    for where, container in (("source", source), ("envelope", payload or {})):
        ts = _opt_int(container.get("ts_ms"), f"{where}.ts_ms")
        if ts is not None:
            return Position(_check_int64(ts, f"{where}.ts_ms"), 0)
    raise EventError("no position: none of source.sequence/lsn, commit_lsn, file+pos or ts_ms is set")


def _postgres_position(source: dict[str, Any]) -> Position:
    lsn = _opt_int(source.get("lsn"), "source.lsn")
    commit, event = lsn, lsn
    raw = source.get("sequence")
    if raw is not None:
        seq = decode_json(raw) if isinstance(raw, str) else raw
        if not isinstance(seq, list) or len(seq) != 2:
            raise EventError(f"source.sequence is not a two-element array: {raw!r}")
        first = _opt_int(seq[0], "source.sequence[0]")
        second = _opt_int(seq[1], "source.sequence[1]")
        event = second if second is not None else lsn
        commit = first if first is not None else event
    if commit is None or event is None:
        raise EventError(f"source.sequence has no LSN and source.lsn is null: {raw!r}")
    return Position(_check_int64(commit, "commit LSN"), _check_int64(event, "event LSN"))


def _mysql_position(source: dict[str, Any]) -> Position:
    file = source["file"]
    match = re.search(r"(\d+)$", file) if isinstance(file, str) else None
    if match is None:
        raise EventError(f"source.file {file!r} has no binlog file number")
    file_no = int(match.group(1))
    pos = _opt_int(source["pos"], "source.pos") or 0
    row = _opt_int(source.get("row"), "source.row") or 0
    if file_no >= 2**22 or not 0 <= pos < 2**40:
        raise EventError(f"binlog position {file}:{pos} is outside the supported range")
    return Position((file_no << 40) | pos, _check_int64(row, "source.row"))


_SQLSERVER_LSN = re.compile(r"^([0-9a-fA-F]{1,8}):([0-9a-fA-F]{1,8}):([0-9a-fA-F]{1,4})$")
_VLF_BITS, _BLOCK_BITS, _SLOT_BITS = 26, 24, 13
_DELTA_BITS, _SERIAL_BITS = 50, 12


def pack_sqlserver_lsn(lsn: Any) -> int:
    """Pack ``VLF:block:slot`` (hex) into 63 bits: 26 bits VLF, 24 bits block, 13 bits slot.

    Order-preserving for LSNs inside that range (VLF sequence numbers below 67M, log blocks below
    8 GiB per VLF, under 8192 records per block); anything larger is rejected, never wrapped.
    """
    match = _SQLSERVER_LSN.match(lsn) if isinstance(lsn, str) else None
    if match is None:
        raise EventError(f"not a SQL Server LSN (expected 'VLF:BLOCK:SLOT' in hex): {lsn!r}")
    vlf, block, slot = (int(part, 16) for part in match.groups())
    if vlf >= 1 << _VLF_BITS or block >= 1 << _BLOCK_BITS or slot >= 1 << _SLOT_BITS:
        raise EventError(f"SQL Server LSN {lsn} is outside the packable range")
    return (vlf << (_BLOCK_BITS + _SLOT_BITS)) | (block << _SLOT_BITS) | slot


def _sqlserver_position(source: dict[str, Any]) -> Position:
    commit_raw, change_raw = source.get("commit_lsn"), source.get("change_lsn")
    commit = pack_sqlserver_lsn(commit_raw if commit_raw is not None else change_raw)
    change = pack_sqlserver_lsn(change_raw) if change_raw is not None else commit
    serial = _opt_int(source.get("event_serial_no"), "source.event_serial_no") or 0
    delta = commit - change
    if delta < 0:
        raise EventError(f"change_lsn {change_raw} is after commit_lsn {commit_raw}")
    # Inside a commit: a later change_lsn means a smaller distance to the commit LSN.
    distance = min(delta, (1 << _DELTA_BITS) - 1)
    event = (((1 << _DELTA_BITS) - 1 - distance) << _SERIAL_BITS) | min(
        max(serial, 0), (1 << _SERIAL_BITS) - 1
    )
    return Position(commit, event)


def _opt_int(value: Any, what: str) -> int | None:
    """An integer field that Debezium sometimes writes as a decimal string."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise EventError(f"{what} is a boolean, not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d{1,20}", value.strip()):
        return int(value)
    raise EventError(f"{what} is not an integer (a {_json_kind(value)})")


def _check_int64(value: int, what: str) -> int:
    if not -(2**63) <= value <= _INT64_MAX:
        raise EventError(f"{what} {value} does not fit in int64")
    return value


def _commit_ts(source: dict[str, Any]) -> dt.datetime | None:
    """Source commit time, µs precision; 0 (snapshot events of some connectors) means unknown."""
    micros = _opt_int(source.get("ts_us"), "source.ts_us")
    if micros is None:
        ms = _opt_int(source.get("ts_ms"), "source.ts_ms")
        if ms is None:
            sec = _opt_int(source.get("ts_sec"), "source.ts_sec")  # legacy MySQL layout
            micros = sec * 1_000_000 if sec is not None else None
        else:
            micros = ms * 1000
    if micros is None or micros <= 0:
        return None
    try:
        return _EPOCH + dt.timedelta(microseconds=micros)
    except OverflowError:
        raise EventError(f"source timestamp {micros} µs is out of range") from None


# --- types -----------------------------------------------------------------------------------------------


def _row_fields(schema: dict[str, Any] | None) -> list[dict[str, Any]] | None:
    """The column fields of the envelope's ``after`` (or ``before``) struct, if the event has a schema."""
    if schema is None:
        return None
    fields = schema.get("fields")
    if not isinstance(fields, list):
        raise EventError("schema has no 'fields' list")
    by_name = {f.get("field"): f for f in fields if isinstance(f, dict)}
    for name in ("after", "before"):
        struct = by_name.get(name)
        if struct is not None:
            columns = struct.get("fields")
            if not isinstance(columns, list) or not all(isinstance(c, dict) for c in columns):
                raise EventError(f"schema field '{name}' has no 'fields' list of objects")
            for column in columns:
                if not isinstance(column.get("field"), str):
                    raise EventError(f"schema field '{name}' has a column without a 'field' name")
            return columns
    return None


_PRIMITIVES: dict[str, pa.DataType] = {
    "int8": pa.int8(),
    "int16": pa.int16(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "boolean": pa.bool_(),
    "string": pa.string(),
    "bytes": pa.binary(),
}

_LOGICAL: dict[str, pa.DataType] = {
    "io.debezium.time.Date": pa.date32(),
    "org.apache.kafka.connect.data.Date": pa.date32(),
    "io.debezium.time.Timestamp": pa.timestamp("ms"),
    "org.apache.kafka.connect.data.Timestamp": pa.timestamp("ms"),
    "io.debezium.time.MicroTimestamp": pa.timestamp("us"),
    "io.debezium.time.NanoTimestamp": pa.timestamp("ns"),
    "io.debezium.time.ZonedTimestamp": pa.timestamp("us", tz="UTC"),
    "io.debezium.time.Time": pa.time32("ms"),
    "org.apache.kafka.connect.data.Time": pa.time32("ms"),
    "io.debezium.time.MicroTime": pa.time64("us"),
    "io.debezium.time.NanoTime": pa.time64("ns"),
    "io.debezium.data.VariableScaleDecimal": pa.string(),
    "io.debezium.data.Json": pa.string(),
    "io.debezium.data.Uuid": pa.string(),
}


def arrow_type(field_schema: dict[str, Any]) -> pa.DataType:
    """Arrow type of one Kafka Connect field schema.

    Primitive types map one to one (int32 stays int32). Logical types: Date → date32, (Micro|Nano)Timestamp
    → timestamp (no zone), ZonedTimestamp → timestamp[us, UTC] (sub-µs digits are truncated), Decimal →
    decimal128/256(precision, scale) (precision 38 when the schema omits it), VariableScaleDecimal →
    string holding the exact decimal text (no fixed scale exists), Json/Uuid → string. Arrays map to
    lists; structs to structs; maps to JSON text.
    """
    name = field_schema.get("name")
    if name == "org.apache.kafka.connect.data.Decimal":
        scale, precision = _decimal_params(field_schema)
        return pa.decimal128(precision, scale) if precision <= 38 else pa.decimal256(precision, scale)
    if isinstance(name, str) and name in _LOGICAL:
        return _LOGICAL[name]
    kind = field_schema.get("type")
    if isinstance(kind, str) and kind in _PRIMITIVES:
        return _PRIMITIVES[kind]
    if kind == "array":
        items = field_schema.get("items")
        if not isinstance(items, dict):
            raise EventError("array schema without 'items'")
        return pa.list_(arrow_type(items))
    if kind == "struct":
        fields = field_schema.get("fields")
        if not isinstance(fields, list) or not all(isinstance(f, dict) for f in fields):
            raise EventError("struct schema without 'fields'")
        return pa.struct([_arrow_field(f) for f in fields])
    if kind == "map":
        return pa.string()
    raise EventError(f"unknown Kafka Connect type {kind!r}")


def _arrow_field(field_schema: dict[str, Any]) -> pa.Field:
    name = field_schema.get("field")
    if not isinstance(name, str):
        raise EventError("struct field without a 'field' name")
    return pa.field(name, arrow_type(field_schema), nullable=True)


def _decimal_params(field_schema: dict[str, Any]) -> tuple[int, int]:
    params = field_schema.get("parameters") or {}
    if not isinstance(params, dict):
        raise EventError("Decimal parameters is not an object")
    scale = _opt_int(params.get("scale", 0), "Decimal scale")
    precision = _opt_int(params.get("connect.decimal.precision", 38), "Decimal precision")
    assert scale is not None and precision is not None
    precision = max(precision, scale, 1)
    if not 0 <= scale <= 76 or precision > 76:
        raise EventError(f"Decimal precision {precision} / scale {scale} unsupported")
    return scale, precision


def _row_converter(
    fields: list[dict[str, Any]] | None, placeholder: str
) -> Callable[[dict[str, Any], str], tuple[dict[str, Any], tuple[str, ...]]]:
    placeholder_b64 = base64.b64encode(placeholder.encode()).decode()
    placeholders = {placeholder, placeholder_b64}

    def is_placeholder(value: Any) -> bool:
        if isinstance(value, str):
            return value in placeholders
        return isinstance(value, list) and len(value) == 1 and value[0] in placeholders

    def convert(raw: dict[str, Any], where: str) -> tuple[dict[str, Any], tuple[str, ...]]:
        unchanged = tuple(name for name, value in raw.items() if is_placeholder(value))
        if fields is None:
            return {k: (None if k in unchanged else v) for k, v in raw.items()}, unchanged
        row: dict[str, Any] = {}
        for f in fields:
            name = f["field"]
            value = raw.get(name)
            if name in unchanged or value is None:
                row[name] = None
                continue
            try:
                row[name] = convert_value(f, value)
            except EventError as exc:
                raise EventError(f"{where}.{name} ({f.get('name') or f.get('type')}): {exc}") from None
        return row, unchanged

    return convert


def convert_value(field_schema: dict[str, Any], value: Any) -> Any:
    """Convert one JSON value to the Python value Arrow expects for :func:`arrow_type`."""
    if value is None:
        return None
    name = field_schema.get("name")
    kind = field_schema.get("type")
    if name == "org.apache.kafka.connect.data.Decimal":
        scale, precision = _decimal_params(field_schema)
        number = _decode_decimal(value, scale)
        if len(number.as_tuple().digits) > precision:
            raise EventError(f"decimal has more than {precision} digits")
        return number
    if name == "io.debezium.data.VariableScaleDecimal":
        if not isinstance(value, dict):
            raise EventError("VariableScaleDecimal is not a {scale, value} object")
        var_scale = _opt_int(value.get("scale"), "VariableScaleDecimal scale") or 0
        if not -1000 <= var_scale <= 1000:
            raise EventError("VariableScaleDecimal scale out of range")
        return str(_decode_decimal(value.get("value"), var_scale))
    if name in ("io.debezium.time.Date", "org.apache.kafka.connect.data.Date"):
        return _EPOCH_DATE + dt.timedelta(days=_require_int(value, 31))
    if name in ("io.debezium.time.Timestamp", "org.apache.kafka.connect.data.Timestamp"):
        return _naive(dt.timedelta(milliseconds=_require_int(value, 63)))
    if name == "io.debezium.time.MicroTimestamp":
        return _naive(dt.timedelta(microseconds=_require_int(value, 63)))
    if name == "io.debezium.time.NanoTimestamp":
        return _require_int(value, 63)  # Arrow takes int64 nanoseconds directly
    if name == "io.debezium.time.ZonedTimestamp":
        return parse_zoned_timestamp(value)
    if name in ("io.debezium.time.Time", "org.apache.kafka.connect.data.Time"):
        return _time(_require_int(value, 31) * 1000)
    if name == "io.debezium.time.MicroTime":
        return _time(_require_int(value, 63))
    if name == "io.debezium.time.NanoTime":
        nanos = _require_int(value, 63)
        if not 0 <= nanos < 86_400 * 10**9:
            raise EventError("NanoTime is not a time of day")
        return nanos
    if name in ("io.debezium.data.Json", "io.debezium.data.Uuid") or kind == "string":
        return _require(value, str, "string")
    if kind in _INT_RANGES:
        return _require_int(value, _INT_RANGES[kind])
    if kind in ("float32", "float64"):
        return _float(value)
    if kind == "boolean":
        return _require(value, bool, "boolean")
    if kind == "bytes":
        return _b64(value)
    if kind == "array":
        items = field_schema.get("items")
        if not isinstance(value, list) or not isinstance(items, dict):
            raise EventError("expected a JSON array")
        return [convert_value(items, v) for v in value]
    if kind == "struct":
        if not isinstance(value, dict):
            raise EventError("expected a JSON object")
        return {f["field"]: convert_value(f, value.get(f["field"])) for f in field_schema.get("fields", [])}
    if kind == "map":
        return json.dumps(value, sort_keys=True)
    raise EventError(f"unknown Kafka Connect type {kind!r}")


def _require(value: Any, kind: type, what: str) -> Any:
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise EventError(f"expected a {what}, got a {_json_kind(value)}")
    return value


def _require_int(value: Any, bits: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise EventError(f"expected an integer, got a {_json_kind(value)}")
    if not -(2**bits) <= value < 2**bits:
        raise EventError(f"integer does not fit in {bits + 1} bits")
    return value


def _float(value: Any) -> float:
    if isinstance(value, str) and value in ("NaN", "Infinity", "-Infinity"):
        return float(value.replace("Infinity", "inf"))
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EventError(f"expected a number, got a {_json_kind(value)}")
    return float(value)


def _b64(value: Any) -> bytes:
    if not isinstance(value, str):
        raise EventError(f"expected base64 text, got a {_json_kind(value)}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise EventError("invalid base64") from None


def _decode_decimal(value: Any, scale: int) -> decimal.Decimal:
    unscaled = int.from_bytes(_b64(value), "big", signed=True)
    return decimal.Decimal(unscaled).scaleb(-scale)


def _naive(delta: dt.timedelta) -> dt.datetime:
    try:
        return dt.datetime(1970, 1, 1) + delta
    except OverflowError:
        raise EventError("timestamp is out of range") from None


def _time(micros: int) -> dt.time:
    if not 0 <= micros < 86_400_000_000:
        raise EventError("time is not a time of day (0 to 24 h in µs)")
    seconds, micro = divmod(micros, 1_000_000)
    return dt.time(seconds // 3600, seconds // 60 % 60, seconds % 60, micro)


_FRACTION = re.compile(r"(\.\d{6})\d+")


def parse_zoned_timestamp(value: Any) -> dt.datetime:
    """ISO-8601 with offset (``2011-01-11T16:40:30.123456789+00:00``, ``...Z``) → aware UTC datetime."""
    if not isinstance(value, str):
        raise EventError(f"ZonedTimestamp is not a string but a {_json_kind(value)}")
    try:
        parsed = dt.datetime.fromisoformat(_FRACTION.sub(r"\1", value.strip()))
    except ValueError:
        raise EventError("ZonedTimestamp is not ISO-8601") from None
    if parsed.tzinfo is None:
        raise EventError("ZonedTimestamp has no zone offset")
    return parsed.astimezone(dt.UTC)


# --- schemaless events -------------------------------------------------------------------------------------


def infer_schema(rows: list[dict[str, Any]]) -> tuple[pa.Schema, list[dict[str, Any]]]:
    """Infer column types for schemaless rows, the same way for every batch.

    int → int64, float (or int mixed with float) → float64, bool → bool, str → string, objects and
    arrays → string (JSON text), all-null → string. A column with mixed kinds (or ints beyond int64)
    becomes string, holding JSON text of the non-string values. Returns the schema and the rows with
    values coerced to it. Columns keep the order of first appearance.
    """
    kinds: dict[str, set[str]] = {}
    for row in rows:
        for name, value in row.items():
            seen = kinds.setdefault(name, set())
            if value is not None:
                seen.add(_kind(value))
    types = {name: _unify(seen) for name, seen in kinds.items()}
    schema = pa.schema([pa.field(name, t) for name, t in types.items()])
    coerced = [{name: _coerce(row.get(name), types[name]) for name in types} for row in rows]
    return schema, coerced


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int" if -(2**63) <= value <= _INT64_MAX else "bigint"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    return "json"


def _unify(kinds: set[str]) -> pa.DataType:
    if kinds == {"int"}:
        return pa.int64()
    if kinds and kinds <= {"int", "float"}:
        return pa.float64()
    if kinds == {"bool"}:
        return pa.bool_()
    return pa.string()


def _coerce(value: Any, type_: pa.DataType) -> Any:
    if value is None:
        return None
    if pa.types.is_floating(type_):
        return float(value)
    if pa.types.is_string(type_) and not isinstance(value, str):
        return json.dumps(value, sort_keys=True)
    return value
