"""The environment as a secrets backend, for local use.

Correctness rules: ``path`` is the variable's name (under ``path_prefix``, joined with ``_``); versions
do not exist here, so a reference with a version is refused rather than read unversioned.

Example:
    >>> import os
    >>> os.environ["EU_ONPREM_DB_PASSWORD"] = "local-only"
    >>> EnvBackend(plane="eu-onprem").read(SecretRef(backend="env", path="EU_ONPREM_DB_PASSWORD")).version
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from hybrid_dagster.secrets.base import ResolvedSecret, SecretsBackend
from hybrid_dagster.secrets.errors import SecretConfigError, SecretNotFound
from hybrid_dagster.secrets.ref import SecretRef


class EnvBackend(SecretsBackend):
    """Secrets from environment variables of the plane process.

    Example:
        >>> backend = EnvBackend(plane="eu-onprem", path_prefix="MERIDIAN")
        >>> backend.full_path(SecretRef(backend="env", path="PW"))
        'MERIDIAN_PW'
    """

    kind = "env"

    def __init__(
        self, *, plane: str, path_prefix: str = "", environ: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(plane=plane, path_prefix=path_prefix)
        self._environ = environ if environ is not None else os.environ

    @property
    def identity(self) -> str:
        return f"process:{self.plane}"

    @property
    def location(self) -> str:
        return "the plane's environment"

    def full_path(self, ref: SecretRef) -> str:
        return f"{self.path_prefix}_{ref.path}" if self.path_prefix else ref.path

    def read(self, ref: SecretRef) -> ResolvedSecret:
        name = self.full_path(ref)
        if ref.version is not None:
            raise SecretConfigError(
                f"env secret {name} on plane {self.plane!r}: environment variables have no versions; "
                "drop version= from the SecretRef or use the vault or aws backend"
            )
        raw = self._environ.get(name)
        if raw is None:
            raise SecretNotFound(
                f"env secret {name} is not set in the environment of plane {self.plane!r}: set it for the "
                "plane's processes, or use the plane's vault or aws backend"
            )
        return self.pick_key(ref, raw, None)
