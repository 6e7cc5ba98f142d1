"""The raw change log: append-only Parquet files of every applied change, for audit and replay.

Layout: ``<root>/<namespace.table>/commit_date=YYYY-MM-DD/from-<commit>_<event>.parquet`` where the
position is that of the first change of the batch after the table's watermark. A batch replayed after
a crash therefore lands on the same file names and overwrites them instead of duplicating.
"""

from __future__ import annotations

import posixpath
from urllib.parse import urlparse

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from hybrid_dagster.cdc.changes import COMMIT_TS_COL, Position, TableChanges
from hybrid_dagster.cdc.sink.collapse import first_position, order_changes

UNKNOWN_DATE = "unknown"
_MICROS_PER_DAY = 86_400_000_000


class ChangelogWriter:
    """Writes change batches under ``root`` (a local path, ``file://`` or ``s3://`` URI).

    Example:
        >>> log = ChangelogWriter("s3://audit/changelog", filesystem=s3)  # doctest: +SKIP
        >>> log.write("crm.patients", changes_after_watermark)  # doctest: +SKIP
        ['audit/changelog/crm.patients/commit_date=2024-05-01/from-24023128_24023200.parquet']
    """

    def __init__(self, root: str, filesystem: pafs.FileSystem | None = None) -> None:
        if filesystem is None:
            if "://" in root:
                filesystem, path = pafs.FileSystem.from_uri(root)
            else:
                filesystem, path = pafs.LocalFileSystem(), posixpath.abspath(root)
        else:
            parsed = urlparse(root)
            path = parsed.netloc + parsed.path if parsed.scheme else root
        self.filesystem = filesystem
        self.root = path.rstrip("/")

    def write(self, identifier: str, changes: TableChanges) -> list[str]:
        """Write ``changes`` (those after the watermark), one file per commit date; returns the paths."""
        rows = order_changes(changes.rows)
        if rows.num_rows == 0:
            return []
        name = file_name(first_position(rows))
        table_dir = f"{self.root}/{identifier}"
        dates = commit_dates(rows)
        written: list[str] = []
        targets = {f"{table_dir}/commit_date={date}/{name}" for date in np.unique(dates).tolist()}
        self._remove_stale(table_dir, name, keep=targets)
        for date in np.unique(dates).tolist():
            part = rows.filter(pa.array(dates == date))
            directory = f"{table_dir}/commit_date={date}"
            self.filesystem.create_dir(directory, recursive=True)
            path = f"{directory}/{name}"
            pq.write_table(part, path, filesystem=self.filesystem)
            written.append(path)
        return written

    def _remove_stale(self, table_dir: str, name: str, keep: set[str]) -> None:
        """Remove files of the same name left in other date partitions by an earlier attempt."""
        selector = pafs.FileSelector(table_dir, allow_not_found=True, recursive=True)
        for info in self.filesystem.get_file_info(selector):
            if info.type == pafs.FileType.File and info.base_name == name and info.path not in keep:
                self.filesystem.delete_file(info.path)


def file_name(position: Position) -> str:
    """File name of a batch that starts at ``position``."""
    return f"from-{position.commit}_{position.event}.parquet"


def commit_dates(rows: pa.Table) -> np.ndarray:
    """The UTC commit date of each change as ``YYYY-MM-DD``, or ``unknown`` without a commit time."""
    stamps = rows[COMMIT_TS_COL].cast(pa.timestamp("us", tz="UTC"))
    micros = pc.fill_null(stamps.cast(pa.int64()), 0).to_numpy()
    days = np.floor_divide(micros, _MICROS_PER_DAY).astype("datetime64[D]").astype(str)
    known = pc.is_valid(stamps).to_numpy(zero_copy_only=False)
    return np.where(known, days, UNKNOWN_DATE).astype(object)
