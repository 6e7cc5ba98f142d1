"""Replicating a whole plane to its DR secondary: tables, model artifacts and secret references.

Correctness rules:

- Runs inside the primary plane (``DataPlane.run`` with :mod:`hybrid_dagster.dr.worker`, or an operator's
  script); refused in an orchestrator step. The secondary is written by this trusted copier only.
- Every table's residency label (at rest, fail-closed) is checked against the secondary's jurisdiction
  and the declared routes *before anything is copied*; one refusal stops the whole plane.
- Tables are replicated one by one (:func:`~hybrid_dagster.dr.replicate.replicate_table`: files first,
  the catalog pointer last). The plane's replication state (``_dr/state/<plane>.json`` at the secondary:
  per table the snapshot id, commit time and source position) is written after every table is
  registered, so it never claims more than the secondary holds.
- Model artifacts (``models/`` of the warehouse) are copied file by file, skipping those already there
  at full size. Secret references are checked for presence in the secondary's backend with the
  secondary's identity; values are read into the checking process only and dropped, never copied.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import pyarrow.fs as pafs
from pyiceberg.catalog import Catalog
from pyiceberg.io import FileIO, load_file_io

from hybrid_dagster.dr.errors import DrConfigError, ReplicationError
from hybrid_dagster.dr.lag import TableLag, ancestry, table_lag
from hybrid_dagster.dr.replicate import TableReplication, replicate_table, target_location
from hybrid_dagster.dr.targets import check_dr_target
from hybrid_dagster.plane import storage
from hybrid_dagster.residency.labels import read_label
from hybrid_dagster.residency.model import ResidencyPolicy, TransferRoute
from hybrid_dagster.resources.data_plane import DataPlane
from hybrid_dagster.secrets import BackendSettings, SecretError, SecretRef, build_backend

DRILL_NAMESPACE = "_dr_drill"
"""Namespace of the drill's canary tables at the secondary (never replicated, removed by the drill)."""
STATE_DIR = "_dr/state"
DRILLS_DIR = "_dr/drills"
MODELS_DIR = "models"


@dataclass
class PlaneReplication:
    """What a plane's replication did (metadata only)."""

    plane: str
    secondary: str
    tables: list[TableReplication] = field(default_factory=list)
    routes: list[str] = field(default_factory=list)
    models_copied: int = 0
    models_present: int = 0
    secrets_present: int = 0
    secrets_missing: list[str] = field(default_factory=list)
    lags: list[TableLag] = field(default_factory=list)
    started_at: float = 0.0
    finished_at: float = 0.0

    @property
    def bytes_copied(self) -> int:
        return sum(t.bytes_copied for t in self.tables)

    def metadata(self) -> dict[str, float | int]:
        """Numbers for Dagster metadata (``dr/...`` keys)."""
        return {
            "dr/tables_replicated": len(self.tables),
            "dr/snapshots_copied": sum(t.snapshots_copied for t in self.tables),
            "dr/data_files_copied": sum(t.data_files_copied for t in self.tables),
            "dr/bytes_copied": self.bytes_copied,
            "dr/models_copied": self.models_copied,
            "dr/models_present": self.models_present,
            "dr/secrets_present": self.secrets_present,
            "dr/secrets_missing": len(self.secrets_missing),
            "dr/duration_s": round(self.finished_at - self.started_at, 3),
            "dr/replicated_at": self.finished_at,
            "dr/lag_s": max((lag.rpo_s for lag in self.lags), default=0.0),
            "dr/lag_changes": sum(lag.rpo_changes for lag in self.lags),
        }


def open_catalogs(primary: DataPlane, secondary: DataPlane) -> tuple[Catalog, Catalog, FileIO]:
    """The primary's and the secondary's catalogs and the secondary's file IO (inside the plane only)."""
    storage.check_catalog_access(primary.spec())
    source = storage.open_catalog(primary.spec())
    target = storage.open_catalog(secondary.spec())
    target_io = load_file_io(storage.catalog_properties(secondary.spec()), secondary.warehouse)
    return source, target, target_io


def plane_tables(catalog: Catalog) -> list[str]:
    """Every table of a catalog as ``namespace.table``, sorted (the drill's canary namespace excluded)."""
    found = []
    for namespace in catalog.list_namespaces():
        if namespace and namespace[0] == DRILL_NAMESPACE:
            continue
        found += [".".join(identifier) for identifier in catalog.list_tables(namespace)]
    return sorted(found)


def check_plane_target(
    primary: DataPlane, secondary: DataPlane, source: Catalog, tables: Sequence[str], policy: ResidencyPolicy
) -> list[TransferRoute]:
    """Check every table's label against the secondary (raises before anything is copied)."""
    routes: list[TransferRoute] = []
    for identifier in tables:
        label = read_label(source.load_table(identifier).properties, primary)
        routes += check_dr_target(
            primary.name,
            set(label.data_jurisdictions) | {primary.jurisdiction},
            secondary,
            label.classification,
            policy,
            what=f" (table {identifier}, {label.classification.value})",
        )
    return routes


def replicate_plane(
    primary: DataPlane,
    secondary: DataPlane,
    policy: ResidencyPolicy,
    *,
    tables: Sequence[str] | None = None,
    secret_refs: Sequence[str] = (),
    workers: int = 8,
    before_register: Callable[[str], None] | None = None,
) -> PlaneReplication:
    """Replicate ``primary``'s tables, models and secret references to ``secondary``.

    Example:
        >>> result = replicate_plane(eu_onprem, secondary_plane(eu_onprem), policy)
        >>> [t.identifier for t in result.tables]
        ['clinical.encounters', 'clinical.lab_results', 'clinical.patients']
    """
    result = PlaneReplication(plane=primary.name, secondary=secondary.name, started_at=time.time())
    storage.check_catalog_access(primary.spec())
    source = storage.open_catalog(primary.spec())
    chosen = list(tables) if tables is not None else plane_tables(source)
    routes = check_plane_target(primary, secondary, source, chosen, policy)  # before the secondary is touched
    result.routes = sorted({r.describe() for r in routes})
    _, target, target_io = open_catalogs(primary, secondary)
    refs = [parse_secret_ref(r) for r in secret_refs]
    state: dict[str, Any] = {}
    for identifier in chosen:
        table = source.load_table(identifier)
        location = target_location(table, primary.warehouse, secondary.warehouse)
        done = replicate_table(
            table, target, target_io, location, workers=workers, before_register=before_register
        )
        result.tables.append(done)
        head = ancestry(table.metadata, limit=1)
        state[identifier] = {
            "snapshot_id": done.secondary_snapshot_id,
            "timestamp_ms": head[0].timestamp_ms if head else None,
            "position": head[0].position if head else None,
        }
    for done in result.tables:  # commits that landed while copying are the lag left behind
        now = ancestry(source.load_table(done.identifier).metadata)
        result.lags.append(table_lag(done.identifier, now, done.secondary_snapshot_id))
    tables_at = [source.load_table(t).location() for t in chosen]
    result.models_copied, result.models_present = copy_models(primary, secondary, skip=tables_at)
    result.secrets_present, result.secrets_missing = check_secret_refs(secondary, refs)
    result.finished_at = time.time()
    write_json(
        secondary,
        f"{STATE_DIR}/{primary.name}.json",
        {"plane": primary.name, "replicated_at": result.finished_at, "tables": state},
    )
    return result


def parse_secret_ref(text: str) -> SecretRef:
    """``backend:path#key@version`` (the text form of :class:`SecretRef`) back into a reference.

    Example:
        >>> parse_secret_ref("vault:eu-onprem/clinical-db#password")
        SecretRef(backend='vault', path='eu-onprem/clinical-db', key='password', version=None)
    """
    backend, sep, rest = text.partition(":")
    if not sep or backend not in ("env", "vault", "aws"):
        raise DrConfigError(
            f"secret reference {text!r} is not 'backend:path#key' with backend env, vault or aws"
        )
    rest, _, version = rest.partition("@")
    path, _, key = rest.partition("#")
    return SecretRef(backend=backend, path=path, key=key or None, version=version or None)  # type: ignore[arg-type]


def check_secret_refs(secondary: DataPlane, refs: Sequence[SecretRef]) -> tuple[int, list[str]]:
    """How many of ``refs`` the secondary's backend holds, and which it lacks (as reference text)."""
    if not refs:
        return 0, []
    backend = build_backend(secondary.name, BackendSettings.model_validate(secondary.secrets.model_dump()))
    present, missing = 0, []
    try:
        for ref in refs:
            try:
                backend.read(ref)  # the value is dropped here; only presence is kept
                present += 1
            except SecretError:
                missing.append(str(ref))
    finally:
        backend.close()
    return present, missing


def copy_models(primary: DataPlane, secondary: DataPlane, skip: Sequence[str] = ()) -> tuple[int, int]:
    """Copy the warehouse's ``models/`` folder (skops artifacts); returns (copied, already present).

    Files under an Iceberg table's location (``skip``, e.g. a model registry table kept in ``models/``)
    are left to the table replication, which rewrites their paths - a verbatim copy would undo that."""
    skipped = tuple(_fs_path(uri).rstrip("/") + "/" for uri in skip)
    source_fs, source_root = storage.filesystem(primary.spec())
    target_fs, target_root = storage.filesystem(secondary.spec())
    base = f"{source_root.rstrip('/')}/{MODELS_DIR}"
    if source_fs.get_file_info(base).type != pafs.FileType.Directory:
        return 0, 0
    copied = present = 0
    for info in source_fs.get_file_info(pafs.FileSelector(base, recursive=True)):
        if info.type != pafs.FileType.File or info.path.lstrip("/").startswith(skipped):
            continue
        target = f"{target_root.rstrip('/')}/{MODELS_DIR}/{info.path[len(base) + 1 :]}"
        existing = target_fs.get_file_info(target)
        if existing.type == pafs.FileType.File and existing.size == info.size:
            present += 1
            continue
        target_fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
        pafs.copy_files(info.path, target, source_filesystem=source_fs, destination_filesystem=target_fs)
        copied += 1
    return copied, present


def _fs_path(uri: str) -> str:
    """``uri`` as a path on its pyarrow filesystem, without a leading slash."""
    parsed = urlparse(uri)
    path = parsed.path if parsed.scheme in ("file", "") else f"{parsed.netloc}{parsed.path}"
    return path.lstrip("/")


def write_json(plane: DataPlane, relative: str, body: dict[str, Any]) -> None:
    """Write a small JSON document under the plane's warehouse (whole file, replaced)."""
    fs, root = storage.filesystem(plane.spec())
    path = f"{root.rstrip('/')}/{relative}"
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    tmp = f"{path}.tmp"
    with fs.open_output_stream(tmp) as out:
        out.write(json.dumps(body, sort_keys=True).encode())
    fs.move(tmp, path)


def read_json(plane: DataPlane, relative: str) -> dict[str, Any] | None:
    """A JSON document under the plane's warehouse, or None when it is not there."""
    fs, root = storage.filesystem(plane.spec())
    path = f"{root.rstrip('/')}/{relative}"
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as stream:
        loaded: dict[str, Any] = json.loads(stream.read())
    return loaded


def require_tables(result: PlaneReplication) -> None:
    """Raise :class:`ReplicationError` when the plane had no table to replicate."""
    if not result.tables:
        raise ReplicationError(f"plane {result.plane!r} has no Iceberg tables to replicate")
