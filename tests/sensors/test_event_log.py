"""The run-shard reader returns exactly what ``get_records_for_run`` returns on the default storage."""

from pathlib import Path

import dagster as dg

from hybrid_dagster._dagster_compat import RunShardReader
from hybrid_dagster.sensors.event_log import RUN_EVENT_TYPES, iter_run_status_records, run_status_records


@dg.asset(check_specs=[dg.AssetCheckSpec("rows", asset="numbers")])
def numbers() -> dg.MaterializeResult:
    return dg.MaterializeResult(
        metadata={"dagster/row_count": 3},
        check_results=[dg.AssetCheckResult(check_name="rows", passed=True)],
    )


@dg.asset(deps=[numbers])
def doubled() -> None:
    pass


def test_shard_reads_equal_the_public_method_page_by_page(tmp_path: Path) -> None:
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        runs = [dg.materialize([numbers, doubled], instance=instance).run_id for _ in range(1)]
        reader = RunShardReader.for_instance(instance)
        assert reader is not None  # the default storage is run-sharded SQLite
        try:
            for run_id in runs:
                for limit in (2, 100):
                    cursor: str | None = None
                    while True:
                        public = instance.get_records_for_run(
                            run_id, cursor=cursor, of_type=set(RUN_EVENT_TYPES), limit=limit, ascending=True
                        )
                        ours = reader.records_for_run(run_id, cursor, RUN_EVENT_TYPES, limit)
                        assert ours is not None
                        assert [r.storage_id for r in ours.records] == [r.storage_id for r in public.records]
                        assert [r.event_log_entry for r in ours.records] == [
                            r.event_log_entry for r in public.records
                        ]
                        assert (ours.cursor, ours.has_more) == (public.cursor, public.has_more)
                        if not public.records:
                            break
                        cursor = public.cursor
            missing = reader.records_for_run("no-such-run", None, RUN_EVENT_TYPES, 10)
            public = instance.get_records_for_run("no-such-run", of_type=set(RUN_EVENT_TYPES), limit=10)
            assert missing is not None and (missing.records, missing.cursor) == ([], public.cursor)
        finally:
            reader.close()

        everything = run_status_records(instance, after_storage_id=-1, limit=1000)
        paged = list(iter_run_status_records(instance, after_storage_id=-1, page_size=1))
        assert [r.storage_id for r in paged] == [r.storage_id for r in everything] and len(paged) == 2
