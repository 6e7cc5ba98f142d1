"""Launchers: start a unit of work inside a plane through Dagster Pipes.

``SubprocessLauncher`` runs a local process (the embedded default and the tests); ``KubernetesLauncher``
runs a pod in the plane's own cluster through dagster-k8s ``PipesK8sClient``. For regulated steps both
wrap the command in :mod:`hybrid_dagster.plane.launch`, which keeps stdout/stderr in a plane-local log
and screens every Pipes message before it leaves the plane.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import dagster as dg

from hybrid_dagster.plane.config import ExecutorConfig, PlaneSpec
from hybrid_dagster.plane.contract import ScreenSpec
from hybrid_dagster.plane.storage import warehouse_path

if TYPE_CHECKING:
    import kubernetes.client


class Launcher(ABC):
    """Starts work for one plane; one subclass per executor kind."""

    def __init__(self, spec: PlaneSpec, executor: ExecutorConfig, location: str) -> None:
        self.spec = spec
        self.executor = executor
        self.location = location

    @property
    def python(self) -> str:
        return self.executor.python

    def argv(self, *, command: Sequence[str] | None, module: str | None, args: Sequence[str]) -> list[str]:
        """The work's argv from exactly one of ``command`` or ``module``."""
        if (command is None) == (module is None):
            raise ValueError(f"plane {self.spec.name!r}: give exactly one of command= or module=")
        if module is not None:
            return [self.python, "-m", module, *args]
        assert command is not None
        return [*command, *args]

    def work_log_path(self, run_id: str, step: str) -> Path:
        """Where a regulated step's stdout/stderr is kept, inside the plane."""
        if self.executor.work_log_dir:
            root = Path(self.executor.work_log_dir)
        elif urlparse(self.spec.warehouse).scheme == "file":
            root = warehouse_path(self.spec) / "_logs"
        else:
            raise ValueError(
                f"plane {self.spec.name!r}: regulated step {step!r} keeps its output in the plane, but the "
                f"warehouse {self.spec.warehouse} is not a local folder: set executor.work_log_dir"
            )
        return root / run_id / f"{step}.log"

    def kept_in_plane(
        self, argv: Sequence[str], log_file: Path, screen: ScreenSpec | None = None
    ) -> list[str]:
        """``argv`` wrapped so that its stdout/stderr go to ``log_file`` in the plane and every Pipes
        message is screened before it reaches the orchestrator (see :mod:`hybrid_dagster.plane.launch`)."""
        wrapped = [self.python, "-m", "hybrid_dagster.plane.launch", "--log", str(log_file)]
        if screen is not None:
            wrapped += ["--screen", screen.model_dump_json()]
        return [*wrapped, "--", *argv]

    @abstractmethod
    def launch(
        self,
        context: dg.AssetExecutionContext | dg.OpExecutionContext,
        argv: list[str],
        extras: Mapping[str, Any],
        env: Mapping[str, str],
    ) -> dg.PipesClientCompletedInvocation:
        """Run ``argv`` in the plane and return what it reported."""


class SubprocessLauncher(Launcher):
    """A local process through ``PipesSubprocessClient``."""

    def launch(
        self,
        context: dg.AssetExecutionContext | dg.OpExecutionContext,
        argv: list[str],
        extras: Mapping[str, Any],
        env: Mapping[str, str],
    ) -> dg.PipesClientCompletedInvocation:
        client = dg.PipesSubprocessClient(env={**os.environ, **env})
        return client.run(context=context, command=argv, extras=dict(extras))


class KubernetesLauncher(Launcher):
    """A pod in the plane's own cluster through dagster-k8s ``PipesK8sClient``."""

    @property
    def python(self) -> str:
        return "python"

    def work_log_path(self, run_id: str, step: str) -> Path:
        root = Path(self.executor.work_log_dir or "/var/log/hybrid-dagster")
        return root / run_id / f"{step}.log"

    def launch(
        self,
        context: dg.AssetExecutionContext | dg.OpExecutionContext,
        argv: list[str],
        extras: Mapping[str, Any],
        env: Mapping[str, str],
    ) -> dg.PipesClientCompletedInvocation:
        from dagster_k8s import PipesK8sClient

        client = PipesK8sClient(
            load_incluster_config=self.executor.load_incluster_config or None,
            kubeconfig_file=self.executor.kubeconfig_file,
            kube_context=self.executor.kube_context,
        )
        return client.run(
            context=context,
            extras=dict(extras),
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
                "hybrid-dagster/plane": self.spec.name,
                "hybrid-dagster/jurisdiction": self.spec.jurisdiction,
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
        self, pod_name: str, argv: Sequence[str], env: Mapping[str, str]
    ) -> kubernetes.client.V1Pod:
        """The pod dagster-k8s would launch for ``argv`` in this plane (without Pipes bootstrap env)."""
        from dagster_k8s.pipes import build_pod_body

        pod = build_pod_body(
            pod_name=pod_name,
            image=self.executor.image,
            command=list(argv),
            env_vars=dict(env),
            base_pod_meta=self.pod_meta(),
            base_pod_spec=self.pod_spec_overrides(),
        )
        pod.metadata.namespace = self.executor.namespace
        return pod


def launcher_for(spec: PlaneSpec, executor: ExecutorConfig, location: str) -> Launcher:
    """The launcher of ``executor.kind``.

    Example:
        >>> launcher_for(spec, ExecutorConfig(), "on_prem")
    """
    if executor.kind == "kubernetes":
        return KubernetesLauncher(spec, executor, location)
    return SubprocessLauncher(spec, executor, location)
