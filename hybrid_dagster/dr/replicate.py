"""Pure-Python Iceberg table replication to a DR secondary (pyiceberg has no ``rewrite_table_path``).

Correctness rules:

- Data files are copied byte for byte; manifests and manifest lists are *rewritten* through pyiceberg's
  own Avro writers (``pyiceberg.manifest.write_manifest``, ``write_manifest_list``) with every
  absolute path moved from the primary's table location to the secondary's; the metadata JSON is
  rewritten the same way. Nothing at the secondary refers to the primary's storage.
- The secondary's catalog pointer moves last: a first copy is registered (``catalog.register_table``)
  only after every file it names is written; an incremental copy is one catalog commit (add schemas,
  specs, snapshots, move ``main``) guarded by the table UUID and the secondary's current snapshot. A copy
  killed midway leaves the previous registered state (or nothing) - never a half-copied table.
- Incremental: snapshots the secondary already has are skipped, manifests it already lists are reused,
  and a data file is copied only when the secondary lacks it at its full size. The work per run grows
  with what changed, not with the table's history.
- Snapshot summaries travel unchanged, so CDC watermarks (``hybrid.cdc.position``) and change counts
  are readable at the secondary.
- Tables with delete files (position or equality deletes) are refused: their rows name data file paths.
- Snapshots the primary expired are expired at the secondary too, after the copy commits, with the files
  only they named (:func:`hybrid_dagster.cdc.sink.maintenance.expire_snapshots`, the same pins: the
  secondary's history follows the primary's instead of growing without end).
"""

from __future__ import annotations

import posixpath
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.io import FileIO
from pyiceberg.manifest import (
    DataFile,
    ManifestContent,
    ManifestEntry,
    ManifestEntryStatus,
    ManifestFile,
    write_manifest,
    write_manifest_list,
)
from pyiceberg.serializers import ToOutputFile
from pyiceberg.table import Table, TableProperties
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.snapshots import Snapshot
from pyiceberg.table.update import (
    AddPartitionSpecUpdate,
    AddSchemaUpdate,
    AddSnapshotUpdate,
    AddSortOrderUpdate,
    AssertRefSnapshotId,
    AssertTableUUID,
    SetCurrentSchemaUpdate,
    SetDefaultSortOrderUpdate,
    SetDefaultSpecUpdate,
    SetPropertiesUpdate,
    SetSnapshotRefUpdate,
    TableRequirement,
    TableUpdate,
)

from hybrid_dagster.cdc.sink.maintenance import SnapshotRetention, expire_snapshots
from hybrid_dagster.dr.errors import ReplicationError

COPY_CHUNK = 8 * 1024 * 1024
PATH_PROPERTIES = ("write.data.path", "write.metadata.path", "write.object-storage.path")
"""Table properties that hold absolute paths of the primary; they are not carried to the secondary."""


@dataclass(frozen=True)
class PathMap:
    """Moves absolute paths from the primary table's location to the secondary's.

    Example:
        >>> PathMap("file:///p/wh/db/t", "s3://dr/wh/db/t")("file:///p/wh/db/t/data/a.parquet")
        's3://dr/wh/db/t/data/a.parquet'
    """

    source: str
    target: str

    def relative(self, path: str) -> str:
        src = self.source.rstrip("/") + "/"
        if path.startswith(src):
            return path[len(src) :]
        if "://" not in path and path.startswith("/") and self.source.startswith("file://"):
            return self.relative("file://" + path)
        raise ReplicationError(
            f"file {path} lies outside the table location {self.source}: the replication moves a table's "
            "own folder only; rewrite the table into its location first"
        )

    def __call__(self, path: str) -> str:
        return f"{self.target.rstrip('/')}/{self.relative(path)}"


@dataclass
class TableReplication:
    """What one table's replication did (metadata only: counts, ids, sizes)."""

    identifier: str
    primary_snapshot_id: int | None
    secondary_snapshot_id: int | None = None
    snapshots_copied: int = 0
    manifests_written: int = 0
    data_files_copied: int = 0
    bytes_copied: int = 0
    registered: bool = False
    committed: bool = False
    snapshots_expired: int = 0
    """Snapshots the primary no longer has, expired at the secondary with the files only they named."""
    skipped: list[str] = field(default_factory=list)


def copy_file(source_io: FileIO, source: str, target_io: FileIO, target: str) -> int:
    """Stream ``source`` to ``target`` (overwriting a partial copy); returns the bytes written."""
    with (
        source_io.new_input(source).open() as reader,
        target_io.new_output(target).create(overwrite=True) as out,
    ):
        shutil.copyfileobj(reader, out, COPY_CHUNK)  # type: ignore[misc]
    return len(target_io.new_input(target))


def present(io: FileIO, path: str, size: int) -> bool:
    """Whether ``path`` exists with exactly ``size`` bytes (a copy killed midway is shorter)."""
    handle = io.new_input(path)
    try:
        return handle.exists() and len(handle) == size
    except (FileNotFoundError, OSError):
        return False


class _Replicator:
    def __init__(
        self,
        source: Table,
        target_io: FileIO,
        paths: PathMap,
        workers: int,
        known_manifests: dict[str, ManifestFile],
    ) -> None:
        self.source = source
        self.metadata = source.metadata
        self.source_io = source.io
        self.target_io = target_io
        self.paths = paths
        self.workers = workers
        self.manifests = known_manifests  # relative source path -> rewritten ManifestFile at the target
        self.compression: Any = self.metadata.properties.get(
            TableProperties.WRITE_AVRO_COMPRESSION, TableProperties.WRITE_AVRO_COMPRESSION_DEFAULT
        )
        self.result = TableReplication(identifier="", primary_snapshot_id=None)

    def replicate(self, snapshots: list[Snapshot]) -> list[Snapshot]:
        """Copy what ``snapshots`` need and write their rewritten manifests and manifest lists."""
        listed = {s.snapshot_id: list(s.manifests(self.source_io)) for s in snapshots}
        pending: dict[str, ManifestFile] = {}
        for manifests in listed.values():
            for manifest in manifests:
                relative = self.paths.relative(manifest.manifest_path)
                if relative not in self.manifests:
                    pending.setdefault(relative, manifest)
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            entries = list(pool.map(self._entries, pending.values()))
            live = {
                e.data_file.file_path: e.data_file
                for found in entries
                for e in found
                if e.status != ManifestEntryStatus.DELETED
            }
            for written in pool.map(self._copy_data_file, live.values()):
                if written >= 0:
                    self.result.data_files_copied += 1
                    self.result.bytes_copied += written
            rewritten = pool.map(self._write_manifest, pending.values(), entries)
            self.manifests.update(zip(pending, rewritten, strict=True))
            self.result.manifests_written += len(pending)
            lists = list(pool.map(self._write_list, snapshots, [listed[s.snapshot_id] for s in snapshots]))
        self.result.snapshots_copied += len(snapshots)
        return lists

    def _entries(self, manifest: ManifestFile) -> list[ManifestEntry]:
        if manifest.content != ManifestContent.DATA:
            raise ReplicationError(
                f"table {self.result.identifier}: manifest {manifest.manifest_path} holds delete files, "
                "whose rows name data file paths; rewrite the table without deletes before replicating"
            )
        return manifest.fetch_manifest_entry(self.source_io, discard_deleted=False)

    def _copy_data_file(self, data_file: DataFile) -> int:
        target = self.paths(data_file.file_path)
        if present(self.target_io, target, data_file.file_size_in_bytes):
            return -1
        return copy_file(self.source_io, data_file.file_path, self.target_io, target)

    def _write_manifest(self, manifest: ManifestFile, entries: list[ManifestEntry]) -> ManifestFile:
        target = self.paths(manifest.manifest_path)
        writer = write_manifest(
            format_version=self.metadata.format_version,
            spec=self.metadata.specs()[manifest.partition_spec_id],
            schema=self.metadata.schema(),
            output_file=self.target_io.new_output(target),
            snapshot_id=int(manifest.added_snapshot_id or 0),
            avro_compression=self.compression,
        )
        with writer:
            for entry in entries:
                entry.data_file[1] = self.paths(entry.data_file.file_path)  # DataFile field 1: file_path
                writer.add_entry(entry)
        rewritten = ManifestFile(*[manifest[i] for i in range(len(manifest))])  # the read one is cached
        rewritten[0] = target  # manifest_path
        rewritten[1] = len(self.target_io.new_input(target))  # manifest_length
        return rewritten

    def _write_list(self, snapshot: Snapshot, manifests: list[ManifestFile]) -> Snapshot:
        if snapshot.manifest_list is None:
            raise ReplicationError(
                f"table {self.result.identifier}: snapshot {snapshot.snapshot_id} has no manifest list"
            )
        target = self.paths(snapshot.manifest_list)
        with write_manifest_list(
            format_version=self.metadata.format_version,
            output_file=self.target_io.new_output(target),
            snapshot_id=snapshot.snapshot_id,
            parent_snapshot_id=snapshot.parent_snapshot_id,
            sequence_number=snapshot.sequence_number,
            avro_compression=self.compression,
        ) as writer:
            writer.add_manifests([self.manifests[self.paths.relative(m.manifest_path)] for m in manifests])
        return snapshot.model_copy(update={"manifest_list": target})


def _id(snapshot: Snapshot | None) -> int | None:
    return None if snapshot is None else snapshot.snapshot_id


def target_location(source: Table, source_warehouse: str, target_warehouse: str) -> str:
    """Where ``source`` lives at the secondary: the same path relative to the warehouse root.

    Example:
        >>> target_location(table, "file:///srv/eu/warehouse", "s3://eu-dr/warehouse")
        's3://eu-dr/warehouse/clinical.db/patients'
    """
    location = source.location().rstrip("/")
    root = source_warehouse.rstrip("/") + "/"
    if location.startswith(root):
        return f"{target_warehouse.rstrip('/')}/{location[len(root) :]}"
    namespace, name = source.name()[-2], source.name()[-1]
    return f"{target_warehouse.rstrip('/')}/{namespace}.db/{name}"


def _carried_properties(metadata: TableMetadata) -> dict[str, str]:
    return {k: v for k, v in metadata.properties.items() if k not in PATH_PROPERTIES}


def replicate_table(
    source: Table,
    target_catalog: Catalog,
    target_io: FileIO,
    location: str,
    *,
    workers: int = 8,
    before_register: Callable[[str], None] | None = None,
) -> TableReplication:
    """Copy ``source`` to ``location`` and register or advance it in ``target_catalog`` (same identifier).

    ``before_register`` is called with the identifier after every file is written and before the catalog
    pointer moves (tests use it to check that a copy is complete).

    Example:
        >>> result = replicate_table(primary.load_table("clinical.patients"), dr_catalog, dr_io,
        ...                          "s3://eu-dr/warehouse/clinical.db/patients")
        >>> result.snapshots_copied
        3
    """
    identifier = ".".join(source.name()[-2:])
    metadata = source.metadata
    if metadata.format_version not in (1, 2):
        raise ReplicationError(
            f"table {identifier}: format version {metadata.format_version} is not supported"
        )
    current = source.current_snapshot()
    paths = PathMap(source.location(), location)
    try:
        existing: Table | None = target_catalog.load_table(identifier)
    except NoSuchTableError:
        existing = None
    known: dict[str, ManifestFile] = {}
    have: set[int] = set()
    if existing is not None:
        if existing.metadata.table_uuid != metadata.table_uuid:
            raise ReplicationError(
                f"table {identifier} at the secondary is another table (UUID {existing.metadata.table_uuid}, "
                f"primary {metadata.table_uuid}): the primary was recreated; drop the secondary's copy, rerun"
            )
        have = {s.snapshot_id for s in existing.metadata.snapshots}
        head = existing.current_snapshot()
        if head is not None:
            target_paths = PathMap(location, location)
            for manifest in head.manifests(existing.io):
                known[target_paths.relative(manifest.manifest_path)] = manifest
    replicator = _Replicator(source, target_io, paths, workers, known)
    replicator.result = TableReplication(identifier=identifier, primary_snapshot_id=_id(current))
    todo = sorted(
        (s for s in metadata.snapshots if s.snapshot_id not in have),
        key=lambda s: (s.sequence_number or 0, s.timestamp_ms),
    )
    rewritten = replicator.replicate(todo)
    result = replicator.result
    if existing is None:
        new_metadata = metadata.model_copy(
            update={
                "location": location,
                "snapshots": rewritten,
                "metadata_log": [],
                "statistics": [],
                "partition_statistics": [],
                "properties": _carried_properties(metadata),
            }
        )
        name = posixpath.basename(source.metadata_location)
        metadata_location = f"{location.rstrip('/')}/metadata/{name}"
        ToOutputFile.table_metadata(new_metadata, target_io.new_output(metadata_location), overwrite=True)
        if before_register is not None:
            before_register(identifier)
        target_catalog.create_namespace_if_not_exists(identifier.rsplit(".", 1)[0])
        registered = target_catalog.register_table(identifier, metadata_location)
        result.registered = True
        snapshot = registered.current_snapshot()
        result.secondary_snapshot_id = _id(snapshot)
        return result
    updates = _updates(existing.metadata, metadata, rewritten)
    if updates:
        if before_register is not None:
            before_register(identifier)
        head = existing.current_snapshot()
        requirements: tuple[TableRequirement, ...] = (
            AssertTableUUID(uuid=metadata.table_uuid),
            AssertRefSnapshotId.model_validate({"ref": "main", "snapshot-id": _id(head)}),
        )
        response = target_catalog.commit_table(existing, requirements, tuple(updates))
        result.committed = True
        result.secondary_snapshot_id = _id(response.metadata.current_snapshot())
    else:
        result.secondary_snapshot_id = _id(existing.current_snapshot())
    gone = have - {s.snapshot_id for s in metadata.snapshots}
    if gone:  # expired at the primary: expire them here too (the same snapshots stay pinned)
        secondary = target_catalog.load_table(identifier)
        everything_old = SnapshotRetention(max_age_s=0, min_snapshots=1)
        result.snapshots_expired = len(
            expire_snapshots(secondary, everything_old, only=gone).expired_snapshot_ids
        )
    return result


def _updates(have: TableMetadata, want: TableMetadata, snapshots: list[Snapshot]) -> list[TableUpdate]:
    """Catalog updates that bring ``have`` (the secondary) to ``want`` (the primary), new snapshots given."""
    updates: list[TableUpdate] = []
    have_schemas = {s.schema_id for s in have.schemas}
    updates += [AddSchemaUpdate(schema=s) for s in want.schemas if s.schema_id not in have_schemas]
    if have.current_schema_id != want.current_schema_id:
        updates.append(SetCurrentSchemaUpdate.model_validate({"schema-id": want.current_schema_id}))
    have_specs = {s.spec_id for s in have.partition_specs}
    updates += [AddPartitionSpecUpdate(spec=s) for s in want.partition_specs if s.spec_id not in have_specs]
    if have.default_spec_id != want.default_spec_id:
        updates.append(SetDefaultSpecUpdate.model_validate({"spec-id": want.default_spec_id}))
    have_orders = {o.order_id for o in have.sort_orders}
    updates += [
        AddSortOrderUpdate.model_validate({"sort-order": o})
        for o in want.sort_orders
        if o.order_id not in have_orders
    ]
    if have.default_sort_order_id != want.default_sort_order_id:
        updates.append(
            SetDefaultSortOrderUpdate.model_validate({"sort-order-id": want.default_sort_order_id})
        )
    updates += [AddSnapshotUpdate(snapshot=s) for s in snapshots]
    for name, ref in want.refs.items():
        if have.refs.get(name) != ref:
            updates.append(
                SetSnapshotRefUpdate.model_validate(
                    {
                        "ref-name": name,
                        "type": ref.snapshot_ref_type,
                        "snapshot-id": ref.snapshot_id,
                        "max-ref-age-ms": ref.max_ref_age_ms,
                        "max-snapshot-age-ms": ref.max_snapshot_age_ms,
                        "min-snapshots-to-keep": ref.min_snapshots_to_keep,
                    }
                )
            )
    carried = _carried_properties(want)
    changed = {k: v for k, v in carried.items() if have.properties.get(k) != v}
    if changed:
        updates.append(SetPropertiesUpdate(updates=changed))
    return updates
