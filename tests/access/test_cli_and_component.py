"""``hybrid-dagster access render`` / ``apply`` and the AccessTiersComponent in YAML."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybrid_dagster.cli import main
from hybrid_dagster.components import AccessTiersComponent
from hybrid_dagster.testing.openbao import OpenBaoServer
from tests.components import example_tree

EXAMPLE_YAML = "examples/clinical_ai/defs/access/defs.yaml"


def test_the_example_component_loads_and_gives_the_declaration() -> None:
    component = example_tree().load_component("access", AccessTiersComponent)
    access = component.access()
    assert [p.plane for p in access.planes] == ["eu-onprem", "eu-cloud", "us-onprem", "us-cloud"]
    assert access.role("us-cloud", "engineer").tier.token_ttl == "30m"


def test_render_from_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["access", "render", "-f", EXAMPLE_YAML, "--out", str(tmp_path)]) == 0
    assert "access: 52 files for 12 roles on 4 planes" in capsys.readouterr().out
    assert (tmp_path / "vault" / "policies" / "hd-us-cloud-reader.hcl").is_file()


def test_apply_shows_the_diff_first_and_is_idempotent(
    openbao: OpenBaoServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = Path(EXAMPLE_YAML).read_text()
    yaml_file = tmp_path / "defs.yaml"
    # own auth mounts, so that the shared test server's other roles are not involved
    yaml_file.write_text(text + "  approle_mount: approle-cli\n  kubernetes_mount: kubernetes-cli\n")
    monkeypatch.setenv("ADMIN_TOKEN", openbao.root_token)
    argv = [
        "access",
        "apply",
        "-f",
        str(yaml_file),
        "--vault-addr",
        openbao.address,
        "--token-env",
        "ADMIN_TOKEN",
    ]

    assert main([*argv, "--dry-run"]) == 0
    dry = capsys.readouterr().out
    assert "+ auth method approle-cli/" in dry and "+ policy hd-eu-onprem-reader" in dry
    assert "(dry run, nothing written)" in dry
    assert main(argv) == 0
    applied = capsys.readouterr().out
    assert "+ approle hd-us-cloud-admin" in applied and "changes applied" in applied
    assert main(argv) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_apply_without_a_token_says_what_to_give(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VAULT_TOKEN", raising=False)
    assert main(["access", "apply", "-f", EXAMPLE_YAML, "--vault-addr", "http://127.0.0.1:9"]) == 2


def test_render_from_a_python_module(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["access", "render", "-m", "tests.access.declared", "--out", str(tmp_path)]) == 0
    assert "access: 26 files for 6 roles on 2 planes" in capsys.readouterr().out
    assert main(["access", "render", "-m", "tests.access.declaration", "--out", str(tmp_path)]) == 2
    assert "has 0 AccessTiers objects" in capsys.readouterr().err
