"""Apply the Vault/OpenBao part of the access tiers to a server: diff first, then converge, idempotently.

Correctness rules:

- :func:`plan_vault` reads the server's current policies, AppRoles and Kubernetes-auth roles and returns
  the changes needed, without writing; :func:`apply_vault` writes exactly those changes, so a second run
  plans nothing.
- Only objects named by the declaration (``hd-<plane>-<tier>``) are touched; nothing is deleted.
- Durations are compared in seconds (the server answers ``3600`` for ``1h``).

Example:
    .. code-block:: python

        client = hvac.Client(url="https://bao.example.org", token=os.environ["VAULT_TOKEN"])
        for change in plan_vault(client, access):
            print(change)
        apply_vault(client, access)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import hvac
import hvac.exceptions

from hybrid_dagster.access.model import AccessTiers
from hybrid_dagster.access.vault import render_vault

_DURATION = re.compile(r"(\d+)([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(duration: str | int) -> int:
    """A Vault duration (``90``, ``30m``, ``1h30m``) in seconds.

    Example:
        >>> seconds("1h30m")
        5400
    """
    if isinstance(duration, int):
        return duration
    parts = _DURATION.findall(duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise ValueError(f"not a Vault duration: {duration!r}")
    return sum(int(n) * _UNITS[u] for n, u in parts)


@dataclass(frozen=True)
class Change:
    """One planned change: create or update an object, with the fields that differ."""

    action: str  # "enable", "create" or "update"
    kind: str  # "auth method", "policy", "approle", "kubernetes role"
    name: str
    details: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        mark = {"create": "+", "update": "~", "enable": "+"}[self.action]
        text = f"{mark} {self.kind} {self.name}"
        return text + "".join(f"\n    {d}" for d in self.details)


def _normal(settings: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if key == "policies":
            key = "token_policies"
        if key in {"ttl", "max_ttl"}:
            key = f"token_{key}"
        if key.endswith("ttl"):
            value = seconds(value)
        elif isinstance(value, list):
            value = sorted(value)
        out[key] = value
    return out


def _diff(wanted: dict[str, Any], current: dict[str, Any]) -> list[str]:
    want, have = _normal(wanted), _normal({k: v for k, v in current.items() if v is not None})
    return [f"{key}: {have.get(key)!r} -> {value!r}" for key, value in want.items() if have.get(key) != value]


def plan_vault(client: hvac.Client, access: AccessTiers, *, kubernetes: bool = True) -> list[Change]:
    """The changes that would bring the server in line with ``access`` (nothing is written).

    Example:
        >>> [str(c) for c in plan_vault(client, access)][:1]  # doctest: +SKIP
        ['+ auth method approle/']
    """
    rendered = render_vault(access)
    changes: list[Change] = []
    methods = client.sys.list_auth_methods()["data"]
    mounts = [("approle", access.approle_mount)]
    if kubernetes:
        mounts.append(("kubernetes", access.kubernetes_mount))
    enabled = {mount for _, mount in mounts if f"{mount}/" in methods}
    for method, mount in mounts:
        if mount not in enabled:
            changes.append(Change("enable", "auth method", f"{mount}/", [f"type: {method}"]))
    for name, hcl in rendered["policies"].items():
        try:
            current = client.sys.read_policy(name)["data"]["rules"]
        except hvac.exceptions.InvalidPath:
            current = None
        if current is None:
            changes.append(Change("create", "policy", name))
        elif current.strip() != hcl.strip():
            changes.append(Change("update", "policy", name, ["rules differ"]))
    for name, settings in rendered["approles"].items():
        current_role = (
            _read(lambda n=name: client.auth.approle.read_role(n, mount_point=access.approle_mount))
            if access.approle_mount in enabled
            else None
        )
        if current_role is None:
            changes.append(Change("create", "approle", name))
        elif details := _diff(settings, current_role):
            changes.append(Change("update", "approle", name, details))
    if kubernetes:
        for name, settings in rendered["kubernetes_roles"].items():
            current_role = (
                _read(lambda n=name: client.auth.kubernetes.read_role(n, mount_point=access.kubernetes_mount))
                if access.kubernetes_mount in enabled
                else None
            )
            if current_role is None:
                changes.append(Change("create", "kubernetes role", name))
            elif details := _diff(settings, current_role):
                changes.append(Change("update", "kubernetes role", name, details))
    return changes


def _read(call: Any) -> dict[str, Any] | None:
    try:
        answer = call()
    except hvac.exceptions.InvalidPath:
        return None
    if not isinstance(answer, dict):
        return None
    data = answer.get("data", answer)  # hvac's kubernetes read_role answers the data itself
    return dict(data) if data else None


def apply_vault(client: hvac.Client, access: AccessTiers, *, kubernetes: bool = True) -> list[Change]:
    """Plan, then write exactly the planned changes; return them (empty when already in line).

    Example:
        >>> apply_vault(client, access)  # doctest: +SKIP
        []
    """
    changes = plan_vault(client, access, kubernetes=kubernetes)
    rendered = render_vault(access)
    for change in changes:
        if change.kind == "auth method":
            method = change.details[0].removeprefix("type: ")
            client.sys.enable_auth_method(method, path=change.name.rstrip("/"))
        elif change.kind == "policy":
            client.sys.create_or_update_policy(change.name, rendered["policies"][change.name])
        elif change.kind == "approle":
            client.auth.approle.create_or_update_approle(
                change.name, mount_point=access.approle_mount, **rendered["approles"][change.name]
            )
        else:
            settings = rendered["kubernetes_roles"][change.name]
            client.auth.kubernetes.create_role(change.name, mount_point=access.kubernetes_mount, **settings)
    return changes
