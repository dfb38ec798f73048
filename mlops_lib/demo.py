"""`mlops demo`: the whole life cycle on the real stack, driven by the Airflow scheduler.

The scenario: a clean batch is ingested; the customers' events become Feast feature views
on the new commit (materialized and served online); the batch is trained on with
point-in-time features, promoted and deployed (the service looks features up by customer);
traffic goes to the served endpoint; a corrupted batch is rejected with lakeFS ``main``
unchanged; drifted traffic is served and its labels arrive; the monitor detects the drift;
continuous training produces a new champion and the deploy DAG serves it. Every DAG stage
triggers (or waits for the asset-triggered) run over the Airflow REST API, follows it with
a progress bar and checks the outcome the scenario expects. The stack is left running.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mlops_lib import demo_data, platform_stack
from mlops_lib import versioning as vc
from mlops_lib.airflow_api import AirflowApiError, AirflowClient
from mlops_lib.feature_store.store import published
from mlops_lib.labels import wait_logged
from mlops_lib.lineage import lineage_store
from mlops_lib.registry import champion_version
from mlops_lib.settings import Settings, reload_settings
from mlops_lib.sources import local_path
from mlops_lib.spec import project_spec
from mlops_lib.traffic import TrafficError, send

DEMO_PROJECT = "churn"
CLEAN_BATCH_ROWS = 20_000
CLEAN_TRAFFIC_ROWS = 2_000
# Training holds out the newest 20% by event time: with as many labelled drifted rows as
# clean ones, the retraining both learns from production and is judged on it.
DRIFTED_TRAFFIC_ROWS = 20_000

Check = Callable[[], tuple[bool, str]]
TASK_DONE = ("success", "failed", "skipped", "upstream_failed", "removed")
TASK_ACTIVE = ("running", "queued", "scheduled", "up_for_reschedule", "up_for_retry")


@dataclass
class Stage:
    """One step of the scenario: a DAG run (or an action) and what it must end in."""

    name: str
    dag_id: str = ""
    expect: str = "success"
    conf: dict | None = None
    check: Check | None = None  # (as expected?, note), after the run
    # False: the stage follows the run an asset event starts instead of triggering one.
    trigger: bool = True
    # A note when the stage has nothing to do (e.g. the champion is already deployed).
    skip: Callable[[], str | None] | None = None
    # A stage without a DAG: runs this with a progress callback instead.
    action: Callable[[Progress], tuple[bool, str]] | None = None
    # Runs first (e.g. writes the file the run reads).
    before: Callable[[], None] | None = None


@dataclass
class Outcome:
    stage: str
    run_id: str
    result: str
    seconds: float
    ok: bool
    note: str = ""


@dataclass
class Scenario:
    """What the stages share: files written, heads seen, traffic answers."""

    settings: Settings
    console: Console
    client: AirflowClient
    memory: dict[str, Any] = field(default_factory=dict)


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _champion(settings: Settings) -> int | None:
    return champion_version(DEMO_PROJECT, settings)


class _Steps:
    """The demo's data files and the checks, skips and actions of its stages."""

    def __init__(self, sc: Scenario) -> None:
        self.sc, self.settings, self.mem = sc, sc.settings, sc.memory
        self.spec = project_spec(DEMO_PROJECT, self.settings)
        data_dir = self.settings.stack_dir / "demo-data"
        self.clean = demo_data.write(
            demo_data.generate("clean", rows=CLEAN_BATCH_ROWS, seed=1),
            data_dir / "churn-clean.parquet",
        )
        self.corrupted = demo_data.write(
            demo_data.generate("corrupted", seed=2), data_dir / "churn-corrupted.csv"
        )
        self.labels_file = data_dir / "churn-labels.csv"
        sc.console.print(f"demo batches written to {data_dir}")
        self.events_dir = self._write_events()
        self.endpoint = f"{self.settings.serving_base_url}/{DEMO_PROJECT}/predict"

    def _write_events(self) -> Path:
        """The customers' events (tickets, payments) of the batch and of the traffic's
        customers, where the spec's feature source reads them."""
        store = self.spec.feature_store
        assert store is not None, "the demo spec has feature views"
        pattern = local_path(store.sources["customer_events"].path, self.settings)
        folder = pattern.parent
        for name, (scenario, rows, seed) in {
            "batch": ("clean", CLEAN_BATCH_ROWS, 1),
            "clean-traffic": ("clean", CLEAN_TRAFFIC_ROWS, 11),
            "drifted-traffic": ("drifted", DRIFTED_TRAFFIC_ROWS, 12),
        }.items():
            frame = demo_data.generate(scenario, rows=rows, seed=seed)
            demo_data.write(demo_data.generate_events(frame, seed=seed), folder / f"{name}.parquet")
        self.sc.console.print(f"customer events written to {folder}")
        return folder

    def features_served(self) -> tuple[bool, str]:
        from mlops_lib.feature_store.online import OnlineFeatureClient  # HTTP client

        current = published(DEMO_PROJECT, self.settings)
        if current is None:
            return False, "no feature views published"
        self.remember_head()  # the views' commit is main's head now
        key = demo_data.generate("clean", rows=1, seed=11)["customer_id"].tolist()
        online = OnlineFeatureClient(self.spec, self.settings).fetch_sync(key)
        values = ", ".join(
            f"{name.split('__', 1)[1]}={column[0]:g}" for name, column in online.columns.items()
        )
        return True, (
            f"views {', '.join(current['feature_views'])} at {current['commit_id'][:12]} "
            f"(registry {current['registry_hash']}) served at {current['server_url']}; "
            f"customer {key[0]}: {values}"
        )

    def remember_head(self) -> tuple[bool, str]:
        self.mem["main"] = vc.head(DEMO_PROJECT, settings=self.settings)
        return True, f"main at {self.mem['main'][:12]}"

    def main_unchanged(self) -> tuple[bool, str]:
        now = vc.head(DEMO_PROJECT, settings=self.settings)
        if now != self.mem["main"]:
            return False, f"lakeFS main moved from {self.mem['main'][:12]} to {now[:12]}"
        return True, f"main still at {now[:12]}; rejected as expected"

    def champion_exists(self) -> tuple[bool, str]:
        version = _champion(self.settings)
        if version is None:
            return False, "no champion after training"
        return True, f"champion is v{version}"

    def champion_live(self) -> str | None:
        version = _champion(self.settings)
        live = lineage_store(self.settings).deployments(DEMO_PROJECT, "active")
        if version is not None and live and live[0]["model_version"] == version:
            return f"champion v{version} already served (deployment {live[0]['id']})"
        return None

    def champion_served(self) -> tuple[bool, str]:
        row = demo_data.generate("clean", rows=1, seed=3)
        try:
            (served,) = send(
                self.endpoint, row, self.spec.features + self.spec.identity, self.spec.target.column
            ).versions
        except TrafficError as exc:
            return False, str(exc)
        version = str(_champion(self.settings))
        if served != version:
            return False, f"{self.endpoint} serves v{served}, champion is v{version}"
        return True, f"{self.endpoint} serves champion v{served}"

    def traffic(
        self, scenario: str, rows: int, seed: int
    ) -> Callable[[Progress], tuple[bool, str]]:
        def act(progress: Progress) -> tuple[bool, str]:
            frame = demo_data.generate(scenario, rows=rows, seed=seed)
            bar = progress.add_task(f"{scenario} rows -> {self.endpoint}", total=rows)
            try:
                out = send(
                    self.endpoint,
                    frame,
                    self.spec.features + self.spec.identity,
                    self.spec.target.column,
                    on_progress=lambda n: progress.advance(bar, n),
                )
            except TrafficError as exc:
                return False, str(exc)
            self.mem[f"{scenario}_labels"] = out.labels
            if scenario == "drifted":
                self.mem["first_drifted_request"] = time.monotonic() - out.seconds
            missing = wait_logged(DEMO_PROJECT, set(out.labels["request_id"]), self.settings)
            if missing:
                return False, f"{missing} answered requests missing from the prediction log"
            return True, (
                f"{out.rows} rows in {out.requests} requests, {out.rows / out.seconds:.0f} rows/s, "
                f"answered by v{', v'.join(sorted(out.versions))}"
            )

        return act

    def write_labels(self) -> None:
        self.mem["drifted_labels"].to_csv(self.labels_file, index=False)

    def drift_found(self) -> tuple[bool, str]:
        report = lineage_store(self.settings).drift_reports(DEMO_PROJECT, limit=1)[0]
        self.mem["report"] = report
        live = report.get("live_metric")
        live_note = f"; live roc_auc {live:.3f}" if live is not None else ""
        if not report["fired"]:
            return False, f"drift not detected: {report['reason']}{live_note}"
        return True, (
            f"report {report['id']}: drifted {', '.join(report['drifted_features'])}{live_note}"
        )

    def retrained(self) -> tuple[bool, str]:
        run_id = self.mem["run_id"]
        states = self.sc.client.task_states(f"{DEMO_PROJECT}__continuous_training", run_id)
        if states.get("wait_for_drift") == "skipped":
            report = lineage_store(self.settings).drift_reports(DEMO_PROJECT, limit=1)[0]
            return (
                bool(report["fired"]) and not report["handled_by"],
                "drift episode already handled by an earlier retraining (cooldown "
                f"{self.spec.monitoring.cooldown_minutes} min); no second retraining",
            )
        if states.get("promote") != "success":
            return False, f"the new version did not win the gate: {states}"
        return True, f"new champion v{_champion(self.settings)}"

    def no_new_champion(self) -> str | None:
        if self.mem.get("champion_before") == _champion(self.settings):
            return "no new champion to deploy (same drift episode)"
        return self.champion_live()

    def note_champion(self) -> None:
        self.mem["champion_before"] = _champion(self.settings)


def _stages(sc: Scenario) -> list[Stage]:
    steps = _Steps(sc)
    return [
        Stage("platform check", "platform_check"),
        Stage(
            "ingest clean batch",
            f"{DEMO_PROJECT}__ingest",
            conf={"source": str(steps.clean)},
            check=steps.remember_head,
        ),
        Stage(
            "compute, materialize and serve features (asset-triggered)",
            f"{DEMO_PROJECT}__features",
            trigger=False,
            check=steps.features_served,
        ),
        Stage(
            "train on it with point-in-time features (asset-triggered)",
            f"{DEMO_PROJECT}__train",
            trigger=False,
            check=steps.champion_exists,
        ),
        Stage(
            "deploy the champion (asset-triggered)",
            f"{DEMO_PROJECT}__deploy",
            trigger=False,
            check=steps.champion_served,
            skip=steps.champion_live,
        ),
        Stage("serve clean traffic", action=steps.traffic("clean", CLEAN_TRAFFIC_ROWS, 11)),
        Stage(
            "reject corrupted batch",
            f"{DEMO_PROJECT}__ingest",
            expect="failed",
            conf={"source": str(steps.corrupted)},
            check=steps.main_unchanged,
        ),
        Stage(
            "serve drifted traffic",
            action=steps.traffic("drifted", DRIFTED_TRAFFIC_ROWS, 12),
            before=steps.note_champion,
        ),
        Stage(
            "labels of the drifted traffic arrive",
            f"{DEMO_PROJECT}__ingest_labels",
            conf={"source": str(steps.labels_file)},
            before=steps.write_labels,
        ),
        Stage(
            "monitor detects drift",
            f"{DEMO_PROJECT}__monitor",
            conf={"include_open_window": True},
            check=steps.drift_found,
        ),
        Stage(
            "continuous training (drift-triggered)",
            f"{DEMO_PROJECT}__continuous_training",
            trigger=False,
            check=steps.retrained,
        ),
        Stage(
            "deploy the new champion (asset-triggered)",
            f"{DEMO_PROJECT}__deploy",
            trigger=False,
            check=steps.champion_served,
            skip=steps.no_new_champion,
        ),
    ]


def _run_dag_stage(sc: Scenario, stage: Stage, since: str) -> tuple[str, str]:
    """Trigger or await the stage's run and follow it with a bar of finished tasks."""
    client = sc.client
    client.prepare(stage.dag_id)
    if stage.trigger:
        run_id = client.trigger(stage.dag_id, stage.conf)
        sc.console.print(f"triggered {stage.dag_id} run {run_id}")
    else:
        run_id = client.wait_for_asset_run(stage.dag_id, since=since)
        sc.console.print(f"asset event started {stage.dag_id} run {run_id}")
    sc.memory["run_id"] = run_id  # for the stage's check
    printed: dict[str, str] = {}
    with _progress(sc.console) as progress:
        bar = progress.add_task(stage.dag_id, total=None)

        def show(states: dict[str, str]) -> None:
            done = sum(s in TASK_DONE for s in states.values())
            running = [t for t, s in states.items() if s in TASK_ACTIVE]
            progress.update(
                bar,
                total=len(states),
                completed=done,
                description=f"{stage.dag_id} {' '.join(running)}".strip(),
            )
            for task, state in states.items():
                if state in TASK_DONE and printed.get(task) != state:
                    printed[task] = state
                    progress.console.print(f"  {task}: {state}")

        state = client.follow(stage.dag_id, run_id, on_change=show)
    return run_id, state


@dataclass
class DemoResult:
    ok: bool
    outcomes: list[Outcome]
    # From the first drifted request to the new champion serving (None when not reached).
    drift_to_champion_seconds: float | None = None


def run_demo(settings: Settings, *, console: Console) -> DemoResult:
    """Run the demo scenario; ``ok`` when every stage behaved as expected."""
    t0 = time.monotonic()
    console.rule("stage: stack up")
    platform_stack.up(settings, log=console.print)
    settings = reload_settings(settings)
    outcomes = [Outcome("stack up", "-", "healthy", time.monotonic() - t0, True)]
    sc = Scenario(settings, console, AirflowClient.from_settings(settings))
    previous_start = ""
    for stage in _stages(sc):
        console.rule(f"stage: {stage.name}")
        started = time.monotonic()
        started_wall = datetime.now(UTC).isoformat()
        skipped = stage.skip() if stage.skip else None
        if skipped:
            console.print(f"nothing to do: {skipped}")
            outcomes.append(Outcome(stage.name, "-", "skipped", 0.0, True, skipped))
            continue
        note = ""
        if stage.before:
            stage.before()
        if stage.action:
            with _progress(console) as progress:
                ok, note = stage.action(progress)
            run_id, state = "-", "done" if ok else "failed"
        else:
            try:
                run_id, state = _run_dag_stage(sc, stage, previous_start)
            except AirflowApiError as exc:
                console.print(f"[red]{stage.dag_id}: {exc}[/]")
                run_id, state = "-", "error"
            ok = state == stage.expect
            if not ok:
                note = f"expected {stage.expect}"
            elif stage.check:
                ok, note = stage.check()
            previous_start = started_wall
        console.print(("[green]" if ok else "[red]") + f"{stage.name}: {note or state}[/]")
        outcomes.append(Outcome(stage.name, run_id, state, time.monotonic() - started, ok, note))
        if not ok and stage.name.startswith(("ingest", "compute", "train", "deploy the champ")):
            break  # later stages need this one

    _summary(sc, outcomes)
    failed = [o.stage for o in outcomes if not o.ok]
    if failed:
        console.print(f"[bold red]demo failed at: {', '.join(failed)}[/]")
    loop = None
    if "first_drifted_request" in sc.memory and not failed:
        loop = time.monotonic() - sc.memory["first_drifted_request"]
        console.print(f"from the first drifted request to the new champion serving: {loop:.1f}s")
    console.print(f"total {time.monotonic() - t0:.1f}s")
    return DemoResult(not failed, outcomes, loop)


def _summary(sc: Scenario, outcomes: list[Outcome]) -> None:
    settings, console = sc.settings, sc.console
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
    console.print(f"MLOps page : {settings.airflow_base_url}/mlops")
    console.print(f"MLflow UI  : {settings.mlflow_url}  (user {settings.mlflow_user})")
    console.print(f"lakeFS UI  : {settings.lakefs_url}")
    console.print(f"Served     : {settings.serving_base_url}/{DEMO_PROJECT}/predict  (docs: /docs)")
    console.print("credentials: `mlops stack credentials`; stop with `mlops stack down`")
