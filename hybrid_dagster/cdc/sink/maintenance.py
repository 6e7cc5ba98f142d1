"""Expire old snapshots of a CDC table and delete the files only they pointed at.

A CDC table gets a snapshot per batch: in the long-running mode that is tens of thousands a day, and
each one stays in the table metadata (rewritten at every commit) with its manifest list, its manifests
and the data files its batch replaced. pyiceberg's ``ExpireSnapshots`` drops snapshots from the metadata
only; this module also removes their files, as Iceberg's ``expireSnapshots`` action does.

Correctness rules:

- **What the pipeline reads back is kept.** Watermarks, Kafka offsets and table-copy progress are read
  as "the newest ancestor of the current snapshot whose ``hybrid.cdc.source`` is X"
  (:mod:`.watermark`). For every value of that property in the current ancestry, the newest snapshot
  carrying it is kept *and every snapshot between it and the current one* (an ancestry walk stops at
  the first missing parent), so each of those reads answers the same before and after. A table copy's
  chunk commits (``<source>#snapshot``) count only while no commit of ``<source>`` is newer: after
  one, the copy reads as done whatever remains of them.
- **Iceberg's retention properties decide the rest**: ``history.expire.max-snapshot-age-ms`` (default
  5 days) and ``history.expire.min-snapshots-to-keep`` (default 1), unless a
  :class:`SnapshotRetention` overrides them. Branch and tag heads are never expired.
- **Files are deleted only after the expiry is committed**, and only those that an expired snapshot
  named and no kept snapshot (in the metadata as committed, concurrent writers' snapshots included)
  still names: data files and delete files by their live entries, manifests, manifest lists. A file
  written by a commit in flight is named by no snapshot and is never a candidate.
- A crash between the commit and the deletions leaves unreferenced files behind (orphans), never a
  table that names a missing file.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field

from pyiceberg.io import FileIO
from pyiceberg.manifest import ManifestContent, ManifestEntryStatus, ManifestFile
from pyiceberg.table import Table, TableProperties
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.snapshots import Snapshot, ancestors_of

from hybrid_dagster.cdc._pyiceberg_compat import merge_enabled, merging_append, min_count_to_merge
from hybrid_dagster.cdc.sink.watermark import SNAPSHOT_SUFFIX, SOURCE_PROPERTY


@dataclass(frozen=True)
class SnapshotRetention:
    """How much history a CDC table keeps (``None`` fields: the table's ``history.expire.*`` properties).

    Example:
        >>> from datetime import timedelta
        >>> SnapshotRetention(max_age_s=timedelta(hours=6).total_seconds(), min_snapshots=10)
        SnapshotRetention(max_age_s=21600.0, min_snapshots=10, interval_s=300.0, merge_manifests=True)
    """

    max_age_s: float | None = None
    """Snapshots older than this may be expired (seconds)."""
    min_snapshots: int | None = None
    """The newest this many snapshots of the current ancestry are kept whatever their age."""
    interval_s: float = 300.0
    """How often a running pipeline maintains its tables (seconds between two :func:`maintain_table`)."""
    merge_manifests: bool = True
    """Also merge the current snapshot's manifests once they are many (:func:`merge_manifests`)."""

    def resolve(self, table: Table) -> tuple[int, int]:
        """(max age in ms, min snapshots): these settings, else the table's properties, else Iceberg's
        defaults."""
        props, defaults = table.metadata.properties, TableProperties
        age = props.get(defaults.MAX_SNAPSHOT_AGE_MS, defaults.MAX_SNAPSHOT_AGE_MS_DEFAULT)
        count = props.get(defaults.MIN_SNAPSHOTS_TO_KEEP, defaults.MIN_SNAPSHOTS_TO_KEEP_DEFAULT)
        max_age_ms = int(self.max_age_s * 1000) if self.max_age_s is not None else int(age)
        min_snapshots = self.min_snapshots if self.min_snapshots is not None else int(count)
        if max_age_ms < 0 or min_snapshots < 1:
            raise ValueError(
                f"{'.'.join(table.name())}: snapshot retention needs max_age >= 0 and min_snapshots >= 1 "
                f"(got {max_age_ms} ms and {min_snapshots}, from SnapshotRetention or the table's "
                "history.expire.* properties): the current snapshot is always kept"
            )
        return max_age_ms, min_snapshots


@dataclass
class ExpiryReport:
    """What one :func:`expire_snapshots` (or :func:`maintain_table`) call did."""

    expired_snapshot_ids: list[int] = field(default_factory=list)
    kept_snapshots: int = 0
    deleted_data_files: int = 0
    deleted_manifests: int = 0
    deleted_manifest_lists: int = 0
    manifests_merged_away: int = 0
    """How many fewer data manifests the current snapshot lists after :func:`merge_manifests`."""

    @property
    def deleted_files(self) -> int:
        """Data files, manifests and manifest lists deleted."""
        return self.deleted_data_files + self.deleted_manifests + self.deleted_manifest_lists


def maintain_table(
    table: Table,
    retention: SnapshotRetention | None = None,
    *,
    now_ms: int | None = None,
    before_write: Callable[[], None] | None = None,
) -> ExpiryReport:
    """:func:`merge_manifests` (when ``retention.merge_manifests``), then :func:`expire_snapshots`: the
    snapshot from before the merge can go in the same call.

    Example:
        >>> maintain_table(catalog.load_table("clinical.patients")).manifests_merged_away  # doctest: +SKIP
        119
    """
    retention = retention or SnapshotRetention()
    merged = merge_manifests(table, before_write=before_write) if retention.merge_manifests else 0
    report = expire_snapshots(table, retention, now_ms=now_ms, before_write=before_write)
    report.manifests_merged_away = merged
    return report


def merge_manifests(table: Table, *, before_write: Callable[[], None] | None = None) -> int:
    """Merge the current snapshot's data manifests in one append snapshot that changes no file, once
    there are ``commit.manifest.min-count-to-merge`` of them (default 100), as Iceberg merges them in
    a commit; returns how many fewer the current snapshot lists. The applier's commits merge by
    themselves; this catches what other writers (pyiceberg's own appends and overwrites never merge by
    default) left. Nothing happens when the table sets ``commit.manifest-merge.enabled`` to false.

    Example:
        >>> merge_manifests(catalog.load_table("clinical.patients"))  # doctest: +SKIP
        119
    """
    props = table.metadata.properties
    if not merge_enabled(props):
        return 0
    before = _data_manifest_count(table)
    if before < max(min_count_to_merge(props), 2):
        return 0
    if before_write is not None:
        before_write()
    with table.transaction() as txn, merging_append(txn.update_snapshot(), props):
        pass  # no file added or removed: the merge of the existing manifests is the whole snapshot
    return before - _data_manifest_count(table.refresh())


def _data_manifest_count(table: Table) -> int:
    snapshot = table.current_snapshot()
    if snapshot is None:
        return 0
    return sum(m.content == ManifestContent.DATA for m in snapshot.manifests(table.io))


def snapshots_to_expire(
    metadata: TableMetadata,
    max_age_ms: int,
    min_snapshots: int,
    *,
    now_ms: int,
    only: Collection[int] | None = None,
) -> list[Snapshot]:
    """The snapshots :func:`expire_snapshots` removes from ``metadata`` (see the module's rules), among
    ``only`` when given.

    Example:
        >>> [s.snapshot_id for s in snapshots_to_expire(table.metadata, 0, 1, now_ms=now)]  # doctest: +SKIP
        [4316297735420157932, 6045921578238916343]
    """
    current = metadata.current_snapshot()
    if current is None:
        return []
    ancestry = list(ancestors_of(current, metadata))
    keep_through = min(min_snapshots, len(ancestry)) - 1  # index in ancestry (0: the current snapshot)
    seen: set[str] = set()
    for index, snapshot in enumerate(ancestry):
        source = snapshot.summary[SOURCE_PROPERTY] if snapshot.summary is not None else None
        if source is None or source in seen:
            continue
        seen.add(source)
        if source.endswith(SNAPSHOT_SUFFIX) and source.removesuffix(SNAPSHOT_SUFFIX) in seen:
            continue  # a copy its source's stream has committed after: read as "done" from the newer one
        keep_through = max(keep_through, index)
    oldest_ms = now_ms - max_age_ms
    kept = {s.snapshot_id for s in ancestry[: keep_through + 1]}
    protected = {ref.snapshot_id for ref in metadata.refs.values()}
    return [
        s
        for s in metadata.snapshots
        if s.snapshot_id not in kept
        and s.snapshot_id not in protected
        and s.timestamp_ms < oldest_ms
        and (only is None or s.snapshot_id in only)
    ]


def expire_snapshots(
    table: Table,
    retention: SnapshotRetention | None = None,
    *,
    now_ms: int | None = None,
    before_write: Callable[[], None] | None = None,
    only: Collection[int] | None = None,
) -> ExpiryReport:
    """Expire the snapshots of ``table`` past its retention (among ``only``, when given), then delete the
    files only they named. ``before_write`` runs first when there is something to expire (e.g. the
    residency guard).

    Example:
        >>> report = expire_snapshots(catalog.load_table("clinical.patients"), SnapshotRetention(3600))
        ... # doctest: +SKIP
        >>> len(report.expired_snapshot_ids), report.deleted_data_files  # doctest: +SKIP
        (412, 388)
    """
    retention = retention or SnapshotRetention()
    max_age_ms, min_snapshots = retention.resolve(table)
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    expired = snapshots_to_expire(table.metadata, max_age_ms, min_snapshots, now_ms=now_ms, only=only)
    report = ExpiryReport(kept_snapshots=len(table.metadata.snapshots) - len(expired))
    if not expired:
        return report
    if before_write is not None:
        before_write()
    io = table.io
    expired_ids = {s.snapshot_id for s in expired}
    table.maintenance.expire_snapshots().by_ids(sorted(expired_ids)).commit()
    committed = table.refresh().metadata
    still_named = [s for s in committed.snapshots if s.snapshot_id not in expired_ids]
    report.expired_snapshot_ids = sorted(expired_ids)
    report.kept_snapshots = len(still_named)

    kept_manifests = _manifests(io, still_named)
    expired_manifests = {m.manifest_path: m for m in _manifests(io, expired).values()}
    orphan_manifests = [m for path, m in expired_manifests.items() if path not in kept_manifests]
    kept_files = _live_files(io, kept_manifests.values())
    candidate_files = _all_files(io, orphan_manifests) | _deleted_files(io, kept_manifests.values())
    report.deleted_data_files = sum(_delete(io, path) for path in sorted(candidate_files - kept_files))
    report.deleted_manifests = sum(_delete(io, m.manifest_path) for m in orphan_manifests)
    kept_lists = {s.manifest_list for s in still_named}
    report.deleted_manifest_lists = sum(
        _delete(io, s.manifest_list) for s in expired if s.manifest_list and s.manifest_list not in kept_lists
    )
    return report


def _delete(io: FileIO, path: str) -> bool:
    """Delete ``path``; False when it is gone already (an earlier expiry deleted a file that a kept
    manifest still lists as deleted, or a run stopped midway)."""
    try:
        io.delete(path)
    except FileNotFoundError:
        return False
    return True


def _manifests(io: FileIO, snapshots: Iterable[Snapshot]) -> dict[str, ManifestFile]:
    """Every manifest the snapshots list, by path (each read once)."""
    out: dict[str, ManifestFile] = {}
    seen_lists: set[str] = set()
    for snapshot in snapshots:
        if snapshot.manifest_list in seen_lists:
            continue
        seen_lists.add(snapshot.manifest_list)
        for manifest in snapshot.manifests(io):
            out.setdefault(manifest.manifest_path, manifest)
    return out


def _live_files(io: FileIO, manifests: Iterable[ManifestFile]) -> set[str]:
    return {
        entry.data_file.file_path
        for manifest in manifests
        for entry in manifest.fetch_manifest_entry(io, discard_deleted=True)
    }


def _deleted_files(io: FileIO, manifests: Iterable[ManifestFile]) -> set[str]:
    """Files that kept manifests list as deleted: removed by a snapshot, possibly named by none kept."""
    return {
        entry.data_file.file_path
        for manifest in manifests
        if manifest.deleted_files_count
        for entry in manifest.fetch_manifest_entry(io, discard_deleted=False)
        if entry.status == ManifestEntryStatus.DELETED
    }


def _all_files(io: FileIO, manifests: Iterable[ManifestFile]) -> set[str]:
    return {
        entry.data_file.file_path
        for manifest in manifests
        for entry in manifest.fetch_manifest_entry(io, discard_deleted=False)
    }
