"""One JSON-lines record -> one parse result (the file source's line layouts).

A record never raises: a line that is not an event becomes :class:`Malformed` naming why.
"""

from __future__ import annotations

from typing import Any

from hybrid_dagster.cdc.sources.debezium.envelope import (
    UNAVAILABLE_VALUE,
    EventError,
    EventResult,
    Malformed,
    decode_json,
    parse_envelope,
)

_RECORD_FIELDS = frozenset({"key", "value", "headers", "topic", "partition", "offset", "timestamp"})


def decode_record(text: str) -> tuple[Any, Any]:
    """Decode one JSON-lines record into (value, key) JSON objects; raises EventError.

    Detected layouts: the value alone; ``{"key": K, "value": V}`` (K and V as JSON or as strings holding
    JSON, optionally with topic/partition/offset/timestamp/headers); ``KEY<TAB>VALUE`` (the output of
    Debezium's tutorial ``watch-topic``). A blank line is a tombstone.
    """
    stripped = text.strip()
    if not stripped:
        return None, None
    try:
        obj = decode_json(stripped)
    except EventError as whole:
        for index, char in enumerate(stripped):
            if char == "\t":
                try:
                    return decode_json(stripped[index + 1 :]), decode_json(stripped[:index])
                except EventError:
                    continue
        raise whole from None
    if isinstance(obj, dict) and "value" in obj and obj.keys() <= _RECORD_FIELDS:
        return _maybe_json(obj["value"], "value"), _maybe_json(obj.get("key"), "key")
    return obj, None


def _maybe_json(value: Any, what: str) -> Any:
    if not isinstance(value, str):
        return value
    if not value.strip():
        return None
    try:
        return decode_json(value)
    except EventError as exc:
        raise EventError(f"record {what} string is {exc}") from None


def parse_record(text: str, placeholder: str = UNAVAILABLE_VALUE) -> EventResult:
    """Parse one JSON-lines record (see :func:`decode_record`). Never raises."""
    try:
        value, key = decode_record(text)
    except EventError as exc:
        return Malformed(f"line is {exc}" if not str(exc).startswith("record") else str(exc))
    return parse_envelope(value, key, placeholder=placeholder)
