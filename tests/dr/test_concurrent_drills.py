"""Drills at once against one secondary: each removes only its own resources and those of drills whose
lease ended (killed midway); a live drill's canary and journal are never touched by another."""

import json
from pathlib import Path

import pyarrow as pa

from hybrid_dagster.dr import replicate_plane, secondary_plane
from hybrid_dagster.dr.drill import (
    CANARY_PREFIX,
    capture,
    failover,
    remove_stale_drills,
    stale_drills,
    verify,
)
from hybrid_dagster.dr.plane import DRILL_NAMESPACE, DRILLS_DIR
from hybrid_dagster.plane import storage
from hybrid_dagster.plane.config import PlaneSpec
from hybrid_dagster.residency import ResidencyPolicy
from tests.dr.planes import ClinicalPlane, eu_plane


def _canaries(spec: PlaneSpec) -> set[str]:
    cat = storage.open_catalog(spec)
    if (DRILL_NAMESPACE,) not in cat.list_namespaces():
        return set()
    return {name.removeprefix(CANARY_PREFIX) for _, name in cat.list_tables(DRILL_NAMESPACE)}


def _journals(root: Path) -> set[str]:
    drills = root / DRILLS_DIR
    return {p.name for p in drills.iterdir()} if drills.exists() else set()


def _mid_failover(spec: PlaneSpec, drill_id: str) -> None:
    """The canary a drill's failover holds between its creation and its removal."""
    catalog = storage.open_catalog(spec)
    catalog.create_namespace_if_not_exists(DRILL_NAMESPACE)
    catalog.create_table(
        f"{DRILL_NAMESPACE}.{CANARY_PREFIX}{drill_id}", schema=pa.schema([("x", pa.int64())])
    )


def test_interleaved_drills_leave_each_other_alone_and_clean_up_killed_ones(tmp_path: Path) -> None:
    primary = eu_plane(tmp_path)
    secondary = secondary_plane(primary)
    ClinicalPlane(primary).fill(1)
    replicate_plane(primary, secondary, ResidencyPolicy())
    spec, root = secondary.spec(), tmp_path / "eu-onprem-dr"

    heads_a = capture(primary, secondary, "drill_a")["heads"]
    heads_b = capture(primary, secondary, "drill_b")["heads"]
    _mid_failover(spec, "drill_b")  # b is between its canary's creation and read-back

    a = failover(secondary, "drill_a", hidden=[])
    assert a.stale_canaries_removed == 0
    assert _canaries(spec) == {"drill_b"} and _journals(root) == {"drill_a", "drill_b"}
    assert verify(primary, secondary, "drill_a", heads_a) == {"primary_intact": True, "leftovers": 0}
    assert _canaries(spec) == {"drill_b"} and _journals(root) == {"drill_b"}  # b's are b's

    # drill c is killed mid-failover; its lease ends (rewritten here instead of waiting an hour)
    capture(primary, secondary, "drill_c")
    _mid_failover(spec, "drill_c")
    journal = root / DRILLS_DIR / "drill_c" / "primary.json"
    body = json.loads(journal.read_text())
    journal.write_text(json.dumps({**body, "expires_at": body["captured_at"] - 1}))
    _mid_failover(spec, "orphan")  # a canary whose journal is gone: nobody owns it
    catalog = storage.open_catalog(spec)
    assert stale_drills(secondary, catalog) == ["drill_c", "orphan"]

    b = failover(secondary, "drill_b", hidden=[])
    assert b.stale_canaries_removed == 3  # c's canary and journal, the orphan canary
    assert verify(primary, secondary, "drill_b", heads_b) == {"primary_intact": True, "leftovers": 0}
    assert _canaries(spec) == set() and _journals(root) == set()
    assert remove_stale_drills(secondary, storage.open_catalog(spec), current="drill_b") == 0
