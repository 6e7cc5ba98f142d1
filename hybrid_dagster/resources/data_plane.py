"""The DataPlane resource: a place, in one jurisdiction, where rows are read, moved and stored.

Correctness rules:

- ``DataPlane.run`` decides everything before work starts: the step's residency (intents, clearance) is
  recomputed from the asset graph; a plane that may not hold the step's data refuses the work; a
  regulated asset whose rows would be pickled by an orchestrator-side IO manager is refused.
- The work receives a typed contract (:mod:`hybrid_dagster.plane.contract`): its own plane's spec and
  the specs of the planes the step may read - secret-free - plus the declared routes and its intents.
- For a step whose clearance is regulated, stdout/stderr stay in the plane and every Pipes message is
  screened in the plane before it leaves, then the reported results are screened again here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import dagster as dg
from pydantic import ConfigDict, Field, field_validator

from hybrid_dagster.errors import ResidencyError, ResidencyViolation
from hybrid_dagster.keys import PLANE_CONFIG_ENV, POLICY_RESOURCE_KEY, REFUSED_KEY
from hybrid_dagster.plane import storage
from hybrid_dagster.plane.config import (
    CatalogConfig as CatalogConfig,
    CatalogSpec,
    DrSecondaryConfig as DrSecondaryConfig,
    ExecutorConfig as ExecutorConfig,
    PlaneSpec,
    SecretsConfig as SecretsConfig,
    looks_secret,
    warehouses_overlap,
)
from hybrid_dagster.plane.contract import IntentSpec, ResidencyExtras, RouteSpec, ScreenSpec
from hybrid_dagster.plane.launchers import KubernetesLauncher, Launcher, launcher_for
from hybrid_dagster.residency.guard import NO_POLICY_HINT as NO_POLICY_HINT, StepResidency, step_residency
from hybrid_dagster.residency.model import Jurisdiction, ResidencyPolicy
from hybrid_dagster.residency.screen import screen_reported_results

if TYPE_CHECKING:
    import kubernetes.client
    import pyarrow.fs as pafs
    from pyiceberg.catalog import Catalog

RESIDENCY_EXTRAS_KEY = "hybrid_residency"


class DataPlane(dg.ConfigurableResource):
    """A data plane: one on-prem rack or cloud region, in exactly one jurisdiction.

    The plane owns a warehouse (``file://`` or ``s3://``), an Iceberg catalog, a launcher for work that
    touches rows and a reference to its secrets backend. Assets are pinned to it with the tag
    ``hybrid/plane``; the plane's ``jurisdiction`` is what residency checks compare.

    Example:
        .. code-block:: python

            import dagster as dg
            from hybrid_dagster import DataPlane, pinned

            eu = DataPlane(name="eu-onprem", jurisdiction="EU", region="eu-central", location="on_prem",
                           warehouse="file:///srv/eu/warehouse")

            @dg.asset(**pinned("eu-onprem", "restricted", kinds={"iceberg"}))
            def patients(context: dg.AssetExecutionContext, eu_onprem: DataPlane) -> dg.MaterializeResult:
                return eu_onprem.run(context, module="clinical.extract_patients").get_materialize_result()

            defs = dg.Definitions(assets=[patients], resources={"eu_onprem": eu})
    """

    model_config = ConfigDict(hide_input_in_errors=True)  # a refused credential is never echoed

    name: str = Field(description="Unique plane name; the value of the hybrid/plane asset tag.")
    jurisdiction: str = Field(description="Jurisdiction code the plane sits in, e.g. 'EU' or 'US'.")
    region: str = Field(description="Physical region or site, e.g. 'eu-central-1' or 'fra-dc2'.")
    location: Literal["on_prem", "cloud"] = Field(description="Whether the plane is on-prem or in a cloud.")
    warehouse: str = Field(description="Root URI of the plane's storage: file:///... or s3://bucket/prefix.")
    catalog: CatalogConfig = Field(
        default_factory=CatalogConfig, description="Iceberg catalog settings (embedded SQLite by default)."
    )
    executor: ExecutorConfig = Field(
        default_factory=ExecutorConfig, description="How work is launched inside the plane."
    )
    secrets: SecretsConfig = Field(
        default_factory=SecretsConfig, description="Reference to the plane's secrets backend."
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Environment variables set for every unit of work in the plane (never credentials).",
    )
    owners: list[str] = Field(
        default_factory=list, description="Who answers for this plane (team:... or e-mail addresses)."
    )
    dr_secondary: DrSecondaryConfig | None = Field(
        default=None,
        description="The plane's disaster-recovery secondary and its RTO/RPO objectives (hybrid_dagster.dr).",
    )

    @field_validator("jurisdiction")
    @classmethod
    def _valid_jurisdiction(cls, value: str) -> str:
        return Jurisdiction.parse(value).value

    @field_validator("warehouse")
    @classmethod
    def _valid_warehouse(cls, value: str) -> str:
        parsed = urlparse_scheme(value)
        if parsed not in {"file", "s3"}:
            raise ValueError(f"warehouse {value!r} must be a file:// or s3:// URI")
        return value.rstrip("/")

    @field_validator("env")
    @classmethod
    def _no_credentials_in_env(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if looks_secret(key):
                raise ValueError(
                    f"env {key!r} looks like a credential: a plane's env is shown in the UI and in pod "
                    "specs; resolve credentials inside the plane through its secrets backend instead"
                )
        return value

    # -- identity and storage ---------------------------------------------------------------------------

    def spec(self) -> PlaneSpec:
        """The secret-free spec of this plane that crosses into plane work."""
        return PlaneSpec(
            name=self.name,
            jurisdiction=self.jurisdiction,
            region=self.region,
            location=self.location,
            warehouse=self.warehouse,
            catalog=CatalogSpec(
                kind=self.catalog.kind, uri=self.catalog.uri, properties=dict(self.catalog.properties)
            ),
            secrets=self.secrets.model_dump(),
        )

    @property
    def warehouse_path(self) -> Path:
        """Local path of a ``file://`` warehouse."""
        return storage.warehouse_path(self.spec())

    def catalog_properties(self) -> dict[str, str]:
        """pyiceberg properties of the plane's catalog, with ``{env:NAME}`` references unresolved."""
        return storage.catalog_properties(self.spec(), resolve=False)

    def filesystem(self) -> tuple[pafs.FileSystem, str]:
        """A pyarrow filesystem for the warehouse and the warehouse's path on it.

        Example:
            >>> fs, root = plane.filesystem()
            >>> fs.get_file_info(f"{root}/_changelog")
        """
        return storage.filesystem(self.spec())

    def load_catalog(self) -> Catalog:
        """The plane's pyiceberg catalog - for operators' scripts and for work inside this plane.

        Refused inside a Dagster step in the orchestrator (use :meth:`run` with plane work) and inside
        another plane's work (use ``PlaneWork.read_table``), where it would bypass the guard.

        Example:
            >>> table = plane.load_catalog().load_table("clinical.patients")  # in an operator's script
        """
        spec = self.spec()
        storage.check_catalog_access(spec)
        return storage.open_catalog(spec)

    # -- running work inside the plane ------------------------------------------------------------------

    def plane_env(self) -> dict[str, str]:
        """Environment for work launched in this plane: its own spec, never secret values."""
        return {**self.env, PLANE_CONFIG_ENV: self.spec().model_dump_json()}

    def to_config(self) -> dict[str, Any]:
        """This plane's configuration as a JSON-able dict (round-trips through :meth:`from_config`)."""
        return json.loads(self.model_dump_json())

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> DataPlane:
        return cls(**dict(config))

    @classmethod
    def from_env(cls) -> DataPlane:
        """Inside the plane's work: the DataPlane that launched it (its secret-free spec).

        Example:
            >>> plane = DataPlane.from_env()  # in a script started by DataPlane.run
        """
        raw = os.environ.get(PLANE_CONFIG_ENV)
        if not raw:
            raise ResidencyError(
                f"{PLANE_CONFIG_ENV} is not set: this code must run inside a plane started by DataPlane.run"
            )
        spec = PlaneSpec.model_validate_json(raw)
        return cls(
            name=spec.name,
            jurisdiction=spec.jurisdiction,
            region=spec.region,
            location=spec.location,
            warehouse=spec.warehouse,
            catalog=CatalogConfig(**spec.catalog.model_dump()),
            secrets=SecretsConfig(**spec.secrets),
        )

    @property
    def launcher(self) -> Launcher:
        return launcher_for(self.spec(), self.executor, self.location)

    def run(
        self,
        context: dg.AssetExecutionContext | dg.OpExecutionContext,
        *,
        command: Sequence[str] | None = None,
        module: str | None = None,
        args: Sequence[str] = (),
        extras: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        allowed_text_metadata: Sequence[str] = (),
        allowed_metadata_keys: Sequence[str] = (),
        known_planes: Sequence[DataPlane] = (),
    ) -> dg.PipesClientCompletedInvocation:
        """Run a unit of work inside this plane through Dagster Pipes and return what it reported.

        Args:
            context: the asset, asset check or op context of the step.
            command: argv of the work (exclusive with ``module``).
            module: a Python module run with the plane's interpreter.
            args: extra arguments appended to the argv.
            extras: Pipes extras for the work (read with ``open_dagster_pipes()``); no secrets.
            env: extra environment for the work; no credentials.
            allowed_text_metadata: text metadata keys a regulated step may report (identifiers only).
            allowed_metadata_keys: further metadata keys (numbers, timestamps) a regulated step may report.
            known_planes: planes beyond the step's resources, for resolving jurisdictions.

        For steps whose clearance is confidential or restricted, the work's stdout/stderr stay in the
        plane (a log file under the warehouse), Pipes log messages stay there too, and reported metadata
        is screened: only counts, timestamps, schemas and declared keys reach the orchestrator.

        Example:
            .. code-block:: python

                invocation = plane.run(context, module="clinical.work.load_patients", extras={"limit": 10})
                return invocation.get_materialize_result()
        """
        launcher = self.launcher
        argv = launcher.argv(command=command, module=module, args=args)
        residency = self.step_residency(context, known_planes)
        residency.check_target(self)  # a wrong plane stops the step before any data moves
        _refuse_rows_in_orchestrator(context, residency)
        if residency.regulated:
            screen = ScreenSpec(
                plane=self.name,
                step=residency.step,
                keys=list(allowed_metadata_keys),
                text_keys=list(allowed_text_metadata),
            )
            log_file = launcher.work_log_path(context.run.run_id, context.op_handle.name)
            argv = launcher.kept_in_plane(argv, log_file, screen)
        contract = ResidencyExtras(
            plane=self.spec(),
            step=residency.step,
            clearance=residency.clearance,
            readable_planes={name: _spec_of(p) for name, p in residency.planes.items()},
            routes=[RouteSpec(**r.model_dump()) for r in residency.policy.routes],
            policy_visible=residency.policy_visible,
            intents={i.asset: IntentSpec.from_intent(i) for i in residency.intents},
        )
        run_env = {**self.plane_env(), **(env or {})}
        invocation = launcher.launch(context, argv, {**(extras or {}), **contract.to_extras()}, run_env)
        for message in invocation.get_custom_messages():
            if isinstance(message, dict) and REFUSED_KEY in message:
                raise ResidencyViolation(str(message[REFUSED_KEY]))
        if residency.regulated:
            screen_reported_results(
                invocation.get_results(),
                plane=self.name,
                allowed_text_keys=allowed_text_metadata,
                allowed_keys=allowed_metadata_keys,
                step=residency.step,
            )
        return invocation

    def step_residency(
        self,
        context: dg.AssetExecutionContext | dg.OpExecutionContext,
        known_planes: Sequence[DataPlane] = (),
    ) -> StepResidency:
        """What the running step may touch, from the run's asset graph and the step's resources."""
        planes: dict[str, DataPlane] = {}
        policies: dict[str, ResidencyPolicy] = {}
        for key in _resource_keys(context):
            resource = getattr(context.resources, key, None)
            if isinstance(resource, DataPlane):
                planes.setdefault(resource.name, resource)
            elif isinstance(resource, ResidencyPolicy):
                policies[key] = resource
        planes.setdefault(self.name, self)
        for known in known_planes:
            planes.setdefault(known.name, known)
        _refuse_overlapping(planes)
        policy = _one_policy(policies)
        return step_residency(
            context, planes, policy or ResidencyPolicy(), policy_visible=policy is not None, home=self
        )

    # -- Kubernetes pods (delegates to the launcher) ------------------------------------------------------

    def work_log_path(self, run_id: str, step: str) -> Path:
        """Where a regulated step's stdout/stderr is kept, inside the plane."""
        return self.launcher.work_log_path(run_id, step)

    def kept_in_plane(self, argv: Sequence[str], log_file: Path) -> list[str]:
        """``argv`` wrapped so that its output stays in the plane (see :mod:`hybrid_dagster.plane.launch`)."""
        return self.launcher.kept_in_plane(argv, log_file)

    def pod_meta(self) -> dict[str, Any]:
        """Pod metadata (labels) identifying the plane and jurisdiction."""
        return self._kubernetes().pod_meta()

    def pod_spec_overrides(self) -> dict[str, Any]:
        """The base pod spec handed to dagster-k8s: node selector, service account, resources."""
        return self._kubernetes().pod_spec_overrides()

    def build_pod(
        self, pod_name: str, argv: Sequence[str], env: Mapping[str, str] | None = None
    ) -> kubernetes.client.V1Pod:
        """The pod dagster-k8s would launch for ``argv`` in this plane (without Pipes bootstrap env).

        Example:
            >>> pod = plane.build_pod("ingest-1", ["python", "-m", "clinical.ingest"])
            >>> pod.spec.node_selector
        """
        return self._kubernetes().build_pod(pod_name, argv, {**self.plane_env(), **(env or {})})

    def _kubernetes(self) -> KubernetesLauncher:
        launcher = self.launcher
        if not isinstance(launcher, KubernetesLauncher):
            raise ValueError(f"plane {self.name!r} uses the {self.executor.kind} executor, not kubernetes")
        return launcher


def urlparse_scheme(value: str) -> str:
    from urllib.parse import urlparse

    return urlparse(value).scheme


def _spec_of(plane: Any) -> PlaneSpec:
    return plane.spec() if isinstance(plane, DataPlane) else plane


def _resource_keys(context: dg.AssetExecutionContext | dg.OpExecutionContext) -> list[str]:
    return sorted(context.op_def.required_resource_keys)


def _refuse_overlapping(planes: Mapping[str, DataPlane]) -> None:
    names = sorted(planes)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            if warehouses_overlap(planes[first].warehouse, planes[second].warehouse):
                raise ResidencyError(
                    f"planes {first!r} and {second!r} have overlapping warehouses: each plane's data must "
                    "live apart, or labels and guards cannot tell them apart"
                )


def _one_policy(policies: Mapping[str, ResidencyPolicy]) -> ResidencyPolicy | None:
    if POLICY_RESOURCE_KEY in policies and len(policies) == 1:
        return policies[POLICY_RESOURCE_KEY]
    if len(policies) == 1:
        return next(iter(policies.values()))
    if not policies:
        return None
    raise ResidencyError(
        f"the step sees several ResidencyPolicy resources ({', '.join(sorted(policies))}): a Definitions "
        f"has one policy, under {POLICY_RESOURCE_KEY!r}, used by the static check and at run time alike"
    )


def _refuse_rows_in_orchestrator(
    context: dg.AssetExecutionContext | dg.OpExecutionContext, residency: StepResidency
) -> None:
    """A regulated asset must return no rows, or hand them to an IO manager that stores them in its plane."""
    if not context.has_assets_def or not residency.regulated:
        return
    assets_def = context.assets_def
    for key in context.selected_asset_keys:
        output = assets_def.get_output_name_for_asset_key(key)
        out_def = assets_def.op.output_def_named(output)
        if out_def.dagster_type.is_nothing or out_def.dagster_type.is_any:
            continue  # no rows, or unannotated: the IO manager guard and the static check stand
        io_manager = getattr(context.resources, out_def.io_manager_key, None)
        if getattr(io_manager, "stores_rows_in_plane", False):
            continue
        raise ResidencyError(
            f"asset {key.to_user_string()!r} is regulated and returns a value that IO manager "
            f"{out_def.io_manager_key!r} would store outside its plane: return a dg.MaterializeResult "
            "(rows stay in the plane) or use PlaneIcebergIOManager"
        )
