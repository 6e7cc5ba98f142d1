"""Start a unit of regulated work with its stdout/stderr kept in the plane.

``python -m hybrid_dagster.plane.launch --log PATH -- COMMAND...`` appends the command's output to PATH
and replaces itself with the command, so the Pipes environment and exit status pass through unchanged.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="hybrid_dagster.plane.launch")
    parser.add_argument("--log", required=True, type=Path, help="Plane-local file for stdout and stderr.")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="The command to run, after --.")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given after --")
    args.log.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(args.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
