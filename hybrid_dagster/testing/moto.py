"""moto in server mode as its own process, optionally enforcing IAM policies, for tests and the demo.

With ``enforce_iam=True`` the server is started with ``INITIAL_NO_AUTH_ACTION_COUNT=3``: the first three
calls (create an admin user, give it ``*``, create its access key) run unauthenticated, and every call
after them is checked against the caller's IAM policies - a denied call really is denied by the policy.
Real HTTP on loopback; boto3 is never patched. The server runs through
:mod:`hybrid_dagster.testing.moto_main`, which lets moto authorize Secrets Manager calls against the
secret's ARN (moto does so for S3 already).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from hybrid_dagster.errors import HybridDagsterError

REGION = "us-east-1"
BOOTSTRAP_CALLS = 3
ADMIN_POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


class MotoUnavailable(HybridDagsterError):
    """A moto server could not be started (``pip install 'moto[server]'``)."""


@dataclass(frozen=True)
class AwsKeys:
    """An IAM user's access key (hidden from ``repr``)."""

    access_key_id: str
    secret_access_key: str = field(repr=False)


@dataclass
class MotoProcess:
    """A running moto server process.

    Example:
        >>> server = start_moto_server(enforce_iam=True)  # doctest: +SKIP
        >>> server.client("secretsmanager", server.admin).list_secrets()  # doctest: +SKIP
        >>> server.stop()  # doctest: +SKIP
    """

    endpoint: str
    admin: AwsKeys
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def client(self, service: str, keys: AwsKeys | None = None) -> Any:
        keys = keys or self.admin
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=keys.access_key_id,
            aws_secret_access_key=keys.secret_access_key,
        )

    def user_with_policy(self, name: str, policy: dict[str, Any]) -> AwsKeys:
        """Create IAM user ``name`` with ``policy`` inline and return its access key."""
        iam = self.client("iam")
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName=f"{name}-policy", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return AwsKeys(key["AccessKeyId"], key["SecretAccessKey"])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise MotoUnavailable(f"moto server exited with {process.returncode}: pip install 'moto[server]'")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise MotoUnavailable(f"moto server did not listen on 127.0.0.1:{port} within {timeout_s:.0f}s")


def start_moto_server(
    *, enforce_iam: bool = True, log_file: Path | None = None, timeout_s: float = 60.0
) -> MotoProcess:
    """Start ``python -m moto.server`` on a random loopback port; with IAM enforcement, create the admin.

    Example:
        >>> server = start_moto_server(enforce_iam=True)  # doctest: +SKIP
    """
    port = _free_port()
    env = {**os.environ, "MOTO_PORT": str(port)}
    env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(BOOTSTRAP_CALLS) if enforce_iam else "inf"
    log = open(log_file, "ab") if log_file is not None else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "hybrid_dagster.testing.moto_main", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    if log is not subprocess.DEVNULL:
        log.close()  # type: ignore[union-attr]
    server = MotoProcess(f"http://127.0.0.1:{port}", AwsKeys("bootstrap", "bootstrap"), process)
    try:
        _wait_for_port(port, process, timeout_s)
        # the first BOOTSTRAP_CALLS calls are unauthenticated: exactly these three make the admin
        iam = server.client("iam")
        iam.create_user(UserName="admin")
        iam.put_user_policy(UserName="admin", PolicyName="admin", PolicyDocument=json.dumps(ADMIN_POLICY))
        key = iam.create_access_key(UserName="admin")["AccessKey"]
    except BaseException:
        server.stop()
        raise
    server.admin = AwsKeys(key["AccessKeyId"], key["SecretAccessKey"])
    return server
