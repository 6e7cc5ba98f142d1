"""A small pinned asset graph, materialized for real, and helpers to run the OpenLineage sensor on it."""

import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa

from hybrid_dagster import pinned
from hybrid_dagster.resources import DataPlane
from hybrid_dagster.resources.iceberg_io_manager import PlaneIcebergIOManager

SECRET = "Alice Example"
"""A row value of the regulated table; it must never show up in a lineage event."""

CDC_SOURCE = "postgres://db.eu.internal:5432/hospital/public/admissions#slot_eu"


@dg.asset(
    key=["clinical", "admissions"],
    owners=["team:clinical-data"],
    **pinned("eu-onprem", "restricted", kinds={"iceberg", "pyarrow"}),
)
def admissions(context: dg.AssetExecutionContext) -> pa.Table:
    context.add_output_metadata({"hybrid/source": CDC_SOURCE})
    return pa.table({"patient_id": [1, 2, 3], "name": [SECRET, "B", "C"], "ward": ["A", "B", "A"]})


@dg.asset(
    key=["clinical", "ward_counts"],
    owners=["team:clinical-data", "ward-lead@hospital.example"],
    check_specs=[dg.AssetCheckSpec("not_empty", asset=["clinical", "ward_counts"])],
    **pinned("eu-onprem", "internal", kinds={"iceberg"}, declassified="counts per ward, k >= 1 in tests"),
)
def ward_counts(context: dg.AssetExecutionContext, admissions: pa.Table) -> Iterator[Any]:
    counts = admissions.group_by("ward").aggregate([("patient_id", "count")])
    lineage = {
        "dagster/column_lineage": dg.TableColumnLineage(
            deps_by_column={
                "ward": [dg.TableColumnDep(asset_key=admissions_key(), column_name="ward")],
                "patient_id_count": [dg.TableColumnDep(asset_key=admissions_key(), column_name="patient_id")],
            }
        )
    }
    context.log_event(
        dg.AssetObservation(
            asset_key="ward_registry", metadata={"dagster/uri": "s3://eu-registry/exports/wards.csv"}
        )
    )
    yield dg.Output(counts, metadata=lineage)
    yield dg.AssetCheckResult(check_name="not_empty", passed=counts.num_rows > 0)


@dg.asset_check(asset=ward_counts, name="has_rows")
def has_rows() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN)


@dg.asset(key=["clinical", "broken"], **pinned("eu-onprem", "restricted"))
def broken() -> pa.Table:
    raise ValueError(f"bad row for patient {SECRET}")


def admissions_key() -> dg.AssetKey:
    return dg.AssetKey(["clinical", "admissions"])


ASSETS = [admissions, ward_counts, broken]


def resources(plane: DataPlane) -> dict[str, Any]:
    return {"io_manager": PlaneIcebergIOManager(planes=[plane], regulated_rows_in_step_process=True)}


def materialize_clinical(instance: dg.DagsterInstance, plane: DataPlane, *, runs: int = 1) -> None:
    """``runs`` successful runs of admissions -> ward_counts (+ checks), then one failing run."""
    for _ in range(runs):
        dg.materialize(
            [admissions, ward_counts, has_rows],
            instance=instance,
            resources=resources(plane),
            raise_on_error=False,
        )
    dg.materialize([broken], instance=instance, resources=resources(plane), raise_on_error=False)


def definitions(plane: DataPlane, sensor: dg.SensorDefinition) -> dg.Definitions:
    return dg.Definitions(
        assets=ASSETS, asset_checks=[has_rows], sensors=[sensor], resources=resources(plane)
    )


@dataclass
class Tick:
    cursor: str | None
    skip: str
    raised: BaseException | None = None


def tick(
    sensor: dg.SensorDefinition, instance: dg.DagsterInstance, defs: dg.Definitions, cursor: str | None
) -> Tick:
    """One evaluation, the way the daemon does it: the stored cursor changes only if the tick returns."""
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
    try:
        result = sensor(context)
    except Exception as err:
        return Tick(cursor, "", err)
    assert isinstance(result, dg.SensorResult)
    assert result.skip_reason is not None
    return Tick(result.cursor or cursor, result.skip_reason.skip_message or "")


def drain(
    sensor: dg.SensorDefinition,
    instance: dg.DagsterInstance,
    defs: dg.Definitions,
    cursor: str | None = None,
    max_ticks: int = 200,
) -> tuple[str | None, list[Tick]]:
    ticks: list[Tick] = []
    for _ in range(max_ticks):
        done = tick(sensor, instance, defs, cursor)
        ticks.append(done)
        if done.raised is not None:
            raise done.raised
        cursor = done.cursor
        if done.skip.startswith("No new Dagster events"):
            return cursor, ticks
    raise AssertionError("the sensor did not catch up")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def identity(event: dict[str, Any]) -> tuple[str, str, str, str]:
    return (event["run"]["runId"], event["eventType"], event["eventTime"], event["job"]["name"])


@dataclass(frozen=True)
class LineageContent:
    """What a consumer learns from a stream of events, whatever records a tick folded into one RUNNING
    event: the other events in order, and per run the datasets read (a set: one fold lists an upstream
    once), the datasets written and the assertions made (multisets: a duplicate shows)."""

    lifecycle: list[tuple[str, str, str, str]]
    inputs: set[tuple[str, str, str]]
    outputs: Counter[tuple[str, str, str]]
    assertions: Counter[tuple[str, str, str, str, bool]]


def lineage_content(events: list[dict[str, Any]]) -> LineageContent:
    content = LineageContent([], set(), Counter(), Counter())
    for event in events:
        run = event["run"]["runId"]
        if event["eventType"] != "RUNNING":
            content.lifecycle.append(identity(event))
        for dataset in event.get("inputs") or ():
            content.inputs.add((run, dataset["namespace"], dataset["name"]))
            facets = (dataset.get("inputFacets") or {}).get("dataQualityAssertions") or {}
            for assertion in facets.get("assertions", []):
                name = (run, dataset["namespace"], dataset["name"])
                content.assertions[(*name, assertion["assertion"], assertion["success"])] += 1
        for dataset in event.get("outputs") or ():
            content.outputs[(run, dataset["namespace"], dataset["name"])] += 1
    return content


@dataclass
class Receiver:
    """An OpenLineage HTTP endpoint on loopback; ``fail(n)`` decides whether request ``n`` gets a 503."""

    fail: Callable[[int], bool] = lambda n: False
    accepted: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0
    url: str = ""


@contextmanager
def http_receiver(fail: Callable[[int], bool] = lambda n: False) -> Iterator[Receiver]:
    receiver = Receiver(fail=fail)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                number = receiver.requests
                receiver.requests += 1
                refused = receiver.fail(number) or self.path != "/api/v1/lineage"
                if not refused:
                    receiver.accepted.append(json.loads(body))
            self.send_response(503 if refused else 201)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def http_transport(url: str) -> dict[str, Any]:
    """openlineage-python's http transport without its own urllib3 retries (the sensor retries)."""
    return {"type": "http", "url": url, "timeout": 5, "retry": {"total": 0, "read": 0, "connect": 0}}


def local_instance(home: Path) -> dg.DagsterInstance:
    """A Dagster instance on the default storage (run-sharded SQLite) in ``home``, as `dagster dev` makes."""
    home.mkdir(parents=True, exist_ok=True)
    return dg.DagsterInstance.local_temp(str(home))
