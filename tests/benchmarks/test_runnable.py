"""Every benchmark runs both as `python -m benchmarks.NAME` and as `python benchmarks/NAME.py`.

Only ``--help`` is run (fast): it imports the whole module either way and prints the argparse options.
PYTHONPATH is removed, so a benchmark run as a file must make this checkout importable by itself.
All the commands run at once; each test then reads its two outputs.
"""

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = sorted(p.stem for p in (REPO_ROOT / "benchmarks").glob("*.py") if not p.stem.startswith("_"))
WAYS = {"module": lambda name: ["-m", f"benchmarks.{name}"], "file": lambda name: [f"benchmarks/{name}.py"]}


@pytest.fixture(scope="module")
def help_outputs() -> Iterator[dict[tuple[str, str], subprocess.CompletedProcess[str]]]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    started = {
        (name, way): subprocess.Popen(
            [sys.executable, *argv(name), "--help"],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in BENCHMARKS
        for way, argv in WAYS.items()
    }
    try:
        done = {}
        for key, proc in started.items():
            out, err = proc.communicate(timeout=180)
            done[key] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        yield done
    finally:
        for proc in started.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_there_are_benchmarks_to_check() -> None:
    assert {"cdc_apply", "cdc_e2e"} <= set(BENCHMARKS)


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_runs_as_module_and_as_file_and_explains_its_options(
    name: str, help_outputs: dict[tuple[str, str], subprocess.CompletedProcess[str]]
) -> None:
    for way in WAYS:
        result = help_outputs[(name, way)]
        assert result.returncode == 0, f"{name} as a {way}: {' '.join(result.args)}\n{result.stderr[-3000:]}"
    as_module, as_file = help_outputs[(name, "module")].stdout, help_outputs[(name, "file")].stdout
    assert as_module.startswith("usage: ") and "options:" in as_module
    options = as_module.split("options:", 1)[1]
    assert "--help" in options and options.count("--") >= 2, f"{name} has no options of its own"
    assert as_file == as_module  # the same module, loaded either way
