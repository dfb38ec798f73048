"""`mlops demo`: the stack up, the platform's DAGs run by the real scheduler, the UIs listed."""

from __future__ import annotations

import time

from rich.console import Console
from rich.table import Table

from mlops_lib.airflow_api import AirflowApiError, AirflowClient
from mlops_lib.settings import Settings, reload_settings
from mlops_lib.stack import manager

DEMO_DAGS = ("platform_check",)


def run_demo(settings: Settings, *, console: Console) -> bool:
    """Run the demo scenario; True when every stage behaved as expected."""
    t0 = time.monotonic()
    console.rule("stage: stack up")
    manager.up(settings, log=console.print)
    settings = reload_settings(settings)
    results: list[tuple[str, str, str, float]] = [
        ("stack up", "-", "healthy", time.monotonic() - t0)
    ]
    client = AirflowClient.from_settings(settings)
    ok = True
    for dag_id in DEMO_DAGS:
        console.rule(f"stage: {dag_id}")
        started = time.monotonic()
        try:
            client.wait_for_dag(dag_id)
            client.unpause(dag_id)
            run_id = client.trigger(dag_id)
            console.print(f"triggered {dag_id} run {run_id}")
            state = client.follow(
                dag_id,
                run_id,
                on_change=lambda tis: console.print(
                    "  " + "  ".join(f"{k}={v}" for k, v in sorted(tis.items()))
                ),
            )
        except AirflowApiError as exc:
            console.print(f"[red]{dag_id}: {exc}[/]")
            run_id, state = "-", "error"
        ok &= state == "success"
        results.append((dag_id, run_id, state, time.monotonic() - started))

    table = Table(title="demo summary")
    for col in ("stage", "DAG run", "result", "time (s)"):
        table.add_column(col)
    for stage, run_id, state, secs in results:
        color = "green" if state in ("success", "healthy") else "red"
        table.add_row(stage, run_id, f"[{color}]{state}[/]", f"{secs:.1f}")
    console.print(table)
    console.print(f"Airflow UI : {settings.airflow_base_url}  (user {settings.airflow_user})")
    console.print(f"MLflow UI  : {settings.mlflow_url}")
    console.print(f"lakeFS UI  : {settings.lakefs_url}")
    console.print("credentials: `mlops stack credentials`; stop with `mlops stack down`")
    if not ok:
        failed = [r[0] for r in results if r[2] not in ("success", "healthy")]
        console.print(f"[bold red]demo failed at: {', '.join(failed)}[/]")
    console.print(f"total {time.monotonic() - t0:.1f}s")
    return ok
