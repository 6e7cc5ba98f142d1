"""`make ui` stops what it started: Ctrl-C (SIGINT) or SIGTERM ends `dagster dev` and the embedded
PostgreSQL; after a SIGKILL, `python -m examples.clinical_ai.ui --stop` stops the database left behind.

The signal tests run :func:`examples.clinical_ai.ui.serve` in a real process with a stand-in command
(a sleeping Python process) instead of `dagster dev`, so they take seconds; one test runs the real
`python -m examples.clinical_ai.ui` with `dagster dev` and sends it SIGINT.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.dagster_dev import DagsterUi, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
STAND_IN = (
    "import os, pathlib, sys, time; pathlib.Path(sys.argv[1]).write_text(str(os.getpid())); time.sleep(600)"
)
SERVE = (
    "import sys; from pathlib import Path; from examples.clinical_ai.ui import prepare_home, serve; "
    "raise SystemExit(serve(prepare_home(), [sys.executable, '-c', sys.argv[1], sys.argv[2]]))"
)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes (the postmaster is reaped by init, the stand-in by us)
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def postmaster_pid(home: Path) -> int:
    return int((home / "postgres" / "postmaster.pid").read_text().split()[0])


def env_for(home: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HYBRID_DAGSTER_HOME": str(home)}


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short temporary folder: the server's unix socket path must stay under about 100 characters."""
    path = Path(tempfile.mkdtemp(prefix="hd-ui-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def serving(short_tmp: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path, int]]:
    """``serve`` running the stand-in; yields (process, home, stand-in pid) once both are up."""
    home, mark = short_tmp / "home", short_tmp / "stand_in.pid"
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE, STAND_IN, str(mark)], cwd=REPO_ROOT, env=env_for(home)
    )
    stand_in = 0
    try:
        wait_until(lambda: (mark.exists() and mark.read_text() != "") or proc.poll() is not None, "serve")
        assert proc.poll() is None, f"serve exited early with {proc.returncode}"
        stand_in = int(mark.read_text())
        yield proc, home, stand_in
    finally:
        for pid in (proc.pid, stand_in):
            if pid and alive(pid):
                os.kill(pid, signal.SIGKILL)
        proc.wait()
        if (home / "postgres" / "postmaster.pid").exists():  # never leave a server behind
            subprocess.run(
                [sys.executable, "-m", "examples.clinical_ai.ui", "--stop"],
                cwd=REPO_ROOT,
                env=env_for(home),
                timeout=120,
            )


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_the_ui_and_the_database(
    serving: tuple[subprocess.Popen[bytes], Path, int], signum: int
) -> None:
    proc, home, stand_in = serving
    postmaster = postmaster_pid(home)
    assert alive(postmaster) and alive(stand_in)
    proc.send_signal(signum)
    assert proc.wait(timeout=120) == 0  # stopped on request is a clean exit
    assert not alive(stand_in)
    wait_until(lambda: not alive(postmaster), "the postmaster to exit", timeout=30)
    assert not (home / "postgres" / "postmaster.pid").exists()


def test_stop_option_stops_the_database_a_killed_ui_left_running(
    serving: tuple[subprocess.Popen[bytes], Path, int],
) -> None:
    proc, home, stand_in = serving
    postmaster = postmaster_pid(home)
    proc.kill()
    proc.wait()
    os.kill(stand_in, signal.SIGKILL)
    assert alive(postmaster)  # SIGKILL leaves no chance to clean up
    result = subprocess.run(
        [sys.executable, "-m", "examples.clinical_ai.ui", "--stop"],
        cwd=REPO_ROOT,
        env=env_for(home),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "stopped" in result.stdout
    wait_until(lambda: not alive(postmaster), "the postmaster to exit", timeout=30)


def test_ctrl_c_on_make_ui_stops_dagster_dev_and_the_database(short_tmp: Path) -> None:
    home, port = short_tmp / "home", free_port()
    log = short_tmp / "ui.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "examples.clinical_ai.ui", "-p", str(port)],
            cwd=REPO_ROOT,
            env=env_for(home),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    ui = DagsterUi(url=f"http://127.0.0.1:{port}", log=log)

    def serving_assets() -> bool:
        try:
            return bool(ui.graphql("{ assetNodes { id } }")["data"]["assetNodes"])
        except (OSError, KeyError, TypeError):
            return proc.poll() is not None

    try:
        wait_until(serving_assets, "dagster dev to serve the example", timeout=180)
        assert proc.poll() is None, log.read_text()[-3000:]
        assert f"http://127.0.0.1:{port}" in log.read_text()
        postmaster = postmaster_pid(home)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 0, log.read_text()[-3000:]
        wait_until(lambda: not alive(postmaster), "the postmaster to exit", timeout=30)
        with pytest.raises(OSError):
            ui.graphql("{ assetNodes { id } }")
    finally:
        if proc.poll() is None:
            for child in children_of(proc.pid):  # dagster dev runs in its own session
                os.killpg(child, signal.SIGKILL)
            proc.kill()
            proc.wait()
        if (home / "postgres" / "postmaster.pid").exists():
            subprocess.run(
                [sys.executable, "-m", "examples.clinical_ai.ui", "--stop"],
                cwd=REPO_ROOT,
                env=env_for(home),
                timeout=120,
            )
