"""Helpers that set up OpenBao for a test with the root token: a KV path, a policy, an AppRole."""

from __future__ import annotations

import uuid

import hvac


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def enable_approle(root: hvac.Client) -> None:
    if "approle/" not in root.sys.list_auth_methods()["data"]:
        root.sys.enable_auth_method("approle")


def approle(root: hvac.Client, name: str, policy_hcl: str, **role: object) -> tuple[str, str]:
    """Create policy ``name`` and AppRole ``name`` with it; return (role_id, secret_id)."""
    enable_approle(root)
    root.sys.create_or_update_policy(name, policy_hcl)
    root.auth.approle.create_or_update_approle(name, token_policies=[name], **role)
    role_id = root.auth.approle.read_role_id(name)["data"]["role_id"]
    secret_id = root.auth.approle.generate_secret_id(name)["data"]["secret_id"]
    return role_id, secret_id


def read_policy(*paths: str, mount: str = "secret") -> str:
    return "\n".join(f'path "{mount}/data/{p}" {{ capabilities = ["read"] }}' for p in paths)
