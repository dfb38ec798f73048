"""The control plane is closed and keeps its secrets: MLflow wants the platform account,
no secret shows in a command line, log or pid file, each service gets only its own
secrets, and the stack folder is private."""

from __future__ import annotations

import contextlib
import stat
import time

import httpx
import psutil
import pytest

from mlops_lib import platform_stack
from mlops_lib.settings import Settings, secret_names

pytestmark = pytest.mark.integration

# Secrets each service's process may hold in its environment (as its own variables).
OWN_SECRETS = {
    "lakefs": {"lakefs_secret_access_key", "lakefs_encrypt_secret"},
    "lakefs-acl": {"lakefs_encrypt_secret"},
    "mlflow": {"mlflow_password", "mlflow_secret_key"},
    "serving-gateway": set(),
    "airflow-scheduler": {
        "lakefs_secret_access_key",
        "mlflow_password",
        "postgres_password",
        "airflow_fernet_key",
        "airflow_jwt_secret",
        "airflow_secret_key",
        "serving_probe_key",
    },
}


def secret_values(settings: Settings) -> dict[str, str]:
    return {name: settings.secret(name) for name in secret_names() if getattr(settings, name)}


def stack_processes(settings: Settings) -> dict[str, list[psutil.Process]]:
    """Every running process of the stack (each service with its children), by service."""
    procs: dict[str, list[psutil.Process]] = {}
    for row in platform_stack.status(settings):
        if row["pid"]:
            top = psutil.Process(row["pid"])
            procs[row["service"]] = [top, *top.children(recursive=True)]
    return procs


def test_anonymous_mlflow_calls_get_401_and_the_platform_account_gets_through(
    stack: Settings,
) -> None:
    api = f"{stack.mlflow_url}/api/2.0/mlflow"
    hostile = [
        ("POST", "registered-models/create", {"name": "intruder"}),
        ("POST", "registered-models/alias", {"name": "churn", "alias": "champion", "version": 1}),
        ("GET", "registered-models/search", None),
    ]
    for method, path, body in hostile:
        resp = httpx.request(method, f"{api}/{path}", json=body, timeout=30)
        assert resp.status_code == 401, (path, resp.text[:200])
    wrong = httpx.get(f"{api}/registered-models/search", auth=("mlops", "guess"), timeout=30)
    assert wrong.status_code == 401
    account = (stack.mlflow_user, stack.secret("mlflow_password"))
    assert httpx.get(f"{api}/experiments/search?max_results=1", auth=account).status_code == 200
    assert httpx.get(f"{stack.mlflow_url}/health", timeout=30).status_code == 200


def test_no_secret_in_command_lines_logs_or_pid_files(stack: Settings) -> None:
    secrets = secret_values(stack)
    assert {"mlflow_password", "lakefs_secret_access_key"} <= set(secrets)
    seen: dict[str, str] = {}
    for service, procs in stack_processes(stack).items():
        for proc in procs:
            try:
                seen[f"cmdline of {service} pid {proc.pid}"] = "\0".join(proc.cmdline())
            except psutil.NoSuchProcess:
                continue
    for folder in ("logs", "run", "airflow/logs"):
        for path in (stack.stack_dir / folder).rglob("*"):
            if path.is_file():
                seen[str(path)] = path.read_text(errors="replace")
    assert len(seen) > 10
    leaks = [
        (where, name) for where, text in seen.items() for name, v in secrets.items() if v in text
    ]
    assert not leaks


def test_each_service_gets_only_its_own_secrets(stack: Settings) -> None:
    secrets = secret_values(stack)
    procs = stack_processes(stack)
    for service, allowed in OWN_SECRETS.items():
        # Some processes retitle themselves (their environ then reads empty): every process
        # of the service counts.
        environs = []
        for proc in procs[service]:
            with contextlib.suppress(psutil.NoSuchProcess):
                environs.append("\0".join(f"{k}={v}" for k, v in proc.environ().items()))
        assert any(environs) or service == "serving-gateway", service
        held = {name for name, value in secrets.items() if any(value in e for e in environs)}
        assert held <= allowed, (service, held - allowed)


def test_stack_folder_is_private(stack: Settings) -> None:
    def others_bits(path) -> int:
        return stat.S_IMODE(path.stat().st_mode) & 0o077

    assert stat.S_IMODE(stack.stack_dir.stat().st_mode) == 0o700
    for path in (
        stack.credentials_file,
        stack.stack_dir / "mlflow" / "basic_auth.ini",
        stack.stack_dir / "mlflow" / "basic_auth.db",
        stack.stack_dir / "mlflow" / "mlflow.db",
        stack.stack_dir / "airflow" / "passwords.json",
    ):
        assert others_bits(path) == 0, path
    written = [p for p in (stack.stack_dir / "lakefs").rglob("*") if p.is_file()]
    assert written and all(others_bits(p) == 0 for p in written)


def test_a_projects_deployments_write_their_own_repository_and_nothing_else(
    stack: Settings,
) -> None:
    from mlops_lib.layout import repo_name
    from mlops_lib.stack.lakefs_users import serving_key

    api = f"{stack.lakefs_url}/api/v1"
    admin = (stack.lakefs_access_key_id, stack.secret("lakefs_secret_access_key"))
    mine, other = (f"aclcheck{side}{int(time.time())}" for side in ("a", "b"))
    for project in (mine, other):
        repo = repo_name(project)
        made = httpx.post(
            f"{api}/repositories",
            json={"name": repo, "storage_namespace": f"local://{repo}", "default_branch": "main"},
            auth=admin,
        )
        assert made.status_code == 201, made.text
    key = serving_key(stack, mine)
    assert key["access_key_id"] != stack.lakefs_access_key_id
    auth = (key["access_key_id"], key["secret_access_key"])

    def upload(project: str) -> httpx.Response:
        return httpx.post(
            f"{api}/repositories/{repo_name(project)}/branches/main/objects",
            params={"path": "monitoring/x.txt"},
            files={"content": b"served rows"},
            auth=auth,
        )

    assert upload(mine).status_code == 201
    branch = httpx.post(
        f"{api}/repositories/{repo_name(mine)}/branches",
        json={"name": "monitoring", "source": "main"},
        auth=auth,
    )
    assert branch.status_code == 201, branch.text
    refused = {
        "write another project's data": upload(other),
        "read another project's data": httpx.get(
            f"{api}/repositories/{repo_name(other)}/refs/main/objects/ls", auth=auth
        ),
        "create a repository": httpx.post(
            f"{api}/repositories",
            json={"name": "rogue", "storage_namespace": "local://rogue"},
            auth=auth,
        ),
        "delete its own repository": httpx.delete(
            f"{api}/repositories/{repo_name(mine)}", auth=auth
        ),
        "list users": httpx.get(f"{api}/auth/users", auth=auth),
        "create a user": httpx.post(f"{api}/auth/users", json={"id": "intruder"}, auth=auth),
    }
    codes = {what: r.status_code for what, r in refused.items()}
    assert set(codes.values()) == {401}, codes
    # The key is kept (0600) and handed out again, not remade.
    assert serving_key(stack, mine) == key
