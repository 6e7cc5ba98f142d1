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
from pathlib import Path


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

    from examples.clinical_ai.database import start_clinical_database

    started = time.monotonic()
    print(f"[1/4] embedded PostgreSQL with wal_level=logical in {home / 'postgres'}")
    db = start_clinical_database(home, patients=args.patients)

    import dagster as dg

    from examples.clinical_ai.definitions import defs
    from hybrid_dagster.validation import validate_definitions

    report = validate_definitions(defs)
    print(f"[2/4] residency check: {report.summary()}")

    instance = dg.DagsterInstance.get()
    job = defs.resolve_implicit_global_asset_job_def()
    print("[3/4] materializing every asset (CDC snapshot + stream, features, aggregates, benchmark)")
    first = job.execute_in_process(instance=instance)
    if not first.success:
        print("materialization failed; see the Dagster UI (make ui) for the run's logs", file=sys.stderr)
        return 1

    workload = db.run_workload(transactions=args.transactions)
    print(
        f"[4/4] workload: {workload.transactions} transactions ({workload.inserts} inserts, "
        f"{workload.updates} updates, {workload.deletes} deletes, {workload.key_changes} key changes); "
        "streaming the changes"
    )
    cdc_job = dg.define_asset_job("eu_clinical_cdc", selection=dg.AssetSelection.groups("eu_clinical"))
    second = (
        dg.Definitions(assets=defs.assets, resources=defs.resources, jobs=[cdc_job])
        .resolve_job_def("eu_clinical_cdc")
        .execute_in_process(instance=instance)
    )
    if not second.success:
        return 1

    _print_summary(instance, [first, second], home, time.monotonic() - started)
    db.server.stop()
    return 0


def _print_summary(instance, results, home: Path, elapsed: float) -> None:  # type: ignore[no-untyped-def]
    import dagster as dg

    print("\nasset                               plane       class         rows  detail")
    seen: dict[str, str] = {}
    for result in results:
        for event in result.get_asset_materialization_events():
            mat = event.asset_materialization
            md = mat.metadata
            rows = md.get("dagster/row_count")
            detail = ""
            if "events_received" in md:
                detail = (
                    f"+{md['events_inserted'].value} ~{md['events_updated'].value} -{md['events_deleted'].value}"
                    f" (snapshot {md['snapshot_rows'].value}), watermark {md['hybrid/watermark'].value}"
                )
            seen[mat.asset_key.to_user_string()] = f"{rows.value if rows else '-':>8}  {detail}"
    for key, line in sorted(seen.items()):
        spec = _spec(key)
        print(f"{key:<35} {spec[0]:<11} {spec[1]:<12} {line}")
    checks = [
        e.asset_check_evaluation_data
        for r in results
        for e in r.all_events
        if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
    ]
    passed = sum(1 for c in checks if c.passed)
    print(f"\nasset checks: {passed}/{len(checks)} passed; finished in {elapsed:.1f}s")
    print(f"warehouses: {home / 'planes'}   Dagster home: {home / 'dagster'}")
    print("next: `make ui` opens the Dagster UI on these runs (filter by tag hybrid/plane or hybrid/classification);")
    print("      `make validate` runs the residency check; `make test` runs the test suite.")


def _spec(key: str) -> tuple[str, str]:
    from examples.clinical_ai.definitions import defs

    graph = defs.resolve_asset_graph()
    node = graph.get(dg_key(key))
    return node.tags.get("hybrid/plane", "?"), node.tags.get("hybrid/classification", "?")


def dg_key(key: str):  # type: ignore[no-untyped-def]
    import dagster as dg

    return dg.AssetKey.from_user_string(key)


if __name__ == "__main__":
    raise SystemExit(main())
