"""Packaging a registered model for BentoML and the command that serves it."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any

from mlops_lib.settings import ENV_PREFIX, Settings, get_settings, process_env, settings_env
from mlops_lib.spec import ProjectSpec
from mlops_lib.tracking import connect as connect_mlflow

PACKAGE_DIR = Path(__file__).resolve().parents[1]
BENTOS_DIR = PACKAGE_DIR.parent / "bentos"
# What a Bento's service imports at run time, pinned to this environment (the lock file).
BENTO_REQUIREMENTS = (
    "bentoml",
    "aiohttp",
    "mlflow",
    "scikit-learn",
    "scipy",
    "pandas",
    "numpy",
    "pyarrow",
    "skops",
    "cloudpickle",
    "pydantic",
    "pydantic-settings",
    "PyYAML",
    "lakefs",
    "lakefs-sdk",
    "onnxruntime",
    "onnx",
    "skl2onnx",
    "httpx",  # the feature server's client (a BentoML dependency too)
)


class PackagingError(RuntimeError):
    """A Bento could not be built; the message names the project and model."""


def use_store(settings: Settings) -> Path:
    """Point BentoML at the platform's store (must happen before bentoml is imported)."""
    store = settings.bento_store
    store.mkdir(parents=True, exist_ok=True)
    os.environ["BENTOML_HOME"] = str(store)
    return store


def import_model(
    project: str, model_uri: str, version: int | str, settings: Settings | None = None
) -> str:
    """Copy a registered MLflow model into the BentoML model store; returns the model tag."""
    settings = settings or get_settings()
    use_store(settings)
    import bentoml

    connect_mlflow(settings)
    model = bentoml.mlflow.import_model(
        project.replace("_", "-"),
        model_uri,
        labels={"project": project, "model_version": str(version)},
        metadata={"model_uri": model_uri},
    )
    return str(model.tag)


def bento_model_path(model_tag: str, settings: Settings) -> str:
    """The MLflow model inside an imported Bento model (what a deployment loads)."""
    use_store(settings)
    import bentoml

    return bentoml.models.get(model_tag).path_of("mlflow_model")


def requirements() -> list[str]:
    """``name==version`` of each runtime dependency of a Bento, as installed (locked)."""
    return [f"{name}=={installed_version(name)}" for name in BENTO_REQUIREMENTS]


def bento_name(project: str) -> str:
    return f"mlops-{project.replace('_', '-')}"


def build_bento(
    spec: ProjectSpec,
    model_tag: str,
    version: int | str,
    settings: Settings | None = None,
    graph: bytes | None = None,
) -> str:
    """``bentoml build`` of the project's service around an imported model; returns the tag.

    The Bento carries the service code, the platform package, pinned requirements, the
    model's compiled ONNX graph when it has one (``compiled/model.onnx``) and, as Bento
    arguments, the project, model tag, model version and the spec it was built with.
    """
    settings = settings or get_settings()
    store = use_store(settings)
    # Staged outside the stack folder: BentoML refuses paths under hidden folders (.stack).
    with tempfile.TemporaryDirectory(prefix="mlops-bento-") as tmp:
        ctx = Path(tmp)
        for name in ("bentofile.yaml", "service.py", "README.md"):
            shutil.copy(BENTOS_DIR / name, ctx / name)
        shutil.copytree(
            PACKAGE_DIR, ctx / "mlops_lib", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
        (ctx / "requirements.txt").write_text("\n".join(requirements()) + "\n")
        if graph is not None:
            from mlops_lib.serving.runtime import compiled_graph  # imports scikit-learn

            target = compiled_graph(ctx)
            target.parent.mkdir()
            target.write_bytes(graph)
        args = {
            "project": spec.name,
            "model_tag": model_tag,
            "model_version": str(version),
            "spec": json.dumps(spec.model_dump(mode="json", by_alias=True)),
        }
        (ctx / "args.json").write_text(json.dumps(args))
        cmd = [
            str(Path(sys.executable).parent / "bentoml"),
            "build",
            "-f",
            str(ctx / "bentofile.yaml"),
            "--arg-file",
            str(ctx / "args.json"),
            "--name",
            bento_name(spec.name),
            "--label",
            f"project={spec.name}",
            "--label",
            f"model_version={version}",
            "--label",
            f"model_tag={model_tag.replace(':', '_')}",
            "-o",
            "tag",
            str(ctx),
        ]
        env = {**process_env(), "BENTOML_HOME": str(store), "BENTOML_DO_NOT_TRACK": "True"}
        proc = subprocess.run(cmd, cwd=ctx, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise PackagingError(
            f"bentoml build of {spec.name} v{version} ({model_tag}) failed:\n"
            f"{(proc.stdout + proc.stderr)[-3000:]}"
        )
    tags = [ln.split("__tag__:", 1)[1] for ln in proc.stdout.splitlines() if "__tag__:" in ln]
    if not tags:
        raise PackagingError(f"bentoml build of {spec.name} printed no tag:\n{proc.stdout[-2000:]}")
    return tags[-1].strip()


def serve_bento_command(bento_tag: str, port: int, host: str = "127.0.0.1") -> list[str]:
    """``bentoml serve`` of a built Bento (its arguments come from the Bento)."""
    return [
        str(Path(sys.executable).parent / "bentoml"),
        "serve",
        bento_tag,
        "--host",
        host,
        "--port",
        str(port),
    ]


def serve_command(project: str, model_tag: str, version: int | str, port: int) -> list[str]:
    """``bentoml serve`` of the project's service on a port."""
    bentoml = str(Path(sys.executable).parent / "bentoml")
    return [
        bentoml,
        "serve",
        "service:ModelService",
        "--working-dir",
        str(BENTOS_DIR),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--arg",
        f"project={project}",
        "--arg",
        f"model_tag={model_tag}",
        "--arg",
        f"model_version={version}",
    ]


def serve_env(
    settings: Settings, project: str, probe_token: str | None = None, runtime: str = ""
) -> dict[str, Any]:
    """Environment of a serving process: the platform settings and the BentoML store.

    Of the secrets, only a lakeFS key (the prediction log writes to lakeFS) and the
    deployment's own probe token reach it. The key is the project's deployments' own user
    (its repository only: ``stack.lakefs_users``) when lakeFS runs with its ACL server; a
    stack whose lakeFS predates its ACL server has only the admin key."""
    from mlops_lib.stack.lakefs_users import serving_key  # not for the Bento, which imports us
    from mlops_lib.stack.manager import runs_acl_server  # not for the Bento, which imports us

    if runs_acl_server(settings):
        key = serving_key(settings, project)
        lakefs = {
            f"{ENV_PREFIX}LAKEFS_ACCESS_KEY_ID": key["access_key_id"],
            f"{ENV_PREFIX}LAKEFS_SECRET_ACCESS_KEY": key["secret_access_key"],
        }
        secrets: tuple[str, ...] = ()
    else:
        lakefs, secrets = {}, ("lakefs_secret_access_key",)
    env = {
        **process_env(),
        **settings_env(settings, secrets=secrets),
        **lakefs,
        # Only what is given here: not the stack's credentials file.
        f"{ENV_PREFIX}READ_CREDENTIALS_FILE": "false",
        "BENTOML_HOME": str(settings.bento_store),
        "BENTOML_DO_NOT_TRACK": "True",
        # One scoring thread: a deployment shares the machine with its event loop, the
        # gateway and the stack; OpenMP fanning out per call (HistGradientBoosting) only
        # adds tail latency under concurrent requests.
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    if probe_token:
        env[f"{ENV_PREFIX}PROBE_TOKEN"] = probe_token
    if runtime:  # the deployment's recorded runtime, else the settings' choice
        env[f"{ENV_PREFIX}SERVING_RUNTIME"] = runtime
    return env


PROBE_HEADER = "X-MLOps-Probe"
# Which runtime answered a request: "onnx" (the compiled graph) or "sklearn".
RUNTIME_HEADER = "X-MLOps-Runtime"


def probe_token(settings: Settings, project: str, deployment_id: int) -> str:
    """The token a deployment accepts in ``X-MLOps-Probe`` (its smoke test's requests are
    answered but not logged); derived from the stack's key, different per deployment."""
    key = settings.secret("serving_probe_key").encode()
    return hmac.new(key, f"{project}:{deployment_id}".encode(), hashlib.sha256).hexdigest()


def is_probe(settings: Settings, header: str | None) -> bool:
    """True when a request carries this deployment's probe token."""
    token = settings.probe_token.get_secret_value() if settings.probe_token else ""
    return bool(token and header) and hmac.compare_digest(token, header or "")
