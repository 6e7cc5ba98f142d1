"""The plane launcher keeps a regulated step's output in the plane and relays only Pipes messages."""

import json
import os
import subprocess
import sys
from pathlib import Path

from dagster_pipes import DAGSTER_PIPES_MESSAGES_ENV_VAR, decode_param, encode_param

CHILD = """
import json, os, sys
from dagster_pipes import DAGSTER_PIPES_MESSAGES_ENV_VAR, decode_param
params = decode_param(os.environ[DAGSTER_PIPES_MESSAGES_ENV_VAR])
print("stdout: patient Ingrid Solberg-Vance")
print("stderr: diagnosis E11.9", file=sys.stderr)
if "path" in params:
    with open(params["path"], "a") as messages:
        for i in range(3):
            metadata = {"dagster/row_count": {"raw_value": i, "type": "int"}}
            params = {"asset_key": "cohort", "metadata": metadata, "data_version": None}
            method = "report_asset_materialization"
            message = {"__dagster_pipes_version": "0.1", "method": method, "params": params}
            messages.write(json.dumps(message) + "\\n")
        log = {"message": "row of Ingrid Solberg-Vance", "level": "INFO"}
        messages.write(json.dumps({"__dagster_pipes_version": "0.1", "method": "log", "params": log}) + "\\n")
sys.exit(3)
"""


def launch(tmp_path: Path, params: dict) -> tuple[subprocess.CompletedProcess[str], Path]:
    log = tmp_path / "logs" / "step.log"
    env = {**os.environ, DAGSTER_PIPES_MESSAGES_ENV_VAR: encode_param(params)}
    argv = [
        sys.executable,
        "-m",
        "hybrid_dagster.plane.launch",
        "--log",
        str(log),
        "--",
        sys.executable,
        "-c",
        CHILD,
    ]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60), log


def test_stdio_messages_are_relayed_and_everything_else_stays_in_the_plane(tmp_path: Path) -> None:
    # dagster-k8s asks for messages on stderr and forwards every other pod log line to the orchestrator.
    result, log = launch(tmp_path, {"stdio": "stderr"})
    assert result.returncode == 3
    lines = result.stderr.splitlines()
    relayed = [json.loads(line)["params"]["metadata"]["dagster/row_count"]["raw_value"] for line in lines]
    assert relayed == [0, 1, 2]  # the log message with a row value stayed in the plane
    assert result.stdout == ""
    kept = log.read_text()
    assert "Ingrid Solberg-Vance" in kept and "E11.9" in kept


def test_file_messages_are_screened_and_output_goes_to_the_log(tmp_path: Path) -> None:
    messages = tmp_path / "messages"
    result, log = launch(tmp_path, {"path": str(messages)})
    assert result.returncode == 3
    assert result.stdout == "" and result.stderr == ""
    assert len(messages.read_text().splitlines()) == 3
    assert "Ingrid" not in messages.read_text()
    assert "Ingrid Solberg-Vance" in log.read_text()


def test_message_params_round_trip() -> None:
    assert decode_param(encode_param({"stdio": "stderr"})) == {"stdio": "stderr"}
