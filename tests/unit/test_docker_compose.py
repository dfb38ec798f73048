"""docker-compose.yaml checked statically (no Docker engine needed)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from mlops_lib.settings import DEFAULT_QUEUE, ENV_PREFIX, TRAINING_QUEUE, Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yaml"
REQUIRED = {
    "postgres",
    "lakefs",
    "mlflow",
    "airflow-init",
    "airflow-api-server",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "serving",
}
LONG_RUNNING = REQUIRED - {"airflow-init"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _dockerfile_base(path: Path) -> str:
    return next(
        line.split()[1] for line in path.read_text().splitlines() if line.startswith("FROM ")
    )


def test_every_service_is_present(compose: dict) -> None:
    assert set(compose["services"]) >= REQUIRED


def test_every_image_is_pinned(compose: dict) -> None:
    for name, svc in compose["services"].items():
        image = svc.get("image")
        assert image, f"{name} has no image"
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest", f"{name}: image {image!r} is not pinned"
        if "build" in svc:
            base = _dockerfile_base(REPO / svc["build"]["context"] / svc["build"]["dockerfile"])
            assert re.search(r":\d+\.\d+\.\d+", base), f"{name}: base image {base} not pinned"


def test_lakefs_image_matches_the_local_server_version(compose: dict) -> None:
    tag = compose["services"]["lakefs"]["image"].split(":")[1]
    assert f"v{tag}" == Settings().lakefs_version


def test_long_running_services_have_health_checks(compose: dict) -> None:
    for name in LONG_RUNNING:
        assert "healthcheck" in compose["services"][name], name


def test_state_lives_in_named_volumes(compose: dict) -> None:
    named = set(compose["volumes"])
    for name in ("postgres", "lakefs", "mlflow"):
        mounts = compose["services"][name]["volumes"]
        sources = {m.split(":")[0] for m in mounts}
        assert sources & named, f"{name} keeps no state in a named volume"


def test_mlops_variables_are_settings_fields() -> None:
    text = COMPOSE.read_text()
    names = set(re.findall(rf"\b{ENV_PREFIX}([A-Z0-9_]+)", text))
    fields = {f.upper() for f in Settings.model_fields}
    assert names, "compose passes no MLOPS_* settings"
    assert names - fields == set(), f"unknown settings: {sorted(names - fields)}"


def test_published_ports_default_to_the_settings_defaults(compose: dict) -> None:
    defaults = Settings()
    expected = {
        "lakefs": ("MLOPS_LAKEFS_PORT", defaults.lakefs_port),
        "mlflow": ("MLOPS_MLFLOW_PORT", defaults.mlflow_port),
        "airflow-api-server": ("MLOPS_AIRFLOW_PORT", defaults.airflow_port),
        "postgres": ("MLOPS_POSTGRES_PORT", defaults.postgres_port),
    }
    for name, (var, port) in expected.items():
        ports = compose["services"][name]["ports"]
        assert f"${{MLOPS_HOST:-127.0.0.1}}:${{{var}:-{port}}}:{port}" in ports, (name, ports)


def test_no_secret_values_in_the_file() -> None:
    for line in COMPOSE.read_text().splitlines():
        key = r"^\s*[A-Za-z0-9_]*(PASSWORD|SECRET[A-Z_]*|FERNET_KEY|ACCESS_KEY_ID)"
        m = re.search(key + r":\s*(\S+)", line)
        if m:
            assert m.group(2).startswith("${"), f"literal secret: {line.strip()}"


def test_airflow_services_share_the_platform_settings(compose: dict) -> None:
    for name in ("airflow-api-server", "airflow-scheduler", "airflow-dag-processor"):
        env = compose["services"][name]["environment"]
        assert env["MLOPS_LAKEFS_ENDPOINT"] == "http://lakefs:8000"
        assert env["MLOPS_MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert env["MLOPS_BACKEND"] == "postgres"


def test_serving_uses_the_bentos_the_deploy_dag_builds(compose: dict) -> None:
    svc = compose["services"]
    serving = svc["serving"]
    assert serving["command"][:3] == ["mlops", "serve", "churn"]
    assert "bento-store:/opt/mlops/bentoml" in serving["volumes"]
    assert "bento-store:/opt/mlops/bentoml" in svc["airflow-scheduler"]["volumes"]
    assert serving["environment"]["MLOPS_BENTOML_HOME"] == "/opt/mlops/bentoml"


def test_every_published_port_is_bound_to_localhost_by_default(compose: dict) -> None:
    published = {n: s["ports"] for n, s in compose["services"].items() if "ports" in s}
    assert published
    for name, ports in published.items():
        assert all(p.startswith("${MLOPS_HOST:-127.0.0.1}:") for p in ports), (name, ports)


def test_mlflow_requires_its_login_and_keeps_the_password_off_its_command_line(
    compose: dict,
) -> None:
    mlflow = compose["services"]["mlflow"]
    assert mlflow["command"][:4] == ["mlflow", "server", "--app-name", "basic-auth"]
    assert not any("postgres" in part for part in mlflow["command"])
    assert "MLFLOW_BACKEND_STORE_URI" in mlflow["environment"]
    # MLflow gets its own configuration only, none of the platform's other secrets.
    assert not [k for k in mlflow["environment"] if k.startswith("MLOPS_")]
    env = compose["services"]["airflow-scheduler"]["environment"]
    assert env["MLOPS_MLFLOW_PASSWORD"].startswith("${MLOPS_MLFLOW_PASSWORD:?")


def test_the_celery_profile_adds_redis_and_scalable_workers(compose: dict) -> None:
    svc = compose["services"]
    for name in ("redis", "airflow-worker"):
        assert svc[name]["profiles"] == ["celery"], name
        assert "healthcheck" in svc[name], name
        assert "ports" not in svc[name], f"{name} is reached on the compose network only"
    worker = svc["airflow-worker"]
    assert "container_name" not in worker  # `--scale airflow-worker=N`
    assert worker["command"][:3] == ["airflow", "celery", "worker"]
    queues = worker["command"][worker["command"].index("--queues") + 1].split(",")
    assert set(queues) == {DEFAULT_QUEUE, TRAINING_QUEUE}
    assert worker["depends_on"]["redis"] == {"condition": "service_healthy"}


def test_the_executor_is_local_unless_chosen_and_the_broker_password_comes_from_env(
    compose: dict,
) -> None:
    env = compose["services"]["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "${AIRFLOW__CORE__EXECUTOR:-LocalExecutor}"
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://:${MLOPS_REDIS_PASSWORD")
    redis = compose["services"]["redis"]
    assert redis["environment"]["REDIS_PASSWORD"] == "${MLOPS_REDIS_PASSWORD:-}"
    script = redis["command"][0]
    assert script.startswith('[ -n "$$REDIS_PASSWORD" ] || {')  # refuses to start without it
    # The password reaches Redis in a file: nothing secret on its command line.
    assert "requirepass" not in " ".join(redis["entrypoint"])
    assert "$$REDIS_PASSWORD" in script and "exec redis-server /tmp/redis.conf" in script


def test_profiled_services_require_no_variable_a_plain_up_lacks(compose: dict) -> None:
    """Compose checks `${VAR:?}` for every service, profiled or not: a variable only the
    celery profile needs must not stop a plain `docker compose up`."""
    for name, svc in compose["services"].items():
        if svc.get("profiles"):
            own = yaml.safe_dump({k: v for k, v in svc.items() if k != "environment"})
            env = yaml.safe_dump(svc.get("environment") or {})
            assert ":?" not in own and "REDIS_PASSWORD:?" not in env, name


def test_the_feature_server_serves_the_published_views_on_the_compose_network_only(
    compose: dict,
) -> None:
    server = compose["services"]["feature-server"]
    assert "ports" not in server  # reached by the serving container, not from the host
    assert "/opt/mlops/.stack/features/churn/current" in server["command"]
    assert "feature-store:/opt/mlops/.stack/features:ro" in server["volumes"]
    port = server["command"][server["command"].index("-p") + 1]
    url = compose["x-platform-env"]["MLOPS_FEATURE_SERVER_URL"]
    assert url == f"http://feature-server:{port}"
    assert "feature-store:/opt/mlops/.stack/features" in compose["x-airflow"]["volumes"]
    dockerfile = (REPO / "stack" / "docker" / "Dockerfile").read_text()
    assert "--project feature_store" in dockerfile  # Feast's own environment in the image
