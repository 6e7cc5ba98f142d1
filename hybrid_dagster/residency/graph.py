"""The static residency check over an asset graph, before anything runs.

Rules (the runtime guard in :mod:`hybrid_dagster.residency.guard` applies the same resolution):

- Every asset is pinned to a plane (tag ``hybrid/plane``) and classified (tag ``hybrid/classification``).
  A missing, mistyped or unknown classification is a violation and counts as *restricted* for everything
  downstream: the check fails closed.
- Classification flows downstream: an asset's *effective* classification is the highest of its own and
  its inputs', unless it is declassified with a written justification (``hybrid/declassified``, a
  non-empty string; anything else is a violation and does not declassify).
- An asset's *clearance* is what its step process touches: the highest of its own classification and
  its inputs', whether or not it is declassified. Plane work may read nothing above its clearance.
- Every edge whose data is confidential or restricted and crosses into another jurisdiction needs a
  declared :class:`~hybrid_dagster.residency.model.TransferRoute`. Edges are upstream assets, the
  ``additional_deps`` of asset checks, and external sources declared with ``hybrid/source_jurisdiction``.

Planes are given as :class:`~hybrid_dagster.residency.model.PlaneRef` (anything with ``name`` and
``jurisdiction``), so this module does not depend on the DataPlane resource.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

import dagster as dg

from hybrid_dagster._dagster_compat import STUB_ASSET_METADATA_KEY, BaseAssetGraph, BaseAssetNode
from hybrid_dagster.errors import ResidencyViolation
from hybrid_dagster.keys import (
    CLASSIFICATION_TAG,
    DECLASSIFIED_METADATA_KEY,
    PLANE_TAG,
    SOURCE_JURISDICTION_METADATA_KEY,
)
from hybrid_dagster.residency.model import Classification, Jurisdiction, PlaneRef, ResidencyPolicy


class ViolationKind(StrEnum):
    """What kind of residency problem a :class:`Violation` is."""

    TRANSFER = "transfer"
    MISSING_TAG = "missing_tag"
    INVALID_TAG = "invalid_tag"
    UNKNOWN_PLANE = "unknown_plane"
    DUPLICATE_PLANE = "duplicate_plane"
    OVERLAPPING_PLANES = "overlapping_planes"
    DECLASSIFICATION = "declassification"
    UNDEFINED_ASSET = "undefined_asset"
    POLICY = "policy"
    ROWS_IN_ORCHESTRATOR = "rows_in_orchestrator"
    UNCHECKED_OP = "unchecked_op"
    INCONSISTENT_PLANE = "inconsistent_plane"
    DR_TARGET = "dr_target"


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
    """What the check resolved for one asset.

    ``declared`` is the asset's own valid tag (None when missing or invalid); ``effective`` the
    classification of its data (fail-closed: restricted when its own tag is missing or invalid);
    ``clearance`` the most sensitive data its step touches (its inputs, even when declassified).
    """

    key: dg.AssetKey
    plane: str | None
    jurisdiction: str | None
    declared: Classification | None
    effective: Classification | None
    classified_at: dg.AssetKey | None
    declassification: str | None
    parents: frozenset[dg.AssetKey]
    clearance: Classification | None = None
    source_jurisdiction: str | None = None
    undefined: bool = False


@dataclass(frozen=True)
class GraphReport:
    """The result of :func:`validate_asset_graph`.

    Example:
        >>> validate_asset_graph(graph, planes, policy).summary()
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


def validate_asset_graph(
    graph: BaseAssetGraph,
    planes: Mapping[str, PlaneRef],
    policy: ResidencyPolicy,
    recorded: Mapping[dg.AssetKey, Classification] | None = None,
) -> GraphReport:
    """The check over an asset graph, with planes given by resource key (or by name).

    ``recorded`` raises the classification of assets whose inputs are outside ``graph`` (e.g. the
    classification an asset was written with, when a run's graph holds only part of the lineage).

    Example:
        >>> validate_asset_graph(defs.resolve_asset_graph(), {"eu": eu_plane}, ResidencyPolicy()).ok
        True
    """
    violations: list[Violation] = []
    by_name = planes_by_name(planes, violations)
    assets: dict[dg.AssetKey, AssetResidency] = {}
    for key in graph.toposorted_asset_keys:
        residency, problems = resolve_asset(graph.get(key), by_name, assets, (recorded or {}).get(key))
        assets[key] = residency
        violations.extend(problems)
    for key in graph.toposorted_asset_keys:
        violations.extend(_check_edges(assets[key], assets[key].parents, assets, policy))
        violations.extend(_check_source(assets[key], policy))
    for check_key in sorted(graph.asset_check_keys, key=lambda k: k.to_user_string()):
        owner = assets.get(check_key.asset_key)
        extra = frozenset(graph.get(check_key).parent_entity_keys) - {check_key.asset_key}
        if owner is not None:
            deps = frozenset(k for k in extra if isinstance(k, dg.AssetKey) and k in assets)
            violations.extend(_check_edges(owner, deps, assets, policy, via=check_key.to_user_string()))
    return GraphReport(
        violations=violations,
        assets=assets,
        planes={name: plane.jurisdiction for name, plane in by_name.items()},
        routes=len(policy.routes),
    )


def planes_by_name(planes: Mapping[str, PlaneRef], violations: list[Violation]) -> dict[str, PlaneRef]:
    """Planes keyed by plane name; a name used twice is a violation (the first one is kept)."""
    by_name: dict[str, PlaneRef] = {}
    key_of: dict[str, str] = {}
    for resource_key, plane in planes.items():
        if plane.name in by_name:
            if by_name[plane.name] is plane:
                continue
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
    return by_name


def resolve_asset(
    node: BaseAssetNode,
    planes: Mapping[str, PlaneRef],
    resolved: Mapping[dg.AssetKey, AssetResidency],
    recorded: Classification | None,
) -> tuple[AssetResidency, list[Violation]]:
    """Resolve one asset's plane and classifications from its tags, metadata and resolved parents."""
    key = node.key
    parents = frozenset(node.parent_keys - {key})
    if is_stub_asset(node):
        return _undefined(node, parents)
    problems: list[Violation] = []
    plane_name, plane = _plane_of(node, planes, problems)
    declared = _declared_classification(node, problems)
    justification = _declassification(node, problems)
    source = _source_jurisdiction(node, problems)

    own = declared if declared is not None else Classification.RESTRICTED  # fail closed
    own_candidates: list[tuple[Classification, dg.AssetKey]] = [(own, key)]
    if recorded is not None:
        own_candidates.append((recorded, key))
    # A recorded classification stands in for inputs outside the graph (a subset run's boundary).
    inherited = [
        (upstream.effective, upstream.classified_at or parent)
        for parent in sorted(parents)
        if (upstream := resolved.get(parent)) is not None
        and upstream.effective is not None
        and not (recorded is not None and upstream.undefined)
    ]
    clearance, _ = _highest([*own_candidates, *inherited])
    declassified = justification is not None and declared is not None
    effective, origin = _highest(own_candidates if declassified else [*own_candidates, *inherited])
    residency = AssetResidency(
        key=key,
        plane=plane_name,
        jurisdiction=plane.jurisdiction if plane is not None else None,
        declared=declared,
        effective=effective,
        classified_at=origin,
        declassification=justification if declassified else None,
        parents=parents,
        clearance=clearance,
        source_jurisdiction=source,
    )
    return residency, problems


def is_stub_asset(node: BaseAssetNode) -> bool:
    """Whether Dagster created ``node`` as a placeholder for a dependency it has no definition of.

    Example:
        >>> graph = dg.Definitions(assets=[dg.AssetSpec("a", deps=["b"])]).resolve_asset_graph()
        >>> is_stub_asset(graph.get(dg.AssetKey("b")))
        True
    """
    return bool(node.metadata.get(STUB_ASSET_METADATA_KEY))


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


def _undefined(
    node: BaseAssetNode, parents: frozenset[dg.AssetKey]
) -> tuple[AssetResidency, list[Violation]]:
    name = _name(node.key)
    users = ", ".join(sorted(_name(c) for c in node.child_keys)) or "another asset"
    spec = f"dg.AssetSpec({list(node.key.path)!r}, **pinned(plane, classification))"
    problem = Violation(
        kind=ViolationKind.UNDEFINED_ASSET,
        asset=node.key,
        message=f"asset {name!r} is used by {users} but not defined in the Definitions: declare it "
        f"(e.g. {spec}) so its residency can be checked",
    )
    # An undefined input is of unknown sensitivity and place: restricted, nowhere (fail closed).
    residency = AssetResidency(
        node.key, None, None, None, Classification.RESTRICTED, node.key, None, parents,
        clearance=Classification.RESTRICTED, undefined=True,
    )  # fmt: skip
    return residency, [problem]


def _plane_of(
    node: BaseAssetNode, planes: Mapping[str, PlaneRef], problems: list[Violation]
) -> tuple[str | None, PlaneRef | None]:
    name = _name(node.key)
    known = ", ".join(sorted(planes)) or "none defined"
    plane_name = asset_plane_name(node)
    if plane_name is None:
        problems.append(
            Violation(
                kind=ViolationKind.MISSING_TAG,
                asset=node.key,
                message=f"asset {name!r} has no {PLANE_TAG!r} tag: pin it to a data plane ({known})",
            )
        )
        return None, None
    plane = planes.get(plane_name)
    if plane is None:
        problems.append(
            Violation(
                kind=ViolationKind.UNKNOWN_PLANE,
                asset=node.key,
                message=f"asset {name!r} is pinned to plane {plane_name!r}, which is not a DataPlane "
                f"resource of these Definitions (planes: {known})",
            )
        )
    return plane_name, plane


def _declared_classification(node: BaseAssetNode, problems: list[Violation]) -> Classification | None:
    name = _name(node.key)
    try:
        declared = asset_classification(node)
    except ValueError as exc:
        problems.append(
            Violation(
                kind=ViolationKind.INVALID_TAG,
                asset=node.key,
                message=f"asset {name!r}: invalid {CLASSIFICATION_TAG!r} tag: {exc}; it counts as "
                "restricted until fixed",
            )
        )
        return None
    if declared is None:
        problems.append(
            Violation(
                kind=ViolationKind.MISSING_TAG,
                asset=node.key,
                message=f"asset {name!r} has no {CLASSIFICATION_TAG!r} tag: classify it as public, "
                "internal, confidential or restricted (until then it counts as restricted)",
            )
        )
    return declared


def _declassification(node: BaseAssetNode, problems: list[Violation]) -> str | None:
    if DECLASSIFIED_METADATA_KEY not in node.metadata:
        return None
    value = _metadata(node, DECLASSIFIED_METADATA_KEY)
    if isinstance(value, str) and value.strip():
        return value
    problems.append(
        Violation(
            kind=ViolationKind.DECLASSIFICATION,
            asset=node.key,
            message=f"asset {_name(node.key)!r} is declassified ({DECLASSIFIED_METADATA_KEY!r}) without a "
            f"written justification (got a {type(value).__name__}, expected a non-empty string): it is not "
            "declassified",
        )
    )
    return None


def _metadata(node: BaseAssetNode, key: str) -> object:
    """An asset's metadata value as written (text values unwrapped)."""
    value = node.metadata[key]
    return value.value if isinstance(value, dg.TextMetadataValue) else value


def _source_jurisdiction(node: BaseAssetNode, problems: list[Violation]) -> str | None:
    if SOURCE_JURISDICTION_METADATA_KEY not in node.metadata:
        return None
    value = _metadata(node, SOURCE_JURISDICTION_METADATA_KEY)
    if value in (None, "", "undeclared"):
        problems.append(
            Violation(
                kind=ViolationKind.MISSING_TAG,
                asset=node.key,
                message=f"asset {_name(node.key)!r} reads an external source whose jurisdiction is not "
                "declared: a source database must have one (pass source_jurisdiction=, e.g. 'EU')",
            )
        )
        return None
    try:
        return Jurisdiction.parse(str(value)).value
    except ValueError as exc:
        problems.append(
            Violation(
                kind=ViolationKind.INVALID_TAG,
                asset=node.key,
                message=f"asset {_name(node.key)!r}: invalid {SOURCE_JURISDICTION_METADATA_KEY!r}: {exc}",
            )
        )
        return None


def _check_edges(
    asset: AssetResidency,
    parents: Iterable[dg.AssetKey],
    assets: Mapping[dg.AssetKey, AssetResidency],
    policy: ResidencyPolicy,
    via: str | None = None,
) -> Iterable[Violation]:
    for parent_key in sorted(parents):
        upstream = assets[parent_key]
        level = upstream.effective
        source, target = upstream.jurisdiction, asset.jurisdiction
        # An upstream of unknown place is reported on its own (undefined asset, unknown plane).
        if level is None or not level.is_regulated or source is None or target is None or source == target:
            continue
        inherited = (
            f" (inherited from {_name(upstream.classified_at)})"
            if upstream.classified_at is not None and upstream.classified_at != parent_key
            else ""
        )
        reader = f"{_name(asset.key)} ({asset.plane}, {target})"
        if via is not None:
            reader = f"asset check {via} on {reader}"
        what = f"{_name(parent_key)} ({upstream.plane}, {source}) -> {reader}, "
        what += f"{level.value}{inherited}"
        violation = _transfer(what, source, target, level, policy)
        if violation is not None:
            yield Violation(
                kind=ViolationKind.TRANSFER,
                message=violation,
                asset=asset.key,
                upstream=parent_key,
                classification=level,
                classified_at=upstream.classified_at,
                source_jurisdiction=source,
                target_jurisdiction=target,
            )


def _check_source(asset: AssetResidency, policy: ResidencyPolicy) -> Iterable[Violation]:
    source, target, level = asset.source_jurisdiction, asset.jurisdiction, asset.clearance
    if source is None or target is None or level is None or source == target:
        return
    what = f"source of {_name(asset.key)} ({source}) -> {_name(asset.key)} ({asset.plane}, {target}), "
    what += level.value
    violation = _transfer(what, source, target, level, policy)
    if violation is not None:
        yield Violation(
            kind=ViolationKind.TRANSFER,
            message=violation,
            asset=asset.key,
            classification=level,
            classified_at=asset.key,
            source_jurisdiction=source,
            target_jurisdiction=target,
        )


def _transfer(
    what: str, source: str, target: str, level: Classification, policy: ResidencyPolicy
) -> str | None:
    try:
        policy.check_transfer(what=what, source=source, target=target, classification=level)
    except ResidencyViolation as exc:
        return str(exc)
    return None


def _highest(
    candidates: list[tuple[Classification, dg.AssetKey]],
) -> tuple[Classification, dg.AssetKey]:
    return max(candidates, key=lambda c: c[0].rank)


def _name(key: dg.AssetKey) -> str:
    return key.to_user_string()


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
