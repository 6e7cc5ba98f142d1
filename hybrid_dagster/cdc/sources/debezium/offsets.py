"""Where the file source keeps its acknowledged offset.

An offset is replaced atomically (write, fsync, rename): a crash leaves the old or the new one, never half.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol


class OffsetStore(Protocol):
    """Where a file source keeps its acknowledged offset (a small JSON-able dict)."""

    def load(self) -> dict[str, Any] | None: ...

    def save(self, offset: dict[str, Any]) -> None: ...


class JsonFileOffsetStore:
    """Offset kept in a JSON file, replaced atomically (write, fsync, rename).

    Example:
        >>> store = JsonFileOffsetStore(Path(tempfile.mkdtemp()) / "offset.json")
        >>> store.save({"file_index": 0, "file": "a.jsonl", "line": 3}); store.load()["line"]
        3
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def load(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        if not isinstance(data, dict):
            raise ValueError(f"offset file {self.path} does not hold a JSON object")
        return data

    def save(self, offset: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=self.path.name, dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(offset, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
