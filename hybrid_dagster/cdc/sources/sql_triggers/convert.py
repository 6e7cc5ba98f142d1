"""Trigger log values -> typed Arrow values, by the column types reflected from the database.

Rules: a value that does not convert raises ``ValueError`` naming the column and the target type, never
the value (reasons travel into exceptions and logs; the raw row stays in the dead letter). Integers are
range-checked, decimals keep their scale, timestamps are UTC microseconds.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import sqlalchemy as sa

Converter = Callable[[Any], Any]


@dataclass(frozen=True)
class Column:
    name: str
    arrow: pa.DataType
    convert: Converter


def decode_object(text: str | None, what: str) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        value = json.loads(text, parse_float=decimal.Decimal)
    except ValueError as exc:
        raise ValueError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{what} is not a JSON object")
    return value


def from_micros(micros: int | None) -> dt.datetime | None:
    if micros is None:
        return None
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=int(micros))


def convert_value(column: Column, value: Any) -> Any:
    if value is None:
        return None
    try:
        return column.convert(value)
    except (ValueError, TypeError, ArithmeticError):
        # Never the value itself: reasons travel into exceptions and logs (the raw row is in the letter).
        raise ValueError(
            f"column {column.name!r}: a {type(value).__name__} value does not convert to {column.arrow}"
        ) from None


def arrow_converter(sa_type: sa.types.TypeEngine[Any]) -> tuple[pa.DataType, Converter]:
    """Arrow type and value converter for a reflected SQLAlchemy column type.

    Integer → int64, Float → float64, Numeric(p, s) → decimal128(p, s) (float64 without a precision),
    Boolean → bool, DateTime → timestamp[us] (UTC when the column has a time zone), Date → date32,
    Time → time64[us], LargeBinary → binary, String/Text/JSON/UUID and anything else → string.
    """
    if isinstance(sa_type, sa.Boolean):
        return pa.bool_(), _to_bool
    if isinstance(sa_type, sa.Integer):
        return pa.int64(), _to_int
    if isinstance(sa_type, sa.Float):
        return pa.float64(), _to_float
    if isinstance(sa_type, sa.Numeric):
        precision, scale = sa_type.precision, sa_type.scale
        if precision is None or not 0 < precision <= 38:
            return pa.float64(), _to_float
        return pa.decimal128(precision, scale or 0), _decimal_converter(precision, scale or 0)
    if isinstance(sa_type, sa.DateTime):
        aware = bool(getattr(sa_type, "timezone", False))
        return pa.timestamp("us", tz="UTC" if aware else None), _datetime_converter(aware)
    if isinstance(sa_type, sa.Date):
        return pa.date32(), _to_date
    if isinstance(sa_type, sa.Time):
        return pa.time64("us"), _to_time
    if isinstance(sa_type, sa.LargeBinary | sa.types._Binary):
        return pa.binary(), _to_bytes
    return pa.string(), _to_str


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | decimal.Decimal) and value in (0, 1):
        return bool(value)
    raise ValueError("not a boolean")


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        result = value
    elif (isinstance(value, decimal.Decimal | float) and value == int(value)) or (
        isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value)
    ):
        result = int(value)
    else:
        raise ValueError("not an integer")
    if not -(2**63) <= result < 2**63:
        raise ValueError("integer out of int64 range")
    return result


def _to_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | decimal.Decimal | str):
        raise ValueError("not a number")
    return float(value)


def _decimal_converter(precision: int, scale: int) -> Converter:
    quantum = decimal.Decimal(1).scaleb(-scale)

    def convert(value: Any) -> decimal.Decimal:
        if isinstance(value, bool):
            raise ValueError("not a number")
        number = decimal.Decimal(str(value)).quantize(quantum)
        if len(number.as_tuple().digits) > precision:
            raise ValueError(f"more than {precision} digits")
        return number

    return convert


def _datetime_converter(aware: bool) -> Converter:
    def convert(value: Any) -> dt.datetime:
        parsed = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
        if aware:
            return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)
        return parsed if parsed.tzinfo is None else parsed.astimezone(dt.UTC).replace(tzinfo=None)

    return convert


def _to_date(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])


def _to_time(value: Any) -> dt.time:
    return value if isinstance(value, dt.time) else dt.time.fromisoformat(str(value))


def _to_bytes(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    text = str(value)
    return bytes.fromhex(text[2:] if text.startswith("\\x") else text)


def _to_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return str(value)
