"""The ``gpu_cost_report`` asset: GPU spend and waste per pool, team and jurisdiction, as tables and a chart.

Correctness rules: figures come from the lease store only (leases, capacity observations and teardowns are
metadata, never rows), over a fixed window ending now. On-prem pools cost their full capacity over the
window (amortised price); cloud pools cost the GPU-hours their observed capacity was up, or at least what
their leases used. Used = GPU-hours under leases; waste = spend - used; saved = what teardowns saved.

Example:
    .. code-block:: python

        from hybrid_dagster.assets.gpu_cost import gpu_cost_report_asset

        report = gpu_cost_report_asset([eu_onprem_a100, eu_cloud_h100], plane="eu-onprem", window_hours=168)
"""

import base64
import time
from collections.abc import Sequence
from dataclasses import dataclass

import dagster as dg

from hybrid_dagster.gpu.history import CapacityHistory
from hybrid_dagster.gpu.model import PoolFacts
from hybrid_dagster.pinning import pinned
from hybrid_dagster.resources.gpu_pool import GpuPool


@dataclass(frozen=True)
class PoolCost:
    """One pool's figures over the report window (GPU-hours and USD)."""

    pool: str
    team: str
    jurisdiction: str
    location: str
    capacity_gpu_h: float
    used_gpu_h: float
    spend_usd: float
    waste_usd: float
    saved_usd: float


def _overlap_h(start: float, end: float, since: float, now: float) -> float:
    return max(0.0, min(end, now) - max(start, since)) / 3600.0


def pool_costs(
    pools: Sequence[PoolFacts], history: CapacityHistory, *, since: float, now: float
) -> list[PoolCost]:
    """Spend, use, waste and savings per pool between ``since`` and ``now``.

    Example:
        >>> pool_costs([p.facts() for p in pools], CapacityHistory(store), since=now - 86400, now=now)
    """
    store = history.store
    used: dict[str, float] = {}
    for lease in store.leases_since(since):
        end = lease.released_at if lease.released_at is not None else min(now, lease.heartbeat + store.ttl_s)
        used[lease.pool] = used.get(lease.pool, 0.0) + lease.gpus * _overlap_h(lease.since, end, since, now)
    observed: dict[str, float] = {}
    for obs in history.observations(since, [p.name for p in pools]):
        observed[obs.pool] = observed.get(obs.pool, 0.0) + obs.gpus * _overlap_h(
            obs.first_seen, obs.last_seen, since, now
        )
    saved: dict[str, float] = {}
    for record in history.teardowns(since):
        saved[record.pool] = saved.get(record.pool, 0.0) + record.cost_saved_usd
    window_h = (now - since) / 3600.0
    costs = []
    for pool in pools:
        use = used.get(pool.name, 0.0)
        capacity = pool.capacity_gpus * window_h if not pool.burst else observed.get(pool.name, 0.0)
        billed = max(capacity, use)
        costs.append(
            PoolCost(
                pool=pool.name,
                team=pool.team,
                jurisdiction=pool.jurisdiction,
                location=pool.location,
                capacity_gpu_h=round(billed, 2),
                used_gpu_h=round(use, 2),
                spend_usd=round(billed * pool.price_per_gpu_hour, 2),
                waste_usd=round((billed - use) * pool.price_per_gpu_hour, 2),
                saved_usd=round(saved.get(pool.name, 0.0), 2),
            )
        )
    return costs


def _rollup(costs: Sequence[PoolCost], by: str) -> list[tuple[str, float, float, float]]:
    totals: dict[str, list[float]] = {}
    for cost in costs:
        row = totals.setdefault(getattr(cost, by), [0.0, 0.0, 0.0])
        row[0] += cost.spend_usd
        row[1] += cost.waste_usd
        row[2] += cost.saved_usd
    return [(k, round(v[0], 2), round(v[1], 2), round(v[2], 2)) for k, v in sorted(totals.items())]


def _markdown(title: str, rows: Sequence[tuple[str, float, float, float]]) -> str:
    lines = [f"| {title} | spend (USD) | waste (USD) | saved by teardown (USD) |", "|---|---:|---:|---:|"]
    lines += [f"| {k} | {s:,.2f} | {w:,.2f} | {v:,.2f} |" for k, s, w, v in rows]
    return "\n".join(lines)


def svg_chart(costs: Sequence[PoolCost]) -> str:
    """A horizontal bar chart (used vs wasted spend per pool) as an SVG document."""
    width, bar_h, label_w = 560, 22, 150
    top = max([c.spend_usd for c in costs] + [1.0])
    rows = []
    for i, cost in enumerate(costs):
        y = 30 + i * (bar_h + 8)
        used_w = (cost.spend_usd - cost.waste_usd) / top * (width - label_w - 90)
        waste_w = cost.waste_usd / top * (width - label_w - 90)
        rows.append(
            f'<text x="4" y="{y + 15}" font-size="12">{cost.pool}</text>'
            f'<rect x="{label_w}" y="{y}" width="{used_w:.1f}" height="{bar_h}" fill="#4f7cac"/>'
            f'<rect x="{label_w + used_w:.1f}" y="{y}" width="{waste_w:.1f}" height="{bar_h}" '
            'fill="#e07a5f"/>'
            f'<text x="{label_w + used_w + waste_w + 4:.1f}" y="{y + 15}" '
            f'font-size="11">${cost.spend_usd:,.0f}</text>'
        )
    height = 40 + len(costs) * (bar_h + 8)
    legend = (
        '<rect x="150" y="6" width="10" height="10" fill="#4f7cac"/>'
        '<text x="164" y="15" font-size="11">used</text>'
        '<rect x="210" y="6" width="10" height="10" fill="#e07a5f"/>'
        '<text x="224" y="15" font-size="11">idle (waste)</text>'
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif">'
        f"{legend}{''.join(rows)}</svg>"
    )


def vega_lite(costs: Sequence[PoolCost]) -> dict[str, object]:
    """The same chart as a Vega-Lite spec (for notebooks and dashboards)."""
    values = [{"pool": c.pool, "kind": "used", "usd": round(c.spend_usd - c.waste_usd, 2)} for c in costs] + [
        {"pool": c.pool, "kind": "idle (waste)", "usd": c.waste_usd} for c in costs
    ]
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "data": {"values": values},
        "mark": "bar",
        "encoding": {
            "y": {"field": "pool", "type": "nominal"},
            "x": {"field": "usd", "type": "quantitative", "stack": "zero", "title": "USD"},
            "color": {"field": "kind", "type": "nominal"},
        },
    }


def gpu_cost_report_asset(
    pools: Sequence[GpuPool],
    *,
    plane: str,
    window_hours: float = 168.0,
    name: str = "gpu_cost_report",
    group_name: str = "gpu_costs",
    owners: Sequence[str] = ("team:platform",),
) -> dg.AssetsDefinition:
    """The ``gpu_cost_report`` asset over ``pools`` (one lease store), pinned to ``plane`` as internal data.

    Example:
        >>> report = gpu_cost_report_asset(fleet.pools, plane="eu-onprem")
    """
    if not pools:
        raise ValueError("gpu_cost_report_asset needs at least one GpuPool")

    @dg.asset(
        name=name,
        group_name=group_name,
        owners=list(owners),
        description="GPU spend, idle waste and teardown savings per pool, team and jurisdiction over the "
        f"last {window_hours:g} hours.",
        **pinned(plane, "internal", kinds={"python"}),
    )
    def _report(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        now = time.time()
        history = CapacityHistory(pools[0].store())
        costs = pool_costs([p.facts() for p in pools], history, since=now - window_hours * 3600, now=now)
        table = dg.MetadataValue.table(
            records=[
                dg.TableRecord(
                    {
                        "pool": c.pool,
                        "team": c.team,
                        "jurisdiction": c.jurisdiction,
                        "location": c.location,
                        "gpu_hours": c.capacity_gpu_h,
                        "used_gpu_hours": c.used_gpu_h,
                        "spend_usd": c.spend_usd,
                        "waste_usd": c.waste_usd,
                        "saved_usd": c.saved_usd,
                    }
                )
                for c in costs
            ],
            schema=dg.TableSchema(
                columns=[
                    dg.TableColumn("pool", "string"),
                    dg.TableColumn("team", "string"),
                    dg.TableColumn("jurisdiction", "string"),
                    dg.TableColumn("location", "string"),
                    dg.TableColumn("gpu_hours", "float"),
                    dg.TableColumn("used_gpu_hours", "float"),
                    dg.TableColumn("spend_usd", "float"),
                    dg.TableColumn("waste_usd", "float"),
                    dg.TableColumn("saved_usd", "float"),
                ]
            ),
        )
        svg = base64.b64encode(svg_chart(costs).encode()).decode()
        return dg.MaterializeResult(
            metadata={
                "by_pool": table,
                "by_team": dg.MetadataValue.md(_markdown("team", _rollup(costs, "team"))),
                "by_jurisdiction": dg.MetadataValue.md(
                    _markdown("jurisdiction", _rollup(costs, "jurisdiction"))
                ),
                "chart": dg.MetadataValue.md(
                    f"![GPU spend per pool: used vs idle](data:image/svg+xml;base64,{svg})"
                ),
                "chart_vega_lite": dg.MetadataValue.json(vega_lite(costs)),
                "spend_usd": round(sum(c.spend_usd for c in costs), 2),
                "waste_usd": round(sum(c.waste_usd for c in costs), 2),
                "saved_usd": round(sum(c.saved_usd for c in costs), 2),
                "window_hours": float(window_hours),
            }
        )

    return _report
