"""The static residency check: walk the asset graph of a ``Definitions`` before anything runs.

Every asset is pinned to a :class:`~hybrid_dagster.resources.data_plane.DataPlane` (tag ``hybrid/plane``)
and classified (tag ``hybrid/classification``). Classification flows downstream unless an asset is
declassified with a written justification. Every edge whose data is confidential or restricted and that
crosses into another jurisdiction needs a declared :class:`~hybrid_dagster.residency.TransferRoute`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import dagster as dg
from dagster._core.definitions.assets.graph.base_asset_graph import BaseAssetGraph, BaseAssetNode

from hybrid_dagster.residency import (
    CLASSIFICATION_TAG,
    DECLASSIFIED_METADATA_KEY,
    PLANE_TAG,
    Classification,
    ResidencyPolicy,
    ResidencyViolation,
)
from hybrid_dagster.resources.data_plane import DataPlane

POLICY_RESOURCE_KEY = "residency_policy"
_STUB_METADATA_KEY = "dagster/auto_created_stub_asset"


class ViolationKind(StrEnum):
    """What kind of residency problem a :class:`Violation` is."""

    TRANSFER = "transfer"
    MISSING_TAG = "missing_tag"
    INVALID_TAG = "invalid_tag"
    UNKNOWN_PLANE = "unknown_plane"
    DUPLICATE_PLANE = "duplicate_plane"
    DECLASSIFICATION = "declassification"
    UNDEFINED_ASSET = "undefined_asset"
    POLICY = "policy"


@dataclass(frozen=True)
class Violation:
    """One residency problem found by the static check.

    Transfer violations carry the edge (``upstream`` -> ``asset``), both jurisdictions, the classification
    of the data crossing the edge and the asset that classification was declared on (``classified_at``).

    Example:
        >>> report = validate_definitions(defs)
        >>> [v.message for v in report.violations if v.kind == ViolationKind.TRANSFER]
    """

    kind: ViolationKind
    message: str
    asset: dg.AssetKey | None = None
    upstream: dg.AssetKey | None = None
    classification: Classification | None = None
    classified_at: dg.AssetKey | None = None
    source_jurisdiction: str | None = None
    target_jurisdiction: str | None = None

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class AssetResidency:
    """What the check resolved for one asset: its plane, declared and effective classification."""

    key: dg.AssetKey
    plane: str | None
    jurisdiction: str | None
    declared: Classification | None
    effective: Classification | None
    classified_at: dg.AssetKey | None
    declassification: str | None
    parents: frozenset[dg.AssetKey]


@dataclass(frozen=True)
class ResidencyReport:
    """The result of :func:`validate_definitions`.

    Example:
        >>> report = validate_definitions(defs)
        >>> report.summary()
        'residency ok: 12 assets on 4 planes in 2 jurisdictions, 1 declared route'
    """

    violations: list[Violation]
    assets: dict[dg.AssetKey, AssetResidency]
    planes: dict[str, str]
    """Plane name -> jurisdiction."""
    routes: int
    jurisdictions: list[str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "jurisdictions", sorted(set(self.planes.values())))

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def assets_checked(self) -> int:
        return len(self.assets)

    def summary(self) -> str:
        scope = (
            f"{_count(self.assets_checked, 'asset')} on {_count(len(self.planes), 'plane')} in "
            f"{_count(len(self.jurisdictions), 'jurisdiction')}, {_count(self.routes, 'declared route')}"
        )
        if self.ok:
            return f"residency ok: {scope}"
        return f"residency check failed: {_count(len(self.violations), 'problem')} in {scope}"

    def lines(self) -> list[str]:
        """One line per violation, or the summary line when there is none."""
        return [v.message for v in self.violations] if self.violations else [self.summary()]


class ResidencyCheckFailed(ResidencyViolation):
    """Raised by :func:`enforce_residency`; carries the full :class:`ResidencyReport`."""

    def __init__(self, report: ResidencyReport) -> None:
        self.report = report
        super().__init__("\n".join([report.summary(), *report.lines()]))


def validate_definitions(defs: dg.Definitions) -> ResidencyReport:
    """Check every asset of ``defs`` against its planes and the residency policy.

    Planes are the :class:`DataPlane` resources of ``defs`` (any key, matched by ``name``); the policy is
    the :class:`ResidencyPolicy` under ``residency_policy`` (else the only one; none means no routes).

    Example:
        .. code-block:: python

            from hybrid_dagster.validation import validate_definitions

            report = validate_definitions(defs)
            if not report.ok:
                print("\\n".join(report.lines()))
    """
    resources = dict(defs.resources or {})
    planes = {key: value for key, value in resources.items() if isinstance(value, DataPlane)}
    policy, policy_problems = _find_policy(resources)
    report = validate_asset_graph(defs.resolve_asset_graph(), planes, policy)
    return ResidencyReport(
        violations=[*policy_problems, *report.violations],
        assets=report.assets,
        planes=report.planes,
        routes=report.routes,
    )


def validate_asset_graph(
    graph: BaseAssetGraph,
    planes: Mapping[str, DataPlane],
    policy: ResidencyPolicy,
    recorded: Mapping[dg.AssetKey, Classification] | None = None,
) -> ResidencyReport:
    """The check over an asset graph, with planes given by resource key (or by name).

    ``recorded`` raises the classification of assets whose inputs are outside ``graph`` (e.g. the
    classification an asset was written with, when a run's graph holds only part of the lineage).

    Example:
        >>> validate_asset_graph(defs.resolve_asset_graph(), {"eu": eu_plane}, ResidencyPolicy()).ok
        True
    """
    violations: list[Violation] = []
    by_name: dict[str, DataPlane] = {}
    key_of: dict[str, str] = {}
    for resource_key, plane in planes.items():
        if plane.name in by_name:
            violations.append(
                Violation(
                    kind=ViolationKind.DUPLICATE_PLANE,
                    message=f"resources {key_of[plane.name]!r} and {resource_key!r} are both DataPlane "
                    f"{plane.name!r}: plane names must be unique",
                )
            )
            continue
        by_name[plane.name] = plane
        key_of[plane.name] = resource_key

    assets: dict[dg.AssetKey, AssetResidency] = {}
    for key in graph.toposorted_asset_keys:
        residency, problems = _resolve_asset(graph.get(key), by_name, assets, (recorded or {}).get(key))
        assets[key] = residency
        violations.extend(problems)
    for key in graph.toposorted_asset_keys:
        violations.extend(_check_edges(assets[key], assets, policy))
    return ResidencyReport(
        violations=violations,
        assets=assets,
        planes={name: plane.jurisdiction for name, plane in by_name.items()},
        routes=len(policy.routes),
    )


def enforce_residency(defs: dg.Definitions) -> dg.Definitions:
    """Return ``defs`` unchanged if the residency check passes, else raise :class:`ResidencyViolation`.

    Use it at module scope so that a code location with a wrong pin fails to load (``dagster definitions
    validate``, ``dagster dev`` and deployments all refuse it).

    Example:
        .. code-block:: python

            import dagster as dg
            from hybrid_dagster.validation import enforce_residency

            defs = enforce_residency(dg.Definitions(assets=[...], resources={...}))
    """
    report = validate_definitions(defs)
    if not report.ok:
        raise ResidencyCheckFailed(report)
    return defs


def hybrid_definitions(**kwargs: Any) -> dg.Definitions:
    """Build ``dg.Definitions(**kwargs)`` and check residency, honouring ``ResidencyPolicy.strict``.

    A strict policy makes violations raise (the code location fails to load); otherwise each violation
    is emitted as a warning.

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
    return defs


def effective_classifications(
    source: dg.Definitions | BaseAssetGraph,
) -> dict[dg.AssetKey, Classification]:
    """Effective classification of every classifiable asset: its own tag raised by its inputs.

    Example:
        >>> effective_classifications(defs)[dg.AssetKey("ward_report")]
        <Classification.RESTRICTED: 'restricted'>
    """
    graph = source.resolve_asset_graph() if isinstance(source, dg.Definitions) else source
    report = validate_asset_graph(graph, {}, ResidencyPolicy())
    return {key: a.effective for key, a in report.assets.items() if a.effective is not None}


def asset_plane_name(asset: BaseAssetNode | dg.AssetSpec | Mapping[str, str]) -> str | None:
    """The ``hybrid/plane`` tag of an asset node, spec or tag mapping.

    Example:
        >>> asset_plane_name(dg.AssetSpec("patients", tags={"hybrid/plane": "eu-onprem"}))
        'eu-onprem'
    """
    tags = asset if isinstance(asset, Mapping) else asset.tags
    return tags.get(PLANE_TAG)


def asset_classification(asset: BaseAssetNode | dg.AssetSpec | Mapping[str, str]) -> Classification | None:
    """The declared ``hybrid/classification`` of an asset; raises ``ValueError`` on an invalid value.

    Example:
        >>> asset_classification({"hybrid/classification": "restricted"})
        <Classification.RESTRICTED: 'restricted'>
    """
    tags = asset if isinstance(asset, Mapping) else asset.tags
    value = tags.get(CLASSIFICATION_TAG)
    return None if value is None else Classification.parse(value)


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


def is_stub_asset(node: BaseAssetNode) -> bool:
    """Whether Dagster created ``node`` as a placeholder for a dependency it has no definition of.

    Example:
        >>> graph = dg.Definitions(assets=[dg.AssetSpec("a", deps=["b"])]).resolve_asset_graph()
        >>> is_stub_asset(graph.get(dg.AssetKey("b")))
        True
    """
    return bool(node.metadata.get(_STUB_METADATA_KEY))


def _find_policy(resources: Mapping[str, Any]) -> tuple[ResidencyPolicy, list[Violation]]:
    preferred = resources.get(POLICY_RESOURCE_KEY)
    if isinstance(preferred, ResidencyPolicy):
        return preferred, []
    found = {k: v for k, v in resources.items() if isinstance(v, ResidencyPolicy)}
    if len(found) == 1:
        return next(iter(found.values())), []
    if not found:
        return ResidencyPolicy(), []
    message = (
        f"several ResidencyPolicy resources ({', '.join(sorted(found))}) and none under "
        f"{POLICY_RESOURCE_KEY!r}: put the one that applies under {POLICY_RESOURCE_KEY!r}"
    )
    return ResidencyPolicy(), [Violation(kind=ViolationKind.POLICY, message=message)]


def _resolve_asset(
    node: BaseAssetNode,
    planes: Mapping[str, DataPlane],
    resolved: Mapping[dg.AssetKey, AssetResidency],
    recorded: Classification | None,
) -> tuple[AssetResidency, list[Violation]]:
    key = node.key
    name = _name(key)
    parents = frozenset(node.parent_keys - {key})
    if is_stub_asset(node):
        users = ", ".join(sorted(_name(c) for c in node.child_keys)) or "another asset"
        problem = Violation(
            kind=ViolationKind.UNDEFINED_ASSET,
            asset=key,
            message=f"asset {name!r} is used by {users} but not defined in the Definitions: declare it "
            f"(e.g. dg.AssetSpec({name!r}, **pinned(plane, classification))) so its residency can be checked",
        )
        return AssetResidency(key, None, None, None, None, None, None, parents), [problem]

    problems: list[Violation] = []
    known = ", ".join(sorted(planes)) or "none defined"
    plane_name = asset_plane_name(node)
    plane = planes.get(plane_name) if plane_name is not None else None
    if plane_name is None:
        problems.append(
            Violation(
                kind=ViolationKind.MISSING_TAG,
                asset=key,
                message=f"asset {name!r} has no {PLANE_TAG!r} tag: pin it to a data plane ({known})",
            )
        )
    elif plane is None:
        problems.append(
            Violation(
                kind=ViolationKind.UNKNOWN_PLANE,
                asset=key,
                message=f"asset {name!r} is pinned to plane {plane_name!r}, which is not a DataPlane "
                f"resource of these Definitions (planes: {known})",
            )
        )

    declared: Classification | None = None
    try:
        declared = asset_classification(node)
    except ValueError as exc:
        problems.append(
            Violation(
                kind=ViolationKind.INVALID_TAG,
                asset=key,
                message=f"asset {name!r}: invalid {CLASSIFICATION_TAG!r} tag: {exc}",
            )
        )
    else:
        if declared is None:
            problems.append(
                Violation(
                    kind=ViolationKind.MISSING_TAG,
                    asset=key,
                    message=f"asset {name!r} has no {CLASSIFICATION_TAG!r} tag: classify it as public, "
                    "internal, confidential or restricted",
                )
            )

    justification = _declassification(node)
    if justification is not None and not justification.strip():
        problems.append(
            Violation(
                kind=ViolationKind.DECLASSIFICATION,
                asset=key,
                message=f"asset {name!r} is declassified ({DECLASSIFIED_METADATA_KEY!r}) without a written "
                "justification",
            )
        )
        justification = None

    candidates: list[tuple[Classification, dg.AssetKey]] = []
    if declared is not None:
        candidates.append((declared, key))
    if recorded is not None:
        candidates.append((recorded, key))
    if justification is None or declared is None:
        for parent in sorted(parents):
            upstream = resolved.get(parent)
            if upstream is not None and upstream.effective is not None and upstream.classified_at is not None:
                candidates.append((upstream.effective, upstream.classified_at))
    effective, origin = max(candidates, key=lambda c: c[0].rank) if candidates else (None, None)
    residency = AssetResidency(
        key=key,
        plane=plane_name,
        jurisdiction=plane.jurisdiction if plane is not None else None,
        declared=declared,
        effective=effective,
        classified_at=origin,
        declassification=justification,
        parents=parents,
    )
    return residency, problems


def _check_edges(
    asset: AssetResidency, assets: Mapping[dg.AssetKey, AssetResidency], policy: ResidencyPolicy
) -> Iterable[Violation]:
    for parent_key in sorted(asset.parents):
        upstream = assets[parent_key]
        level = upstream.effective
        source, target = upstream.jurisdiction, asset.jurisdiction
        if level is None or not level.is_regulated or source is None or target is None or source == target:
            continue
        inherited = (
            f" (inherited from {_name(upstream.classified_at)})"
            if upstream.classified_at is not None and upstream.classified_at != parent_key
            else ""
        )
        what = (
            f"{_name(parent_key)} ({upstream.plane}, {source}) -> "
            f"{_name(asset.key)} ({asset.plane}, {target}), {level.value}{inherited}"
        )
        try:
            policy.check_transfer(what=what, source=source, target=target, classification=level)
        except ResidencyViolation as exc:
            yield Violation(
                kind=ViolationKind.TRANSFER,
                message=str(exc),
                asset=asset.key,
                upstream=parent_key,
                classification=level,
                classified_at=upstream.classified_at,
                source_jurisdiction=source,
                target_jurisdiction=target,
            )


def _declassification(node: BaseAssetNode) -> str | None:
    if DECLASSIFIED_METADATA_KEY not in node.metadata:
        return None
    value = node.metadata[DECLASSIFIED_METADATA_KEY]
    if isinstance(value, dg.MetadataValue):
        value = value.value
    return "" if value is None else str(value)


def _name(key: dg.AssetKey) -> str:
    return key.to_user_string()


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
