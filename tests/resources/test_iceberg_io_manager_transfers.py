"""PlaneIcebergIOManager records movements across planes in the transfer ledger, hash-checked first."""

from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest

from hybrid_dagster.audit import AuditLog, content_sha256
from hybrid_dagster.pinning import pinned
from hybrid_dagster.plane import tables as plane_tables
from hybrid_dagster.residency.model import ResidencyPolicy, TransferRoute
from hybrid_dagster.resources.data_plane import DataPlane
from hybrid_dagster.resources.iceberg_io_manager import PlaneIcebergIOManager
from tests.defs.common import plane

ROUTE = TransferRoute(
    source="EU",
    target="US",
    legal_basis="GDPR Art. 46(2)(c) SCCs",
    classifications=["internal"],
    egress_usd_per_gb=0.09,
)


@dg.asset(key_prefix="stats", **pinned("eu-onprem", "internal"))
def ward_counts() -> pa.Table:
    return pa.table({"ward": ["A", "B", "C"], "admissions": [12, 7, 3]})


@dg.asset(key_prefix="stats", **pinned("eu-onprem", "internal"))
def busy_wards(ward_counts: pa.Table) -> pa.Table:  # same plane: not a transfer
    return ward_counts.filter(pa.compute.greater(ward_counts["admissions"], 5))


@dg.asset(key_prefix="us_stats", **pinned("us-cloud", "internal"))
def ward_counts_us(ward_counts: pa.Table) -> pa.Table:  # EU -> US
    return ward_counts


@dg.asset(key_prefix="us_stats", **pinned("us-cloud", "internal"))
def admissions_total_us(ward_counts: pa.Table) -> pa.Table:  # EU -> US, derived rows
    return pa.table({"admissions": [pa.compute.sum(ward_counts["admissions"]).as_py()]})


def _io_manager(tmp_path: Path) -> tuple[PlaneIcebergIOManager, DataPlane, DataPlane, str]:
    eu, us = plane("eu-onprem", "EU", str(tmp_path)), plane("us-cloud", "US", str(tmp_path))
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    policy = ResidencyPolicy(routes=[ROUTE])
    return PlaneIcebergIOManager(planes=[eu, us], policy=policy, audit_url=url), eu, us, url


def test_a_table_moved_to_another_plane_is_recorded_with_route_basis_and_both_hashes(tmp_path: Path) -> None:
    io_manager, eu, us, url = _io_manager(tmp_path)
    result = dg.materialize([ward_counts, busy_wards, ward_counts_us], resources={"io_manager": io_manager})
    assert result.success

    read_at_source = eu.load_catalog().load_table("stats.ward_counts").scan().to_arrow()
    committed = us.load_catalog().load_table("us_stats.ward_counts_us").scan().to_arrow()
    with AuditLog(url) as log:
        [transfer] = list(log.records(kind="transfer"))  # the same-plane read is not a transfer
        assert not list(log.records(kind="transfer.mismatch"))
        assert log.verify().ok
    d = transfer.details
    assert (d["route"], d["legal_basis"], d["classification"]) == ("EU->US", ROUTE.legal_basis, "internal")
    assert (d["source_plane"], d["source_table"]) == ("eu-onprem", "stats.ward_counts")
    assert (d["target_plane"], d["target_table"]) == ("us-cloud", "us_stats.ward_counts_us")
    assert d["rows"] == 3 and d["bytes"] == read_at_source.nbytes and d["cost_usd"] > 0
    assert d["source_sha256"] == content_sha256(read_at_source)
    assert d["target_sha256"] == content_sha256(committed) == d["source_sha256"]
    assert d["copied_verbatim"] is True
    assert transfer.run_id == result.run_id

    # A step that derives new rows from what it read across the border: a transfer, not a copy, and
    # no mismatch (the integrity check compares the rows handed to the writer with what it staged).
    derived = dg.materialize(
        [ward_counts, admissions_total_us],
        selection=[admissions_total_us.key],
        resources={"io_manager": io_manager},
    )
    assert derived.success
    with AuditLog(url) as log:
        [_, total] = list(log.records(kind="transfer"))
        assert not list(log.records(kind="transfer.mismatch"))
    assert total.details["target_table"] == "us_stats.admissions_total_us"
    assert total.details["copied_verbatim"] is False and total.details["target_rows"] == 1


def test_staged_rows_that_do_not_hash_to_the_handed_rows_are_never_committed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    io_manager, _, us, url = _io_manager(tmp_path)
    assert dg.materialize([ward_counts], resources={"io_manager": io_manager}).success
    real = plane_tables.staged_rows

    def lossy_storage(catalog, txn, columns):  # type: ignore[no-untyped-def]
        rows = real(catalog, txn, columns)  # the staged files, read back, lose a row on the way
        return rows.slice(0, rows.num_rows - 1)

    monkeypatch.setattr(plane_tables, "staged_rows", lossy_storage)
    result = dg.materialize(
        [ward_counts, ward_counts_us],
        selection=[ward_counts_us.key],
        resources={"io_manager": io_manager},
        raise_on_error=False,
    )
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert failure is not None and failure.cause is not None
    assert (
        failure.cause.cls_name == "TransferIntegrityError" and "commit was abandoned" in failure.cause.message
    )
    assert not us.load_catalog().table_exists("us_stats.ward_counts_us")
    with AuditLog(url) as log:
        assert not list(log.records(kind="transfer"))
        [mismatch] = list(log.records(kind="transfer.mismatch"))
        assert log.verify().ok
    assert (
        mismatch.details["route"] == "EU->US"
        and mismatch.details["target_table"] == "us_stats.ward_counts_us"
    )
