"""The platform's one settings object.

Every endpoint, port, credential, path and backend is read here, from ``MLOPS_*``
environment variables, a ``.env`` file in the working directory, and the
credentials file that ``mlops stack up`` generates under the stack directory.
Nothing else in the platform reads the environment.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, computed_field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "MLOPS_"
REPO_ROOT = Path(__file__).resolve().parent.parent
CREDENTIALS_FILE = "credentials.env"

Backend = Literal["sqlite", "postgres"]
Executor = Literal["local", "celery"]
# Celery queues: heavy tasks (AutoML and the refit, packaging) go to TRAINING_QUEUE, the
# rest to DEFAULT_QUEUE; a worker may take either or both (LocalExecutor ignores queues).
DEFAULT_QUEUE = "default"
TRAINING_QUEUE = "training"


class Settings(BaseSettings):
    """Typed configuration of the platform and its local stack."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    # Where things live
    repo_root: Path = Field(default=REPO_ROOT, description="Checkout holding dags/ and plugins/.")
    stack_dir: Path = Field(default=REPO_ROOT / ".stack", description="State of the local stack.")
    cache_dir: Path = Field(
        default=Path.home() / ".cache" / "mlops-platform",
        description="Machine-wide cache (built lakeFS binaries), shared by clones.",
    )
    projects_dir: Path = Field(default=REPO_ROOT / "projects")
    read_credentials_file: bool = Field(
        default=True,
        description="Read the stack's generated credentials; off for deployments, which get "
        "only their own secrets.",
    )
    data_roots: str = Field(
        default="",
        description=(
            "Folders (separated by ':') that batch and labels files may be read from, besides "
            "the repository's data/ and the stack's demo-data/; anything else is refused."
        ),
    )

    # Backend database of MLflow and Airflow
    backend: Backend = "sqlite"

    host: str = Field(default="127.0.0.1", description="Address the local services bind to.")
    start_timeout: float = Field(default=180.0, description="Seconds to wait for a service.")

    # lakeFS
    lakefs_version: str = "v1.86.0"
    lakefs_port: int = 8000
    lakefs_endpoint: str | None = None
    lakefs_access_key_id: str | None = None
    lakefs_secret_access_key: SecretStr | None = None
    lakefs_admin_user: str = "admin"
    lakefs_encrypt_secret: SecretStr | None = None
    lakefs_acl_port: int = Field(
        default=8001, description="lakeFS's ACL server (its users and groups), on the host."
    )
    lakefs_request_timeout: float = Field(
        default=120.0, gt=0, description="Seconds a lakeFS call may wait for an answer."
    )

    # MLflow
    mlflow_port: int = 5000
    mlflow_tracking_uri: str | None = None
    mlflow_workers: int = 1
    mlflow_user: str = Field(default="mlops", description="The platform's MLflow account.")
    mlflow_password: SecretStr | None = None
    mlflow_secret_key: SecretStr | None = Field(
        default=None, description="Signs the MLflow server's sessions and CSRF tokens."
    )
    mlflow_http_retries: int = Field(
        default=2, description="MLflow client retries in tasks; Airflow retries the task itself."
    )

    # Airflow
    airflow_port: int = 8080
    airflow_url: str | None = None
    airflow_user: str = "admin"
    airflow_password: SecretStr | None = None
    airflow_jwt_secret: SecretStr | None = None
    airflow_secret_key: SecretStr | None = None
    airflow_fernet_key: SecretStr | None = None
    airflow_parallelism: int = 4
    airflow_dags_paused: bool = Field(
        default=False, description="New DAGs start paused (tests unpause what they run)."
    )
    airflow_task_heartbeat_timeout: int = Field(
        default=300,
        ge=10,
        description="Seconds without a heartbeat after which a running task (its worker "
        "killed, its machine gone) is failed and retried, on another worker where there is one.",
    )
    executor: Executor = Field(
        default="local",
        description="Airflow's executor: LocalExecutor, or CeleryExecutor with Redis and "
        "celery_workers workers (needs backend=postgres).",
    )
    celery_workers: int = Field(default=2, ge=1, description="Celery workers the stack starts.")
    celery_worker_concurrency: int = Field(
        default=1, ge=1, description="Tasks one Celery worker runs at once."
    )
    celery_queues: str = Field(
        default=f"{DEFAULT_QUEUE},{TRAINING_QUEUE}",
        description="Queues the stack's Celery workers take, comma separated (heavy tasks go "
        "to 'training').",
    )
    redis_port: int = Field(default=6379, description="Redis, the Celery broker (celery mode).")

    # Feature store (Feast, in its own environment)
    feature_server_port: int = Field(
        default=6566,
        description="First port of the Feast feature servers (one per project with features).",
    )
    feature_server_url: str | None = Field(
        default=None,
        description="A feature server run as a service of its own (docker-compose): "
        "serving looks features up there and the platform starts none.",
    )
    feature_lookup_timeout: float = Field(
        default=2.0, gt=0, description="Seconds a serving request waits for online features."
    )

    @field_validator("celery_queues")
    @classmethod
    def _queue_names(cls, value: str) -> str:
        """Queue names without stray spaces (Celery would take " training" as a name)."""
        names = [name.strip() for name in value.split(",") if name.strip()]
        if not names:
            raise ValueError("name at least one queue")
        return ",".join(names)

    redis_password: SecretStr | None = None

    # BentoML (serving)
    bentoml_home: Path | None = Field(
        default=None, description="BentoML model and bento store; default <stack_dir>/bentoml."
    )

    # PostgreSQL (backend=postgres)
    postgres_port: int = 5432
    postgres_host: str | None = None
    postgres_user: str = "mlops"
    postgres_password: SecretStr | None = None
    postgres_bin_dir: Path | None = Field(
        default=None, description="Folder with initdb/pg_ctl; found automatically when unset."
    )
    postgres_airflow_db: str = "airflow"
    postgres_mlflow_db: str = "mlflow"
    postgres_lineage_db: str = "mlops"
    postgres_optuna_db: str = "optuna"

    # AutoML studies (shared by the trial tasks); default follows the backend
    optuna_storage_url: str | None = Field(
        default=None,
        description="Optuna RDB storage URL; default: PostgreSQL's optuna database on the "
        "postgres backend, else a journal file under the stack folder.",
    )
    worker_name: str = Field(
        default="",
        description="This worker's name in MLflow's trial runs (set for each Celery worker).",
    )

    # Metadata store (lineage); default follows the backend
    lineage_db_url: str | None = None

    # Serving
    serving_port: int = Field(
        default=3000, description="Stable endpoint (gateway): http://host:port/<project>/predict."
    )
    serving_url: str | None = None
    gateway_max_body_mb: float = Field(
        default=10.0, gt=0, description="Largest request body the gateway accepts (else 413)."
    )
    gateway_max_in_flight: int = Field(
        default=64, ge=1, description="Requests in flight per project (more get 503)."
    )
    gateway_upstream_timeout: float = Field(
        default=35.0, gt=0, description="Seconds the gateway waits for a deployment's answer."
    )
    serving_start_timeout: float = Field(
        default=120.0, description="Seconds a new deployment has to become ready."
    )
    smoke_rows: int = Field(default=200, ge=1, description="Holdout rows a deployment must match.")
    serving_runtime: Literal["auto", "onnx", "sklearn"] = Field(
        default="auto",
        description="What scores in a deployment: its compiled ONNX graph when the Bento has "
        "one (auto), or the scikit-learn pipeline (sklearn, the fallback).",
    )
    serving_probe_key: SecretStr | None = Field(
        default=None, description="Derives each deployment's smoke-test probe token."
    )
    probe_token: SecretStr | None = Field(
        default=None,
        description="A deployment's own probe token (given to its process by the deploy).",
    )
    prediction_log_flush_seconds: float = Field(
        default=2.0, gt=0, description="How often served predictions are flushed to lakeFS."
    )
    prediction_log_max_rows: int = Field(
        default=20_000, ge=1, description="Buffered rows that trigger an early flush."
    )
    prediction_log_spool_max_mb: float = Field(
        default=1024.0,
        gt=0,
        description="Cap of a deployment's local spool; an alarm fires at 80%, the oldest "
        "files are dropped beyond it.",
    )

    @property
    def allowed_data_roots(self) -> list[Path]:
        """Where sources may be read from: data/, the stack's demo data, ``data_roots``."""
        extra = [Path(p) for p in self.data_roots.split(os.pathsep) if p.strip()]
        return [self.repo_root / "data", self.stack_dir / "demo-data", *extra]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def lakefs_url(self) -> str:
        """Base URL of the lakeFS server."""
        return (self.lakefs_endpoint or f"http://{self.host}:{self.lakefs_port}").rstrip("/")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def mlflow_url(self) -> str:
        """Tracking URI of the MLflow server."""
        return (self.mlflow_tracking_uri or f"http://{self.host}:{self.mlflow_port}").rstrip("/")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def airflow_base_url(self) -> str:
        """Base URL of the Airflow API server and web UI."""
        return (self.airflow_url or f"http://{self.host}:{self.airflow_port}").rstrip("/")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def serving_base_url(self) -> str:
        """Base URL of the serving gateway (each project under /<project>)."""
        return (self.serving_url or f"http://{self.host}:{self.serving_port}").rstrip("/")

    @property
    def pg_host(self) -> str:
        """Host of the PostgreSQL server."""
        return self.postgres_host or self.host

    def postgres_url(self, database: str, driver: str = "postgresql+psycopg2") -> str:
        """SQLAlchemy URL of one database on the platform's PostgreSQL server."""
        password = self.postgres_password.get_secret_value() if self.postgres_password else ""
        auth = f"{self.postgres_user}:{password}@" if password else f"{self.postgres_user}@"
        return f"{driver}://{auth}{self.pg_host}:{self.postgres_port}/{database}"

    @property
    def bento_store(self) -> Path:
        """BentoML home (model store and bentos) of the platform."""
        return self.bentoml_home or self.stack_dir / "bentoml"

    @property
    def bin_dir(self) -> Path:
        """Folder of the stack's binaries (lakeFS)."""
        return self.stack_dir / "bin"

    @property
    def lakefs_binary(self) -> Path:
        """Path of the lakeFS server binary used by the stack."""
        return self.bin_dir / "lakefs"

    @property
    def credentials_file(self) -> Path:
        """File with the generated credentials of the local stack."""
        return self.stack_dir / CREDENTIALS_FILE

    def environment_value(self, name: str) -> str | None:
        """A variable a spec names (a database password, an Airflow connection URI): read
        here, the one place the platform reads its environment."""
        return os.environ.get(name) or None

    def secret(self, name: str) -> str:
        """Plain value of a secret setting; raises when it is not configured."""
        value = getattr(self, name)
        if value is None:
            raise RuntimeError(
                f"setting {ENV_PREFIX}{name.upper()} is not set; run `mlops stack up` once to "
                f"generate local credentials or export it"
            )
        return value.get_secret_value() if isinstance(value, SecretStr) else str(value)


def load_settings(**overrides: object) -> Settings:
    """Read the settings, including the stack's generated credentials file when present
    (unless ``read_credentials_file`` is off, as for deployments)."""
    base = Settings(**overrides)  # type: ignore[arg-type]
    creds = base.credentials_file
    if base.read_credentials_file and creds.is_file():
        return Settings(_env_file=(".env", str(creds)), **overrides)  # type: ignore[call-arg,arg-type]
    return base


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings (cached)."""
    return load_settings()


def secret_names() -> frozenset[str]:
    """Names of the settings that hold secrets (passwords, keys)."""
    return frozenset(
        name
        for name, field in Settings.model_fields.items()
        if SecretStr in getattr(field.annotation, "__args__", (field.annotation,))
    )


# Credentials other libraries read from the environment; never inherited by a child.
_CLIENT_SECRETS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


def settings_env(settings: Settings, secrets: Collection[str] | None = None) -> dict[str, str]:
    """The settings as ``MLOPS_*`` variables, for child processes of the stack.

    ``secrets`` names the secret settings the child needs (default: all of them); the
    other secrets are left out.
    """
    withheld = secret_names() - set(secret_names() if secrets is None else secrets)
    env: dict[str, str] = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if value is None or name in withheld:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        env[f"{ENV_PREFIX}{name.upper()}"] = str(value)
    return env


def process_env(*, airflow: bool = False) -> dict[str, str]:
    """This process's environment without its secrets: the base for child processes.

    Secrets a child needs are added back explicitly (``settings_env(settings, secrets)``).
    Airflow's own variables (its configuration, connections, variables: keys and database
    URLs among them) pass only to Airflow's processes (``airflow=True``).
    """
    withheld = {f"{ENV_PREFIX}{name.upper()}" for name in secret_names()} | set(_CLIENT_SECRETS)
    return {
        key: value
        for key, value in os.environ.items()
        if key.upper() not in withheld
        and (airflow or not key.upper().lstrip("_").startswith("AIRFLOW"))
    }


def reload_settings(settings: Settings) -> Settings:
    """Read the settings again, keeping explicit overrides (e.g. after credentials were made)."""
    return load_settings(**{name: getattr(settings, name) for name in settings.model_fields_set})
