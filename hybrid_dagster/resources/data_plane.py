"""The DataPlane resource: a place, in one jurisdiction, where rows are read, moved and stored."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlparse

import dagster as dg
from dagster._core.pipes.client import PipesClientCompletedInvocation
from pydantic import Field, field_validator

from hybrid_dagster.residency import Classification, Jurisdiction, ResidencyPolicy, ResidencyViolation
from hybrid_dagster.resources.metadata_screen import screen_reported_results

if TYPE_CHECKING:
    import kubernetes.client
    import pyarrow.fs as pafs
    from pyiceberg.catalog import Catalog

    from hybrid_dagster.guard import WriteIntent

NO_POLICY_HINT = (
    "no ResidencyPolicy resource was visible to this step, so no declared route could apply: give the asset "
    "a `residency_policy: ResidencyPolicy` parameter"
)

RESIDENCY_EXTRAS_KEY = "hybrid_residency"
"""Pipes extras key under which DataPlane.run passes write intents, visible planes and routes."""

PLANE_CONFIG_ENV = "HYBRID_DAGSTER_PLANE"
"""Environment variable that carries the plane's (secret-free) configuration into the plane's work."""


class CatalogConfig(dg.Config):
    """Where the plane's Iceberg catalog lives.

    The embedded default is a SQLite ``SqlCatalog`` file under a ``file://`` warehouse (dev only: SQLite
    is not for concurrent writers). Production planes give a PostgreSQL URI or a REST catalog.

    Example:
        >>> CatalogConfig(kind="rest", uri="https://catalog.eu.example.org", properties={"credential": "..."})
    """

    kind: Literal["sql", "rest"] = Field(default="sql", description="pyiceberg catalog type.")
    uri: str | None = Field(
        default=None,
        description=(
            "SQLAlchemy URI (sql) or REST endpoint (rest). Empty for sql means a SQLite file "
            "'catalog.db' inside a file:// warehouse."
        ),
    )
    properties: dict[str, str] = Field(
        default_factory=dict,
        description="Extra pyiceberg catalog properties, e.g. s3.endpoint or s3.region.",
    )


class ExecutorConfig(dg.Config):
    """How work is launched inside the plane.

    ``subprocess`` runs a local process through ``PipesSubprocessClient`` (the embedded default and what
    the tests use); ``kubernetes`` launches a pod in the plane's own cluster through dagster-k8s
    ``PipesK8sClient``.

    Example:
        >>> ExecutorConfig(
        ...     kind="kubernetes",
        ...     kube_context="eu-onprem",
        ...     namespace="clinical",
        ...     node_selector={"topology.kubernetes.io/region": "eu-central"},
        ...     image="ghcr.io/acme/clinical-plane:1.4",
        ... )
    """

    kind: Literal["subprocess", "kubernetes"] = Field(
        default="subprocess", description="Launcher for the plane's work."
    )
    kube_context: str | None = Field(
        default=None, description="kubeconfig context of the plane's own cluster (kubernetes only)."
    )
    kubeconfig_file: str | None = Field(default=None, description="Path to a kubeconfig file.")
    load_incluster_config: bool = Field(
        default=False, description="Use the in-cluster service account (code location runs in the plane)."
    )
    namespace: str = Field(default="default", description="Namespace pods are launched in.")
    image: str | None = Field(default=None, description="Container image holding the plane's work code.")
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node selector pinning pods to the plane's nodes."
    )
    labels: dict[str, str] = Field(default_factory=dict, description="Extra pod labels.")
    tolerations: list[dict[str, str]] = Field(
        default_factory=list,
        description="Pod tolerations (snake_case keys of V1Toleration), e.g. for tainted GPU nodes.",
    )
    service_account_name: str | None = Field(default=None, description="Pod service account.")
    resources: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="Container resources, e.g. {'requests': {'cpu': '1'}, 'limits': {'memory': '4Gi'}}.",
    )
    work_log_dir: str | None = Field(
        default=None,
        description=(
            "Plane-local folder for the stdout/stderr of regulated steps (default: <warehouse>/_logs for a "
            "file:// warehouse, /var/log/hybrid-dagster inside Kubernetes pods)."
        ),
    )
    python: str = Field(
        default=sys.executable,
        description="Python interpreter used for module work (subprocess) - the plane's own environment.",
    )


class SecretsConfig(dg.Config):
    """A reference to the plane's secrets backend. Values are resolved inside the plane, never here."""

    backend: Literal["env", "vault", "aws"] = Field(default="env", description="Secrets backend kind.")
    address: str | None = Field(
        default=None, description="Vault address or AWS Secrets Manager endpoint; empty for the default."
    )
    path_prefix: str = Field(default="", description="Prefix under which the plane's secrets live.")
    region: str | None = Field(default=None, description="AWS region (aws backend).")


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
        default_factory=dict, description="Environment variables set for every unit of work in the plane."
    )
    owners: list[str] = Field(
        default_factory=list, description="Who answers for this plane (team:... or e-mail addresses)."
    )

    @field_validator("jurisdiction")
    @classmethod
    def _valid_jurisdiction(cls, value: str) -> str:
        return Jurisdiction.parse(value).value

    @field_validator("warehouse")
    @classmethod
    def _valid_warehouse(cls, value: str) -> str:
        scheme = urlparse(value).scheme
        if scheme not in {"file", "s3"}:
            raise ValueError(f"warehouse {value!r} must be a file:// or s3:// URI")
        return value.rstrip("/")

    @property
    def warehouse_path(self) -> Path:
        """Local path of a ``file://`` warehouse."""
        parsed = urlparse(self.warehouse)
        if parsed.scheme != "file":
            raise ValueError(f"plane {self.name!r}: warehouse {self.warehouse} is not a local file:// URI")
        return Path(parsed.path)

    # -- storage ----------------------------------------------------------------------------------------

    def catalog_properties(self) -> dict[str, str]:
        props: dict[str, str] = {"warehouse": self.warehouse, **self.catalog.properties}
        if self.catalog.kind == "rest":
            if not self.catalog.uri:
                raise ValueError(f"plane {self.name!r}: a rest catalog needs catalog.uri")
            props.update(type="rest", uri=self.catalog.uri)
            return props
        uri = self.catalog.uri
        if not uri:
            if urlparse(self.warehouse).scheme != "file":
                raise ValueError(
                    f"plane {self.name!r}: an s3:// warehouse needs catalog.uri (a SQL database or REST "
                    "catalog); the embedded SQLite catalog is only for file:// warehouses"
                )
            self.warehouse_path.mkdir(parents=True, exist_ok=True)
            uri = f"sqlite:///{self.warehouse_path / 'catalog.db'}"
        props.update(type="sql", uri=uri)
        if uri.startswith("sqlite"):
            props.setdefault("init_catalog_tables", "true")
        return props

    def filesystem(self) -> tuple[pafs.FileSystem, str]:
        """A pyarrow filesystem for the warehouse (S3 settings from the catalog's ``s3.*`` properties)
        and the warehouse's path on it.

        Example:
            >>> fs, root = plane.filesystem()
            >>> fs.get_file_info(f"{root}/_changelog")
        """
        import pyarrow.fs as pafs

        parsed = urlparse(self.warehouse)
        if parsed.scheme == "file":
            return pafs.LocalFileSystem(), parsed.path
        props = self.catalog.properties
        s3 = pafs.S3FileSystem(
            endpoint_override=props.get("s3.endpoint"),
            region=props.get("s3.region") or "us-east-1",
            access_key=props.get("s3.access-key-id"),
            secret_key=props.get("s3.secret-access-key"),
            session_token=props.get("s3.session-token"),
        )
        return s3, f"{parsed.netloc}{parsed.path}"

    def load_catalog(self) -> Catalog:
        """The plane's pyiceberg catalog.

        Example:
            >>> table = plane.load_catalog().load_table("clinical.patients")
        """
        from pyiceberg.catalog import load_catalog

        return load_catalog(self.name, **self.catalog_properties())

    # -- running work inside the plane ------------------------------------------------------------------

    def plane_env(self) -> dict[str, str]:
        """Environment for work launched in this plane: the plane's settings, never secret values."""
        return {
            **self.env,
            PLANE_CONFIG_ENV: json.dumps(self.to_config()),
        }

    def to_config(self) -> dict[str, Any]:
        """This plane's configuration as a JSON-able dict (round-trips through :meth:`from_config`)."""
        return json.loads(self.model_dump_json())

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> DataPlane:
        return cls(**dict(config))

    @classmethod
    def from_env(cls) -> DataPlane:
        """Inside the plane's work: the DataPlane that launched it.

        Example:
            >>> plane = DataPlane.from_env()  # in a script started by DataPlane.run
        """
        raw = os.environ.get(PLANE_CONFIG_ENV)
        if not raw:
            raise RuntimeError(
                f"{PLANE_CONFIG_ENV} is not set: this code must run inside a plane started by DataPlane.run"
            )
        return cls.from_config(json.loads(raw))

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
        known_planes: Sequence[DataPlane] = (),
    ) -> PipesClientCompletedInvocation:
        """Run a unit of work inside this plane through Dagster Pipes and return what it reported.

        Give either ``command`` (argv) or ``module`` (a Python module run with the plane's interpreter).
        The work sees the plane's configuration in its environment and reads ``extras`` through
        ``open_dagster_pipes()``. For confidential or restricted assets, the work's stdout/stderr stay in
        the plane (a log file under the warehouse) and reported metadata is screened: only counts,
        timestamps, schemas, paths and the text keys in ``allowed_text_metadata`` may reach the
        orchestrator. ``known_planes`` adds planes (e.g. the one an asset factory was built for) to those
        the step's resources provide, for resolving upstream and home jurisdictions.

        Example:
            .. code-block:: python

                invocation = plane.run(context, module="clinical.work.load_patients", extras={"limit": 10})
                return invocation.get_materialize_result()
        """
        argv = self._argv(command=command, module=module, args=args)
        classification = _highest_classification(context)
        regulated = classification is not None and classification.is_regulated
        residency = self._step_residency(context, known_planes)
        residency.check_target(self)  # a wrong plane stops the step before any data moves
        if regulated:
            argv = self.kept_in_plane(argv, self.work_log_path(context.run.run_id, context.op_handle.name))
        run_env = {**self.plane_env(), **(env or {})}
        all_extras = {**(extras or {}), RESIDENCY_EXTRAS_KEY: residency.extras()}
        if self.executor.kind == "kubernetes":
            invocation = self._run_kubernetes(context, argv, all_extras, run_env)
        else:
            client = dg.PipesSubprocessClient(env={**os.environ, **run_env})
            invocation = client.run(context=context, command=argv, extras=all_extras)
        if regulated:
            screen_reported_results(
                invocation.get_results(),
                plane=self.name,
                allowed_text_keys=allowed_text_metadata,
            )
        return invocation

    def _step_residency(
        self, context: dg.AssetExecutionContext | dg.OpExecutionContext, known_planes: Sequence[DataPlane]
    ) -> StepResidency:
        """The write intents of this step's assets, the planes it can see and the declared routes,
        computed here from the run's asset graph, for the checks on both sides of Pipes."""
        from hybrid_dagster.guard import write_intent_for
        from hybrid_dagster.residency import PLANE_TAG, ResidencyPolicy

        resources = context.resources._asdict()
        planes = {r.name: r for r in resources.values() if isinstance(r, DataPlane)}
        planes.setdefault(self.name, self)
        for known in known_planes:
            planes.setdefault(known.name, known)
        visible = [r for r in resources.values() if isinstance(r, ResidencyPolicy)]
        intents: list[WriteIntent] = []
        if context.has_assets_def:
            for key in context.selected_asset_keys:
                if PLANE_TAG in context.assets_def.tags_by_key.get(key, {}):
                    intents.append(write_intent_for(context, planes, key))
        return StepResidency(
            planes=planes,
            policy=visible[0] if visible else ResidencyPolicy(),
            policy_visible=bool(visible),
            intents=intents,
        )

    def _argv(self, *, command: Sequence[str] | None, module: str | None, args: Sequence[str]) -> list[str]:
        if (command is None) == (module is None):
            raise ValueError(f"plane {self.name!r}: give exactly one of command= or module=")
        if module is not None:
            python = "python" if self.executor.kind == "kubernetes" else self.executor.python
            return [python, "-m", module, *args]
        assert command is not None
        return [*command, *args]

    def work_log_path(self, run_id: str, step: str) -> Path:
        """Where a regulated step's stdout/stderr is kept, inside the plane."""
        if self.executor.work_log_dir:
            root = Path(self.executor.work_log_dir)
        elif self.executor.kind == "kubernetes":
            root = Path("/var/log/hybrid-dagster")
        elif urlparse(self.warehouse).scheme == "file":
            root = self.warehouse_path / "_logs"
        else:
            raise ValueError(
                f"plane {self.name!r}: regulated step {step!r} keeps its output in the plane, but the "
                f"warehouse {self.warehouse} is not a local folder: set executor.work_log_dir"
            )
        return root / run_id / f"{step}.log"

    def kept_in_plane(self, argv: Sequence[str], log_file: Path) -> list[str]:
        """``argv`` wrapped so that its stdout/stderr go to ``log_file`` in the plane, while Dagster Pipes
        messages still reach the orchestrator (see :mod:`hybrid_dagster.plane.launch`)."""
        python = "python" if self.executor.kind == "kubernetes" else self.executor.python
        return [python, "-m", "hybrid_dagster.plane.launch", "--log", str(log_file), "--", *argv]

    def _run_kubernetes(
        self,
        context: dg.AssetExecutionContext | dg.OpExecutionContext,
        argv: list[str],
        extras: Mapping[str, Any] | None,
        env: Mapping[str, str],
    ) -> PipesClientCompletedInvocation:
        from dagster_k8s import PipesK8sClient

        client = PipesK8sClient(
            load_incluster_config=self.executor.load_incluster_config or None,
            kubeconfig_file=self.executor.kubeconfig_file,
            kube_context=self.executor.kube_context,
        )
        return client.run(
            context=context,
            extras=dict(extras or {}),
            image=self.executor.image,
            command=argv,
            namespace=self.executor.namespace,
            env=dict(env),
            base_pod_meta=self.pod_meta(),
            base_pod_spec=self.pod_spec_overrides(),
        )

    def pod_meta(self) -> dict[str, Any]:
        """Pod metadata (labels) identifying the plane and jurisdiction."""
        return {
            "labels": {
                "hybrid-dagster/plane": self.name,
                "hybrid-dagster/jurisdiction": self.jurisdiction,
                "hybrid-dagster/location": self.location.replace("_", "-"),
                **self.executor.labels,
            }
        }

    def pod_spec_overrides(self) -> dict[str, Any]:
        """The base pod spec handed to dagster-k8s: node selector, service account, resources."""
        spec: dict[str, Any] = {}
        if self.executor.node_selector:
            spec["node_selector"] = dict(self.executor.node_selector)
        if self.executor.tolerations:
            spec["tolerations"] = [dict(t) for t in self.executor.tolerations]
        if self.executor.service_account_name:
            spec["service_account_name"] = self.executor.service_account_name
        if self.executor.resources:
            spec["containers"] = [{"name": "dagster-pipes-execution", "resources": self.executor.resources}]
            if self.executor.image:
                spec["containers"][0]["image"] = self.executor.image
        return spec

    def build_pod(
        self, pod_name: str, argv: Sequence[str], env: Mapping[str, str] | None = None
    ) -> kubernetes.client.V1Pod:
        """The pod dagster-k8s would launch for ``argv`` in this plane (without Pipes bootstrap env).

        Example:
            >>> pod = plane.build_pod("ingest-1", ["python", "-m", "clinical.ingest"])
            >>> pod.spec.node_selector
        """
        from dagster_k8s.pipes import build_pod_body

        if self.executor.kind != "kubernetes":
            raise ValueError(f"plane {self.name!r} uses the {self.executor.kind} executor, not kubernetes")
        pod = build_pod_body(
            pod_name=pod_name,
            image=self.executor.image,
            command=list(argv),
            env_vars={**self.plane_env(), **(env or {})},
            base_pod_meta=self.pod_meta(),
            base_pod_spec=self.pod_spec_overrides(),
        )
        pod.metadata.namespace = self.executor.namespace
        return pod


@dataclass
class StepResidency:
    """What one step may write where: its assets' intents, the planes it sees, the declared routes."""

    planes: dict[str, DataPlane]
    policy: ResidencyPolicy
    policy_visible: bool
    intents: list[WriteIntent]

    def check_target(self, target: DataPlane) -> None:
        """Refuse to run the step's work in ``target`` when its regulated data may not be written there."""
        from hybrid_dagster.guard import check_write

        for intent in self.intents:
            try:
                check_write(intent, target, self.policy)
            except ResidencyViolation as violation:
                if self.policy_visible:
                    raise
                raise ResidencyViolation(f"{violation} ({NO_POLICY_HINT})") from violation

    def extras(self) -> dict[str, Any]:
        return {
            "planes": {name: plane.to_config() for name, plane in self.planes.items()},
            "routes": [route.model_dump() for route in self.policy.routes],
            "policy_visible": self.policy_visible,
            "intents": {
                intent.asset: {
                    "asset": intent.asset,
                    "classification": intent.classification.value,
                    "home_plane": intent.home_plane,
                    "data_jurisdictions": sorted(intent.data_jurisdictions),
                }
                for intent in self.intents
            },
        }


def _highest_classification(
    context: dg.AssetExecutionContext | dg.OpExecutionContext,
) -> Classification | None:
    """The most sensitive classification among the assets this step materializes."""
    from hybrid_dagster.residency import CLASSIFICATION_TAG

    if not context.has_assets_def:
        return None
    assets_def = context.assets_def
    found: list[Classification] = []
    for key in context.selected_asset_keys:
        value = assets_def.tags_by_key.get(key, {}).get(CLASSIFICATION_TAG)
        if value is not None:
            found.append(Classification.parse(value))
    return Classification.highest(found) if found else None
