"""``hybrid-dagster validate``: exit codes and output, in-process and as the installed console script."""

import subprocess
import sys
from pathlib import Path

import pytest

from hybrid_dagster.cli import DefinitionsLoadError, load_definitions, main
from tests.conftest import REPO_ROOT

SCRIPT = Path(sys.executable).parent / "hybrid-dagster"

CLEAN_LINE = "residency ok: 4 assets on 3 planes in 2 jurisdictions, 1 declared route"
DIRECT = (
    "patients (eu-onprem, EU) -> us_copy (us-cloud, US), restricted: restricted data may not move from EU "
    "to US: no declared transfer route covers restricted data EU->US (the declared route EU->US (GDPR Art. "
    "46 SCCs) covers only internal)"
)
TWO_HOPS = "visit_stats (eu-cloud, EU) -> us_dashboard (us-cloud, US), restricted (inherited from patients): "


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False
    )


def test_console_script_clean_module() -> None:
    done = _run("validate", "-m", "tests.defs.clean")

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [CLEAN_LINE]


def test_console_script_violating_module() -> None:
    done = _run("validate", "-m", "tests.defs.violating")

    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0] == DIRECT
    assert lines[1].startswith(TWO_HOPS)
    assert "residency check failed: 2 problems in 4 assets" in done.stderr


def test_console_script_load_error() -> None:
    done = _run("validate", "-m", "tests.defs.broken")

    assert done.returncode == 2
    assert done.stdout == ""
    assert "could not load module 'tests.defs.broken': RuntimeError: boom" in done.stderr


def test_console_script_python_file() -> None:
    done = _run("validate", "-f", "tests/defs/violating.py")

    assert done.returncode == 1
    assert done.stdout.splitlines()[0] == DIRECT


def test_main_clean_and_violating(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "-m", "tests.defs.clean"]) == 0
    assert capsys.readouterr().out.splitlines() == [CLEAN_LINE]

    assert main(["validate", "-m", "tests.defs.violating"]) == 1
    assert capsys.readouterr().out.splitlines()[0] == DIRECT


def test_main_strict_module_reports_its_violations(capsys: pytest.CaptureFixture[str]) -> None:
    """A module using enforce_residency fails to import; the CLI still prints the violations."""
    assert main(["validate", "-m", "tests.defs.strict"]) == 1
    assert capsys.readouterr().out.splitlines() == [DIRECT]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-m", "tests.defs.no_defs"], "module 'tests.defs.no_defs' has no Definitions object"),
        (["-m", "tests.defs.does_not_exist"], "could not load module 'tests.defs.does_not_exist'"),
        (["-m", "tests.defs.clean", "-a", "nope"], "module 'tests.defs.clean' has no attribute 'nope'"),
        (["-m", "tests.defs.common", "-a", "POLICY"], "is a ResidencyPolicy, not a dagster Definitions"),
        (["-f", "tests/defs/missing.py"], "could not load file 'tests/defs/missing.py'"),
    ],
)
def test_main_load_errors(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err


def test_main_attribute_selection(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "-m", "tests.defs.named"]) == 0
    assert capsys.readouterr().out.startswith("residency ok: 1 asset on 3 planes")

    assert main(["validate", "-m", "tests.defs.named", "-a", "lazy"]) == 1
    assert "asset 'x' is pinned to plane 'nowhere'" in capsys.readouterr().out


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["validate"])
    assert raised.value.code == 2
    with pytest.raises(SystemExit) as raised:
        main([])
    assert raised.value.code == 2


def test_load_definitions_needs_exactly_one_target() -> None:
    with pytest.raises(DefinitionsLoadError, match="exactly one"):
        load_definitions()
