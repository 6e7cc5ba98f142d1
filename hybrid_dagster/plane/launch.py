"""Start a unit of regulated work with its output kept in the plane and its Pipes messages screened.

``python -m hybrid_dagster.plane.launch --log PATH [--screen JSON] -- COMMAND...`` sends the command's
stdout and stderr to PATH, a plane-local file. The command gets a Pipes message file of its own; the
launcher - trusted code in the plane, in another process than the work - reads every message, applies
:class:`~hybrid_dagster.residency.screen.ScreenRules` and forwards what may leave to where the
orchestrator reads Pipes messages (a file for the local subprocess executor; the process's own
stdout/stderr for dagster-k8s, whose pod log then carries Pipes messages and nothing else).

Correctness rules: log and custom messages stay in the plane (written to PATH); an undeclared metadata
key, a text value under a non-text key, a table schema with descriptions or a ``data_version`` fails the
step; the work's exception crosses whole only when it is one of hybrid-dagster's value-free errors.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from dagster_pipes import DAGSTER_PIPES_MESSAGES_ENV_VAR, decode_param, encode_param

from hybrid_dagster import errors
from hybrid_dagster.errors import ResidencyViolation
from hybrid_dagster.keys import REFUSED_KEY
from hybrid_dagster.residency.screen import ScreenRules

STDIO_KEY = "stdio"
PATH_KEY = "path"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="hybrid_dagster.plane.launch")
    parser.add_argument("--log", required=True, type=Path, help="Plane-local file for stdout and stderr.")
    parser.add_argument("--screen", help="JSON ScreenSpec: plane, step and the declared metadata keys.")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="The command to run, after --.")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given after --")
    args.log.parent.mkdir(parents=True, exist_ok=True)
    spec = json.loads(args.screen) if args.screen else {"plane": "?", "step": "?"}
    rules = ScreenRules(
        plane=spec["plane"], step=spec["step"], keys=spec.get("keys", []), text_keys=spec.get("text_keys", [])
    )
    log_fd = os.open(args.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    params = _message_params() or {}
    if STDIO_KEY in params:
        stream: IO[str] = sys.stderr if params[STDIO_KEY] == "stderr" else sys.stdout
        sys.exit(relay(command, log_fd, stream, rules))
    if PATH_KEY in params:
        with open(params[PATH_KEY], "a", encoding="utf-8") as target:
            sys.exit(relay(command, log_fd, target, rules))
    # No Pipes channel: nothing to forward; the output still stays in the plane.
    with open(os.devnull, "w", encoding="utf-8") as sink:
        sys.exit(relay(command, log_fd, sink, rules))


def relay(command: list[str], log_fd: int, stream: IO[str], rules: ScreenRules) -> int:
    """Run ``command`` with its output in ``log_fd``; forward its screened Pipes messages to ``stream``."""
    with tempfile.TemporaryDirectory(prefix="hybrid-pipes-") as folder:
        messages = Path(folder) / "messages"
        messages.touch()
        env = {**os.environ, DAGSTER_PIPES_MESSAGES_ENV_VAR: encode_param({PATH_KEY: str(messages)})}
        child = subprocess.Popen(command, env=env, stdout=log_fd, stderr=log_fd)
        log = os.fdopen(log_fd, "a", encoding="utf-8")
        screen = _Screen(rules, log)
        with messages.open(encoding="utf-8") as reader:
            for line in _lines(reader, child):
                for out in screen.feed(line):
                    stream.write(out + "\n")
                    stream.flush()
        log.close()
        return child.returncode if child.returncode is not None else 1


def _lines(reader: IO[str], child: subprocess.Popen[bytes]) -> Iterator[str]:
    pending = ""
    while True:
        chunk = reader.read()
        if chunk:
            pending += chunk
            *complete, pending = pending.split("\n")
            yield from (line for line in complete if line.strip())
            continue
        if child.poll() is not None:
            rest = pending + reader.read()
            yield from (line for line in rest.split("\n") if line.strip())
            return
        time.sleep(0.05)


class _Screen:
    """Applies the rules to each message; after a refusal, the closing message reports the violation."""

    def __init__(self, rules: ScreenRules, log: IO[str]) -> None:
        self.rules = rules
        self.log = log
        self.refused: str | None = None
        self.kept = 0

    def feed(self, line: str) -> list[str]:
        try:
            message = json.loads(line)
        except json.JSONDecodeError:
            self._keep("unparseable Pipes message", line)
            return []
        method = message.get("method")
        if method == "closed":
            closing = json.dumps(self._closing(message))
            if self.refused is None:
                return [closing]
            # The orchestrator (DataPlane.run) fails the step with this value-free reason.
            refusal = {
                "__dagster_pipes_version": message.get("__dagster_pipes_version", "0.1"),
                "method": "report_custom_message",
                "params": {"payload": {REFUSED_KEY: self.refused}},
            }
            return [json.dumps(refusal), closing]
        if self.refused is not None:
            self._keep("message after a refusal", line)
            return []
        try:
            allowed = self.rules.check_pipes_message(message)
        except ResidencyViolation as violation:
            self.refused = str(violation)
            self._keep("refused message", line)
            return []
        if allowed is None:
            self._keep(f"{method} message kept in the plane", line)
            return []
        return [json.dumps(allowed)]

    def _closing(self, message: dict[str, Any]) -> dict[str, Any]:
        params = dict(message.get("params") or {})
        exception = params.get("exception")
        if self.refused is not None:
            if exception:
                self._keep("exception of refused work", json.dumps(exception))
            params["exception"] = _exception("ResidencyViolation", self.refused)
        elif exception and exception.get("name") not in _VALUE_FREE:
            self._keep("exception kept in the plane", json.dumps(exception))
            params["exception"] = _exception(
                "PlaneWorkError",
                f"{exception.get('name', 'Exception')} in work on plane {self.rules.plane}; its message and "
                "traceback stay in the plane's log",
            )
        return {**message, "params": params}

    def _keep(self, why: str, line: str) -> None:
        self.kept += 1
        self.log.write(f"[hybrid-dagster launch] {why}: {line}\n")
        self.log.flush()


def _value_free_names() -> frozenset[str]:
    found: set[str] = set()
    todo: list[type] = [errors.ValueFreeError]
    while todo:
        cls = todo.pop()
        found.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return frozenset(found)


def _exception(name: str, message: str) -> dict[str, Any]:
    return {"name": name, "message": message, "stack": [], "cause": None, "context": None}


def _message_params() -> dict[str, Any] | None:
    raw = os.environ.get(DAGSTER_PIPES_MESSAGES_ENV_VAR)
    if not raw:
        return None
    params = decode_param(raw)
    return params if isinstance(params, dict) else None


_VALUE_FREE = _value_free_names()

if __name__ == "__main__":
    main()
