"""PostgreSQL for the postgres backend: install, cluster under the stack dir, databases."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
from pathlib import Path

from mlops_lib.settings import Settings
from mlops_lib.stack.debian import apt_install
from mlops_lib.stack.procs import StackError

SERVER_USER = "postgres"


def find_bin_dir(settings: Settings) -> Path | None:
    """Folder holding initdb and postgres, or None when PostgreSQL is not installed."""
    candidates: list[Path] = []
    if settings.postgres_bin_dir:
        candidates.append(settings.postgres_bin_dir)
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if out.returncode == 0:
            candidates.append(Path(out.stdout.strip()))
    candidates += sorted(
        (Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin")),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for cand in candidates:
        if (cand / "initdb").is_file() and (cand / "postgres").is_file():
            return cand
    return None


def install_postgres(settings: Settings, *, log=print) -> Path:
    """Find PostgreSQL, installing it from Debian packages when absent."""
    found = find_bin_dir(settings)
    if found:
        return found
    apt_install(
        "postgresql",
        log=log,
        hint="install PostgreSQL server binaries and set MLOPS_POSTGRES_BIN_DIR to the folder "
        "holding initdb",
    )
    found = find_bin_dir(settings)
    if not found:
        raise StackError("PostgreSQL was installed but initdb/postgres were not found")
    return found


def server_user() -> str | None:
    """OS user the server runs as: 'postgres' when we are root (initdb refuses root)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError as exc:
        raise StackError("running as root needs a 'postgres' OS user for the server") from exc
    return SERVER_USER


def data_dir(settings: Settings) -> Path:
    return settings.stack_dir / "postgres" / "data"


def socket_dir(settings: Settings) -> Path:
    return settings.stack_dir / "postgres" / "run"


def _chown(path: Path, user: str | None) -> None:
    if user is None:
        return
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)


def allow_server_traversal(settings: Settings) -> None:
    """Let the server user reach its cluster: the private stack folder by group (0710), the
    folders above it by the others' execute bit (e.g. a private temp dir)."""
    user = server_user()
    if user is None:
        return
    stack_dir = settings.stack_dir
    os.chown(stack_dir, -1, pwd.getpwnam(user).pw_gid)
    os.chmod(stack_dir, (stack_dir.stat().st_mode & 0o7777) | 0o010)
    for parent in stack_dir.parents:
        if parent == Path("/"):
            break
        mode = parent.stat().st_mode
        if not mode & 0o001:
            os.chmod(parent, mode | 0o001)


def init_cluster(settings: Settings, bin_dir: Path, *, log=print) -> None:
    """Create the cluster under the stack dir unless it exists."""
    data = data_dir(settings)
    if (data / "PG_VERSION").is_file():
        return
    user = server_user()
    data.mkdir(parents=True, exist_ok=True)
    sock = socket_dir(settings)
    sock.mkdir(parents=True, exist_ok=True)
    if user:
        allow_server_traversal(settings)
        for path in (data.parent, data, sock):
            _chown(path, user)
    os.chmod(data, 0o700)
    pwfile = data.parent / "pwfile"
    pwfile.write_text(settings.secret("postgres_password") + "\n")
    _chown(pwfile, user)
    log(f"creating PostgreSQL cluster in {data}")
    proc = subprocess.run(
        [
            str(bin_dir / "initdb"),
            "-D",
            str(data),
            "-U",
            settings.postgres_user,
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
        ],
        capture_output=True,
        text=True,
        user=user,
        group=user,
    )
    pwfile.unlink(missing_ok=True)
    if proc.returncode != 0:
        raise StackError(f"initdb failed for {data}:\n{proc.stdout[-1500:]}{proc.stderr[-1500:]}")


def server_command(settings: Settings, bin_dir: Path) -> list[str]:
    """Foreground postgres command bound to the configured host and port."""
    return [
        str(bin_dir / "postgres"),
        "-D",
        str(data_dir(settings)),
        "-p",
        str(settings.postgres_port),
        "-h",
        settings.pg_host,
        "-k",
        str(socket_dir(settings)),
    ]


def connect(settings: Settings, dbname: str = "postgres", timeout: int = 5):
    """A psycopg2 connection to one database of the platform's server."""
    import psycopg2

    return psycopg2.connect(
        host=settings.pg_host,
        port=settings.postgres_port,
        user=settings.postgres_user,
        password=settings.secret("postgres_password"),
        dbname=dbname,
        connect_timeout=timeout,
    )


def is_ready(settings: Settings) -> bool:
    """True when the server accepts an authenticated connection."""
    import psycopg2

    try:
        conn = connect(settings, timeout=2)
    except psycopg2.OperationalError:
        return False
    conn.close()
    return True


def ensure_databases(settings: Settings) -> list[str]:
    """Create the Airflow, MLflow, metadata and AutoML databases when missing; returns
    those created."""
    conn = connect(settings)
    conn.autocommit = True
    created = []
    try:
        with conn.cursor() as cur:
            for name in (
                settings.postgres_airflow_db,
                settings.postgres_mlflow_db,
                settings.postgres_lineage_db,
                settings.postgres_optuna_db,
            ):
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{name}"')
                    created.append(name)
    finally:
        conn.close()
    return created
