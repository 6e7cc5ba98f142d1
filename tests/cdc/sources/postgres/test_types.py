"""The vectorized readers under the decoders: big-endian integers at byte offsets, and Arrow strings built
from slices of a buffer, each checked against a plain Python reading of the same bytes."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings, strategies as st

from hybrid_dagster.cdc.sources.postgres import binary, pgoutput, receiver_process
from hybrid_dagster.cdc.sources.postgres.types import WINDOW, strings_from_slices

CODES = [">u2", ">i2", ">u4", ">i4", ">u8", ">i8", ">f4", ">f8", "u1"]


@st.composite
def slices(draw: st.DrawFn) -> tuple[bytes, list[tuple[int, int, bool]]]:
    """A buffer of text and slices of it (start, length, valid), lengths around the 4- and 12-byte limits
    of Arrow's inline views."""
    words = draw(st.lists(st.text(max_size=20), max_size=30))
    buf = b"".join(w.encode() for w in words)
    out, pos = [], 0
    for word in words:
        size = len(word.encode())
        out.append((pos, size, draw(st.booleans()) or size == 0))
        pos += size
    out += [(0, len(buf), True)] if buf else []
    return buf, draw(st.permutations(out))


@settings(max_examples=300, deadline=None)
@given(slices())
def test_strings_from_slices_equal_the_slices(case: tuple[bytes, list[tuple[int, int, bool]]]) -> None:
    buf, cuts = case
    padded = np.frombuffer(buf + bytes(WINDOW), np.uint8)
    starts = np.array([c[0] for c in cuts], np.int64)
    lengths = np.array([c[1] for c in cuts], np.int64)
    valid = np.array([c[2] for c in cuts], bool)
    out = strings_from_slices(padded, starts, lengths, valid)
    expected = [buf[s : s + n].decode() if ok else None for s, n, ok in cuts]
    assert out.type == pa.string()
    assert out.to_pylist() == expected
    as_binary = strings_from_slices(padded, starts, lengths, valid, binary=True)
    assert as_binary.to_pylist() == [buf[s : s + n] if ok else None for s, n, ok in cuts]


def test_strings_from_slices_of_every_length_up_to_past_the_inline_limit() -> None:
    text = bytes(range(ord("a"), ord("a") + 26)) * 3
    cuts = [(start, length) for length in range(0, 20) for start in (0, 1, 5, len(text) - length)]
    padded = np.frombuffer(text + bytes(WINDOW), np.uint8)
    out = strings_from_slices(
        padded,
        np.array([c[0] for c in cuts]),
        np.array([c[1] for c in cuts]),
        np.ones(len(cuts), bool),
    )
    assert out.to_pylist() == [text[s : s + n].decode() for s, n in cuts]


def test_strings_from_slices_rejects_invalid_utf8() -> None:
    padded = np.frombuffer(b"ok\xff\xfe" + bytes(WINDOW), np.uint8)
    with pytest.raises(pa.ArrowInvalid):
        strings_from_slices(padded, np.array([0, 2]), np.array([2, 2]), np.array([True, True]))


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=8, max_size=200), st.data())
def test_big_endian_gathers_equal_int_from_bytes(data: bytes, draw: st.DataObject) -> None:
    buf = np.frombuffer(data, np.uint8)
    for code in CODES:
        size = np.dtype(code).itemsize
        at = np.array(draw.draw(st.lists(st.integers(0, len(data) - size), max_size=20)), np.int64)
        expected = np.array([np.frombuffer(data[i : i + size], code)[0] for i in at.tolist()], code)
        assert np.array_equal(
            binary._scalars(buf, at, np.ones(len(at), bool), code), expected, equal_nan=code[-2] == "f"
        )
        if code[-2] in "iu" and size > 1:
            assert pgoutput._be(buf, at, code).tolist() == expected.astype(np.int64).tolist()
        if code[-2] == "u" and size > 1:
            assert receiver_process._be(buf, at, size).tolist() == expected.astype(np.int64).tolist()


def test_gathers_read_offset_zero_where_a_value_is_not_checked() -> None:
    buf = np.frombuffer(bytes(range(1, 17)), np.uint8)
    out = binary._scalars(buf, np.array([3, 5]), np.array([True, False]), ">u2")
    assert out.tolist() == [0x0405, 0x0102]
    assert pgoutput._be(np.frombuffer(b"\x01", np.uint8), np.array([0]), ">u4").tolist() == [0x01000000]
