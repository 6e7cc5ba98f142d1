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
  it had at T0 still in its ancestry - and that none of its drill resources are left at the secondary
  (its canary table and journal, and those of killed drills, which it removes first).
- Drills may run at once against one secondary (two primaries sharing it, a manual drill during a
  scheduled one): a drill removes only its own resources and those of drills whose lease ended
  (``expires_at`` in the journal, ``DRILL_LEASE_S`` after their capture: a drill killed midway), and a
  canary table without a journal. A live drill's canary and journal are never touched by another.
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


DRILL_LEASE_S = 3600.0
"""How long after its capture a drill's resources at the secondary are its own; after that any drill
removes them (the drill was killed midway). Longer than any drill runs."""
CANARY_PREFIX = "canary_"
_DRILL_ID = re.compile(r"[A-Za-z0-9_]+")
"""What a drill id may hold: it names a table and a folder."""


def _safe(drill_id: str) -> str:
    if not _DRILL_ID.fullmatch(drill_id):
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
    now = time.time()
    body = {
        "drill_id": _safe(drill_id),
        "captured_at": now,
        "expires_at": now + DRILL_LEASE_S,
        "tables": tables,
        "heads": heads,
    }
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
    stale = remove_stale_drills(secondary, catalog, current=drill_id)
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
    canary_id = f"{DRILL_NAMESPACE}.{CANARY_PREFIX}{drill_id}"
    remove_drill(secondary, catalog, drill_id, journal=False)  # a retried failover's earlier canary
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
    remove_drill(secondary, catalog, drill_id, journal=False)
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


def remove_drill(secondary: DataPlane, catalog: Catalog, drill_id: str, *, journal: bool = True) -> int:
    """Drop the drill's canary table (and its files) and, with ``journal``, its journal at the secondary;
    returns how many of the two were there."""
    fs, root = storage.filesystem(secondary.spec())
    removed = 0
    identifier = f"{DRILL_NAMESPACE}.{CANARY_PREFIX}{_safe(drill_id)}"
    if (DRILL_NAMESPACE,) in catalog.list_namespaces() and catalog.table_exists(identifier):
        location = catalog.load_table(identifier).location()
        catalog.drop_table(identifier)
        _delete_dir(fs, location)
        removed += 1
    directory = f"{root.rstrip('/')}/{DRILLS_DIR}/{drill_id}"
    if journal and fs.get_file_info(directory).type == pafs.FileType.Directory:
        fs.delete_dir(directory)
        removed += 1
    return removed  # the (empty) namespace stays: a concurrent drill may be creating its canary in it


def stale_drills(secondary: DataPlane, catalog: Catalog, *, now: float | None = None) -> list[str]:
    """Drills whose resources at the secondary no live drill owns: journals whose lease ended (or that
    cannot be read) and canary tables without a journal."""
    now = time.time() if now is None else now
    fs, root = storage.filesystem(secondary.spec())
    journals: dict[str, dict[str, Any] | None] = {}
    selector = pafs.FileSelector(f"{root.rstrip('/')}/{DRILLS_DIR}", allow_not_found=True)
    for info in fs.get_file_info(selector):
        if info.type == pafs.FileType.Directory and _DRILL_ID.fullmatch(info.base_name):
            try:
                journals[info.base_name] = read_json(secondary, f"{DRILLS_DIR}/{info.base_name}/primary.json")
            except ValueError:  # a torn journal: its drill never finished capturing
                journals[info.base_name] = None
    stale = {
        drill
        for drill, journal in journals.items()
        if journal is None or float(journal.get("expires_at", journal.get("captured_at", 0.0))) < now
    }
    if (DRILL_NAMESPACE,) in catalog.list_namespaces():
        for _, name in catalog.list_tables(DRILL_NAMESPACE):
            drill = name.removeprefix(CANARY_PREFIX)
            if drill not in journals and _DRILL_ID.fullmatch(drill):
                stale.add(drill)
    return sorted(stale)


def remove_stale_drills(secondary: DataPlane, catalog: Catalog, *, current: str) -> int:
    """Remove what :func:`stale_drills` finds (never ``current``'s); returns how many resources."""
    return sum(
        remove_drill(secondary, catalog, drill)
        for drill in stale_drills(secondary, catalog)
        if drill != current
    )


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
    remove_stale_drills(secondary, target, current=drill_id)
    remove_drill(secondary, target, drill_id)
    # what is left of this drill, or of drills killed earlier (a concurrent live drill's are its own)
    leftovers = _resources_of(secondary, target, drill_id) + len(stale_drills(secondary, target))
    return {"primary_intact": intact, "leftovers": leftovers}


def _resources_of(secondary: DataPlane, catalog: Catalog, drill_id: str) -> int:
    fs, root = storage.filesystem(secondary.spec())
    canary = (DRILL_NAMESPACE,) in catalog.list_namespaces() and catalog.table_exists(
        f"{DRILL_NAMESPACE}.{CANARY_PREFIX}{drill_id}"
    )
    journal = fs.get_file_info(f"{root.rstrip('/')}/{DRILLS_DIR}/{drill_id}").type != pafs.FileType.NotFound
    return int(canary) + int(journal)


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
