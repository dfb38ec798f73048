"""The `mlops` command line."""

from __future__ import annotations

import json
import sys
import time

import click
from rich.console import Console
from rich.table import Table

from mlops_lib import __version__
from mlops_lib.settings import load_settings, reload_settings
from mlops_lib.stack.procs import StackError


def _console(stderr: bool = False) -> Console:
    probe = Console(stderr=stderr)
    width = None if probe.is_terminal else 160
    return Console(stderr=stderr, highlight=False, width=width)


console = _console()
err_console = _console(stderr=True)


def _settings(backend: str | None = None):
    from mlops_lib.stack.manager import read_state

    overrides = {"backend": backend} if backend else {}
    settings = load_settings(**overrides)
    if not backend:
        recorded = read_state(settings).get("backend")
        if recorded and "MLOPS_BACKEND" not in _env_names():
            settings = load_settings(backend=recorded)
    return settings


def _env_names() -> set[str]:
    import os

    return set(os.environ)


def _fail(exc: Exception) -> None:
    err_console.print(f"[bold red]error:[/] {exc}")
    sys.exit(1)


@click.group()
@click.version_option(__version__, prog_name="mlops")
def main() -> None:
    """MLOps platform: the ML life cycle on lakeFS, MLflow, BentoML and Airflow."""


@main.group()
def stack() -> None:
    """Start, stop and inspect the local service stack."""


BACKEND = click.option(
    "--backend",
    type=click.Choice(["sqlite", "postgres"]),
    default=None,
    help="Database of Airflow and MLflow (default: MLOPS_BACKEND, else sqlite).",
)


@stack.command("install")
@BACKEND
def stack_install(backend: str | None) -> None:
    """Install what the stack needs (lakeFS binary; PostgreSQL for that backend)."""
    from mlops_lib.stack import postgres as pg
    from mlops_lib.stack.lakefs_build import ensure_lakefs_binary

    settings = _settings(backend)
    try:
        path = ensure_lakefs_binary(settings, log=console.print)
        console.print(f"lakeFS {settings.lakefs_version}: {path} -> {path.resolve()}")
        if backend == "postgres":
            console.print(f"PostgreSQL: {pg.install_postgres(settings, log=console.print)}")
    except StackError as exc:
        _fail(exc)


@stack.command("up")
@BACKEND
def stack_up(backend: str | None) -> None:
    """Start the stack (idempotent) and wait until every service is healthy."""
    from mlops_lib.stack import manager

    settings = _settings(backend)
    started = time.monotonic()
    try:
        rows = manager.up(settings, log=console.print)
    except StackError as exc:
        _fail(exc)
    settings = reload_settings(settings)
    _print_status(rows)
    console.print(f"stack ({settings.backend} backend) is up in {time.monotonic() - started:.1f}s")
    _print_credentials_hint(settings)


@stack.command("down")
def stack_down() -> None:
    """Stop the services `up` started (pid files); succeeds when nothing runs."""
    from mlops_lib.stack import manager

    settings = _settings()
    result = manager.down(settings, log=lambda _msg: None)
    stopped = [n for n, o in result.items() if o == "stopped"]
    stale = [n for n, o in result.items() if o.startswith("stale")]
    if stopped:
        console.print(f"stopped: {', '.join(stopped)}")
    if stale:
        console.print(f"removed stale pid files: {', '.join(stale)}")
    if not stopped and not stale:
        console.print("nothing was running")


@stack.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@BACKEND
def stack_status(as_json: bool, backend: str | None) -> None:
    """State, URL, pid and log of each service."""
    from mlops_lib.stack import manager

    settings = _settings(backend)
    rows = manager.status(settings)
    if as_json:
        click.echo(json.dumps({"backend": settings.backend, "services": rows}, indent=2))
        return
    _print_status(rows)


@stack.command("credentials")
def stack_credentials() -> None:
    """Print the user names of each UI and where their passwords are."""
    settings = _settings()
    _print_credentials_hint(settings, show=True)


def _print_status(rows: list[dict]) -> None:
    table = Table(title="local stack")
    for col in ("service", "state", "url", "pid", "log"):
        table.add_column(col)
    for row in rows:
        color = "green" if row["state"] == "healthy" else "red"
        table.add_row(
            row["service"],
            f"[{color}]{row['state']}[/]",
            row["url"] or "",
            str(row["pid"] or ""),
            row["log"],
        )
    console.print(table)


def _print_credentials_hint(settings, show: bool = False) -> None:
    lines = [
        f"Airflow UI  {settings.airflow_base_url}  user {settings.airflow_user}",
        f"MLflow UI   {settings.mlflow_url}",
        f"lakeFS UI   {settings.lakefs_url}  access key id {settings.lakefs_access_key_id}",
    ]
    for line in lines:
        console.print(line)
    if show:
        console.print(f"passwords and secret keys: {settings.credentials_file}")
        if settings.airflow_password is not None:
            console.print(f"Airflow password: {settings.airflow_password.get_secret_value()}")
        if settings.lakefs_secret_access_key is not None:
            console.print(
                f"lakeFS secret access key: {settings.lakefs_secret_access_key.get_secret_value()}"
            )
    else:
        console.print("passwords: `mlops stack credentials`")


@main.command("demo")
@BACKEND
def demo(backend: str | None) -> None:
    """Bring the stack up, run the platform's DAGs through the scheduler, print the UIs."""
    from mlops_lib import demo as demo_mod

    settings = _settings(backend)
    try:
        ok = demo_mod.run_demo(settings, console=console)
    except StackError as exc:
        _fail(exc)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":  # pragma: no cover
    main()
