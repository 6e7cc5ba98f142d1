"""The GPU demo step of `make demo`: its summary sections with the exact keys, models kept in place."""

from tests.examples.conftest import Demo


def test_demo_gpu_trains_both_models_and_tears_down_only_the_idle_instance(demo: Demo) -> None:
    summary = {key: demo.summary[key] for key in ("training", "teardown")}

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
    planes = demo.home / "planes"
    assert (planes / "eu-onprem" / "warehouse" / "models" / "models__eu_readmission_risk").is_dir()
    assert not (planes / "us-onprem" / "warehouse" / "models" / "models__eu_readmission_risk").exists()
