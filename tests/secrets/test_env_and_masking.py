"""The environment backend, value masking in a plane process's output, and the settings contract."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import textwrap

import pytest

from hybrid_dagster.resources import SecretsConfig
from hybrid_dagster.secrets import (
    BackendSettings,
    EnvBackend,
    MaskingStream,
    PlaneSecrets,
    SecretConfigError,
    SecretMasker,
    SecretNotFound,
    SecretRef,
    build_backend,
)


def test_env_backend_reads_variables_and_json_fields() -> None:
    env = {"MERIDIAN_DB": '{"user": "cdc", "password": "env-Pw-51c2"}', "PLAIN": "plain-Pw-88"}
    backend = EnvBackend(plane="eu-onprem", environ=env)
    assert backend.read(SecretRef(backend="env", path="PLAIN")).value == "plain-Pw-88"
    assert backend.read(SecretRef(backend="env", path="MERIDIAN_DB", key="password")).value == "env-Pw-51c2"
    with pytest.raises(SecretNotFound, match="MISSING is not set in the environment of plane 'eu-onprem'"):
        backend.read(SecretRef(backend="env", path="MISSING"))
    with pytest.raises(SecretConfigError, match="no versions"):
        backend.read(SecretRef(backend="env", path="PLAIN", version=2))
    with pytest.raises(SecretNotFound, match="plain string") as plain:
        backend.read(SecretRef(backend="env", path="PLAIN", key="password"))
    assert "plain-Pw-88" not in str(plain.value)


def test_a_reference_to_another_backend_is_refused() -> None:
    secrets = PlaneSecrets(plane="eu-onprem", settings=BackendSettings(backend="env"), environ={})
    with pytest.raises(SecretConfigError, match="names the vault backend, but plane 'eu-onprem' uses env"):
        secrets.resolve(SecretRef(backend="vault", path="eu-onprem/db"))


def test_masker_and_stream_hide_registered_values() -> None:
    masker = SecretMasker()
    masker.add("hunter2-long")
    masker.add("ab")  # too short to mask safely
    sink = io.StringIO()
    MaskingStream(sink, masker).write("login with hunter2-long ab\n")
    assert sink.getvalue() == "login with *** ab\n"


def test_a_plane_process_masks_resolved_values_in_logs_prints_and_tracebacks() -> None:
    script = textwrap.dedent(
        """
        import logging, sys
        from hybrid_dagster.secrets import BackendSettings, PlaneSecrets, SecretRef
        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
        secrets = PlaneSecrets(plane="eu-onprem", settings=BackendSettings(backend="env"),
                               environ={"DB_PASSWORD": "Kn0wn-Value-4711"})
        value = secrets.resolve(SecretRef(backend="env", path="DB_PASSWORD"))
        print("print:", value)
        logging.getLogger("plane.work").info("log: %s", value)
        raise RuntimeError(f"connection refused for password {value}")
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1
    assert "print: ***" in output and "log: ***" in output and "connection refused for password ***" in output
    assert "Kn0wn-Value-4711" not in output


def test_masking_filter_masks_records_of_any_logger() -> None:
    from hybrid_dagster.secrets import MASKER, install_masking

    install_masking()
    MASKER.add("filter-Secret-93")
    record = logging.getLogger("any.logger").makeRecord(
        "any.logger", logging.INFO, __file__, 1, "value %s", ("filter-Secret-93",), None
    )
    assert record.getMessage() == "value ***"


def test_settings_and_secrets_config_name_the_same_fields() -> None:
    assert set(BackendSettings.model_fields) == set(SecretsConfig.model_fields)
    config = SecretsConfig(backend="vault", auth_method="approle", role_id_env="EU_ROLE_ID")
    assert BackendSettings.model_validate(config.model_dump()).role_id_env == "EU_ROLE_ID"


def test_token_auth_never_falls_back_to_the_orchestrators_vault_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VAULT_TOKEN", "orchestrator-root-token")
    settings = BackendSettings(backend="vault", address="http://127.0.0.1:9", auth_method="token")
    with pytest.raises(SecretConfigError, match=r"no token - name the variable .*token_env"):
        build_backend("eu-onprem", settings)
