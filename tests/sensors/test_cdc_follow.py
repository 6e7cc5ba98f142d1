"""The sensor that supervises the CDC long-running mode: one follow run at a time."""

from pathlib import Path

import dagster as dg

from hybrid_dagster.assets.cdc_tables import CdcTable, cdc_table_assets
from hybrid_dagster.cdc.sources.config import SqlTriggerCdcSource
from hybrid_dagster.cdc.worker import FollowSpec
from hybrid_dagster.residency import ResidencyPolicy
from hybrid_dagster.sensors.cdc_follow import cdc_follow_sensor
from tests.planes import make_plane


def test_the_sensor_starts_a_follow_run_only_when_none_is_in_progress(tmp_path: Path) -> None:
    eu = make_plane(tmp_path / "eu-onprem", "eu-onprem", "EU")
    assets = cdc_table_assets(
        name="wards_cdc",
        source=SqlTriggerCdcSource(url=f"sqlite:///{tmp_path / 'ops.db'}", consumer="eu-onprem"),
        plane=eu,
        source_jurisdiction="EU",
        tables=[CdcTable("wards", "internal")],
        namespace="clinic",
        follow=FollowSpec(target_latency_s=2.0, max_seconds=3300),
    )
    sensor = cdc_follow_sensor(assets, minimum_interval_seconds=30)
    defs = dg.Definitions(
        assets=[assets], sensors=[sensor], resources={"eu_onprem": eu, "residency_policy": ResidencyPolicy()}
    )
    job = defs.resolve_job_def("wards_cdc_follow_job")
    assert job.asset_layer.selected_asset_keys == {dg.AssetKey("wards")}
    instance = dg.DagsterInstance.ephemeral()
    with dg.build_sensor_context(instance=instance, definitions=defs) as context:
        assert isinstance(next(iter(sensor(context))), dg.RunRequest)  # nothing running: start one

    running = instance.create_run_for_job(job_def=job, status=dg.DagsterRunStatus.STARTED)
    with dg.build_sensor_context(instance=instance, definitions=defs) as context:
        outcome = list(sensor(context))
    assert isinstance(outcome[0], dg.SkipReason) and running.run_id in str(outcome[0].skip_message)
