"""Session fixtures that start the real local stack on free ports in a temporary folder."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from mlops_lib import platform_stack
from mlops_lib.settings import Settings, load_settings, reload_settings, settings_env
from mlops_lib.stack.manager import free_ports
from mlops_lib.tracking import connect as connect_mlflow

REPO = Path(__file__).resolve().parents[2]
SESSION_MLFLOW_PASSWORD = secrets.token_urlsafe(24)
MLOPS = str(Path(sys.executable).parent / "mlops")
FAULTS_PROJECT = "churn_faults"
DEPLOY_PROJECT = "churn_deploy"
MONITOR_PROJECT = "churn_monitor"
# Its main gets batches published directly (no DAG); nothing else reads it.
PUBLISH_PROJECT = "churn_publish"
FEATURES_PROJECT = "churn_features"
# Continuous training with keys of each type (the demo spec's key is a string; an int key
# goes through continuous training in the public-datasets matrix), no cooldown.
CT_PROJECTS = {"string": "ct_key_string", "datetime": "ct_key_datetime"}


def test_projects(folder: Path) -> Path:
    """The repo's specs with a small training budget, plus a project for training faults."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    spec = yaml.safe_load((REPO / "projects" / "churn.yaml").read_text())
    spec["training"].update(
        budget={"trials": 3, "seconds": 900}, max_train_rows=10_000, min_rows=1000
    )
    # Feature views on their own project: the others train on their snapshot columns only.
    features = spec.pop("features")
    _write_features_project(folder, spec, features)
    (folder / "churn.yaml").write_text(yaml.safe_dump(spec))
    for name in (FAULTS_PROJECT, DEPLOY_PROJECT, PUBLISH_PROJECT):
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(spec | {"name": name}))
    # Monitoring tests assert which features do not drift: a strict threshold keeps chance
    # false alarms on the stable ones rare (the shifted ones score p ~ 0).
    monitoring = dict(spec.get("monitoring") or {}, drift_threshold=0.001, cooldown_minutes=60)
    (folder / f"{MONITOR_PROJECT}.yaml").write_text(
        yaml.safe_dump(spec | {"name": MONITOR_PROJECT, "monitoring": monitoring})
    )
    for key_type, name in CT_PROJECTS.items():
        columns = dict(spec["schema"]["columns"])
        columns["customer_id"] = dict(columns["customer_id"], type=key_type)
        training = dict(spec["training"], budget={"trials": 1, "seconds": 300})
        ct = spec | {
            "name": name,
            "schema": dict(spec["schema"], columns=columns),
            "training": training,
            "monitoring": dict(spec.get("monitoring") or {}, cooldown_minutes=0),
        }
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(ct))
    return folder


def mlops_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the `mlops` command against a stack (its settings as MLOPS_* variables)."""
    env = {**os.environ, **settings_env(settings)}
    return subprocess.run([MLOPS, *args], env=env, capture_output=True, text=True, timeout=600)


def wait_for(condition, what: str, *, timeout: float = 20.0, poll: float = 0.05) -> None:
    """Poll ``condition()`` until it is true; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout:.0f}s: {what}"
        time.sleep(poll)


def features_events_dir(projects_dir: Path) -> Path:
    """Where the features project's event files go (its spec's source path)."""
    return projects_dir.parent / f"{projects_dir.name}-events"


def _write_features_project(folder: Path, spec: dict, features: dict) -> None:
    """The demo's feature views on a project of their own that rejects unknown customers."""
    import yaml

    events = features_events_dir(folder)
    events.mkdir(parents=True, exist_ok=True)
    source = dict(features["sources"]["customer_events"], path=str(events / "*.parquet"))
    features = features | {
        "sources": {"customer_events": source},
        "unknown_entity": "reject",
    }
    training = dict(spec["training"], budget={"trials": 2, "seconds": 900})
    project = spec | {"name": FEATURES_PROJECT, "features": features, "training": training}
    (folder / f"{FEATURES_PROJECT}.yaml").write_text(yaml.safe_dump(project))


def stack_settings(stack_dir: Path, **extra: object) -> Settings:
    """Settings of a throw-away stack: its own folder and free ports, the shared lakeFS cache."""
    extra.setdefault("projects_dir", test_projects(stack_dir.parent / f"{stack_dir.name}-projects"))
    extra.setdefault("airflow_dags_paused", True)
    # The tests write their batches and labels files into temporary folders.
    extra.setdefault("data_roots", tempfile.gettempdir())
    # One MLflow account password for every stack of the session: the test process's MLflow
    # client reads it from its environment, whichever stack it talks to.
    extra.setdefault("mlflow_password", SESSION_MLFLOW_PASSWORD)
    return load_settings(stack_dir=stack_dir, **free_ports(), **extra)


def world_traversable_tmpdir(prefix: str) -> Path:
    """A temp folder other OS users can reach (the postgres server runs as 'postgres')."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(path, 0o755)
    return path


class _AlertReceiver(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _AlertReceiver.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="session")
def alerts() -> Iterator[list[dict]]:
    """A webhook receiver, configured as the ``mlops_alerts`` connection of the stack."""
    server = HTTPServer(("127.0.0.1", 0), _AlertReceiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    os.environ["AIRFLOW_CONN_MLOPS_ALERTS"] = f"http://127.0.0.1:{server.server_address[1]}/ops"
    yield _AlertReceiver.received
    server.shutdown()
    os.environ.pop("AIRFLOW_CONN_MLOPS_ALERTS", None)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, alerts: list[dict]) -> Iterator[Settings]:
    """The real stack (SQLite backend): lakeFS, MLflow and Airflow, started once per session."""
    settings = stack_settings(tmp_path_factory.mktemp("stack"))
    try:
        platform_stack.up(settings, log=print)
    except BaseException:
        platform_stack.down(settings, log=print)
        raise
    settings = reload_settings(settings)
    connect_mlflow(settings)
    yield settings
    platform_stack.down(settings, log=print)


def register_model(
    settings: Settings, project: str, model: object, *, tags: dict[str, str] | None = None
) -> tuple[int, str]:
    """Log a fitted pipeline as training does (skops, pinned requirements) and register it.

    Returns (version, MLflow run id).
    """
    import mlflow

    from mlops_lib.training import pip_requirements, trusted_types

    connect_mlflow(settings)
    mlflow.set_experiment(f"{project}-tests")
    with mlflow.start_run() as run:
        info = mlflow.sklearn.log_model(
            sk_model=model,
            name="model",
            pip_requirements=pip_requirements(),
            serialization_format="skops",
            skops_trusted_types=trusted_types(model),
        )
    mv = mlflow.register_model(info.model_uri, project, tags=tags or {})
    return int(mv.version), run.info.run_id


def airflow_token(stack: Settings) -> str:
    """An Airflow access token of the platform's admin, as the login page issues."""
    import httpx

    resp = httpx.post(
        f"{stack.airflow_base_url}/auth/token",
        json={"username": stack.airflow_user, "password": stack.secret("airflow_password")},
        timeout=60,
    )
    assert resp.status_code in (200, 201), resp.text[:300]
    return resp.json()["access_token"]


def approve_champion(settings: Settings, project: str, version: int) -> None:
    """Make a version the champion as an operator does: the gate held it for approval and
    `mlops model approve` promotes it (the verdict is recorded in the lineage store)."""
    from mlops_lib.registry import AWAIT, approve

    connect_mlflow(settings).set_model_version_tag(project, str(version), "gate_decision", AWAIT)
    approve(project, version, settings)
