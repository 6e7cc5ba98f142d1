"""The demo's `summary.json`: what the demo's runs did, read back from the Dagster instance.

Correctness rules:

* Every value is computed from what ran: per-asset rows, CDC counts and check results come from the
  instance's event log (materializations and check evaluations of the runs this demo created), run
  durations from the instance's run records; plane and classification from the asset tags of the
  definitions that ran, jurisdiction from the DataPlane resource the tag names. Nothing is hard-coded.
* Only metadata is written: counts, positions, names, timings — never a row value.
* ``version`` is the schema version of this file (an integer). Bump it when a key changes meaning or
  goes away; adding a key or a section keeps it. The keys are documented in ``docs/summary.md``.
* The printed table is rendered from the summary itself, so the table and the file cannot disagree.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg

SUMMARY_VERSION = 1
PLANE_TAG = "hybrid/plane"
CLASSIFICATION_TAG = "hybrid/classification"


@dataclass
class _AssetTally:
    rows: int | None = None
    materializations: int = 0
    cdc: dict[str, Any] | None = None
    checks_passed: int = 0
    checks_failed: int = 0
    runs: list[str] = field(default_factory=list)


def demo_run_ids(instance: dg.DagsterInstance, started_at: datetime) -> list[str]:
    """The runs created in ``instance`` since ``started_at``, oldest first."""
    records = instance.get_run_records(filters=dg.RunsFilter(created_after=started_at), ascending=True)
    return [record.dagster_run.run_id for record in records]


def _metadata_value(metadata: Mapping[str, Any], key: str) -> Any:
    entry = metadata.get(key)
    return getattr(entry, "value", entry)


def _tally(instance: dg.DagsterInstance, run_ids: Iterable[str]) -> dict[str, _AssetTally]:
    tallies: dict[str, _AssetTally] = {}
    wanted = {dg.DagsterEventType.ASSET_MATERIALIZATION, dg.DagsterEventType.ASSET_CHECK_EVALUATION}
    for run_id in run_ids:
        for record in instance.all_logs(run_id, of_type=wanted):
            if (mat := record.asset_materialization) is not None:
                tally = tallies.setdefault(mat.asset_key.to_user_string(), _AssetTally())
                tally.materializations += 1
                if run_id not in tally.runs:
                    tally.runs.append(run_id)
                md = mat.metadata
                if (rows := _metadata_value(md, "dagster/row_count")) is not None:
                    tally.rows = int(rows)
                if "events_received" in md:
                    cdc = tally.cdc or {"snapshot_rows": 0, "inserted": 0, "updated": 0, "deleted": 0}
                    cdc["snapshot_rows"] += int(_metadata_value(md, "snapshot_rows") or 0)
                    cdc["inserted"] += int(_metadata_value(md, "events_inserted") or 0)
                    cdc["updated"] += int(_metadata_value(md, "events_updated") or 0)
                    cdc["deleted"] += int(_metadata_value(md, "events_deleted") or 0)
                    watermark = _metadata_value(md, "hybrid/watermark")
                    cdc["watermark"] = None if watermark is None else str(watermark)
                    tally.cdc = cdc
            elif (evaluation := record.asset_check_evaluation) is not None:
                tally = tallies.setdefault(evaluation.asset_key.to_user_string(), _AssetTally())
                if evaluation.passed:
                    tally.checks_passed += 1
                else:
                    tally.checks_failed += 1
    return tallies


def _what_happened(tally: _AssetTally) -> str:
    if tally.cdc is not None:
        c = tally.cdc
        return (
            f"snapshot {c['snapshot_rows']}, then +{c['inserted']} ~{c['updated']} -{c['deleted']} "
            f"(watermark {c['watermark']})"
        )
    if tally.materializations:
        runs = len(tally.runs)
        return f"materialized {tally.materializations}x in {runs} run{'s' if runs != 1 else ''}"
    return "checked only"


def _runs(instance: dg.DagsterInstance, run_ids: list[str]) -> list[dict[str, Any]]:
    records = instance.get_run_records(filters=dg.RunsFilter(run_ids=run_ids), ascending=True)
    runs = []
    for record in records:
        start, end = record.start_time, record.end_time
        runs.append(
            {
                "run_id": record.dagster_run.run_id,
                "job": record.dagster_run.job_name,
                "status": record.dagster_run.status.value,
                "elapsed_s": round(end - start, 3) if start is not None and end is not None else None,
            }
        )
    return runs


def build_summary(
    instance: dg.DagsterInstance,
    defs: dg.Definitions,
    run_ids: list[str],
    *,
    elapsed_s: float,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``summary.json`` document (schema ``SUMMARY_VERSION``) for the runs ``run_ids``.

    ``extra`` holds further top-level sections the caller measured itself (e.g. ``workload``).

    Example:
        .. code-block:: python

            summary = build_summary(dg.DagsterInstance.get(), defs, run_ids, elapsed_s=42.0)
            assert summary["checks"]["failed"] == 0
    """
    graph = defs.resolve_asset_graph()
    planes = {
        getattr(resource, "name", None): getattr(resource, "jurisdiction", None)
        for resource in (defs.resources or {}).values()
    }
    assets: dict[str, dict[str, Any]] = {}
    for key, tally in sorted(_tally(instance, run_ids).items()):
        asset_key = dg.AssetKey.from_user_string(key)
        tags = graph.get(asset_key).tags if graph.has(asset_key) else {}
        plane = tags.get(PLANE_TAG)
        assets[key] = {
            "plane": plane,
            "jurisdiction": planes.get(plane),
            "classification": tags.get(CLASSIFICATION_TAG),
            "rows": tally.rows,
            "materializations": tally.materializations,
            "what_happened": _what_happened(tally),
            "cdc": tally.cdc,
            "checks": {"passed": tally.checks_passed, "failed": tally.checks_failed},
        }
    summary: dict[str, Any] = {
        "version": SUMMARY_VERSION,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "assets": assets,
        "checks": {
            "passed": sum(a["checks"]["passed"] for a in assets.values()),
            "failed": sum(a["checks"]["failed"] for a in assets.values()),
        },
        "runs": _runs(instance, run_ids),
        "elapsed_s": round(elapsed_s, 1),
    }
    for section, value in (extra or {}).items():
        if section in summary:
            raise ValueError(f"summary.json section {section!r} is set twice: each section has one author")
        summary[section] = value
    return summary


def summary_table(summary: Mapping[str, Any]) -> list[str]:
    """The printed table, rendered from ``summary`` (so the two cannot disagree)."""
    lines = [f"{'asset':<35} {'plane':<11} {'jur.':<5} {'class':<12} {'rows':>8}  what happened"]
    for key, asset in summary["assets"].items():
        rows = "-" if asset["rows"] is None else str(asset["rows"])
        lines.append(
            f"{key:<35} {asset['plane'] or '?':<11} {asset['jurisdiction'] or '?':<5} "
            f"{asset['classification'] or '?':<12} {rows:>8}  {asset['what_happened']}"
        )
    checks = summary["checks"]
    total = checks["passed"] + checks["failed"]
    lines.append("")
    lines.append(f"asset checks: {checks['passed']}/{total} passed; finished in {summary['elapsed_s']:.1f}s")
    return lines


def write_summary(summary: Mapping[str, Any], path: Path) -> None:
    """Write ``summary`` as indented JSON, atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
