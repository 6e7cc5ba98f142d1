"""Start a unit of regulated work with its stdout/stderr kept in the plane.

``python -m hybrid_dagster.plane.launch --log PATH -- COMMAND...`` sends the command's stdout and stderr
to PATH. Dagster Pipes messages still reach the orchestrator:

- when Pipes writes messages to a file (the local subprocess executor), the launcher replaces itself
  with the command, so the Pipes environment and the exit status pass through unchanged;
- when Pipes reads messages from the process's own stdout/stderr (dagster-k8s reads them from the pod's
  logs, and forwards every other line to the orchestrator), the launcher gives the command a message
  file instead and relays only the message lines to its own stream: the pod log then carries Pipes
  messages and nothing else.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

from dagster_pipes import DAGSTER_PIPES_MESSAGES_ENV_VAR, decode_param, encode_param

STDIO_KEY = "stdio"
PATH_KEY = "path"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="hybrid_dagster.plane.launch")
    parser.add_argument("--log", required=True, type=Path, help="Plane-local file for stdout and stderr.")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="The command to run, after --.")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given after --")
    args.log.parent.mkdir(parents=True, exist_ok=True)
    log_fd = os.open(args.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    params = _message_params()
    if params is None or STDIO_KEY not in params:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        os.execvp(command[0], command)
    stream = sys.stderr if params[STDIO_KEY] == "stderr" else sys.stdout
    sys.exit(relay(command, log_fd, stream))


def relay(command: list[str], log_fd: int, stream: TextIO) -> int:
    """Run ``command`` with its output in ``log_fd`` and its Pipes messages copied to ``stream``."""
    with tempfile.TemporaryDirectory(prefix="hybrid-pipes-") as folder:
        messages = Path(folder) / "messages"
        messages.touch()
        env = {**os.environ, DAGSTER_PIPES_MESSAGES_ENV_VAR: encode_param({PATH_KEY: str(messages)})}
        child = subprocess.Popen(command, env=env, stdout=log_fd, stderr=log_fd)
        os.close(log_fd)
        with messages.open(encoding="utf-8") as reader:
            while True:
                chunk = reader.read()
                if chunk:
                    stream.write(chunk)
                    stream.flush()
                    continue
                if child.poll() is not None:
                    stream.write(reader.read())
                    stream.flush()
                    return child.returncode
                time.sleep(0.05)


def _message_params() -> dict[str, Any] | None:
    raw = os.environ.get(DAGSTER_PIPES_MESSAGES_ENV_VAR)
    if not raw:
        return None
    params = decode_param(raw)
    return params if isinstance(params, dict) else None


if __name__ == "__main__":
    main()
