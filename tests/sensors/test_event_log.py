"""The run-shard reader returns exactly what ``get_records_for_run`` returns on the default storage."""

from pathlib import Path

import dagster as dg
import pytest

from hybrid_dagster._dagster_compat import EventLogRow, RunShardReader, decode_event_rows
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
        reader = RunShardReader.for_instance(instance)
        assert reader is not None
        try:
            for after in (-1, everything[0].storage_id):
                for limit in (1, 1000):
                    from_index = run_status_records(
                        instance, after_storage_id=after, limit=limit, shards=reader
                    )
                    public = run_status_records(instance, after_storage_id=after, limit=limit)
                    assert from_index == public
            assert (
                run_status_records(
                    instance, after_storage_id=everything[-1].storage_id, limit=5, shards=reader
                )
                == []
            )
        finally:
            reader.close()


@dg.asset
def broken() -> None:
    raise ValueError("boom")


@dg.asset(deps=[numbers])
def observing(context: dg.AssetExecutionContext) -> None:
    context.log_event(dg.AssetObservation(asset_key="numbers", metadata={"dagster/row_count": 3}))


def test_rows_decoded_from_the_shards_equal_the_deserialized_records(tmp_path: Path) -> None:
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        runs = [dg.materialize([numbers, doubled], instance=instance).run_id]
        failed = dg.materialize([broken], instance=instance, raise_on_error=False)
        assert not failed.success
        runs.append(failed.run_id)
        runs.append(dg.materialize([observing], instance=instance, selection=[observing]).run_id)
        reader = RunShardReader.for_instance(instance)
        assert reader is not None
        try:
            kinds: set[dg.DagsterEventType | None] = set()
            for run_id in runs:
                public = instance.get_records_for_run(run_id, of_type=set(RUN_EVENT_TYPES), limit=100)
                page = reader.rows_for_run(run_id, None, RUN_EVENT_TYPES, 100)
                assert page is not None
                rows, cursor, has_more = page
                assert rows == [EventLogRow.of(record) for record in public.records]
                assert (cursor, has_more) == (public.cursor, public.has_more)
                kinds |= {row.event_type for row in rows}
            assert kinds == set(RUN_EVENT_TYPES)  # every kind the sensor reads was compared
        finally:
            reader.close()


def test_a_row_of_another_event_type_is_read_by_dagsters_deserializer(tmp_path: Path) -> None:
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        run_id = dg.materialize([numbers], instance=instance).run_id
        records = instance.get_records_for_run(run_id, limit=1000).records
        serialized = [(r.storage_id, dg.serialize_value(r.event_log_entry)) for r in records]
        only_starts = decode_event_rows(serialized, {dg.DagsterEventType.STEP_START})
        assert only_starts == [EventLogRow.of(record) for record in records]


def test_a_row_dagster_cannot_read_raises_as_dagster_does() -> None:
    unknown = '{"__class__": "EventLogEntry", "dagster_event": {"__class__": "NoSuchClass"}}'
    with pytest.raises(Exception, match="NoSuchClass"):
        decode_event_rows([(1, unknown)], RUN_EVENT_TYPES)
