"""Injecting the outage: the primary's warehouse made unreadable to the drill's failover work only.

Correctness rules:

- The failover work runs in a private mount namespace (``unshare --mount``) with an empty read-only
  tmpfs over the primary's ``file://`` warehouse: inside, the primary is gone; outside, production keeps
  running. The namespace dies with the process, so a drill killed at any point leaves nothing to undo.
- Where mount namespaces are not available, the work gets the paths in ``HYBRID_DAGSTER_DR_HIDDEN`` and
  refuses, through a Python audit hook, every open/listdir/stat of them; the drill reports which mode
  was used (``mount-namespace`` or ``audit-hook``). Either way the failover reads only through the
  secondary's rewritten metadata, which names no primary path.
"""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

HIDDEN_ENV = "HYBRID_DAGSTER_DR_HIDDEN"
MOUNT_NAMESPACE = "mount-namespace"
AUDIT_HOOK = "audit-hook"


@functools.cache
def mount_namespace_available() -> bool:
    """Whether ``unshare --mount`` can mount a tmpfs here (root, or unprivileged user namespaces)."""
    unshare = shutil.which("unshare")
    if unshare is None or not sys.platform.startswith("linux"):
        return False
    probe = [*_unshare_prefix(unshare), "sh", "-c", "mount -t tmpfs -o ro,size=4k hd-dr-probe /mnt"]
    try:
        return subprocess.run(probe, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _unshare_prefix(unshare: str) -> list[str]:
    prefix = [unshare, "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        prefix.insert(1, "--map-root-user")
    return prefix


def isolated_argv(argv: Sequence[str], hidden: Sequence[str]) -> tuple[list[str], str]:
    """``argv`` wrapped so that the local paths ``hidden`` are unreadable to it; and the mode used.

    Example:
        >>> isolated_argv(["python", "-m", "hybrid_dagster.dr.worker"], ["/srv/eu/warehouse"])[1]
        'mount-namespace'
    """
    if hidden and mount_namespace_available():
        unshare = shutil.which("unshare") or "unshare"
        mounts = "; ".join(f"mount -t tmpfs -o ro,size=4k hd-dr-outage {shlex.quote(p)}" for p in hidden)
        script = f"set -e; {mounts}; exec {shlex.join(list(argv))}"
        return [*_unshare_prefix(unshare), "sh", "-c", script], MOUNT_NAMESPACE
    return list(argv), AUDIT_HOOK


def install_audit_hook(hidden: Sequence[str]) -> None:
    """Refuse Python-level file access under ``hidden`` in this process (the fallback isolation)."""
    roots = tuple(os.path.realpath(p).rstrip("/") + "/" for p in hidden if p)
    if not roots:
        return

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event not in {"open", "os.listdir", "os.scandir", "os.stat"} or not args:
            return
        target = args[0]
        if isinstance(target, int):
            return
        path = os.path.realpath(os.fsdecode(target)) + "/"
        if path.startswith(roots):
            raise PermissionError(f"DR drill: the primary's storage is down ({path.rstrip('/')})")

    sys.addaudithook(hook)


def primary_readable(path: str) -> bool:
    """Whether the primary's warehouse shows any entry to this process (it must not, during a drill)."""
    try:
        return bool(os.listdir(path))
    except OSError:
        return False
