"""Canonical JSON and the record hash of the audit chain.

Correctness rules:

- Canonical JSON is ``json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
  allow_nan=False)`` encoded as UTF-8: sorted keys, no whitespace, no NaN or infinity. The same record
  always gives the same bytes, in any process and on any store.
- Only plain JSON goes in: ``None``, ``bool``, ``int``, ``float`` (finite), ``str``, lists/tuples of
  those and mappings with ``str`` keys. Anything else (bytes, objects, arrays) is refused rather than
  coerced, so a record never carries a value by accident.
- A record's hash is ``sha256(canonical_json(record without "hash"))`` in hex; the body includes
  ``prev_hash``, so each record commits to the whole chain before it.

Example:
    >>> canonical_json({"b": 1, "a": "é"})
    b'{"a":"\\xc3\\xa9","b":1}'
    >>> len(record_hash({"seq": 1, "prev_hash": GENESIS_HASH}))
    64
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any, TypeAlias

JSON: TypeAlias = "bool | int | float | str | list[JSON] | tuple[JSON, ...] | Mapping[str, JSON] | None"
"""A plain JSON value, the only thing a record's details may hold."""

GENESIS_HASH = "0" * 64
"""The ``prev_hash`` of the first record of every chain."""

MAX_STRING_CHARS = 4096
"""Longest string a record may hold: anything longer is a blob, not metadata."""

SECRET_LIKE_KEYS = frozenset(
    {
        "password",
        "passwd",
        "secret",
        "secret_value",
        "token",
        "access_token",
        "api_key",
        "private_key",
        "value",
        "values",
        "row_values",
    }
)
"""Detail keys refused outright: records describe *what* happened (paths, counts, hashes), not values."""


def canonical_json(value: Any) -> bytes:
    """The canonical UTF-8 JSON bytes of ``value`` (sorted keys, no whitespace, no NaN).

    Example:
        >>> canonical_json([1, {"z": None, "a": True}])
        b'[1,{"a":true,"z":null}]'
    """
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def record_hash(body: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of a record body (every field except ``hash``).

    Example:
        >>> record_hash({"seq": 1}) == hashlib.sha256(b'{"seq":1}').hexdigest()
        True
    """
    return hashlib.sha256(canonical_json({k: v for k, v in body.items() if k != "hash"})).hexdigest()


def check_plain_json(value: Any, where: str = "details") -> Any:
    """Return ``value`` as plain JSON (tuples become lists) or raise :class:`ValueError` naming the path.

    The message names the offending key path and type, never the value.

    Example:
        >>> check_plain_json({"rows": 3, "tables": ("a", "b")})
        {'rows': 3, 'tables': ['a', 'b']}
    """
    if value is None or isinstance(value, bool | int | str):
        if isinstance(value, str) and len(value) > MAX_STRING_CHARS:
            raise ValueError(f"{where} is a string of {len(value)} characters (limit {MAX_STRING_CHARS})")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where} is a non-finite float, which canonical JSON cannot hold")
        return value
    if isinstance(value, list | tuple):
        return [check_plain_json(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where} has a key of type {type(key).__name__}; keys must be str")
            if key.lower() in SECRET_LIKE_KEYS:
                raise ValueError(
                    f"{where}.{key} looks like a secret or row value; record what happened (a path, a "
                    "count, a hash), never the value"
                )
            out[key] = check_plain_json(item, f"{where}.{key}")
        return out
    raise ValueError(
        f"{where} is of type {type(value).__name__}; only plain JSON (None, bool, int, float, str, "
        "list, dict) may go into the audit log"
    )
