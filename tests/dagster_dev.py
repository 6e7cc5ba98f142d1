"""Run `dagster dev` on the clinical example, on loopback, for tests that talk to the webserver."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class DagsterUi:
    url: str
    log: Path

    def graphql(self, query: str) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.url}/graphql",
            data=json.dumps({"query": query}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return dict(json.loads(response.read()))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_dagster_dev(
    home: Path, module: str = "examples.clinical_ai.definitions", *, hybrid_home: Path | None = None
) -> Iterator[DagsterUi]:
    """`dagster dev -m module` with DAGSTER_HOME in ``home``, ready once it serves assets; always stopped.

    ``hybrid_home`` is the example's HYBRID_DAGSTER_HOME (default ``home / "demo"``): pass a demo's home
    to serve the runs it made.
    """
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    hybrid_home = hybrid_home or home / "demo"
    env = {**os.environ, "DAGSTER_HOME": str(home), "HYBRID_DAGSTER_HOME": str(hybrid_home)}
    port = free_port()
    dagster = str(Path(sys.executable).parent / "dagster")
    argv = [dagster, "dev", "-m", module, "-h", "127.0.0.1", "-p", str(port)]
    log = home / "dagster_dev.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            argv, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    ui = DagsterUi(url=f"http://127.0.0.1:{port}", log=log)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and server.poll() is None:
            try:
                if ui.graphql("{ assetNodes { id } }")["data"]["assetNodes"]:
                    break
            except (OSError, KeyError, TypeError):
                pass
            time.sleep(0.5)
        else:
            raise RuntimeError(f"dagster dev did not serve {module} within 120 s:\n{log.read_text()[-5000:]}")
        yield ui
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
