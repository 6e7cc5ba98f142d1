"""The transfer monitor: a ``transfer_ledger`` asset (cost per route) and asset checks over the ledger.

Correctness rules:

- ``transfers_on_declared_routes`` (severity ERROR) fails when any recorded transfer of confidential or
  restricted data (or of an unknown classification, which counts as restricted) crossed jurisdictions
  without a route of the *current* policy covering it; the offending records are attached as evidence.
- ``transfer_volume_normal`` (severity WARN) fails when a transfer within ``lookback_hours`` moved more
  than ``median + k * MAD`` of its route's earlier transfers (a robust statistic: one earlier outlier does
  not hide the next); route, record, volume, median, MAD and threshold are attached.
- ``transfer_integrity`` (severity ERROR) fails when any ``transfer.mismatch`` record exists: a commit
  whose staged rows did not hash to what was handed over (the commit itself was abandoned).
- Evidence holds record numbers, routes, tables, counts and hashes - never row values.

Example:
    .. code-block:: python

        import dagster as dg
        from hybrid_dagster.assets.transfer_monitor import transfer_monitor

        ledger, *checks = transfer_monitor()
        defs = dg.Definitions(assets=[ledger], asset_checks=checks,
                              resources={"audit_log": AuditLogResource(), "residency_policy": policy})
"""

import datetime as dt
from collections.abc import Iterable
from typing import Any

import dagster as dg

from hybrid_dagster.audit.log import AuditRecord
from hybrid_dagster.audit.transfers import MISMATCH_KIND, TRANSFER_KIND, cost_by_route, volume_anomalies
from hybrid_dagster.residency import Classification, Jurisdiction, ResidencyPolicy
from hybrid_dagster.resources.audit import AuditLogResource, evidence_tags

LEDGER_ASSET_KEY = dg.AssetKey("transfer_ledger")


def transfers_without_route(records: Iterable[AuditRecord], policy: ResidencyPolicy) -> list[dict[str, Any]]:
    """Transfer records of regulated data across jurisdictions that no route of ``policy`` covers.

    Example:
        >>> transfers_without_route(ledger.transfers(), ResidencyPolicy())
        [{'seq': 4, 'route': 'EU->US', 'classification': 'restricted', ...}]
    """
    found = []
    for record in records:
        d = record.details
        try:
            source = Jurisdiction.parse(str(d.get("source_jurisdiction")))
            target = Jurisdiction.parse(str(d.get("target_jurisdiction")))
        except ValueError:
            source, target = None, None
        try:
            classification = Classification.parse(str(d.get("classification")))
        except ValueError:
            classification = Classification.RESTRICTED  # unknown counts as restricted
        if (
            source is not None
            and target is not None
            and policy.transfer_allowed(source, target, classification)
        ):
            continue
        found.append(
            {
                "seq": record.seq,
                "time": record.time,
                "route": d.get("route"),
                "classification": d.get("classification"),
                "legal_basis_recorded": d.get("legal_basis"),
                "source": f"{d.get('source_plane')}:{d.get('source_table')}",
                "target": f"{d.get('target_plane')}:{d.get('target_table')}",
                "rows": d.get("rows"),
                "run_id": record.run_id,
            }
        )
    return found


def _routes_markdown(report: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| Route | Transfers | Rows | Bytes | Egress cost (USD) | Legal bases |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for route, r in report.items():
        cost = "n/a" if r["cost_usd"] is None else f"{r['cost_usd']:.6f}"
        lines.append(
            f"| {route} | {r['transfers']} | {r['rows']} | {r['bytes']} | {cost} "
            f"| {'; '.join(r['legal_bases'])} |"
        )
    return "\n".join(lines) if report else "No cross-plane transfers recorded."


def transfer_monitor(
    key: dg.AssetKey = LEDGER_ASSET_KEY,
    *,
    resource_key: str = "audit_log",
    policy_key: str = "residency_policy",
    k: float = 5.0,
    min_history: int = 5,
    lookback_hours: float = 24.0,
    group_name: str = "evidence",
    plane: str | None = None,
) -> list[dg.AssetsDefinition | dg.AssetChecksDefinition]:
    """The ``transfer_ledger`` asset and its three checks (see the module docstring).

    Example:
        >>> ledger, routes_check, volume_check, integrity_check = transfer_monitor(k=4.0)
    """

    @dg.asset(
        key=key,
        group_name=group_name,
        kinds={"sql"},
        required_resource_keys={resource_key},
        tags=evidence_tags(plane),
        description="Cross-plane transfers from the audit log: volume and egress cost per route.",
    )
    def _ledger(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        log = getattr(context.resources, resource_key).get_log()
        report = cost_by_route(r.details for r in log.records(kind=TRANSFER_KIND))
        return dg.MaterializeResult(
            metadata={
                "hybrid/routes": dg.MetadataValue.md(_routes_markdown(report)),
                "hybrid/cost_by_route": dg.MetadataValue.json(report),
                "hybrid/transfers": dg.MetadataValue.int(sum(r["transfers"] for r in report.values())),
                "hybrid/egress_usd": dg.MetadataValue.float(
                    float(sum(r["cost_usd"] or 0.0 for r in report.values()))
                ),
            }
        )

    @dg.asset_check(
        asset=key,
        name="transfers_on_declared_routes",
        required_resource_keys={resource_key, policy_key},
        description="Every recorded transfer of regulated data across jurisdictions had a declared route.",
    )
    def _routes(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        audit: AuditLogResource = getattr(context.resources, resource_key)
        policy: ResidencyPolicy = getattr(context.resources, policy_key)
        offending = transfers_without_route(audit.get_log().records(kind=TRANSFER_KIND), policy)
        return dg.AssetCheckResult(
            passed=not offending,
            severity=dg.AssetCheckSeverity.ERROR,
            description=f"{len(offending)} transfers without a declared route" if offending else None,
            metadata={"hybrid/violations": dg.MetadataValue.json(offending), "hybrid/count": len(offending)},
        )

    @dg.asset_check(
        asset=key,
        name="transfer_volume_normal",
        required_resource_keys={resource_key},
        description=f"No recent transfer above median + {k:g} x MAD of its route's history.",
    )
    def _volume(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        log = getattr(context.resources, resource_key).get_log()
        since = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=lookback_hours)).isoformat()
        records = list(log.records(kind=TRANSFER_KIND))
        times = {r.seq: r.time for r in records}
        recent = [
            a.to_json() | {"time": times[a.seq]}
            for a in volume_anomalies(records, k=k, min_history=min_history)
            if times[a.seq] >= since
        ]
        return dg.AssetCheckResult(
            passed=not recent,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"{len(recent)} transfers with anomalous volume" if recent else None,
            metadata={
                "hybrid/anomalies": dg.MetadataValue.json(recent),
                "hybrid/k": float(k),
                "hybrid/lookback_hours": float(lookback_hours),
            },
        )

    @dg.asset_check(
        asset=key,
        name="transfer_integrity",
        required_resource_keys={resource_key},
        description="No commit was abandoned because its staged rows did not hash to what was handed over.",
    )
    def _integrity(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        log = getattr(context.resources, resource_key).get_log()
        mismatches = [
            {
                "seq": r.seq,
                "time": r.time,
                "run_id": r.run_id,
                **{k: r.details.get(k) for k in _MISMATCH_KEYS},
            }
            for r in log.records(kind=MISMATCH_KIND)
        ]
        return dg.AssetCheckResult(
            passed=not mismatches,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"hybrid/mismatches": dg.MetadataValue.json(mismatches)},
        )

    return [_ledger, _routes, _volume, _integrity]


_MISMATCH_KEYS = (
    "route",
    "source_plane",
    "source_table",
    "target_plane",
    "target_table",
    "source_sha256",
    "target_sha256",
    "table",
    "plane",
)
