"""A DR drill in three steps: capture the primary, fail over under an injected outage, verify and clean.

Correctness rules:

- ``capture`` (in the primary) records, per table, the primary's committed ancestry (ids, commit times,
  change counts, source positions) into ``_dr/drills/<id>/primary.json`` at the secondary - the newest
  committed state at T0, which the RPO is measured against.
- T0 is taken by the caller right before the failover work starts. ``failover`` (in the secondary, with
  the primary's storage unreadable: :mod:`hybrid_dagster.dr.isolation`) first proves the outage is in
  effect, removes canaries of drills killed earlier, opens every replicated table at the secondary and
  reads all its rows, then a canary writes a table at the secondary and reads it back: the first
  passing canary ends the RTO. RPO per table: :func:`~hybrid_dagster.dr.lag.table_lag`; the plane's RPO
  is the largest lag in seconds and the sum of lost changes. A table missing at the secondary fails.
- ``verify`` (in the primary, after the outage is lifted) checks the primary is intact - every snapshot
  it had at T0 still in its ancestry - and that no drill resources are left at the secondary (canary
  tables, drill journals, including those of killed drills, which it removes first).
- Only numbers and table identifiers leave these steps.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError

from hybrid_dagster.dr.errors import DrillError
from hybrid_dagster.dr.isolation import primary_readable
from hybrid_dagster.dr.lag import AncestryEntry, TableLag, ancestry, table_lag
from hybrid_dagster.dr.plane import DRILL_NAMESPACE, DRILLS_DIR, plane_tables, read_json, write_json
from hybrid_dagster.plane import storage
from hybrid_dagster.resources.data_plane import DataPlane


def new_drill_id() -> str:
    """A fresh drill id (letters, digits, underscore: usable as a table name).

    Example:
        >>> len(new_drill_id())
        20
    """
    return f"d{time.strftime('%Y%m%d')}_{uuid.uuid4().hex[:10]}"


def _safe(drill_id: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_]+", drill_id):
        raise DrillError(f"drill id {drill_id!r} may hold letters, digits and '_' only")
    return drill_id


def capture(primary: DataPlane, secondary: DataPlane, drill_id: str) -> dict[str, Any]:
    """Record the primary's committed state at the secondary; returns per-table heads and the count."""
    storage.check_catalog_access(primary.spec())
    catalog = storage.open_catalog(primary.spec())
    tables: dict[str, list[list[Any]]] = {}
    heads: dict[str, int | None] = {}
    for identifier in plane_tables(catalog):
        entries = ancestry(catalog.load_table(identifier).metadata)
        tables[identifier] = [[e.snapshot_id, e.timestamp_ms, e.changes, e.position] for e in entries]
        heads[identifier] = entries[0].snapshot_id if entries else None
    body = {"drill_id": _safe(drill_id), "captured_at": time.time(), "tables": tables, "heads": heads}
    write_json(secondary, f"{DRILLS_DIR}/{drill_id}/primary.json", body)
    return {"tables": len(tables), "heads": heads}


@dataclass
class FailoverResult:
    """What the failover at the secondary saw (numbers and identifiers only)."""

    drill_id: str
    canary_passed_at: float
    tables_ok: int
    rows_read: int
    rpo_s: float
    rpo_changes: int
    primary_readable: bool
    stale_canaries_removed: int
    lags: list[TableLag] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["lags"] = [lag.to_json() for lag in self.lags]
        return body


def failover(secondary: DataPlane, drill_id: str, hidden: list[str]) -> FailoverResult:
    """Open the replicated state at the secondary and run the canary (the outage must be in effect)."""
    if any(primary_readable(path) for path in hidden):
        raise DrillError(
            f"drill {drill_id}: the primary's storage is still readable to the failover work; the outage "
            "was not injected, so the drill would not measure a recovery"
        )
    state = read_json(secondary, f"{DRILLS_DIR}/{_safe(drill_id)}/primary.json")
    if state is None:
        raise DrillError(f"drill {drill_id}: no captured primary state at secondary {secondary.name!r}")
    catalog = storage.open_catalog(secondary.spec())
    stale = remove_canaries(secondary, catalog)
    lags: list[TableLag] = []
    rows = 0
    for identifier, raw in sorted(state["tables"].items()):
        primary_entries = [AncestryEntry(int(a), int(b), int(c), d) for a, b, c, d in raw]
        try:
            table = catalog.load_table(identifier)
        except NoSuchTableError:
            raise DrillError(
                f"drill {drill_id}: table {identifier} is not at secondary {secondary.name!r}; replicate the "
                "plane before drilling"
            ) from None
        # every replicated row is read at the secondary, batch by batch
        rows += sum(batch.num_rows for batch in table.scan().to_arrow_batch_reader())
        snapshot = table.current_snapshot()
        lags.append(
            table_lag(identifier, primary_entries, None if snapshot is None else snapshot.snapshot_id)
        )
    canary_id = f"{DRILL_NAMESPACE}.canary_{drill_id}"
    catalog.create_namespace_if_not_exists(DRILL_NAMESPACE)
    written = pa.table(
        {
            "drill_id": [drill_id],
            "tables": pa.array([len(lags)], pa.int64()),
            "rows_read": pa.array([rows], pa.int64()),
            "written_at": pa.array([time.time()], pa.float64()),
        }
    )
    canary = catalog.create_table(canary_id, schema=written.schema)
    canary.append(written)
    back = catalog.load_table(canary_id).scan().to_arrow()
    if not back.equals(written):
        raise DrillError(f"drill {drill_id}: the canary read back at secondary {secondary.name!r} differs")
    passed_at = time.time()
    remove_canaries(secondary, catalog)
    return FailoverResult(
        drill_id=drill_id,
        canary_passed_at=passed_at,
        tables_ok=len(lags),
        rows_read=rows,
        rpo_s=max((lag.rpo_s for lag in lags), default=0.0),
        rpo_changes=sum(lag.rpo_changes for lag in lags),
        primary_readable=False,
        stale_canaries_removed=stale,
        lags=lags,
    )


def remove_canaries(secondary: DataPlane, catalog: Catalog) -> int:
    """Drop every canary table (and its files) at the secondary; returns how many there were."""
    if (DRILL_NAMESPACE,) not in catalog.list_namespaces():
        return 0
    fs, _ = storage.filesystem(secondary.spec())
    removed = 0
    for identifier in catalog.list_tables(DRILL_NAMESPACE):
        location = catalog.load_table(identifier).location()
        catalog.drop_table(identifier)
        _delete_dir(fs, location)
        removed += 1
    catalog.drop_namespace(DRILL_NAMESPACE)
    return removed


def _delete_dir(fs: pafs.FileSystem, uri: str) -> None:
    parsed = urlparse(uri)
    path = parsed.path if parsed.scheme == "file" else f"{parsed.netloc}{parsed.path}"
    if fs.get_file_info(path).type == pafs.FileType.Directory:
        fs.delete_dir(path)


def verify(
    primary: DataPlane, secondary: DataPlane, drill_id: str, heads: dict[str, int | None] | None = None
) -> dict[str, int | bool]:
    """After the outage: the primary intact, and no drill resources left at the secondary.

    ``heads`` (the primary's per-table snapshot ids at T0) default to those in the drill's journal."""
    storage.check_catalog_access(primary.spec())
    if heads is None:
        journal = read_json(secondary, f"{DRILLS_DIR}/{_safe(drill_id)}/primary.json")
        if journal is None:
            raise DrillError(f"drill {drill_id}: its journal is gone from secondary {secondary.name!r}")
        heads = journal["heads"]
    source = storage.open_catalog(primary.spec())
    intact = True
    for identifier, head in heads.items():
        if head is None:
            continue
        try:
            kept = {e.snapshot_id for e in ancestry(source.load_table(identifier).metadata)}
        except NoSuchTableError:
            kept = set()
        intact = intact and head in kept
    target = storage.open_catalog(secondary.spec())
    remove_canaries(secondary, target)
    fs, root = storage.filesystem(secondary.spec())
    journals = f"{root.rstrip('/')}/{DRILLS_DIR}"
    if fs.get_file_info(journals).type == pafs.FileType.Directory:
        fs.delete_dir(journals)
    leftovers = (
        len(target.list_tables(DRILL_NAMESPACE)) if (DRILL_NAMESPACE,) in target.list_namespaces() else 0
    )
    leftovers += int(fs.get_file_info(journals).type != pafs.FileType.NotFound)
    return {"primary_intact": intact, "leftovers": leftovers}


@dataclass(frozen=True)
class DrillResult:
    """One drill, measured."""

    plane: str
    secondary: str
    drill_id: str
    t0: float
    rto_s: float
    rpo_s: float
    rpo_changes: int
    tables: int
    rows_read: int
    isolation: str
    primary_intact: bool
    leftovers: int
    rto_objective_s: float
    rpo_objective_s: float
    rpo_objective_changes: int

    @property
    def rto_met(self) -> bool:
        return self.rto_s <= self.rto_objective_s

    @property
    def rpo_met(self) -> bool:
        return self.rpo_s <= self.rpo_objective_s and self.rpo_changes <= self.rpo_objective_changes

    @property
    def clean(self) -> bool:
        return self.primary_intact and self.leftovers == 0

    @property
    def objectives_met(self) -> bool:
        return self.rto_met and self.rpo_met and self.clean

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body.update(rto_met=self.rto_met, rpo_met=self.rpo_met, objectives_met=self.objectives_met)
        return body
