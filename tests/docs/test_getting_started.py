"""docs/getting-started.md works as written: its Python files are the example's files verbatim, and its
runnable shell block (```bash test="run"```) validates and materializes the example for real.

The shell block runs in a fresh folder with the venv's scripts on PATH and this checkout on PYTHONPATH
(what `. .venv/bin/activate` in the repository root gives a reader).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DOC = REPO_ROOT / "docs" / "getting-started.md"
FENCE = re.compile(r"^```(?P<lang>\w+)(?P<attrs>[^\n]*)\n(?P<body>.*?)^```$", re.MULTILINE | re.DOTALL)
ATTR = re.compile(r'(\w+)="([^"]*)"')


def blocks() -> list[tuple[str, dict[str, str], str]]:
    return [(m["lang"], dict(ATTR.findall(m["attrs"])), m["body"]) for m in FENCE.finditer(DOC.read_text())]


def test_python_blocks_are_the_example_files_verbatim() -> None:
    titled = {attrs["title"]: body for lang, attrs, body in blocks() if lang == "python" and "title" in attrs}
    assert set(titled) == {
        "examples/getting_started/definitions.py",
        "examples/getting_started/work/admissions.py",
        "examples/getting_started/work/admissions_per_ward.py",
    }
    for path, body in titled.items():
        assert body == (REPO_ROOT / path).read_text(), f"{path} differs from its block in {DOC.name}"


def test_the_doc_gives_the_ui_address_and_how_to_stop_it() -> None:
    text = DOC.read_text()
    assert "http://127.0.0.1:3000" in text and "Ctrl-C" in text and "--stop" in text


@pytest.mark.timeout(600)
def test_the_shell_steps_validate_and_materialize_the_example(tmp_path: Path) -> None:
    (script,) = [body for lang, attrs, body in blocks() if lang == "bash" and attrs.get("test") == "run"]
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "HYBRID_DAGSTER_HOME")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(REPO_ROOT)
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "residency ok: 2 assets on 1 plane in 1 jurisdiction, 0 declared routes" in result.stdout

    home = tmp_path / ".getting-started"
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        rows = {}
        for key in (["clinic", "admissions"], ["clinic", "admissions_per_ward"]):
            event = instance.get_latest_materialization_event(dg.AssetKey(key))
            assert event is not None and event.asset_materialization is not None, key
            rows["/".join(key)] = event.asset_materialization.metadata["dagster/row_count"].value
    assert rows == {"clinic/admissions": 400, "clinic/admissions_per_ward": 4}
    warehouse = home / "planes" / "eu-onprem" / "warehouse" / "clinic"
    assert {p.name for p in warehouse.iterdir()} == {"admissions", "admissions_per_ward"}
    # restricted work keeps its output in the plane; nothing of it reached the orchestrator's output
    assert list((home / "planes" / "eu-onprem" / "warehouse" / "_logs").rglob("clinic__admissions.log"))
