"""`mlops demo`: the stack up, the platform's DAGs driven through the real scheduler.

Each stage triggers a DAG run over the Airflow REST API, follows it, and checks the
outcome the scenario expects (a corrupted batch must be rejected with lakeFS main unchanged).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from rich.console import Console
from rich.table import Table

from mlops_lib.airflow_api import AirflowApiError, AirflowClient, describe_states
from mlops_lib.settings import Settings, reload_settings
from mlops_lib.stack import manager

DEMO_PROJECT = "churn"


@dataclass
class Stage:
    """One step of the scenario: a DAG run and the state it must end in."""

    name: str
    dag_id: str
    expect: str = "success"
    conf: dict | None = None
    check: Callable[[], tuple[bool, str]] | None = None  # (as expected?, note)
    # False: the stage waits for the run an asset event starts instead of triggering one.
    trigger: bool = True
    # A note when the stage has nothing to do (e.g. the champion is already deployed).
    skip: Callable[[], str | None] | None = None


@dataclass
class Outcome:
    stage: str
    run_id: str
    result: str
    seconds: float
    ok: bool
    note: str = ""


def _stages(settings: Settings, console: Console) -> list[Stage]:
    from mlops_lib import demo_data
    from mlops_lib import versioning as vc

    data_dir = settings.stack_dir / "demo-data"
    clean = demo_data.write(demo_data.generate("clean", seed=1), data_dir / "churn-clean.parquet")
    corrupted = demo_data.write(
        demo_data.generate("corrupted", seed=2), data_dir / "churn-corrupted.csv"
    )
    console.print(f"demo batches written to {data_dir}")
    heads: dict[str, str] = {}

    def remember_head() -> tuple[bool, str]:
        heads["main"] = vc.head(DEMO_PROJECT, settings=settings)
        return True, ""

    def main_unchanged() -> tuple[bool, str]:
        now = vc.head(DEMO_PROJECT, settings=settings)
        if now != heads["main"]:
            return False, f"lakeFS main moved from {heads['main'][:12]} to {now[:12]}"
        return True, f"main still at {now[:12]}; rejected as expected"

    def champion_exists() -> tuple[bool, str]:
        from mlops_lib.registry import champion_version

        version = champion_version(DEMO_PROJECT, settings)
        if version is None:
            return False, "no champion after training"
        return True, f"champion is v{version}"

    def champion_live() -> str | None:
        from mlops_lib.lineage import lineage_store
        from mlops_lib.registry import champion_version

        version = champion_version(DEMO_PROJECT, settings)
        live = lineage_store(settings).deployments(DEMO_PROJECT, "active")
        if version is not None and live and live[0]["model_version"] == version:
            return f"champion v{version} already served (deployment {live[0]['id']})"
        return None

    def champion_served() -> tuple[bool, str]:
        import json

        import httpx

        from mlops_lib.ingest import project_spec
        from mlops_lib.registry import champion_version

        spec = project_spec(DEMO_PROJECT, settings)
        row = json.loads(
            demo_data.generate("clean", rows=1, seed=3)[spec.features].to_json(orient="records")
        )
        url = f"{settings.serving_base_url}/{DEMO_PROJECT}/predict"
        resp = httpx.post(url, json={"instances": row}, timeout=30)
        if resp.status_code != 200:
            return False, f"{url} answered {resp.status_code}: {resp.text[:200]}"
        served = resp.json()["model_version"]
        version = str(champion_version(DEMO_PROJECT, settings))
        if served != version:
            return False, f"{url} serves v{served}, champion is v{version}"
        return True, f"{url} serves champion v{served}"

    return [
        Stage("platform check", "platform_check"),
        Stage(
            "ingest clean batch",
            f"{DEMO_PROJECT}__ingest",
            conf={"source": str(clean)},
            check=remember_head,
        ),
        Stage(
            "train on it (asset-triggered)",
            f"{DEMO_PROJECT}__train",
            trigger=False,
            check=champion_exists,
        ),
        Stage(
            "deploy the champion (asset-triggered)",
            f"{DEMO_PROJECT}__deploy",
            trigger=False,
            check=champion_served,
            skip=champion_live,
        ),
        Stage(
            "reject corrupted batch",
            f"{DEMO_PROJECT}__ingest",
            expect="failed",
            conf={"source": str(corrupted)},
            check=main_unchanged,
        ),
    ]


def run_demo(settings: Settings, *, console: Console) -> bool:
    """Run the demo scenario; True when every stage behaved as expected."""
    t0 = time.monotonic()
    console.rule("stage: stack up")
    manager.up(settings, log=console.print)
    settings = reload_settings(settings)
    outcomes = [Outcome("stack up", "-", "healthy", time.monotonic() - t0, True)]
    client = AirflowClient.from_settings(settings)
    previous_start = ""
    for stage in _stages(settings, console):
        console.rule(f"stage: {stage.name}")
        started = time.monotonic()
        started_wall = datetime.now(UTC).isoformat()
        note = ""
        skipped = stage.skip() if stage.skip else None
        if skipped:
            console.print(f"nothing to do: {skipped}")
            outcomes.append(Outcome(stage.name, "-", "skipped", 0.0, True, skipped))
            continue
        try:
            client.prepare(stage.dag_id)
            dag_id = stage.dag_id

            def show(states: dict[str, str]) -> None:
                console.print(describe_states(states))

            if stage.trigger:
                run_id, state = client.run(
                    dag_id,
                    stage.conf,
                    on_trigger=lambda rid, d=dag_id: console.print(f"triggered {d} run {rid}"),
                    on_change=show,
                )
            else:
                run_id = client.wait_for_asset_run(stage.dag_id, since=previous_start)
                console.print(f"asset event started {stage.dag_id} run {run_id}")
                state = client.follow(stage.dag_id, run_id, on_change=show)
        except AirflowApiError as exc:
            console.print(f"[red]{stage.dag_id}: {exc}[/]")
            run_id, state = "-", "error"
        ok = state == stage.expect
        if ok and stage.check:
            ok, note = stage.check()
        outcomes.append(Outcome(stage.name, run_id, state, time.monotonic() - started, ok, note))
        previous_start = started_wall

    table = Table(title="demo summary")
    for col in ("stage", "DAG run", "result", "as expected", "time (s)", "note"):
        table.add_column(col)
    for o in outcomes:
        color = "green" if o.ok else "red"
        table.add_row(
            o.stage,
            o.run_id,
            o.result,
            f"[{color}]{'yes' if o.ok else 'NO'}[/]",
            f"{o.seconds:.1f}",
            o.note,
        )
    console.print(table)
    console.print(f"Airflow UI : {settings.airflow_base_url}  (user {settings.airflow_user})")
    console.print(f"MLflow UI  : {settings.mlflow_url}")
    console.print(f"lakeFS UI  : {settings.lakefs_url}")
    console.print(f"Served     : {settings.serving_base_url}/{DEMO_PROJECT}/predict  (docs: /docs)")
    console.print("credentials: `mlops stack credentials`; stop with `mlops stack down`")
    failed = [o.stage for o in outcomes if not o.ok]
    if failed:
        console.print(f"[bold red]demo failed at: {', '.join(failed)}[/]")
    console.print(f"total {time.monotonic() - t0:.1f}s")
    return not failed
