"""Debezium events from JSON-lines files (:class:`DebeziumFileChangeSource`).

File positions. Event positions (``__commit_pos``/``__event_pos``) come from the events (LSNs). The
batch's ``ack_position`` is ``Position(file_index, line_number)`` of the last line read (1-based lines,
files in name order), and :meth:`DebeziumFileChangeSource.ack` stores ``{file_index, file, line, byte}``
in the offset store. Files must be appended to or added with names that sort after the existing ones (as
rotating writers do); a stored offset whose file name no longer matches its index is an error.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hybrid_dagster.cdc.changes import (
    ChangeBatch,
    Position,
)
from hybrid_dagster.cdc.sources.base import ChangeSource, SourceTable
from hybrid_dagster.cdc.sources.debezium.batch import BatchBuilder, file_ordinal, table_keys
from hybrid_dagster.cdc.sources.debezium.envelope import (
    UNAVAILABLE_VALUE,
    EventError,
    EventResult,
    Malformed,
    decode_json,
)
from hybrid_dagster.cdc.sources.debezium.offsets import JsonFileOffsetStore, OffsetStore
from hybrid_dagster.cdc.sources.debezium.records import parse_record


class DebeziumFileChangeSource(ChangeSource):
    """Debezium events from JSON-lines files (Debezium Server file sink, kcat dumps, test fixtures).

    ``paths`` is a directory (every non-hidden file in it matching ``pattern``, in name order) or a list
    of files. ``read`` never consumes; ``ack(batch.ack_position)`` stores the offset after the commit.
    Only the ``tables`` given are captured (all tables if None); their ``key_columns`` override the keys
    found in event keys.

    Example:
        >>> tables = [SourceTable("inventory.customers", ("id",))]
        >>> src = DebeziumFileChangeSource("/data/debezium", tables=tables)
        >>> batch = src.read(10_000)  # doctest: +SKIP
        >>> ...  # apply batch.tables, commit the Iceberg snapshot  # doctest: +SKIP
        >>> src.ack(batch.ack_position)  # doctest: +SKIP
    """

    kind = "debezium"

    def __init__(
        self,
        paths: str | Path | Sequence[str | Path],
        *,
        tables: Sequence[SourceTable | str] | None = None,
        offset_store: OffsetStore | str | Path | None = None,
        pattern: str = "*",
        placeholder: str = UNAVAILABLE_VALUE,
    ):
        if isinstance(paths, str | Path):
            self._dir: Path | None = Path(paths).resolve()
            self._paths: list[Path] = []
        else:
            self._dir = None
            self._paths = [Path(p).resolve() for p in paths]
            if not self._paths:
                raise ValueError("DebeziumFileChangeSource needs a directory or at least one file")
        self.pattern = pattern
        self.placeholder = placeholder
        self._keys, self._tables = table_keys(tables)
        root = self._dir if self._dir is not None else self._paths[0].parent
        if offset_store is None:
            offset_store = root / ".hybrid-cdc-offset.json"
        self.offsets: OffsetStore = (
            JsonFileOffsetStore(offset_store) if isinstance(offset_store, str | Path) else offset_store
        )
        self._byte_after: dict[Position, int] = {}

    @property
    def source_id(self) -> str:
        if self._dir is not None:
            return f"debezium-file://{self._dir}"
        return f"debezium-file://{os.path.commonpath([str(p) for p in self._paths])}"

    def files(self) -> list[Path]:
        """The input files in reading order."""
        if self._dir is None:
            return list(self._paths)
        return sorted(p for p in self._dir.glob(self.pattern) if p.is_file() and not p.name.startswith("."))

    def setup(self) -> Position | None:
        return None

    def _start(self, files: list[Path]) -> tuple[int, int, int | None]:
        """(file index, last acknowledged line, byte offset after it if known)."""
        offset = self.offsets.load()
        if offset is None:
            return 0, 0, None
        index, line = int(offset["file_index"]), int(offset["line"])
        if index >= len(files) or files[index].name != offset.get("file"):
            found = files[index].name if index < len(files) else "no file"
            raise ValueError(
                f"offset names file #{index} {offset.get('file')!r} but that index now holds {found}: "
                "input files were removed, renamed or inserted before it"
            )
        byte = offset.get("byte")
        return index, line, int(byte) if isinstance(byte, int) else None

    def read(self, max_events: int) -> ChangeBatch:
        files = self.files()
        builder = BatchBuilder(self.source_id, self._keys, self._tables)
        if not files:
            return builder.build(None)
        index, line_no, byte = self._start(files)
        last: Position | None = None
        last_byte = 0
        exhausted = True
        while index < len(files) and exhausted:
            path = files[index]
            with path.open("rb") as fh:
                if byte is not None:
                    fh.seek(byte)
                else:
                    for _ in range(line_no):
                        if not fh.readline():
                            break
                while True:
                    if builder.count >= max_events:
                        exhausted = False
                        break
                    raw = fh.readline()
                    if not raw:
                        break
                    if not raw.endswith(b"\n") and index == len(files) - 1 and not _complete(raw):
                        break  # a writer is still appending this line
                    where = f"{path.name}:{line_no + 1}"
                    text = raw.decode("utf-8", errors="replace")
                    result: EventResult = (
                        Malformed("line is not valid UTF-8")
                        if "\ufffd" in text and _invalid_utf8(raw)
                        else parse_record(text, self.placeholder)
                    )
                    ordinal = file_ordinal(index, line_no + 1)
                    if not builder.add(result, text.rstrip("\r\n"), where, ordinal):
                        exhausted = False
                        break
                    line_no += 1
                    last, last_byte = Position(index, line_no), fh.tell()
            if exhausted:
                index, line_no, byte = index + 1, 0, None
        if last is not None:
            self._byte_after[last] = last_byte
        source_position = (last or self._acked_position()) if exhausted else None
        return builder.build(ack_position=last, source_position=source_position)

    def _acked_position(self) -> Position | None:
        offset = self.offsets.load()
        return Position(int(offset["file_index"]), int(offset["line"])) if offset else None

    def ack(self, position: Position) -> None:
        """Store ``position`` (file index, line) as done. Older positions than the stored one are ignored."""
        current = self._acked_position()
        if current is not None and position <= current:
            return
        files = self.files()
        if not 0 <= position.commit < len(files):
            raise ValueError(f"cannot acknowledge {position}: there is no file #{position.commit}")
        offset: dict[str, Any] = {
            "file_index": position.commit,
            "file": files[position.commit].name,
            "line": position.event,
        }
        if position in self._byte_after:
            offset["byte"] = self._byte_after[position]
        self.offsets.save(offset)
        self._byte_after = {p: b for p, b in self._byte_after.items() if p > position}


def _complete(raw: bytes) -> bool:
    try:
        decode_json(raw)
    except EventError:
        return False
    return True


def _invalid_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False
