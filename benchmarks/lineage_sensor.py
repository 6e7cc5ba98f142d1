"""OpenLineage emission from Dagster's event log, side by side: our sensor vs dagster-openlineage 0.2.1.

Prints ONE JSON object on stdout (progress on stderr)::

    python -m benchmarks.lineage_sensor              # 10,000 event records, file transport
    python benchmarks/lineage_sensor.py --records 2000 --skip-baseline

The event log is Dagster's default storage (run-sharded SQLite): ``--real-runs`` runs of a multi-asset
that materializes ``--assets-per-run`` pinned Iceberg-named assets, each with an asset check (run
start/end, step start/end, materializations, check evaluations), then replicated at the storage level
into more runs until it holds ``--records`` lineage records (see ``replicate_run``). Both
sensors then read the same event log from an empty cursor, tick after tick, until caught up, through
openlineage-python's file transport.

Figures: ``records_per_s`` (Dagster event records handled per second of sensor ticks, wall clock, the
sensor as shipped: events serialized and sent by its emitter process), ``records_per_cpu_s`` (per second
of CPU time: this process's in the ticks plus the emitter process's; steadier on a shared machine, where
the wall clock also counts the time other processes hold the cores), ``in_process_records_per_s`` and
``in_process_records_per_cpu_s`` (the same sensor with ``separate_process=False``, side by side), ``events``
(OpenLineage events written), ``ticks``; ``baseline_records_per_s`` for dagster-openlineage 0.2.1 at its
default batch on the same event log, or ``null`` with ``baseline_reason`` when it cannot run. It runs
in a subprocess of this Python with ``--baseline-path`` (default ``.work/baseline-lib``) in front of
``sys.path``, so it sits beside the same dagster; install it there with
``pip install --no-deps --target .work/baseline-lib dagster-openlineage==0.2.1 cattrs``.

dagster-openlineage 0.2.1 raises at its first tick on the default storage, so the same records are also
written to a consolidated SQLite event log (one database, which it can read) and both sensors read that
one too: ``consolidated`` holds ``records_per_s`` of ours and ``baseline_records_per_s`` of
dagster-openlineage there (its records are the OpenLineage events it wrote, one per record it handled).
``--skip-consolidated`` leaves that part out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dagster as dg

from hybrid_dagster.pinning import pinned
from hybrid_dagster.resources import DataPlane
from hybrid_dagster.sensors import openlineage_sensor

REPO = Path(__file__).resolve().parent.parent
BASELINE_PATH = REPO / ".work" / "baseline-lib"
RECORDS_PER_RUN_OVERHEAD = 4  # run start, step start, step success, run success
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def clinical_batch(assets_per_run: int) -> dg.AssetsDefinition:
    """A multi-asset of ``assets_per_run`` pinned tables, each materialized with metadata and a check."""
    keys = [dg.AssetKey(["bench", f"table_{i:04d}"]) for i in range(assets_per_run)]
    specs = [
        dg.AssetSpec(
            key,
            deps=[keys[i - 1]] if i else [],
            owners=["team:bench"],
            **pinned(
                "eu-onprem",
                "restricted",
                kinds={"iceberg"},
                metadata={"dagster/table_name": f"eu-onprem.bench.table_{i:04d}"},
            ),
        )
        for i, key in enumerate(keys)
    ]
    schema = dg.TableSchema(columns=[dg.TableColumn("id", "long"), dg.TableColumn("ward", "string")])

    @dg.multi_asset(specs=specs, check_specs=[dg.AssetCheckSpec("rows", asset=k) for k in keys])
    def bench_tables() -> Iterator[Any]:
        for i, key in enumerate(keys):
            yield dg.MaterializeResult(
                asset_key=key,
                metadata={
                    "dagster/table_name": f"eu-onprem.bench.table_{i:04d}",
                    "dagster/row_count": 1000 + i,
                    "dagster/column_schema": schema,
                },
                check_results=[dg.AssetCheckResult(asset_key=key, check_name="rows", passed=True)],
            )

    return bench_tables


MIRRORED = frozenset(
    {
        dg.DagsterEventType.RUN_ENQUEUED,
        dg.DagsterEventType.RUN_STARTING,
        dg.DagsterEventType.RUN_START,
        dg.DagsterEventType.RUN_SUCCESS,
        dg.DagsterEventType.RUN_FAILURE,
        dg.DagsterEventType.RUN_CANCELING,
        dg.DagsterEventType.RUN_CANCELED,
        dg.DagsterEventType.ASSET_MATERIALIZATION,
        dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
        dg.DagsterEventType.ASSET_OBSERVATION,
        dg.DagsterEventType.ASSET_CHECK_EVALUATION,
        dg.DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED,
    }
)
"""Event types the run-sharded SQLite storage copies into its cross-run index shard."""


def replicate_run(instance: dg.DagsterInstance, run_id: str, copies: int) -> None:
    """``copies`` more runs with the events of ``run_id``, written as the SQLite storage writes them.

    Writing thousands of events through ``dg.materialize`` costs tens of milliseconds each on a loaded
    machine (a new SQLite connection per event), so the log is seeded by real runs and then replicated:
    each copy gets a new run id, a run record and timestamps after the previous copy; its events go into
    its own run shard and the run-status, asset and check events also into the index shard, in one
    batch each (on a consolidated storage, into its one database). The sensors read the result only
    through Dagster's public API.
    """
    storage: Any = instance.event_log_storage
    kind = type(storage).__name__
    assert kind in ("SqliteEventLogStorage", "ConsolidatedSqliteEventLogStorage"), kind
    sharded = kind == "SqliteEventLogStorage"
    template = instance.get_run_by_id(run_id)
    assert template is not None
    entries = [record.event_log_entry for record in instance.get_records_for_run(run_id).records]
    span = entries[-1].timestamp - entries[0].timestamp + 1.0
    for k in range(1, copies + 1):
        new_id = str(uuid.uuid4())
        instance.add_run(template._replace(run_id=new_id))
        batch = [entry._replace(run_id=new_id, timestamp=entry.timestamp + k * span) for entry in entries]
        with storage.run_connection(new_id) as conn:
            conn.execute(storage.prepare_insert_event_batch(batch))
        if sharded is False:
            continue  # one database: the run's rows are the index
        mirrored = [entry for entry in batch if entry.dagster_event_type in MIRRORED]
        with storage.index_connection() as conn:
            conn.execute(storage.prepare_insert_event_batch(mirrored))


CONSOLIDATED_YAML = """event_log_storage:
  module: dagster._core.storage.event_log
  class: ConsolidatedSqliteEventLogStorage
  config:
    base_dir: {base_dir}
"""
"""``dagster.yaml`` of a home whose event log is one SQLite database (what dagster-openlineage can read)."""


def write_event_log(
    home: Path, records: int, assets_per_run: int, real_runs: int, *, consolidated: bool = False
) -> tuple[dg.Definitions, DataPlane, int]:
    """Runs in ``home`` until the log holds at least ``records`` lineage records: on the default storage,
    or with ``consolidated`` on one SQLite database."""
    if consolidated:
        (home / "dagster.yaml").write_text(CONSOLIDATED_YAML.format(base_dir=home / "history"), "utf-8")
    plane = DataPlane(
        name="eu-onprem",
        jurisdiction="EU",
        region="eu",
        location="on_prem",
        warehouse=f"file://{home}/warehouse",
    )
    assets = clinical_batch(assets_per_run)
    per_run = 2 * assets_per_run + RECORDS_PER_RUN_OVERHEAD
    runs = max(real_runs, -(-records // per_run))
    instance = dg.DagsterInstance.local_temp(str(home))
    started = time.perf_counter()
    last = ""
    for n in range(real_runs):
        last = dg.materialize([assets], instance=instance, run_config=QUIET).run_id
        _log(f"real run {n + 1}/{real_runs} written ({time.perf_counter() - started:.0f}s)")
    replicate_run(instance, last, runs - real_runs)
    _log(f"{runs - real_runs} runs replicated ({time.perf_counter() - started:.0f}s)")
    instance.dispose()
    return dg.Definitions(assets=[assets]), plane, runs * per_run


def _emitter_cpu_s() -> float:
    """CPU seconds of this process's lineage emitter children so far (Linux /proc; 0 elsewhere)."""
    total = 0.0
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
            if int(stat[stat.rindex(")") + 2 :].split()[1]) != os.getpid():
                continue
            if "lineage_wire" not in (entry / "cmdline").read_text():
                continue
        except (OSError, ValueError):
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def measure_ours(
    home: Path, defs: dg.Definitions, plane: DataPlane, batch_size: int, *, separate_process: bool = True
) -> dict[str, Any]:
    out = home / ("ours.jsonl" if separate_process else "ours-in-process.jsonl")
    sensor = openlineage_sensor(
        planes=[plane],
        transport={"type": "file", "log_file_path": str(out), "append": True},
        batch_size=batch_size,
        separate_process=separate_process,
    )
    defs = dg.Definitions(assets=defs.assets, sensors=[sensor])
    instance = dg.DagsterInstance.local_temp(str(home))
    repository = defs.get_repository_def()
    cursor: str | None = None
    ticks = records = 0
    elapsed = cpu = 0.0
    while True:
        context = dg.build_sensor_context(instance=instance, cursor=cursor, repository_def=repository)
        started, cpu_started = time.perf_counter(), time.process_time()
        result = sensor(context)
        elapsed += time.perf_counter() - started
        cpu += time.process_time() - cpu_started
        assert isinstance(result, dg.SensorResult) and result.skip_reason is not None
        message = result.skip_reason.skip_message or ""
        if message.startswith("No new Dagster events"):
            break
        if not message.startswith("Emitted"):
            raise RuntimeError(message)
        ticks += 1
        records += int(message.split(" Dagster event records")[0].rsplit(" ", 1)[1])
        cursor = result.cursor or cursor
    cpu += _emitter_cpu_s()  # the emitter process's share (it idles between ticks)
    instance.dispose()
    events = sum(1 for _ in out.open(encoding="utf-8"))
    return {
        "records": records,
        "events": events,
        "ticks": ticks,
        "seconds": round(elapsed, 3),
        "cpu_seconds": round(cpu, 3),
    }


BASELINE_SCRIPT = r"""
import json, os, sys, time
import dagster as dg
from dagster_openlineage import openlineage_sensor
home = sys.argv[1]
instance = dg.DagsterInstance.local_temp(home)
sensor = openlineage_sensor()  # its defaults: record_filter_limit=30, pipeline and step events
cursor = None
ticks = 0
elapsed = 0.0
error = None
while ticks < 10_000:
    context = dg.build_sensor_context(instance=instance, cursor=cursor)
    started = time.perf_counter()
    try:
        data = sensor.evaluate_tick(context)
    except Exception as err:
        error = f"{type(err).__name__}: {' '.join(str(err).split())}"
        break
    finally:
        elapsed += time.perf_counter() - started
    ticks += 1
    if data.cursor == cursor or data.cursor is None:
        break
    cursor = data.cursor
print(json.dumps({"ticks": ticks, "seconds": elapsed, "cursor": cursor, "error": error}))
"""


def measure_baseline(home: Path, path: Path) -> dict[str, Any]:
    if not (path / "dagster_openlineage").is_dir():
        return {
            "baseline_records_per_s": None,
            "baseline_reason": (
                f"dagster-openlineage 0.2.1 not installed (no {path / 'dagster_openlineage'}; see --help)"
            ),
        }
    out = home / "baseline.jsonl"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(path), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "OPENLINEAGE__TRANSPORT__TYPE": "file",
        "OPENLINEAGE__TRANSPORT__LOG_FILE_PATH": str(out),
        "OPENLINEAGE__TRANSPORT__APPEND": "true",
    }
    done = subprocess.run(
        [sys.executable, "-c", BASELINE_SCRIPT, str(home)],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        tail = " ".join(done.stderr.strip().splitlines()[-1:])
        return {
            "baseline_records_per_s": None,
            "baseline_reason": f"dagster-openlineage 0.2.1 crashed: {tail}",
        }
    report = json.loads(done.stdout.strip().splitlines()[-1])
    events = sum(1 for _ in out.open(encoding="utf-8")) if out.exists() else 0
    result: dict[str, Any] = {"baseline": {**report, "events": events}}
    if report["error"]:
        result["baseline_records_per_s"] = None
        result["baseline_reason"] = (
            f"dagster-openlineage 0.2.1 fails on Dagster's default storage (run-sharded SQLite) at its first "
            f"tick: {report['error'][:300]}"
        )
    else:
        result["baseline_records_per_s"] = round(events / report["seconds"], 1) if report["seconds"] else None
    return result


def side_by_side_consolidated(home: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Ours and dagster-openlineage 0.2.1 on the same records in one consolidated SQLite event log."""
    home.mkdir(parents=True, exist_ok=True)
    defs, plane, written = write_event_log(
        home, args.records, args.assets_per_run, args.real_runs, consolidated=True
    )
    _log(f"consolidated event log: {written} lineage records in {home}")
    ours = measure_ours(home, defs, plane, args.batch_size)
    result: dict[str, Any] = {
        "storage": "consolidated SQLite",
        "records": ours["records"],
        "events": ours["events"],
        "records_per_s": round(ours["records"] / ours["seconds"], 1),
        "records_per_cpu_s": round(ours["records"] / ours["cpu_seconds"], 1),
    }
    if args.skip_baseline:
        return {**result, "baseline_records_per_s": None, "baseline_reason": "--skip-baseline"}
    return {**result, **measure_baseline(home, args.baseline_path)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--records", type=int, default=10_000, help="Dagster event records to write (default 10000)"
    )
    parser.add_argument(
        "--assets-per-run", type=int, default=20, help="assets materialized per run (default 20)"
    )
    parser.add_argument(
        "--real-runs", type=int, default=2, help="runs executed by Dagster before replication (default 2)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=1000, help="records per tick of our sensor (default 1000)"
    )
    parser.add_argument("--skip-baseline", action="store_true", help="do not run dagster-openlineage 0.2.1")
    parser.add_argument(
        "--skip-consolidated", action="store_true", help="do not repeat both on a consolidated SQLite log"
    )
    parser.add_argument(
        "--baseline-path",
        type=Path,
        default=BASELINE_PATH,
        help=f"folder holding dagster-openlineage 0.2.1 and cattrs (default {BASELINE_PATH})",
    )
    parser.add_argument(
        "--home", type=Path, default=None, help="DAGSTER_HOME to write into (default: a temporary folder)"
    )
    args = parser.parse_args(argv)

    # tmpfs where there is one: SQLite commits there cost no disk flush, for both sensors alike.
    scratch_root = "/dev/shm" if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(prefix="lineage-bench-", dir=scratch_root) as scratch:
        home = args.home or Path(scratch)
        home.mkdir(parents=True, exist_ok=True)
        defs, plane, written = write_event_log(home, args.records, args.assets_per_run, args.real_runs)
        _log(f"event log: {written} lineage records in {home}")
        here = measure_ours(home, defs, plane, args.batch_size, separate_process=False)
        ours = measure_ours(home, defs, plane, args.batch_size)
        result: dict[str, Any] = {
            "benchmark": "lineage_sensor",
            "storage": "default (run-sharded SQLite)",
            "transport": "file",
            "batch_size": args.batch_size,
            "load_avg_1m": round(os.getloadavg()[0], 2),
            **ours,
            "records_per_s": round(ours["records"] / ours["seconds"], 1),
            "records_per_cpu_s": round(ours["records"] / ours["cpu_seconds"], 1),
            "goal_records_per_s": 5000,
            "in_process_records_per_s": round(here["records"] / here["seconds"], 1),
            "in_process_records_per_cpu_s": round(here["records"] / here["cpu_seconds"], 1),
        }
        if args.skip_baseline:
            result.update(baseline_records_per_s=None, baseline_reason="--skip-baseline")
        else:
            result.update(measure_baseline(home, args.baseline_path))
        if not args.skip_consolidated:
            result["consolidated"] = side_by_side_consolidated(Path(scratch) / "consolidated", args)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
