from pathlib import Path

import pytest

from mlops_lib.settings import (
    ENV_PREFIX,
    Settings,
    load_settings,
    process_env,
    reload_settings,
    secret_names,
    settings_env,
)
from mlops_lib.stack.credentials import ensure_credentials


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for key in list(os.environ):
        if key.startswith(ENV_PREFIX):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_defaults_describe_the_local_stack(tmp_path: Path) -> None:
    s = Settings(stack_dir=tmp_path)
    assert s.backend == "sqlite"
    assert s.lakefs_url == "http://127.0.0.1:8000"
    assert s.mlflow_url == "http://127.0.0.1:5000"
    assert s.airflow_base_url == "http://127.0.0.1:8080"
    assert s.lakefs_binary == tmp_path / "bin" / "lakefs"


def test_environment_variables_with_prefix_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_MLFLOW_PORT", "5999")
    monkeypatch.setenv("MLOPS_BACKEND", "postgres")
    monkeypatch.setenv("MLOPS_LAKEFS_ENDPOINT", "http://lakefs:8000/")
    s = Settings()
    assert s.mlflow_url == "http://127.0.0.1:5999"
    assert s.backend == "postgres"
    assert s.lakefs_url == "http://lakefs:8000"


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("MLOPS_AIRFLOW_PORT=9090\n")
    assert Settings().airflow_port == 9090


def test_invalid_backend_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_BACKEND", "mysql")
    with pytest.raises(ValueError, match="backend"):
        Settings()


def test_missing_secret_names_the_variable(tmp_path: Path) -> None:
    s = Settings(stack_dir=tmp_path)
    with pytest.raises(RuntimeError, match="MLOPS_AIRFLOW_PASSWORD is not set"):
        s.secret("airflow_password")


def test_generated_credentials_are_private_and_loaded(tmp_path: Path) -> None:
    s = load_settings(stack_dir=tmp_path)
    generated = ensure_credentials(s)
    assert "lakefs_access_key_id" in generated and "postgres_password" in generated
    assert (s.credentials_file.stat().st_mode & 0o777) == 0o600
    s2 = reload_settings(s)
    assert s2.secret("airflow_password")
    assert s2.lakefs_access_key_id.startswith("AKIA")
    # A second call keeps every existing value.
    before = s.credentials_file.read_text()
    assert ensure_credentials(s2) == []
    assert s.credentials_file.read_text() == before


def test_environment_wins_over_generated_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ensure_credentials(load_settings(stack_dir=tmp_path))
    monkeypatch.setenv("MLOPS_AIRFLOW_PASSWORD", "from-env")
    assert load_settings(stack_dir=tmp_path).secret("airflow_password") == "from-env"


def test_settings_env_round_trips(tmp_path: Path) -> None:
    s = load_settings(stack_dir=tmp_path, mlflow_port=5123)
    env = settings_env(s)
    assert env["MLOPS_MLFLOW_PORT"] == "5123"
    assert env["MLOPS_STACK_DIR"] == str(tmp_path)
    assert all(k.startswith(ENV_PREFIX) for k in env)


def test_postgres_url_uses_psycopg2_and_the_password(tmp_path: Path) -> None:
    s = Settings(stack_dir=tmp_path, postgres_password="pw", postgres_port=6543)
    assert s.postgres_url("airflow") == "postgresql+psycopg2://mlops:pw@127.0.0.1:6543/airflow"


def test_child_environment_carries_only_the_secrets_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ensure_credentials(load_settings(stack_dir=tmp_path))
    s = load_settings(stack_dir=tmp_path)
    monkeypatch.setenv("MLOPS_POSTGRES_PASSWORD", "exported-by-the-caller")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "a-client-password")
    monkeypatch.setenv("MLOPS_HOST", "127.0.0.1")
    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", "airflow-only")
    monkeypatch.setenv("AIRFLOW_CONN_SALES", "postgresql://u:pw@db/sales")
    inherited = process_env()
    assert "AIRFLOW__CORE__FERNET_KEY" not in inherited
    assert "AIRFLOW_CONN_SALES" not in inherited
    assert process_env(airflow=True)["AIRFLOW_CONN_SALES"].startswith("postgresql://")
    assert "MLOPS_POSTGRES_PASSWORD" not in inherited
    assert "MLFLOW_TRACKING_PASSWORD" not in inherited
    assert inherited["MLOPS_HOST"] == "127.0.0.1"
    env = settings_env(s, secrets=("mlflow_password",))
    assert env["MLOPS_MLFLOW_PASSWORD"] == s.secret("mlflow_password")
    withheld = {f"{ENV_PREFIX}{n.upper()}" for n in secret_names() - {"mlflow_password"}}
    assert not withheld & set(env)
    assert {"airflow_password", "lakefs_secret_access_key", "postgres_password"} <= secret_names()


def test_probe_token_is_per_deployment_and_checked_in_constant_time(tmp_path: Path) -> None:
    from mlops_lib.serving.package import is_probe, probe_token

    ensure_credentials(load_settings(stack_dir=tmp_path))
    stack = load_settings(stack_dir=tmp_path)
    first, second = probe_token(stack, "churn", 1), probe_token(stack, "churn", 2)
    assert first != second and len(first) == 64
    deployment = load_settings(stack_dir=tmp_path, probe_token=first)
    assert is_probe(deployment, first)
    assert not is_probe(deployment, second)
    assert not is_probe(deployment, "smoke-test")
    assert not is_probe(deployment, None)
    # A process without a token of its own honours no probe header at all.
    assert not is_probe(load_settings(stack_dir=tmp_path / "other"), first)
