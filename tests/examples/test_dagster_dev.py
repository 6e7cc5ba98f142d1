"""The example loads in `dagster dev`: the webserver serves its assets with the residency tags."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
QUERY = """
{ assetNodes { assetKey { path } kinds tags { key value } } }
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_dagster_dev_serves_the_example_with_residency_tags(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "HYBRID_DAGSTER_HOME": str(tmp_path / "demo")}
    dagster = str(Path(sys.executable).parent / "dagster")
    argv = [dagster, "dev", "-m", "examples.clinical_ai.definitions", "-h", "127.0.0.1", "-p", str(port)]
    log = (tmp_path / "dagster-dev.log").open("w")
    server = subprocess.Popen(
        argv, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        nodes = None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                nodes = graphql(port, QUERY)["data"]["assetNodes"]
                if nodes:
                    break
            except (OSError, KeyError, TypeError):
                pass
            time.sleep(1)
        assert server.poll() is None, (tmp_path / "dagster-dev.log").read_text()[-3000:]
        assert nodes, "dagster dev did not serve the example's assets within 120 s"
        by_key = {"/".join(n["assetKey"]["path"]): n for n in nodes}
        patients = by_key["clinical/patients"]
        tags = {t["key"]: t["value"] for t in patients["tags"]}
        assert tags["hybrid/plane"] == "eu-onprem" and tags["hybrid/classification"] == "restricted"
        assert {"postgres", "iceberg"} <= set(patients["kinds"])
        assert len(by_key) == 8
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()
