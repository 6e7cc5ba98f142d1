"""Kafka Connect schemas and JSON values -> Arrow types and Python values (one Debezium event's row).

Rules: a value that does not fit its declared type raises :class:`EventError` naming the column and the
type, never the value; integers are range-checked against their declared width; JSON ``NaN``/``Infinity``
constants are rejected (strict JSON); schemaless rows are typed per batch by :func:`infer_schema`.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import decimal
import json
import re
from collections.abc import Callable
from typing import Any

import pyarrow as pa

_INT64_MAX = 2**63 - 1
_INT_RANGES = {"int8": 7, "int16": 15, "int32": 31, "int64": 63}
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_EPOCH_DATE = dt.date(1970, 1, 1)


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


def json_kind(value: Any) -> str:
    return {
        dict: "object",
        list: "array",
        str: "string",
        bool: "boolean",
        int: "number",
        float: "number",
    }.get(type(value), "null" if value is None else type(value).__name__)


def opt_int(value: Any, what: str) -> int | None:
    """An integer field that Debezium sometimes writes as a decimal string."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise EventError(f"{what} is a boolean, not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d{1,20}", value.strip()):
        return int(value)
    raise EventError(f"{what} is not an integer (a {json_kind(value)})")


def row_fields(schema: dict[str, Any] | None) -> list[dict[str, Any]] | None:
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
        return pa.struct([arrow_field(f) for f in fields])
    if kind == "map":
        return pa.string()
    raise EventError(f"unknown Kafka Connect type {kind!r}")


def arrow_field(field_schema: dict[str, Any]) -> pa.Field:
    name = field_schema.get("field")
    if not isinstance(name, str):
        raise EventError("struct field without a 'field' name")
    return pa.field(name, arrow_type(field_schema), nullable=True)


def _decimal_params(field_schema: dict[str, Any]) -> tuple[int, int]:
    params = field_schema.get("parameters") or {}
    if not isinstance(params, dict):
        raise EventError("Decimal parameters is not an object")
    scale = opt_int(params.get("scale", 0), "Decimal scale")
    precision = opt_int(params.get("connect.decimal.precision", 38), "Decimal precision")
    assert scale is not None and precision is not None
    precision = max(precision, scale, 1)
    if not 0 <= scale <= 76 or precision > 76:
        raise EventError(f"Decimal precision {precision} / scale {scale} unsupported")
    return scale, precision


def row_converter(
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
        var_scale = opt_int(value.get("scale"), "VariableScaleDecimal scale") or 0
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
        raise EventError(f"expected a {what}, got a {json_kind(value)}")
    return value


def _require_int(value: Any, bits: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise EventError(f"expected an integer, got a {json_kind(value)}")
    if not -(2**bits) <= value < 2**bits:
        raise EventError(f"integer does not fit in {bits + 1} bits")
    return value


def _float(value: Any) -> float:
    if isinstance(value, str) and value in ("NaN", "Infinity", "-Infinity"):
        return float(value.replace("Infinity", "inf"))
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EventError(f"expected a number, got a {json_kind(value)}")
    return float(value)


def _b64(value: Any) -> bytes:
    if not isinstance(value, str):
        raise EventError(f"expected base64 text, got a {json_kind(value)}")
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
        raise EventError(f"ZonedTimestamp is not a string but a {json_kind(value)}")
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
