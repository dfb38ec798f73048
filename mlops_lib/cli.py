"""The `mlops` command line.

Each command imports what it uses inside its body, so that `mlops --help` and the light
commands start without loading MLflow, scikit-learn, SQLAlchemy or the stack.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from mlops_lib import __version__
from mlops_lib.settings import reload_settings
from mlops_lib.stack.procs import StackError


def _console(stderr: bool = False) -> Console:
    probe = Console(stderr=stderr)
    width = None if probe.is_terminal else 160
    return Console(stderr=stderr, highlight=False, width=width)


console = _console()
err_console = _console(stderr=True)


def _settings(backend: str | None = None, **choices: object):
    from mlops_lib.stack.manager import current_settings

    return current_settings(backend, **{k: v for k, v in choices.items() if v is not None})


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
@click.option("--browser", is_flag=True, help="Also Chromium (headless UI tests).")
@click.option("--celery", is_flag=True, help="Also Redis (the Celery executor's broker).")
def stack_install(backend: str | None, browser: bool, celery: bool) -> None:
    """Install what the stack needs (lakeFS binary, nginx; PostgreSQL for that backend)."""
    from mlops_lib.stack import postgres as pg
    from mlops_lib.stack import redis
    from mlops_lib.stack.debian import install_browser
    from mlops_lib.stack.gateway import install_nginx
    from mlops_lib.stack.lakefs_build import ensure_lakefs_binary

    settings = _settings(backend)
    try:
        for name in ("lakefs", "lakefs-acl"):
            path = ensure_lakefs_binary(settings, name, log=console.print)
            console.print(f"{name} {settings.lakefs_version}: {path} -> {path.resolve()}")
        console.print(f"nginx (serving gateway): {install_nginx(log=console.print)}")
        if backend == "postgres":
            console.print(f"PostgreSQL: {pg.install_postgres(settings, log=console.print)}")
        if celery:
            console.print(f"Redis: {redis.server_binary(log=console.print)}")
        if browser:
            console.print(f"Chromium: {install_browser(log=console.print)}")
    except StackError as exc:
        _fail(exc)


@stack.command("up")
@BACKEND
@click.option(
    "--executor",
    type=click.Choice(["local", "celery"]),
    default=None,
    help="Airflow's executor (default: MLOPS_EXECUTOR, else local). celery: Redis and "
    "Celery workers; needs --backend postgres.",
)
@click.option(
    "--workers", type=click.IntRange(min=1), default=None, help="Celery workers (default 2)."
)
@click.option(
    "--queues",
    default=None,
    help="Queues the Celery workers take, comma separated (default: default,training).",
)
def stack_up(
    backend: str | None, executor: str | None, workers: int | None, queues: str | None
) -> None:
    """Start the stack (idempotent) and wait until every service is healthy."""
    from mlops_lib import platform_stack

    settings = _settings(backend, executor=executor, celery_workers=workers, celery_queues=queues)
    started = time.monotonic()
    try:
        rows = platform_stack.up(settings, log=console.print)
    except StackError as exc:
        _fail(exc)
    settings = reload_settings(settings)
    _print_status(rows)
    workers = f", {settings.celery_workers} Celery workers" if settings.executor == "celery" else ""
    console.print(
        f"stack ({settings.backend} backend, {settings.executor} executor{workers}) is up in "
        f"{time.monotonic() - started:.1f}s"
    )
    _print_credentials_hint(settings)


@stack.command("down")
def stack_down() -> None:
    """Stop the services `up` started (pid files); succeeds when nothing runs."""
    from mlops_lib import platform_stack

    settings = _settings()
    result = platform_stack.down(settings, log=lambda _msg: None)
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
    from mlops_lib import platform_stack

    settings = _settings(backend)
    rows = platform_stack.status(settings)
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
    for col in ("service", "state", "url", "model", "pid", "log"):
        table.add_column(col)
    for row in rows:
        color = "green" if row["state"] == "healthy" else "red"
        table.add_row(
            row["service"],
            f"[{color}]{row['state']}[/]",
            _url_cell(row),
            _model_cell(row),
            str(row["pid"] or ""),
            row["log"],
        )
    console.print(table)


def _url_cell(row: dict) -> str:
    """A service's URL; for a replica of a deployment, the project's endpoint and, below it,
    the replica's own address."""
    if not row.get("replica_url"):
        return row["url"] or ""
    return f"{row['url']}\n  via {row['replica_url']}"


def _model_cell(row: dict) -> str:
    """``v3 onnx``: the served model version and the runtime that scores it."""
    if not row.get("model_version"):
        return ""
    return f"v{row['model_version']} {row.get('runtime', '')}".strip()


def _print_credentials_hint(settings, show: bool = False) -> None:
    lines = [
        f"Airflow UI  {settings.airflow_base_url}  user {settings.airflow_user}",
        f"MLflow UI   {settings.mlflow_url}  user {settings.mlflow_user}",
        f"lakeFS UI   {settings.lakefs_url}  access key id {settings.lakefs_access_key_id}",
    ]
    for line in lines:
        console.print(line)
    if show:
        console.print(f"passwords and secret keys: {settings.credentials_file}")
        if settings.airflow_password is not None:
            console.print(f"Airflow password: {settings.airflow_password.get_secret_value()}")
        if settings.mlflow_password is not None:
            console.print(f"MLflow password: {settings.mlflow_password.get_secret_value()}")
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
        ok = demo_mod.run_demo(settings, console=console).ok
    except StackError as exc:
        _fail(exc)
    sys.exit(0 if ok else 1)


@main.group()
def project() -> None:
    """Project specs (one YAML file per ML use case)."""


@project.command("validate")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def project_validate(path: Path) -> None:
    """Check one spec file; print every problem and exit 1 when it is invalid."""
    from mlops_lib.spec import SpecError, load_spec

    try:
        spec = load_spec(path)
    except SpecError as exc:
        _fail(exc)
    console.print(
        f"[green]{path}: valid[/] project {spec.name!r}, {len(spec.schema.columns)} columns, "
        f"target {spec.target.column!r} ({spec.target.task}), {len(spec.rules)} rules, "
        f"spec hash {spec.spec_hash()}"
    )


@project.command("init")
@click.argument("name")
@click.option("--data", required=True, help="CSV or Parquet file, folder or glob to sample.")
@click.option("--target", required=True, help="The column to predict.")
@click.option(
    "--task",
    type=click.Choice(["classification", "regression"]),
    default=None,
    help="Default: inferred from the target column.",
)
def project_init(name: str, data: str, target: str, task: str | None) -> None:
    """Draft projects/NAME.yaml from a sample of the data; never overwrites a spec."""
    from mlops_lib.drafting import DraftError, init_project, summary

    try:
        draft = init_project(name, data, target, task=task, settings=_settings())
    except DraftError as exc:
        _fail(exc)
    for line in summary(draft):
        console.print(line, markup=False, soft_wrap=True)


@project.command("assess")
@click.argument("name")
@click.option(
    "--data", default=None, help="CSV or Parquet file, folder or glob (default: the spec's source)."
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder of assessment.json and assessment.html (default: <stack dir>/assessments/NAME).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the assessment as JSON.")
def project_assess(name: str, data: str | None, out: Path | None, as_json: bool) -> None:
    """Is NAME's use case feasible? Profile, target balance, leakage, baseline, verdict."""
    from mlops_lib.assessment import AssessmentError, assess, run_json, summary_lines
    from mlops_lib.sources import SourceError
    from mlops_lib.spec import SpecError

    try:
        result = assess(name, data=data, out=out, settings=_settings())
    except (FileNotFoundError, SpecError, SourceError, AssessmentError) as exc:
        _fail(exc)
    if as_json:
        click.echo(run_json(result))
        if result.mlflow_note:
            err_console.print(f"MLflow run not logged: {result.mlflow_note}", markup=False)
        return
    for line in summary_lines(result):
        console.print(line, markup=False, soft_wrap=True)


@project.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def project_list(as_json: bool) -> None:
    """List the specs of the projects folder (MLOPS_PROJECTS_DIR)."""
    from mlops_lib.spec import discover

    settings = _settings()
    specs, errors = discover(settings.projects_dir)
    rows = [
        {
            "name": s.name,
            "file": str(settings.projects_dir / f"{s.name}.yaml"),
            "valid": True,
            "task": s.target.task,
            "dags": [f"{s.name}__{stage}" for stage in STAGES],
            "errors": [],
        }
        for s in specs.values()
    ]
    rows += [
        {
            "name": Path(p).stem,
            "file": p,
            "valid": False,
            "task": None,
            "dags": [],
            "errors": e.problems,
        }
        for p, e in errors.items()
    ]
    if as_json:
        click.echo(
            json.dumps({"projects_dir": str(settings.projects_dir), "projects": rows}, indent=2)
        )
        return
    table = Table(title=f"projects in {settings.projects_dir}")
    for col in ("name", "valid", "task", "file"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], "yes" if r["valid"] else "[red]no[/]", r["task"] or "", r["file"])
    console.print(table)
    for r in rows:
        for problem in r["errors"]:
            console.print(f"[red]{r['file']}[/]: {problem}")


STAGES = ("ingest", "train", "deploy", "monitor")


@main.command("demo-data")
@click.argument("scenario")
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Output file (.csv or .parquet).",
)
@click.option("--rows", default=None, type=int, help="Rows in the batch (default 50,000).")
@click.option("--seed", default=7, show_default=True, type=int)
def demo_data(scenario: str, out: Path, rows: int | None, seed: int) -> None:
    """Write a batch of the demo churn use case for a scenario.

    Scenarios: clean, drifted, corrupted, and the single faults missing_column,
    wrong_type, nulls, out_of_range, duplicate_keys, unknown_category, empty.
    Every scenario but empty also writes the customers' events to events/<name>.parquet
    beside the batch.
    """
    from mlops_lib import demo_data as dd

    if scenario not in dd.SCENARIOS:
        _fail(ValueError(f"unknown scenario {scenario!r}; choose one of {', '.join(dd.SCENARIOS)}"))
    try:
        df = dd.generate(scenario, rows=rows or dd.DEFAULT_ROWS, seed=seed)
        dd.write(df, out)
    except ValueError as exc:
        _fail(exc)
    console.print(f"wrote {len(df)} rows ({scenario}) to {out}")
    if scenario != "empty":  # the customers' events, which the feature views come from
        events = dd.generate_events(df, seed=seed)
        path = dd.write(events, dd.events_path(out))
        console.print(f"wrote {len(events)} events to {path}")


@main.command("run")
@click.argument("project_name", metavar="PROJECT")
@click.argument("stage")
@click.option("--conf", default=None, help='Run conf as JSON, e.g. \'{"source": "data/x.csv"}\'.')
@click.option("--timeout", default=1800.0, show_default=True, help="Seconds to follow the run.")
def run(project_name: str, stage: str, conf: str | None, timeout: float) -> None:
    """Trigger <PROJECT>__<STAGE> on the running Airflow and follow it to the end."""
    from mlops_lib.airflow_api import AirflowApiError, AirflowClient, describe_states

    try:
        conf_obj = json.loads(conf) if conf else {}
    except json.JSONDecodeError as exc:
        _fail(ValueError(f"--conf is not valid JSON: {exc}"))
    if not isinstance(conf_obj, dict):
        _fail(ValueError("--conf must be a JSON object"))
    settings = _settings()
    dag_id = f"{project_name}__{stage}"
    client = AirflowClient.from_settings(settings)
    try:
        client.prepare(dag_id, timeout=90)
        run_id, state = client.run(
            dag_id,
            conf_obj,
            timeout=timeout,
            on_trigger=lambda rid: console.print(f"triggered {dag_id} run {rid}"),
            on_change=lambda states: console.print(describe_states(states)),
        )
    except AirflowApiError as exc:
        _fail(exc)
    if state == "success":
        console.print(f"[green]{dag_id} {run_id}: success[/]")
        return
    for ti in client.task_instances(dag_id, run_id):
        if ti.get("state") == "failed":
            console.print(f"[red]task {ti['task_id']} failed[/]; end of its log:")
            tail = client.task_log_tail(dag_id, run_id, ti["task_id"], ti.get("try_number", 1))
            console.print(tail, markup=False)
    err_console.print(f"[bold red]{dag_id} {run_id}: {state}[/]")
    sys.exit(1)


@main.group()
def model() -> None:
    """Registered models."""


@model.command("approve")
@click.argument("project_name", metavar="PROJECT")
@click.argument("version", type=int)
def model_approve(project_name: str, version: int) -> None:
    """Promote a version the gate held for manual approval, and announce the new champion."""
    from mlops_lib.airflow_api import AirflowApiError, AirflowClient
    from mlops_lib.registry import RegistryError, approve

    settings = _settings()
    try:
        out = approve(project_name, version, settings)
    except RegistryError as exc:
        _fail(exc)
    console.print(f"{project_name}: @champion is now version {version} (was {out['previous']})")
    try:
        AirflowClient.from_settings(settings).emit_asset_event(
            f"{project_name}_champion", {"version": version, "previous": out["previous"]}
        )
        console.print(f"asset event {project_name}_champion emitted")
    except AirflowApiError as exc:
        err_console.print(f"[yellow]warning:[/] could not emit the champion asset event: {exc}")


@main.command("lineage")
@click.argument("project_name", metavar="PROJECT")
@click.option("--version", type=int, default=None, help="One model version only.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def lineage(project_name: str, version: int | None, as_json: bool) -> None:
    """The chain from data commit to model version (and gate decisions), and the last failure."""
    from mlops_lib.lineage import lineage_store

    settings = _settings()
    store = lineage_store(settings)
    chain = store.chain(project_name, version)
    deployments = [
        d
        for d in store.deployments(project_name)
        if version is None or d["model_version"] == version
    ]
    reports = [
        r
        for r in store.drift_reports(project_name, limit=200)
        if version is None or r["model_version"] == version
    ]
    failure = store.last_failure(project_name)
    if as_json:
        doc = {
            "project": project_name,
            "chain": chain,
            "deployments": deployments,
            "drift_reports": reports,
            "last_failure": failure,
        }
        click.echo(json.dumps(doc, indent=2, default=str))
        return
    if not chain:
        console.print(f"no model versions recorded for {project_name!r}")
    for link in chain:
        _print_link(link, deployments, reports)
    chained = {link["model_version"]["version"] for link in chain}
    for r in reports:
        if r["model_version"] not in chained:
            line = f"  v{r['model_version']}  " + _drift_line(r).strip()
            console.print(line, markup=False, soft_wrap=True)
    if failure:
        style = "dim" if failure["resolved"] else "bold red"
        console.print(_failure_line(failure), style=style, markup=False, soft_wrap=True)


def _failure_line(f: dict) -> str:
    """The last failure: stage, DAG run, task, cause, when, and whether it was resolved."""
    resolved = "  (resolved: the stage succeeded since)" if f["resolved"] else ""
    return (
        f"last failure: {f['stage']} ({f['dag_id']} run {f['dag_run_id']}, task {f['task_id']}):"
        f" {f['cause']}  {str(f['failed_at'])[:19]}{resolved}"
    )


def _print_link(link: dict, deployments: list[dict], reports: list[dict]) -> None:
    """One version's chain: data, training, holdout, gate, deployments, drift reports."""
    ds, tr, mv = link["dataset"], link["training"] or {}, link["model_version"]
    console.print(f"[bold]{mv['project']} v{mv['version']}[/]  {mv['model_uri']}")
    console.print(
        f"  data      lakeFS commit {ds['commit_id'][:16]}  rows {ds.get('rows', '?')}  "
        f"schema {ds.get('schema_hash', '?')}  {ds.get('rule_summary', '')}"
    )
    if tr:
        console.print(
            f"  training  MLflow run {tr['mlflow_run_id']}  {tr['best_family']}  "
            f"cv {tr['cv_score']:.4f}  {tr['trials']} trials  {tr['seconds']}s  "
            f"code {tr['code_version']}  spec {tr['spec_hash']}  dag run {tr['dag_run_id']}"
        )
    console.print(f"  holdout   {json.dumps(mv['holdout_metrics'])}")
    for d in link["decisions"]:
        console.print(f"  gate      {d['decision']}: {d['reason']}", markup=False)
    for dep in deployments:
        if dep["model_version"] == mv["version"]:
            console.print(
                f"  deploy    #{dep['id']} {dep['state']}  bento {dep['bento_tag']}  "
                f"{dep['url'] or '-'}  {dep['created_at'][:19]}"
                + (f"  {dep['reason']}" if dep["reason"] else ""),
                markup=False,
            )
    for r in reports:
        if r["model_version"] == mv["version"]:
            console.print(_drift_line(r), markup=False, soft_wrap=True)


def _drift_line(r: dict) -> str:
    """A drift report: verdict, rows, reason, live metric, the retraining and its outcome."""
    live = (
        f"  live metric {r['live_metric']:.4f} ({r['labelled_rows']} labels)"
        if r.get("live_metric") is not None
        else ""
    )
    handled = f"  -> retraining {r['handled_by']}" if r["handled_by"] else ""
    if r.get("outcome"):
        handled += f"  outcome: {r['outcome']}"
    return (
        f"  drift     #{r['id']} {'FIRED' if r['fired'] else 'quiet'}  "
        f"{r['rows']} rows  {r['reason']}{live}{handled}  {str(r['created_at'])[:19]}"
    )


@main.group()
def deploy() -> None:
    """Deployments of the projects' models (the `<project>__deploy` DAG makes them)."""


@deploy.command("rollback")
@click.argument("project_name", metavar="PROJECT")
def deploy_rollback(project_name: str) -> None:
    """Serve the deployment that was live before the current one again."""
    from mlops_lib.serving.deploy import DeploymentError, rollback

    settings = _settings()
    try:
        out = rollback(project_name, settings)
    except DeploymentError as exc:
        _fail(exc)
    console.print(
        f"{project_name}: deployment {out['id']} (model v{out['model_version']}, "
        f"{out['bento_tag']}) serves {out['endpoint']} again; rolled back {out['previous']}"
    )


@main.group()
def features() -> None:
    """Feature views of the projects (Feast): the `<project>__features` DAG computes them."""


@features.command("plan")
@click.argument("project_name", metavar="PROJECT")
def features_plan(project_name: str) -> None:
    """What `apply` would change in PROJECT's published feature registry."""
    from mlops_lib.feature_store.runner import FeatureStoreError
    from mlops_lib.feature_store.store import FeatureTablesMissing, plan

    try:
        console.print(plan(project_name, _settings()), markup=False)
    except (FeatureStoreError, FeatureTablesMissing, FileNotFoundError) as exc:
        _fail(exc)


@features.command("apply")
@click.argument("project_name", metavar="PROJECT")
def features_apply(project_name: str) -> None:
    """Register PROJECT's views as computed at lakeFS main's head and materialize them."""
    from mlops_lib.feature_store.runner import FeatureStoreError
    from mlops_lib.feature_store.store import FeatureTablesMissing, apply

    try:
        out = apply(project_name, _settings())
    except (FeatureStoreError, FeatureTablesMissing, FileNotFoundError) as exc:
        _fail(exc)
    console.print(
        f"{project_name}: views {', '.join(out['feature_views'])} at commit "
        f"{out['commit_id'][:12]} (registry {out['registry_hash']}), materialized to "
        f"{out['materialized_to'][:19]}; served at {out['server_url']}"
    )


@features.command("list")
@click.argument("project_name", metavar="PROJECT")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def features_list(project_name: str, as_json: bool) -> None:
    """PROJECT's published entities and feature views, with their commit and freshness."""
    from mlops_lib.feature_store.runner import FeatureStoreError
    from mlops_lib.feature_store.store import describe

    try:
        listed = describe(project_name, _settings())
    except (FeatureStoreError, FileNotFoundError) as exc:
        _fail(exc)
    if as_json:
        console.print_json(json.dumps(listed))
        return
    if not listed["commit_id"]:
        console.print(f"{project_name}: no feature views published yet")
        return
    table = Table(title=f"{project_name} feature views @ {listed['commit_id'][:12]}")
    for column in ("view", "entities", "features", "ttl (days)", "materialized to"):
        table.add_column(column)
    for view in listed["feature_views"]:
        intervals = view["materialization_intervals"]
        table.add_row(
            view["name"],
            ", ".join(view["entities"]),
            ", ".join(f["name"] for f in view["features"]),
            f"{(view['ttl_seconds'] or 0) / 86400:g}",
            str(intervals[-1][1])[:19] if intervals else "never",
        )
    console.print(table)


@main.command("serve")
@click.argument("project_name", metavar="PROJECT")
@click.option("--host", default="0.0.0.0", show_default=True)
@click.option("--port", default=3000, show_default=True)
def serve(project_name: str, host: str, port: int) -> None:
    """Serve PROJECT's active deployment in the foreground, following new deployments.

    For a serving host of its own (the docker-compose `serving` container); the local stack
    serves through `mlops stack up`'s gateway instead.
    """
    from mlops_lib.serving.deploy import serve_active

    sys.exit(serve_active(project_name, host=host, port=port, settings=_settings()))


@main.group()
def monitor() -> None:
    """Drift reports of the `<project>__monitor` DAG."""


@monitor.command("report")
@click.argument("project_name", metavar="PROJECT")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="HTML file to write.")
@click.option("--open", "open_it", is_flag=True, help="Open it in the browser.")
def monitor_report(project_name: str, out: Path | None, open_it: bool) -> None:
    """Write (and optionally open) the latest drift report of PROJECT as HTML."""
    from mlops_lib import versioning as vc
    from mlops_lib.layout import MONITORING_BRANCH
    from mlops_lib.lineage import lineage_store

    settings = _settings()
    reports = lineage_store(settings).drift_reports(project_name, limit=1)
    if not reports:
        _fail(
            ValueError(
                f"no drift report of {project_name!r} yet: run `mlops run {project_name} monitor`"
            )
        )
    latest = reports[0]
    path = latest["lakefs_uri"].split("/", 4)[-1]
    html = vc.read(project_name, MONITORING_BRANCH, path, settings)
    out = out or settings.stack_dir / "reports" / f"{project_name}-drift-{latest['id']}.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(html)
    verdict = "policy FIRED" if latest["fired"] else "policy quiet"
    console.print(
        f"{project_name} drift report {latest['id']} (v{latest['model_version']}, "
        f"{latest['rows']} rows, {verdict}: {latest['reason']})",
        markup=False,
    )
    console.print(f"drifted features: {', '.join(latest['drifted_features']) or 'none'}")
    console.print(
        f"wrote {out}  (lakeFS {latest['lakefs_uri']}, MLflow run {latest['mlflow_run_id']})",
        markup=False,
    )
    if open_it:
        import webbrowser

        webbrowser.open(out.resolve().as_uri())


@deploy.command("list")
@click.argument("project_name", metavar="PROJECT")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def deploy_list(project_name: str, as_json: bool) -> None:
    """A project's deployments, newest first."""
    from mlops_lib.lineage import lineage_store

    rows = lineage_store(_settings()).deployments(project_name)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    table = Table(title=f"{project_name} deployments")
    for col in ("id", "state", "model", "bento", "url", "created", "reason"):
        table.add_column(col)
    for d in rows:
        table.add_row(
            str(d["id"]),
            d["state"],
            f"v{d['model_version']}",
            d["bento_tag"],
            d["url"],
            d["created_at"][:19],
            d["reason"][:80],
        )
    console.print(table)


if __name__ == "__main__":  # pragma: no cover
    main()
