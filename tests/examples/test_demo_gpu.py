"""The GPU demo step runs standalone and returns its summary section with the exact keys."""

import json
from pathlib import Path

import pytest

from examples.clinical_ai import demo_gpu


@pytest.mark.slow  # trains both models (two plane subprocesses each for inputs and training) and starts moto
def test_demo_gpu_trains_both_models_and_tears_down_only_the_idle_instance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    dagster_home = tmp_path / "demo" / "dagster"
    dagster_home.mkdir(parents=True)
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    assert demo_gpu.main(["--home", str(tmp_path / "demo")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary) == {"training", "teardown"}

    eu = summary["training"]["models/eu_readmission_risk"]
    us = summary["training"]["models/us_high_cost_claims"]
    assert (eu["pool"], eu["jurisdiction"]) == ("eu-onprem-a100", "EU")
    assert (us["pool"], us["jurisdiction"]) == ("us-onprem-l40s", "US")
    assert eu["metrics"]["roc_auc"] > 0.55
    assert {"roc_auc", "accuracy"} <= set(us["metrics"])

    teardown = summary["teardown"]
    assert len(teardown["terminated"]) == 1 and teardown["terminated"][0].startswith("i-")
    kept = {k["name"]: k["why"] for k in teardown["kept"]}
    assert set(kept) == {"gpu-busy", "gpu-protected", "gpu-a", "gpu-unreadable"}
    assert all(k["id"].startswith("i-") for k in teardown["kept"])
    assert (
        abs(teardown["cost_saved_usd"] - 350.0) < 0.5
    )  # 4 GPUs x $1.25/h for the 70 h left of a 72 h lifetime
    # the models stayed in their jurisdictions' warehouses
    planes = tmp_path / "demo" / "planes"
    assert (planes / "eu-onprem" / "warehouse" / "models" / "models__eu_readmission_risk").is_dir()
    assert not (planes / "us-onprem" / "warehouse" / "models" / "models__eu_readmission_risk").exists()
