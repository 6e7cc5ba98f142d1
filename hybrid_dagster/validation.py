"""The static residency check of a whole ``Definitions``, before anything runs.

The asset-graph rules are in :mod:`hybrid_dagster.residency.graph`; this module adds what only the
Definitions show:

- one :class:`~hybrid_dagster.residency.model.ResidencyPolicy` per Definitions (under
  ``residency_policy``), the same one the runtime uses;
- planes by name, unique, with warehouses that do not overlap (``.../eu/../us`` is normalised first);
- IO managers that carry their own plane list agree with the Definitions' planes;
- a regulated asset whose output is typed (not ``None``/``MaterializeResult``) must use an IO manager
  that stores rows in its plane - otherwise its rows would be pickled into the orchestrator's storage;
- DR secondaries (``DataPlane.dr_secondary``): resolvable, apart from the primary's storage, and in the
  primary's jurisdiction for regulated data unless a declared route covers the plane's most sensitive
  data (the highest effective classification pinned to it; a plane with nothing pinned counts as
  restricted) - refused here, before any replication copies a byte;
- plain op jobs: an op that uses a DataPlane resource is pinned and classified by op tags like an asset,
  and a regulated op may use a plane of another jurisdiction only on a declared route.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import dagster as dg

from hybrid_dagster._dagster_compat import BaseAssetGraph
from hybrid_dagster.dr.errors import DrError
from hybrid_dagster.dr.targets import check_dr_target, secondary_plane
from hybrid_dagster.errors import ResidencyViolation
from hybrid_dagster.keys import CLASSIFICATION_TAG, PLANE_TAG, POLICY_RESOURCE_KEY
from hybrid_dagster.plane.config import warehouses_overlap
from hybrid_dagster.residency.graph import (
    AssetResidency as AssetResidency,
    GraphReport,
    Violation as Violation,
    ViolationKind as ViolationKind,
    asset_classification as asset_classification,
    asset_plane_name as asset_plane_name,
    is_stub_asset as is_stub_asset,
    validate_asset_graph as validate_asset_graph,
)
from hybrid_dagster.residency.model import Classification, ResidencyPolicy
from hybrid_dagster.resources.data_plane import DataPlane
from hybrid_dagster.resources.guarded_io_manager import ResidencyGuardedIOManager

ResidencyReport = GraphReport
"""The result of :func:`validate_definitions` (violations, resolved assets, planes, routes)."""


class ResidencyCheckFailed(ResidencyViolation):
    """Raised by :func:`enforce_residency`; carries the full :class:`ResidencyReport`."""

    def __init__(self, report: ResidencyReport) -> None:
        self.report = report
        super().__init__("\n".join([report.summary(), *report.lines()]))


def validate_definitions(defs: dg.Definitions) -> ResidencyReport:
    """Check every asset, asset check and op job of ``defs`` against its planes and the policy.

    Planes are the :class:`DataPlane` resources of ``defs`` (any key, matched by ``name``); the policy is
    the one :class:`ResidencyPolicy` (key ``residency_policy``); none means no routes.

    Example:
        .. code-block:: python

            from hybrid_dagster.validation import validate_definitions

            report = validate_definitions(defs)
            if not report.ok:
                print("\\n".join(report.lines()))
    """
    resources = dict(defs.resources or {})
    planes = {key: value for key, value in resources.items() if isinstance(value, DataPlane)}
    policy, problems = _find_policy(resources)
    graph_report = validate_asset_graph(defs.resolve_asset_graph(), planes, policy)
    by_name = {p.name: p for p in planes.values()}
    problems += _overlapping_warehouses(by_name)
    problems += _io_manager_planes(resources, by_name)
    problems += _rows_in_orchestrator(defs, resources, graph_report)
    problems += _op_jobs(defs, resources, by_name, policy)
    problems += _dr_targets(by_name, graph_report, policy)
    return ResidencyReport(
        violations=[*problems, *graph_report.violations],
        assets=graph_report.assets,
        planes=graph_report.planes,
        routes=graph_report.routes,
    )


def enforce_residency(defs: dg.Definitions) -> dg.Definitions:
    """Return ``defs`` if the residency check passes, else raise :class:`ResidencyCheckFailed`.

    Use it at module scope so that a code location with a wrong pin fails to load (``dagster definitions
    validate``, ``dagster dev`` and deployments all refuse it). Without an ``io_manager`` resource the
    returned Definitions get a filesystem IO manager that refuses to store rows of regulated assets.

    Example:
        .. code-block:: python

            import dagster as dg
            from hybrid_dagster.validation import enforce_residency

            defs = enforce_residency(dg.Definitions(assets=[...], resources={...}))
    """
    report = validate_definitions(defs)
    if not report.ok:
        raise ResidencyCheckFailed(report)
    return with_guarded_io_manager(defs, report)


def with_guarded_io_manager(defs: dg.Definitions, report: ResidencyReport | None = None) -> dg.Definitions:
    """``defs`` with :class:`ResidencyGuardedIOManager` as its default IO manager when it has executable
    regulated assets and names no ``io_manager`` of its own; otherwise ``defs`` itself."""
    if "io_manager" in (defs.resources or {}):
        return defs
    report = report or validate_definitions(defs)
    executable = {
        key
        for a in defs.assets or []
        if isinstance(a, dg.AssetsDefinition) and a.is_executable
        for key in a.keys
        if not a.op.output_def_named(a.get_output_name_for_asset_key(key)).dagster_type.is_nothing
    }
    if not any(
        (r.clearance or r.effective or Classification.RESTRICTED).is_regulated
        for key, r in report.assets.items()
        if key in executable
    ):
        return defs
    return dg.Definitions.merge(defs, dg.Definitions(resources={"io_manager": ResidencyGuardedIOManager()}))


def hybrid_definitions(**kwargs: Any) -> dg.Definitions:
    """Build ``dg.Definitions(**kwargs)`` and check residency, honouring ``ResidencyPolicy.strict``.

    A strict policy makes violations raise (the code location fails to load); otherwise each violation
    is emitted as a warning, and the run-time guard still refuses what it must.

    Example:
        .. code-block:: python

            defs = hybrid_definitions(
                assets=[patients],
                resources={"residency_policy": ResidencyPolicy(strict=True), "eu": eu_plane},
            )
    """
    defs = dg.Definitions(**kwargs)
    policy, _ = _find_policy(dict(defs.resources or {}))
    if policy.strict:
        return enforce_residency(defs)
    for line in validate_definitions(defs).violations:
        warnings.warn(f"hybrid-dagster residency: {line}", stacklevel=2)
    return with_guarded_io_manager(defs)


def effective_classifications(
    source: dg.Definitions | BaseAssetGraph,
) -> dict[dg.AssetKey, Classification]:
    """Effective classification of every asset: its own tag raised by its inputs (fail-closed).

    Example:
        >>> effective_classifications(defs)[dg.AssetKey("ward_report")]
        <Classification.RESTRICTED: 'restricted'>
    """
    graph = source.resolve_asset_graph() if isinstance(source, dg.Definitions) else source
    report = validate_asset_graph(graph, {}, ResidencyPolicy())
    return {key: a.effective for key, a in report.assets.items() if a.effective is not None}


def find_planes(defs: dg.Definitions) -> dict[str, DataPlane]:
    """The DataPlane resources of ``defs`` by plane name.

    Example:
        >>> sorted(find_planes(defs))
        ['eu-onprem', 'us-cloud']
    """
    return {v.name: v for v in (defs.resources or {}).values() if isinstance(v, DataPlane)}


def find_policy(defs: dg.Definitions) -> ResidencyPolicy:
    """The residency policy of ``defs``: key ``residency_policy``, else the only one, else no routes.

    Example:
        >>> find_policy(dg.Definitions()).routes
        []
    """
    return _find_policy(dict(defs.resources or {}))[0]


def _find_policy(resources: Mapping[str, Any]) -> tuple[ResidencyPolicy, list[Violation]]:
    found = {k: v for k, v in resources.items() if isinstance(v, ResidencyPolicy)}
    if not found:
        return ResidencyPolicy(), []
    if len(found) == 1:
        key, policy = next(iter(found.items()))
        if key == POLICY_RESOURCE_KEY:
            return policy, []
        return policy, [
            Violation(
                kind=ViolationKind.POLICY,
                message=f"the ResidencyPolicy is under resource key {key!r}: put it under "
                f"{POLICY_RESOURCE_KEY!r}, where the static check and the run-time guard both look",
            )
        ]
    message = (
        f"several ResidencyPolicy resources ({', '.join(sorted(found))}): a Definitions has exactly one, "
        f"under {POLICY_RESOURCE_KEY!r}, so that the static check and the run-time guard apply the same one"
    )
    return ResidencyPolicy(), [Violation(kind=ViolationKind.POLICY, message=message)]


def _overlapping_warehouses(planes: Mapping[str, DataPlane]) -> list[Violation]:
    found: list[Violation] = []
    names = sorted(planes)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            a, b = planes[first].warehouse, planes[second].warehouse
            if warehouses_overlap(a, b):
                found.append(
                    Violation(
                        kind=ViolationKind.OVERLAPPING_PLANES,
                        message=f"planes {first!r} and {second!r} have overlapping warehouses ({a} and {b}): "
                        "each plane's data must live apart, or labels and guards cannot tell them apart",
                    )
                )
    return found


def _io_manager_planes(resources: Mapping[str, Any], planes: Mapping[str, DataPlane]) -> list[Violation]:
    found: list[Violation] = []
    for key, resource in sorted(resources.items()):
        listed = getattr(resource, "planes", None)
        if isinstance(resource, DataPlane) or not isinstance(listed, list):
            continue
        for plane in listed:
            if not isinstance(plane, DataPlane):
                continue
            defined = planes.get(plane.name)
            if defined is None or defined.spec() != plane.spec():
                found.append(
                    Violation(
                        kind=ViolationKind.INCONSISTENT_PLANE,
                        message=f"resource {key!r} lists plane {plane.name!r} with settings that differ from "
                        "the DataPlane resource of that name (or there is none): give it the Definitions' "
                        "own DataPlane objects",
                    )
                )
    return found


def _rows_in_orchestrator(
    defs: dg.Definitions, resources: Mapping[str, Any], report: GraphReport
) -> list[Violation]:
    found: list[Violation] = []
    for assets_def in defs.assets or []:
        if not isinstance(assets_def, dg.AssetsDefinition) or not assets_def.is_executable:
            continue
        for key in sorted(assets_def.keys):
            residency = report.assets.get(key)
            level = residency.clearance if residency is not None else None
            if level is None or not level.is_regulated:
                continue
            out_def = assets_def.op.output_def_named(assets_def.get_output_name_for_asset_key(key))
            if out_def.dagster_type.is_nothing or out_def.dagster_type.is_any:
                continue
            io_manager = resources.get(out_def.io_manager_key)
            if getattr(io_manager, "stores_rows_in_plane", False):
                continue
            found.append(
                Violation(
                    kind=ViolationKind.ROWS_IN_ORCHESTRATOR,
                    asset=key,
                    message=f"asset {key.to_user_string()!r} is {level.value} and returns "
                    f"{out_def.dagster_type.display_name} values that IO manager {out_def.io_manager_key!r} "
                    "would store outside its plane: return a dg.MaterializeResult from plane work, or use "
                    "PlaneIcebergIOManager",
                )
            )
    return found


def _op_jobs(
    defs: dg.Definitions,
    resources: Mapping[str, Any],
    planes: Mapping[str, DataPlane],
    policy: ResidencyPolicy,
) -> list[Violation]:
    found: list[Violation] = []
    for job in defs.jobs or []:
        if not isinstance(job, dg.JobDefinition) or job.asset_layer.selected_asset_keys:
            continue
        job_resources = {**resources, **dict(job.resource_defs or {})}
        for op_def in job.graph.iterate_op_defs():
            used = [
                job_resources[k]
                for k in sorted(op_def.required_resource_keys)
                if isinstance(job_resources.get(k), DataPlane)
            ]
            if used:
                found.extend(_check_op(job.name, op_def, used, planes, policy))
    return found


def _check_op(
    job: str,
    op_def: dg.OpDefinition,
    used: list[DataPlane],
    planes: Mapping[str, DataPlane],
    policy: ResidencyPolicy,
) -> list[Violation]:
    where = f"op {op_def.name!r} of job {job!r}"
    tags = op_def.tags or {}
    plane_name = tags.get(PLANE_TAG)
    try:
        level = asset_classification({CLASSIFICATION_TAG: tags[CLASSIFICATION_TAG]})
    except (KeyError, ValueError):
        level = None
    if plane_name is None or level is None or plane_name not in planes:
        return [
            Violation(
                kind=ViolationKind.UNCHECKED_OP,
                message=f"{where} uses data planes ({', '.join(p.name for p in used)}) but is not pinned: "
                f"give it tags {PLANE_TAG!r} (a plane of these Definitions) and {CLASSIFICATION_TAG!r}, e.g. "
                "@dg.op(tags=pinned(plane, classification)['tags'])",
            )
        ]
    home = planes[plane_name]
    found: list[Violation] = []
    for plane in used:
        if plane.jurisdiction == home.jurisdiction or not level.is_regulated:
            continue
        try:
            policy.check_transfer(
                what=f"{where} ({plane_name}, {home.jurisdiction}) uses plane {plane.name!r} "
                f"({plane.jurisdiction}), {level.value}",
                source=plane.jurisdiction,
                target=home.jurisdiction,
                classification=level,
            )
        except ResidencyViolation as exc:
            found.append(
                Violation(
                    kind=ViolationKind.TRANSFER,
                    message=str(exc),
                    classification=level,
                    source_jurisdiction=plane.jurisdiction,
                    target_jurisdiction=home.jurisdiction,
                )
            )
    return found


def _dr_targets(
    planes: Mapping[str, DataPlane], report: GraphReport, policy: ResidencyPolicy
) -> list[Violation]:
    found: list[Violation] = []
    for name, plane in sorted(planes.items()):
        if plane.dr_secondary is None:
            continue
        pinned = [r for r in report.assets.values() if r.plane == name]
        level = Classification.highest(
            [r.effective or Classification.RESTRICTED for r in pinned] or [Classification.RESTRICTED]
        )
        try:
            secondary = secondary_plane(plane, planes)
            check_dr_target(name, {plane.jurisdiction}, secondary, level, policy)
        except DrError as refused:
            found.append(
                Violation(
                    kind=ViolationKind.DR_TARGET,
                    message=str(refused),
                    classification=level,
                    source_jurisdiction=plane.jurisdiction,
                    target_jurisdiction=plane.dr_secondary.jurisdiction,
                )
            )
    return found
