"""Replication: the secondary alone (the primary's folder gone) serves every table row for row; the copy
is incremental; S3 secondaries work over real HTTP (moto); watermarks travel in snapshot summaries."""

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from hybrid_dagster.cdc.sink.maintenance import SnapshotRetention, expire_snapshots
from hybrid_dagster.dr import replicate_plane, secondary_plane
from hybrid_dagster.dr.lag import ancestry
from hybrid_dagster.plane import storage
from hybrid_dagster.residency import ResidencyPolicy
from tests.dr.planes import TABLES, ClinicalPlane, eu_plane, s3_secondary
from tests.fixtures.moto import MotoServer


def _no_primary_paths(secondary_root: Path, primary_root: Path) -> None:
    needle = (str(primary_root) + "/").encode()
    for path in secondary_root.rglob("*"):
        if path.is_file() and not path.name.endswith(".db"):
            assert needle not in path.read_bytes(), f"{path} still names the primary"


def test_secondary_alone_serves_every_table_row_for_row(tmp_path: Path) -> None:
    primary = eu_plane(tmp_path)
    secondary = secondary_plane(primary)
    clinical = ClinicalPlane(primary)
    clinical.fill(4)
    # a model registry table kept under models/, beside an artifact: the artifact copy must leave the
    # table's rewritten metadata alone (as in the example, where training writes both there)
    registry = clinical.catalog.create_table(
        "clinical.model_registry",
        schema=pa.schema([("version", pa.string())]),
        location=f"{primary.warehouse}/models/registry",
    )
    registry.append(pa.table({"version": ["run-1"]}))
    (tmp_path / "eu-onprem" / "models" / "readmission").mkdir(parents=True)
    (tmp_path / "eu-onprem" / "models" / "readmission" / "run-1.skops").write_bytes(b"model-bytes")
    first = replicate_plane(primary, secondary, ResidencyPolicy())
    assert [t.identifier for t in first.tables] == sorted([*TABLES, "clinical.model_registry"])
    assert first.models_copied == 1
    assert all(t.registered for t in first.tables)

    clinical.commit("clinical.patients", changes=5)  # one new snapshot on one table
    second = replicate_plane(primary, secondary, ResidencyPolicy())
    by_table = {t.identifier: t for t in second.tables}
    assert by_table["clinical.patients"].snapshots_copied == 1
    assert by_table["clinical.patients"].data_files_copied == 1  # only the new file
    assert by_table["clinical.encounters"].snapshots_copied == 0
    assert by_table["clinical.encounters"].bytes_copied == 0

    want = clinical.rows()
    heads = {t: ancestry(clinical.catalog.load_table(t).metadata) for t in TABLES}
    shutil.move(str(tmp_path / "eu-onprem"), str(tmp_path / "gone"))  # the primary's storage is lost
    _no_primary_paths(tmp_path / "eu-onprem-dr", tmp_path / "eu-onprem")
    catalog = storage.open_catalog(secondary.spec())
    got = {t: catalog.load_table(t).scan().to_arrow().sort_by("id") for t in TABLES}
    assert catalog.load_table("clinical.model_registry").scan().to_arrow().column("version").to_pylist() == [
        "run-1"
    ]
    for table in TABLES:
        assert got[table].equals(want[table]), table
        # watermarks and change counts travel inside the snapshot summaries
        assert ancestry(catalog.load_table(table).metadata) == heads[table]


def test_replication_to_s3_over_http(tmp_path: Path, moto_server: MotoServer) -> None:
    moto_server.client("s3").create_bucket(Bucket="eu-dr-replica")
    primary = eu_plane(tmp_path, s3_secondary(tmp_path, moto_server.s3_properties(), "eu-dr-replica"))
    secondary = secondary_plane(primary)
    clinical = ClinicalPlane(primary)
    clinical.fill(2)
    models = tmp_path / "eu-onprem" / "models" / "readmission"
    models.mkdir(parents=True)
    (models / "run-1.skops").write_bytes(b"model-bytes")
    result = replicate_plane(primary, secondary, ResidencyPolicy())
    assert result.models_copied == 1
    clinical.commit("clinical.lab_results", changes=2)
    again = replicate_plane(primary, secondary, ResidencyPolicy())
    assert (again.models_copied, again.models_present) == (0, 1)
    assert sum(t.snapshots_copied for t in again.tables) == 1

    want = clinical.rows()
    shutil.move(str(tmp_path / "eu-onprem"), str(tmp_path / "gone"))
    catalog = storage.open_catalog(secondary.spec())
    for table in TABLES:
        located = catalog.load_table(table)
        assert located.location().startswith("s3://eu-dr-replica/warehouse/")
        assert located.scan().to_arrow().sort_by("id").equals(want[table])
    fs, root = storage.filesystem(secondary.spec())
    assert fs.get_file_info(f"{root}/models/readmission/run-1.skops").type == pafs.FileType.File


def test_replication_goes_on_after_the_primary_expired_snapshots(tmp_path: Path) -> None:
    primary = eu_plane(tmp_path)
    secondary = secondary_plane(primary)
    clinical = ClinicalPlane(primary)
    clinical.fill(4)
    replicate_plane(primary, secondary, ResidencyPolicy())
    for _ in range(3):
        clinical.commit("clinical.patients", changes=5)
    table = clinical.catalog.load_table("clinical.patients")
    expiry = expire_snapshots(table, SnapshotRetention(max_age_s=0, min_snapshots=1), now_ms=2**62)
    assert expiry.expired_snapshot_ids and expiry.deleted_manifest_lists  # appends: every file stays live

    again = replicate_plane(primary, secondary, ResidencyPolicy())
    by_table = {t.identifier: t for t in again.tables}
    patients = by_table["clinical.patients"]
    assert patients.committed and patients.snapshots_copied == 1  # the kept snapshot; the expired ones never
    assert patients.secondary_snapshot_id == patients.primary_snapshot_id
    # the secondary's history follows: what the primary expired is expired there, with its files
    copy = storage.open_catalog(secondary.spec()).load_table("clinical.patients")
    primary_ids = [s.snapshot_id for s in clinical.catalog.load_table("clinical.patients").metadata.snapshots]
    assert [s.snapshot_id for s in copy.metadata.snapshots] == primary_ids
    assert patients.snapshots_expired >= 1
    named = {s.manifest_list.removeprefix("file://") for s in copy.metadata.snapshots}
    listed = {str(p) for p in Path(copy.location().removeprefix("file://"), "metadata").glob("snap-*.avro")}
    assert listed == named
    assert by_table["clinical.encounters"].snapshots_expired == 0
    want = clinical.rows()
    shutil.move(str(tmp_path / "eu-onprem"), str(tmp_path / "gone"))
    catalog = storage.open_catalog(secondary.spec())
    for name in TABLES:
        assert catalog.load_table(name).scan().to_arrow().sort_by("id").equals(want[name]), name
