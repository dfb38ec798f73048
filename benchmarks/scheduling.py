"""Scheduling benchmark: how long a queued task waits to run, LocalExecutor against Celery.

    .venv/bin/python -m benchmarks.scheduling [--runs 10] [--workers 2]

Starts two throw-away stacks in turn, each in its own folder on free ports: SQLite with the
LocalExecutor (the default stack) and PostgreSQL with the CeleryExecutor, Redis and
``--workers`` workers. On each it triggers ``platform_check`` (two short tasks, one after
the other) ``--runs`` times at once and reads every task instance's times from Airflow's
API: queued -> running (the executor's hand-off: a fork for LocalExecutor; the broker, a
worker and its fork for Celery) and the run's wall time. Prints p50/p90/max of each and the
ratio Celery / Local. Needs PostgreSQL and Redis (installed by the stack when absent).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from datetime import datetime
from pathlib import Path

from mlops_lib import platform_stack
from mlops_lib.airflow_api import AirflowClient
from mlops_lib.settings import Settings, load_settings, reload_settings
from mlops_lib.stack.manager import free_ports

DAG = "platform_check"


def throwaway_settings(folder: Path, **choices: object) -> Settings:
    """A stack of its own: folder, free ports (Airflow's log servers after its API port)."""
    return load_settings(
        stack_dir=folder / "stack", **free_ports(), airflow_dags_paused=True, **choices
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def _seconds(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def measure(settings: Settings, runs: int) -> dict[str, list[float]]:
    """Trigger the DAG ``runs`` times at once; queued->running per task, wall per run."""
    airflow = AirflowClient.from_settings(settings)
    airflow.prepare(DAG, timeout=300)
    airflow.run(DAG, timeout=300)  # warm-up: the DAG parsed, the workers' first fork done
    run_ids = [airflow.trigger(DAG) for _ in range(runs)]
    waits, walls = [], []
    for run_id in run_ids:
        assert airflow.follow(DAG, run_id, timeout=600) == "success", run_id
        for ti in airflow.task_instances(DAG, run_id):
            wait = _seconds(ti.get("queued_when"), ti.get("start_date"))
            if wait is not None:
                waits.append(wait)
        run = airflow.dag_run(DAG, run_id)
        walls.append(_seconds(run["start_date"], run["end_date"]) or 0.0)
    return {"queued -> running (s)": waits, "run wall time (s)": walls}


def on_stack(name: str, settings: Settings, runs: int) -> dict[str, list[float]]:
    started = time.monotonic()
    try:
        platform_stack.up(settings, log=lambda _m: None)
        settings = reload_settings(settings)
        print(f"{name}: stack up in {time.monotonic() - started:.0f} s", flush=True)
        return measure(settings, runs)
    finally:
        platform_stack.down(settings, log=lambda _m: None)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10, help="DAG runs triggered at once.")
    parser.add_argument("--workers", type=int, default=2, help="Celery workers.")
    args = parser.parse_args()
    results = {}
    for name, choices in (
        ("local (sqlite, LocalExecutor)", {"backend": "sqlite", "executor": "local"}),
        (
            f"celery (postgres, {args.workers} workers)",
            {"backend": "postgres", "executor": "celery", "celery_workers": args.workers},
        ),
    ):
        folder = Path(tempfile.mkdtemp(prefix="bench-scheduling-"))
        os.chmod(folder, 0o755)  # the PostgreSQL server runs as its own OS user
        try:
            settings = throwaway_settings(folder, **choices)
            results[name] = on_stack(name, settings, args.runs)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    print_results(results, args.runs)


def print_results(results: dict[str, dict[str, list[float]]], runs: int) -> None:
    print(f"\n{DAG}: {runs} runs triggered at once (2 tasks each), {os.cpu_count()} cores")
    print(f"{'stack':34} {'measure':24} {'n':>4} {'p50':>7} {'p90':>7} {'max':>7}")
    for name, measures in results.items():
        for what, values in measures.items():
            print(
                f"{name:34} {what:24} {len(values):>4} {percentile(values, 50):>7.2f} "
                f"{percentile(values, 90):>7.2f} {max(values):>7.2f}"
            )
    local, celery = results.values()
    key = "queued -> running (s)"
    ratio = percentile(celery[key], 50) / max(percentile(local[key], 50), 1e-6)
    print(f"\nqueued -> running p50, Celery / Local: {ratio:.2f}x")


if __name__ == "__main__":
    main()
