"""Strict comparison of an Iceberg table with ``SELECT *`` of its PostgreSQL source table.

An oracle of its own, independent of the code under test: every source value is read as PostgreSQL's text
output (UTC, ISO dates, hex bytea) and parsed here into the value the documented type mapping promises.
Equal means:

* the same columns, in the same order (no extra, no missing column);
* each Iceberg column has the documented type (Iceberg has no 16-bit integer: ``int2`` lands as int32);
* the same keys, once each;
* every value equal and of the same Python type: decimals with the same scale, text exactly, timestamps
  with a time zone as instants (both aware), timestamps without one both naive, floats bit for bit (a NaN
  equals a NaN with the same bits; ``real`` compared as 32-bit floats), bytes exactly.

Values in assertion messages are test data, never production rows.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import psycopg2
import pyarrow as pa
from psycopg2 import sql

SESSION = (
    "SET TimeZone = 'UTC'",
    "SET DateStyle = 'ISO, YMD'",
    "SET bytea_output = 'hex'",
    "SET IntervalStyle = 'postgres'",
    "SET extra_float_digits = 1",
)

# type name (format_type without modifiers) -> the Arrow type of the Iceberg column
_TYPES: dict[str, pa.DataType] = {
    "boolean": pa.bool_(),
    "bytea": pa.binary(),
    "smallint": pa.int32(),
    "integer": pa.int32(),
    "bigint": pa.int64(),
    "oid": pa.int64(),
    "real": pa.float32(),
    "double precision": pa.float64(),
    "date": pa.date32(),
    "timestamp without time zone": pa.timestamp("us"),
    "timestamp with time zone": pa.timestamp("us", tz="UTC"),
}


def expected_type(type_name: str, precision: int | None, scale: int | None) -> pa.DataType:
    """The documented Iceberg (Arrow) type of a PostgreSQL column."""
    if type_name == "numeric":
        if precision is not None and scale is not None and 0 < precision <= 38:
            return pa.decimal128(precision, scale)
        return pa.string()  # unconstrained numeric keeps its text
    return _TYPES.get(type_name, pa.string())


def _parse(text: str | None, arrow_type: pa.DataType) -> Any:
    if text is None:
        return None
    if pa.types.is_string(arrow_type):
        return text
    if pa.types.is_boolean(arrow_type):
        assert text in ("true", "false"), text
        return text == "true"
    if pa.types.is_integer(arrow_type):
        return int(text)
    if pa.types.is_floating(arrow_type):
        return float(text)  # 'NaN', 'Infinity', '-Infinity' parse too
    if pa.types.is_decimal(arrow_type):
        return Decimal(text)
    if pa.types.is_binary(arrow_type):
        assert text.startswith("\\x"), text
        return bytes.fromhex(text[2:])
    try:
        if pa.types.is_date(arrow_type):
            return date.fromisoformat(text)
        if pa.types.is_timestamp(arrow_type):
            return datetime.fromisoformat(text)
    except ValueError:
        return Unrepresentable(text)  # 'infinity', BC dates: no Arrow value equals them
    raise AssertionError(f"no oracle for {arrow_type}")


class Unrepresentable(str):
    """A source value the Arrow type cannot hold; equal to nothing in Iceberg."""


def _float_bits(value: float, arrow_type: pa.DataType) -> bytes:
    return struct.pack("<f" if pa.types.is_float32(arrow_type) else "<d", value)


def same_value(expected: Any, actual: Any, arrow_type: pa.DataType) -> bool:
    """Strict equality of one source value and one Iceberg value of ``arrow_type``."""
    if expected is None or actual is None:
        return expected is None and actual is None
    if type(expected) is not type(actual):
        return False
    if isinstance(expected, float):
        # PostgreSQL prints the shortest text that reads back as the same real: compare as float32 there
        return _float_bits(expected, arrow_type) == _float_bits(actual, arrow_type)
    if isinstance(expected, Decimal):
        return expected == actual and expected.as_tuple().exponent == actual.as_tuple().exponent
    if isinstance(expected, datetime):
        if (expected.tzinfo is None) != (actual.tzinfo is None):
            return False
        return bool(expected == actual)
    return bool(expected == actual)


def source_columns(cur: Any, table: str) -> list[tuple[str, pa.DataType]]:
    schema, _, name = table.rpartition(".")
    cur.execute(
        "SELECT a.attname, t.typname, format_type(a.atttypid, NULL),"
        " information_schema._pg_numeric_precision(a.atttypid, a.atttypmod),"
        " information_schema._pg_numeric_scale(a.atttypid, a.atttypmod)"
        " FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid"
        " WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        (f"{schema or 'public'}.{name}",),
    )
    out = []
    for column, typname, type_name, precision, scale in cur.fetchall():
        if typname == "numeric" and precision is None:
            out.append((column, pa.string()))
        else:
            out.append((column, expected_type(type_name, precision, scale)))
    return out


def source_table(dsn: str, table: str) -> tuple[list[tuple[str, pa.DataType]], list[dict[str, Any]]]:
    """Columns (name, expected Arrow type) and rows of ``SELECT *``, parsed by the oracle."""
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            for statement in SESSION:
                cur.execute(statement)
            columns = source_columns(cur, table)
            schema, _, name = table.rpartition(".")
            cur.execute(
                sql.SQL("SELECT {} FROM {}").format(
                    sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c, _ in columns),
                    sql.Identifier(schema or "public", name),
                )
            )
            rows = [
                {c: _parse(v, t) for (c, t), v in zip(columns, values, strict=True)}
                for values in cur.fetchall()
            ]
    finally:
        conn.close()
    return columns, rows


def _plain(arrow_type: pa.DataType) -> pa.DataType:
    return {pa.large_string(): pa.string(), pa.large_binary(): pa.binary()}.get(arrow_type, arrow_type)


def diff_tables(
    dsn: str, source: str, iceberg: pa.Table, keys: Sequence[str], *, limit: int = 10
) -> list[str]:
    """Every difference between ``SELECT * FROM source`` and the Iceberg rows ``iceberg`` (empty: equal)."""
    columns, expected_rows = source_table(dsn, source)
    problems: list[str] = []
    actual_columns = [(f.name, _plain(f.type)) for f in iceberg.schema]
    if [c for c, _ in columns] != [c for c, _ in actual_columns]:
        problems.append(
            f"{source}: columns {[c for c, _ in actual_columns]} != source {[c for c, _ in columns]}"
        )
    actual_types = dict(actual_columns)
    for column, arrow_type in columns:
        if column in actual_types and actual_types[column] != arrow_type:
            problems.append(
                f"{source}.{column}: Iceberg type {actual_types[column]} != documented {arrow_type}"
            )
    if problems:
        return problems
    types = dict(columns)
    actual_rows = iceberg.to_pylist()
    expected = {tuple(r[k] for k in keys): r for r in expected_rows}
    actual: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in actual_rows:
        key = tuple(row[k] for k in keys)
        if key in actual:
            problems.append(f"{source}: key {key} twice in Iceberg")
        actual[key] = row
    missing = sorted(expected.keys() - actual.keys())
    extra = sorted(actual.keys() - expected.keys())
    if missing:
        problems.append(f"{source}: {len(missing)} keys missing in Iceberg, e.g. {missing[:limit]}")
    if extra:
        problems.append(f"{source}: {len(extra)} keys in Iceberg not in the source, e.g. {extra[:limit]}")
    for key in sorted(expected.keys() & actual.keys()):
        for column, arrow_type in types.items():
            want, got = expected[key][column], actual[key][column]
            if not same_value(want, got, arrow_type):
                problems.append(
                    f"{source} key {key} column {column}: Iceberg {_show(got)} != source {_show(want)}"
                )
                if len(problems) >= limit:
                    return problems
    return problems


def _show(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''} (len {len(text)})"


def assert_same_table(
    dsn: str, source: str, iceberg: pa.Table, keys: Sequence[str], context: str = ""
) -> None:
    """Fail with every difference (up to 10) between the source table and the Iceberg rows."""
    problems = diff_tables(dsn, source, iceberg, keys)
    assert not problems, (context + "\n" if context else "") + "\n".join(problems)
