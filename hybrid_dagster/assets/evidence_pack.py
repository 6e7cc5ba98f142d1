"""The evidence pack: what the asset graph, the planes, the policy and the audit log prove, per control.

Correctness rules:

- Everything in the pack is generated from what is actually there - the asset graph (plane and
  classification tags, effective classifications, inputs, owners, declared purposes in asset metadata
  ``hybrid/purpose``), the :class:`DataPlane` resources, the :class:`ResidencyPolicy` and the audit log
  (its verification result, transfers, residency decisions, secret reads, teardowns, DR drills). Nothing
  is asserted that the sources do not show.
- Each control gets a status: ``covered`` (evidence present), ``partial`` (evidence present, gaps
  named) or ``not covered`` (no evidence; the pack says so plainly). A broken audit chain makes every
  control that relies on the log ``partial`` at best.
- The pack holds names, counts, hashes, routes and legal bases - never row values or secrets.

Example:
    .. code-block:: python

        from hybrid_dagster.assets.evidence_pack import build_evidence_pack, render_markdown

        pack = build_evidence_pack(defs, AuditLog())
        print(render_markdown(pack))
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Mapping
from typing import Any

import dagster as dg

from hybrid_dagster.assets.transfer_monitor import transfers_without_route
from hybrid_dagster.audit.log import AuditLog
from hybrid_dagster.audit.transfers import MISMATCH_KIND, TRANSFER_KIND, cost_by_route
from hybrid_dagster.residency import ResidencyPolicy
from hybrid_dagster.resources.audit import EVIDENCE_TAG
from hybrid_dagster.resources.data_plane import DataPlane
from hybrid_dagster.validation import POLICY_RESOURCE_KEY, is_stub_asset, validate_asset_graph

PURPOSE_METADATA_KEY = "hybrid/purpose"
"""Asset metadata key declaring the purpose of processing (GDPR Art. 30(1)(b))."""

COVERED, PARTIAL, NOT_COVERED = "covered", "partial", "not covered"

NOT_COVERED_ALWAYS = [
    "Access to the Dagster UI and API themselves (SSO, roles) - configure and evidence them in your "
    "Dagster deployment (SOC 2 CC6.1-CC6.3).",
    "Art. 30 items the pipeline cannot know: controller and DPO contact details, categories of data "
    "subjects, retention periods, and a description of technical and organisational measures.",
    "Transfer impact assessments and the signed contracts behind each legal basis (Art. 46): the pack "
    "lists the basis declared on each route, not the documents.",
    "HIPAA 164.312(b) covers activity in systems holding ePHI: activity outside hybrid-dagster (database "
    "and cloud-provider logs) must be collected separately.",
    "DORA Art. 11-12 also require backup policies, ICT continuity plans and their governance; the pack "
    "shows drill results only.",
]


def build_evidence_pack(
    defs: dg.Definitions,
    log: AuditLog,
    *,
    checkpoint: tuple[int, str] | None = None,
    generated_at: str | None = None,
) -> dict[str, Any]:
    """The evidence pack as plain JSON (see the module docstring).

    Example:
        >>> pack = build_evidence_pack(defs, AuditLog())
        >>> [c["id"] for c in pack["controls"]][:3]
        ['SOC 2 CC6', 'SOC 2 CC7', 'SOC 2 A1']
    """
    graph = defs.resolve_asset_graph()
    resources: Mapping[str, Any] = dict(defs.resources or {})
    planes = {v.name: v for v in resources.values() if isinstance(v, DataPlane)}
    policy = resources.get(POLICY_RESOURCE_KEY)
    if not isinstance(policy, ResidencyPolicy):
        policy = next((v for v in resources.values() if isinstance(v, ResidencyPolicy)), ResidencyPolicy())
    residency = validate_asset_graph(graph, {p.name: p for p in planes.values()}, policy)

    verify = log.verify(checkpoint=checkpoint)
    kinds: Counter[str] = Counter()
    transfers, mismatches, drills, secret_reads, teardowns, decisions = [], [], [], [], [], Counter[str]()
    for record in log.records():
        kinds[record.kind] += 1
        if record.kind == TRANSFER_KIND:
            transfers.append(record)
        elif record.kind == MISMATCH_KIND:
            mismatches.append(record)
        elif record.kind.startswith("dr."):
            drills.append(record)
        elif record.kind.startswith("secret."):
            secret_reads.append(record)
        elif record.kind.startswith("teardown"):
            teardowns.append(record)
        elif record.kind.startswith("residency."):
            decisions[record.kind] += 1

    processing: list[dict[str, Any]] = []
    for key in graph.toposorted_asset_keys:
        node = graph.get(key)
        if is_stub_asset(node) or node.tags.get(EVIDENCE_TAG) == "true":
            continue
        r = residency.assets.get(key)
        purpose = node.metadata.get(PURPOSE_METADATA_KEY)
        processing.append(
            {
                "asset": key.to_user_string(),
                "plane": r.plane if r else None,
                "jurisdiction": r.jurisdiction if r else None,
                "classification": r.effective.value if r and r.effective else None,
                "purpose": _text(purpose),
                "inputs": sorted(p.to_user_string() for p in node.parent_keys),
                "owners": sorted(node.owners),
                "description": node.description,
            }
        )
    no_purpose = [str(p["asset"]) for p in processing if not p["purpose"]]
    unlawful = transfers_without_route(transfers, policy)
    audit_ok = verify.ok
    audit_json = {
        "url": log.safe_url,
        "ok": verify.ok,
        "count": verify.count,
        "head_hash": verify.head_hash,
        "first_broken_seq": verify.first_broken_seq,
        "reason": verify.reason,
        "checkpoint": {"count": checkpoint[0], "head_hash": checkpoint[1]} if checkpoint else None,
        "records_by_kind": dict(sorted(kinds.items())),
    }
    transfer_rows = [
        {
            "seq": t.seq,
            "time": t.time,
            "route": t.details.get("route"),
            "legal_basis": t.details.get("legal_basis"),
            "classification": t.details.get("classification"),
            "source": f"{t.details.get('source_plane')}:{t.details.get('source_table')}",
            "target": f"{t.details.get('target_plane')}:{t.details.get('target_table')}",
            "rows": t.details.get("rows"),
            "bytes": t.details.get("bytes"),
            "source_sha256": t.details.get("source_sha256"),
            "target_sha256": t.details.get("target_sha256"),
        }
        for t in transfers
    ]
    drill_rows = [{"seq": d.seq, "time": d.time, "kind": d.kind, **dict(d.details)} for d in drills]

    def log_backed(status: str) -> str:
        return status if audit_ok or status == NOT_COVERED else PARTIAL

    chain_gap = [] if audit_ok else [f"audit chain broken: {verify.describe()}"]
    controls = [
        {
            "id": "SOC 2 CC6",
            "title": "Logical and physical access controls",
            "status": log_backed(PARTIAL),
            "evidence": [
                f"{len(processing)} assets pinned to planes and classified; residency check "
                + ("passes" if residency.ok else f"finds {len(residency.violations)} problems"),
                f"{len(policy.routes)} declared transfer routes with legal bases",
                f"residency decisions in the audit log: {dict(decisions) or 'none recorded'}",
                f"{len(secret_reads)} secret reads audited (path and plane, never the value)",
            ],
            "gaps": [*chain_gap, "UI/API access and identity-provider roles are outside hybrid-dagster"],
        },
        {
            "id": "SOC 2 CC7",
            "title": "System operations: monitoring and anomaly detection",
            "status": log_backed(COVERED if transfers or kinds else PARTIAL),
            "evidence": [
                f"audit chain {'intact' if audit_ok else 'BROKEN'}: {verify.count} records",
                f"{len(transfers)} transfers monitored (routes, volume anomalies median + k*MAD, integrity)",
                f"{len(mismatches)} integrity mismatches (commits abandoned)",
                f"{len(teardowns)} teardown actions recorded",
            ],
            "gaps": chain_gap,
        },
        {
            "id": "SOC 2 A1",
            "title": "Availability: recovery tested",
            "status": log_backed(COVERED) if drills else NOT_COVERED,
            "evidence": [f"{len(drills)} DR drill results in the audit log"] if drills else [],
            "gaps": [] if drills else ["no DR drill results recorded (kind 'dr.drill')"],
        },
        {
            "id": "HIPAA 164.312(b)",
            "title": "Audit controls",
            "status": COVERED if audit_ok else PARTIAL,
            "evidence": [
                f"tamper-evident hash chain of {verify.count} records, verification: {verify.describe()}",
                "checkpoint: "
                + (f"{checkpoint[0]} records at {checkpoint[1][:16]}..." if checkpoint else "none taken"),
            ],
            "gaps": [
                *chain_gap,
                *([] if checkpoint else ["no checkpoint: a truncated tail is undetectable"]),
            ],
        },
        {
            "id": "GDPR Art. 30",
            "title": "Records of processing activities",
            "status": PARTIAL if processing else NOT_COVERED,
            "evidence": [f"{len(processing)} processing records generated from the asset graph"],
            "gaps": [
                *(
                    [f"no declared purpose ({PURPOSE_METADATA_KEY}) on: {', '.join(no_purpose)}"]
                    if no_purpose
                    else []
                ),
                "controller/DPO contacts, data-subject categories and retention are not in the asset graph",
            ],
        },
        {
            "id": "GDPR Art. 44-49",
            "title": "Transfers to third countries",
            "status": log_backed(PARTIAL if unlawful or mismatches else COVERED),
            "evidence": [
                f"{len(transfers)} transfers recorded with route, legal basis, rows, bytes and both hashes",
                f"{len(unlawful)} transfers without a declared route",
            ],
            "gaps": [
                *chain_gap,
                *([f"{len(unlawful)} transfers without a declared route"] if unlawful else []),
            ],
        },
        {
            "id": "DORA Art. 11-12",
            "title": "Backup, restoration and recovery; response and recovery",
            "status": log_backed(PARTIAL) if drills else NOT_COVERED,
            "evidence": [f"{len(drills)} DR drills (RTO/RPO against objectives)"] if drills else [],
            "gaps": ["continuity policies and plans are outside the pipeline"]
            if drills
            else ["no DR drill results recorded: not covered"],
        },
    ]
    return {
        "generated_at": generated_at or dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "audit": audit_json,
        "planes": [
            {"name": p.name, "jurisdiction": p.jurisdiction, "location": p.location, "region": p.region}
            for p in sorted(planes.values(), key=lambda p: p.name)
        ],
        "routes": [
            {
                "route": f"{r.source}->{r.target}",
                "legal_basis": r.legal_basis,
                "classifications": r.classifications,
                "egress_usd_per_gb": r.egress_usd_per_gb,
            }
            for r in policy.routes
        ],
        "residency": {"ok": residency.ok, "violations": [v.message for v in residency.violations]},
        "records_of_processing": processing,
        "transfers": {
            "by_route": cost_by_route(t.details for t in transfers),
            "records": transfer_rows,
            "without_declared_route": unlawful,
            "integrity_mismatches": [m.seq for m in mismatches],
        },
        "dr_drills": drill_rows,
        "controls": controls,
        "not_covered": [
            *[f"{c['id']}: {c['title']} - no evidence" for c in controls if c["status"] == NOT_COVERED],
            *NOT_COVERED_ALWAYS,
        ],
    }


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dg.TextMetadataValue | dg.MarkdownMetadataValue):
        return value.value or None
    return str(getattr(value, "value", value)) or None


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6f}"
    text = (
        "-" if value is None or value == [] else ", ".join(value) if isinstance(value, list) else str(value)
    )
    return text.replace("|", "\\|").replace("\n", " ")


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    if not rows:
        return ["_None._"]
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return out


def render_markdown(pack: Mapping[str, Any]) -> str:
    """A readable report of ``pack`` (shown in the Dagster UI with ``dg.MetadataValue.md``).

    Example:
        >>> render_markdown(pack).splitlines()[0]
        '# Compliance evidence pack'
    """
    audit = pack["audit"]
    mark = "intact" if audit["ok"] else f"**BROKEN at record {audit['first_broken_seq']}**: {audit['reason']}"
    lines = [
        "# Compliance evidence pack",
        "",
        f"Generated {pack['generated_at']}. Audit store `{audit['url']}`: chain {mark}, "
        f"{audit['count']} records, head `{audit['head_hash']}`"
        + (
            f", checked against a checkpoint of {audit['checkpoint']['count']} records."
            if audit["checkpoint"]
            else "."
        ),
        "",
        "## Controls",
        "",
        *_table(
            ["Control", "Title", "Status", "Evidence", "Gaps"],
            [
                [c["id"], c["title"], c["status"], "; ".join(c["evidence"]), "; ".join(c["gaps"])]
                for c in pack["controls"]
            ],
        ),
        "",
        "## GDPR Art. 30 - records of processing",
        "",
        *_table(
            ["Asset", "Plane", "Jurisdiction", "Classification", "Purpose", "Inputs", "Owners"],
            [
                [
                    p["asset"],
                    p["plane"],
                    p["jurisdiction"],
                    p["classification"],
                    p["purpose"] or "_not declared_",
                    p["inputs"],
                    p["owners"],
                ]
                for p in pack["records_of_processing"]
            ],
        ),
        "",
        "Planes: "
        + (
            ", ".join(f"{p['name']} ({p['jurisdiction']}, {p['location']})" for p in pack["planes"]) or "none"
        ),
        "",
        "## GDPR Art. 44-49 - transfers",
        "",
        "Declared routes:",
        "",
        *_table(
            ["Route", "Legal basis", "Classifications", "Egress USD/GB"],
            [
                [r["route"], r["legal_basis"], r["classifications"], r["egress_usd_per_gb"]]
                for r in pack["routes"]
            ],
        ),
        "",
        "Recorded transfers per route:",
        "",
        *_table(
            ["Route", "Transfers", "Rows", "Bytes", "Egress cost USD", "Legal bases"],
            [
                [route, r["transfers"], r["rows"], r["bytes"], r["cost_usd"], r["legal_bases"]]
                for route, r in pack["transfers"]["by_route"].items()
            ],
        ),
        "",
        f"Transfers without a declared route: {len(pack['transfers']['without_declared_route'])}. "
        f"Integrity mismatches (commits abandoned): {len(pack['transfers']['integrity_mismatches'])}.",
        "",
        "## DORA Art. 11-12 - DR drills",
        "",
        *(
            _table(
                ["Record", "Time", "Passed", "RTO s", "RPO s"],
                [
                    [d["seq"], d["time"], d.get("passed"), d.get("rto_s"), d.get("rpo_s")]
                    for d in pack["dr_drills"]
                ],
            )
            if pack["dr_drills"]
            else ["**Not covered**: no DR drill results are recorded in the audit log."]
        ),
        "",
        "## What this pack does not cover",
        "",
        *[f"- {item}" for item in pack["not_covered"]],
        "",
    ]
    return "\n".join(lines)
