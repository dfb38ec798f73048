"""DAG factory: the DAGs of every project spec in the projects folder.

For each ``projects/<name>.yaml`` it generates ``<name>__ingest``, ``<name>__train``,
``<name>__deploy``, ``<name>__monitor``, ``<name>__ingest_labels`` and
``<name>__continuous_training``, and ``<name>__features`` for a spec with feature views.
Tasks only wire: each
calls one ``mlops_lib`` function and passes references through XCom. A broken spec
becomes a paused ``<name>__invalid_spec`` DAG whose docs and only task show the errors;
the other projects are unaffected.
"""

from __future__ import annotations

import os
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Asset, Param, dag, task

from mlops_lib.layout import repo_name
from mlops_lib.settings import TRAINING_QUEUE, get_settings
from mlops_lib.spec import ProjectSpec, SpecError, discover

INGEST_DOC = """
### {name}: ingest

{description}

Each run lands one batch on its own lakeFS branch `ingest-<run id>` of repository
`{repo}`, writes it as Parquet under `datasets/{name}/date=<logical date>/` with the
validation report (`_validation.json`) and a whylogs profile (`_profile.bin`), commits with
metadata, and merges into `main` only when every blocking rule passes. A successful run
emits the asset `{name}_dataset` with the `main` commit id in its extra.

* **Source**: `{source}`; override per run with conf `{{"source": "<path or glob>"}}`.
* **Tasks**: `open_branch` -> `validate_and_commit` -> `publish`.

**When it fails**

* `publish` failed with *batch rejected*: the task log lists every violation (rule,
  column, rows, examples). `main` is unchanged; the branch and its report stay in lakeFS
  for inspection (the log gives the `lakefs://` URI). Fix the data and trigger again.
* `open_branch` or `validate_and_commit` failed with a connection error: lakeFS is
  down; `mlops stack status`, then `mlops stack up`. The task retries with backoff and
  a retry starts from a clean branch; nothing partial reaches `main`.
"""

INVALID_DOC = """
### Invalid project spec: `{path}`

This spec does not validate, so its DAGs are not generated. Other projects are unaffected.

```
{errors}
```

**What to do**: fix the file (`mlops project validate {path}` prints the same errors); the
DAG processor picks it up on its next pass and this placeholder disappears.
"""


def dataset_asset(spec: ProjectSpec) -> Asset:
    """The project's dataset on lakeFS main (events carry the commit id)."""
    return Asset(
        name=f"{spec.name}_dataset",
        uri=f"lakefs://{repo_name(spec.name)}/main/datasets/{spec.name}",
    )


def default_args(spec: ProjectSpec) -> dict:
    """Owner, retries with exponential backoff and the failure notifier, from the spec."""
    from mlops_airflow.notifiers import MLOpsFailureNotifier

    a = spec.airflow
    return {
        "on_failure_callback": MLOpsFailureNotifier(project=spec.name),
        "owner": a.owner,
        "retries": a.retries,
        "retry_delay": timedelta(seconds=a.retry_delay_seconds),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(seconds=a.max_retry_delay_seconds),
    }


def _export_sql_connection(spec: ProjectSpec) -> None:
    """A SQL source's Airflow connection, for this task's process only, as Airflow's own
    ``AIRFLOW_CONN_<ID>`` variable (how the platform reads connections without Airflow)."""
    sql = spec.source.sql
    if sql is None or sql.conn_id is None:
        return
    var = f"AIRFLOW_CONN_{sql.conn_id.upper()}"
    if var not in os.environ:
        from airflow.sdk import Connection

        try:
            os.environ[var] = Connection.get(sql.conn_id).get_uri()
        except Exception:  # not defined: reading the source says so, naming it
            return


def build_ingest(spec: ProjectSpec) -> DAG:
    """``<project>__ingest``: branch, validate and commit, merge or reject."""
    project = spec.name
    asset = dataset_asset(spec)

    @dag(
        dag_id=f"{project}__ingest",
        schedule=spec.airflow.ingest_schedule,
        catchup=False,
        tags=["mlops", "ingest", f"project:{project}", *spec.airflow.tags],
        doc_md=INGEST_DOC.format(
            name=project,
            description=spec.description.strip(),
            repo=repo_name(project),
            source=spec.source.path or "SQL query",
        ),
        default_args=default_args(spec),
        params={"source": Param(None, type=["null", "string"], description="Path or glob")},
        max_active_runs=1,
    )
    def ingest_dag() -> None:
        @task
        def open_branch(**context) -> dict:
            from mlops_lib.ingest import open_branch as run

            return run(project, context["run_id"])

        @task
        def validate_and_commit(opened: dict, **context) -> dict:
            from mlops_lib.ingest import ingest_batch

            _export_sql_connection(spec)
            dag_run = context["dag_run"]
            when = context.get("logical_date") or dag_run.run_after
            source = (dag_run.conf or {}).get("source") or context["params"].get("source")
            return ingest_batch(
                project,
                opened["branch"],
                day=when.strftime("%Y-%m-%d"),
                run_id=context["run_id"],
                dag_id=dag_run.dag_id,
                source=source,
            )

        @task(outlets=[asset])
        def publish(result: dict, **context) -> dict:
            from airflow.sdk.exceptions import AirflowFailException

            from mlops_lib.ingest import publish as run
            from mlops_lib.quality import DataQualityError

            try:
                out = run(project, result)
            except DataQualityError as exc:
                # Bad data does not get better by retrying.
                raise AirflowFailException(str(exc)) from exc
            context["outlet_events"][asset].extra = {
                "commit_id": out["commit_id"],
                "rows": out["rows"],
                "partition": out["partition"],
            }
            return out

        publish(validate_and_commit(open_branch()))

    return ingest_dag()


TRAIN_DOC = """
### {name}: train

Runs on every accepted batch (the `{name}_dataset` asset; for a project with feature views,
the `{name}_features` asset once they are computed for it) and on demand. Trains on exactly
the lakeFS commit named in the triggering asset event (else `main`'s head); with feature
views, each labelled row is joined point-in-time with them (Feast's historical retrieval):

* `resolve_data`: the commit id;
* `plan_search`: opens the AutoML search ({families}; budget {trials} trials / {seconds} s,
  {folds}-fold CV on {metric}): one MLflow parent run and one Optuna study. Skipped when
  `champion` was trained on that commit with the same spec and code (it would only register
  a copy);
* `search` ({parallel} mapped task(s), queue `training`): each runs trials of the shared
  study until the budget, counted across all of them, is spent; with Celery workers they run
  on several machines. Every trial is an MLflow run nested under the parent, tagged
  `mlops.worker`;
* `train` (queue `training`): the best trial is refit on all training rows, logged with
  signature and the lakeFS dataset, registered as a new version of model `{name}` and
  aliased `challenger`;
* `gate`: challenger and `champion` scored on the same holdout (and on its labelled
  production rows, which then decide); the challenger must beat the champion by more than
  `min_improvement` (a tie stays a challenger). The decision, the rule that decided, both
  metric sets and the reason go to the version's tags, its description (model card) and
  the lineage store;
* `promote`: moves `champion` when the gate says so and emits the `{name}_champion` asset;
  skipped otherwise (the champion stays).

**When it fails**

* `resolve_data` fails with *not on lakeFS 'main'*: the triggering event named a commit that
  was never published (e.g. a rejected ingest branch); nothing was trained.
* `search` or `train` fails with *fewer rows*, *single class*, *missing column* or *every
  AutoML trial failed*: the data at that commit cannot train a model; nothing was
  registered. Ingest better data.
* `search` or `train` fails with a connection error: MLflow, lakeFS or the study storage is
  down; `mlops stack up`. A retried `search` goes on with the same study and budget; a
  retried `train` reuses a version the first try registered, so no duplicate appears.
* `promote` skipped: the challenger lost or awaits `mlops model approve {name} <version>`;
  see the version's `gate_reason` tag or `mlops lineage {name}`.
"""


FEATURES_DOC = """
### {name}: features

Runs on every accepted batch (the `{name}_dataset` asset) and on demand: the Feast feature
views of the spec ({views}) computed from the event tables ({sources}), versioned in lakeFS
repository `{repo}` beside the dataset.

* `build_views`: reads each event table's files, checks them against their declared
  columns, computes every view (latest values and windowed aggregates per entity at each of
  its event times) and commits the tables under `features/{name}/` on a branch
  `features-<run id>`, merged into `main`;
* `publish_views`: generates the Feast repo of that commit (`.stack/features/{name}/commits/
  <commit>-<registry hash>/`), applies it, materializes every view's history up to now into
  the online store (TTL {ttl} days), points the feature server (`feast serve`) at it
  (starting it when it is not running) and emits
  the asset `{name}_features` with the commit id: training runs on it, its training sets
  joined point-in-time with these views.

**When it fails**

* `build_views` failed with *invalid rows in source*: the task log lists every violation
  (column, rows, examples); `main` is unchanged. Fix the event files and trigger again.
* `publish_views` failed: Feast's error is in the log (its environment is
  `feature_store/.venv`, made by `make setup`); the online store keeps the previous commit's
  values and the feature server keeps serving them.
"""


def features_asset(spec: ProjectSpec) -> Asset:
    """The project's feature views on lakeFS main (events carry the commit id)."""
    return Asset(
        name=f"{spec.name}_features",
        uri=f"lakefs://{repo_name(spec.name)}/main/features/{spec.name}",
    )


def build_features(spec: ProjectSpec) -> DAG:
    """``<project>__features``: views from the event tables, materialized and served."""
    project = spec.name
    store = spec.feature_store
    assert store is not None
    asset = features_asset(spec)

    @dag(
        dag_id=f"{project}__features",
        schedule=[dataset_asset(spec)],
        catchup=False,
        tags=["mlops", "features", f"project:{project}", *spec.airflow.tags],
        doc_md=FEATURES_DOC.format(
            name=project,
            views=", ".join(store.views),
            sources=", ".join(store.sources),
            repo=repo_name(project),
            ttl=max(v.ttl_days for v in store.views.values()),
        ),
        default_args=default_args(spec),
        max_active_runs=1,
    )
    def features_dag() -> None:
        @task
        def build_views(**context) -> dict:
            from airflow.sdk.exceptions import AirflowFailException

            from mlops_lib.feature_store.store import build_views as run
            from mlops_lib.feature_store.views import FeatureSourceError

            try:
                return run(project, context["run_id"])
            except FeatureSourceError as exc:  # bad rows do not get better by retrying
                raise AirflowFailException(str(exc)) from exc

        @task(outlets=[asset])
        def publish_views(built: dict, **context) -> dict:
            from mlops_lib.feature_store.store import publish_views as run

            out = run(project, built)
            context["outlet_events"][asset].extra = {
                "commit_id": out["commit_id"],
                "registry_hash": out["registry_hash"],
            }
            return out

        publish_views(build_views())

    return features_dag()


def champion_asset(spec: ProjectSpec) -> Asset:
    """The project's champion model (events carry the version)."""
    return Asset(name=f"{spec.name}_champion", uri=f"mlflow://models/{spec.name}/champion")


def training_chain(spec: ProjectSpec, commit: Any, drift: Any | None = None) -> Any:
    """train -> gate -> promote (emits the champion asset); shared by the train and the
    continuous-training DAGs. ``drift``: the drift report a retraining acts on."""
    project = spec.name
    champion = champion_asset(spec)
    t = spec.training

    @task
    def plan_search(commit: str, drift: dict | None = None, **context) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from mlops_lib.training import NothingToTrain, open_search

        tags = {"drift_report_id": str(drift["report_id"])} if drift else None
        try:
            return open_search(
                project,
                commit,
                dag_id=context["dag_run"].dag_id,
                run_id=context["run_id"],
                trigger=str(context["dag_run"].run_type) + (" (drift)" if drift else ""),
                extra_tags=tags,
            )
        except NothingToTrain as exc:
            raise AirflowSkipException(str(exc)) from exc

    @task(
        execution_timeout=timedelta(seconds=t.budget.seconds * 3 + 600),
        queue=TRAINING_QUEUE,
        map_index_template="{{ trial_task }}",
    )
    def search(plan: dict, shard: int) -> dict:
        from airflow.sdk import get_current_context
        from airflow.sdk.exceptions import AirflowFailException

        get_current_context()["trial_task"] = f"trials {shard}"  # its name in the UI
        from mlops_lib.datasets import TrainingError
        from mlops_lib.training import search_trials

        try:
            return search_trials(project, plan, shard)
        except TrainingError as exc:
            raise AirflowFailException(str(exc)) from exc

    @task(execution_timeout=timedelta(seconds=t.budget.seconds * 2 + 600), queue=TRAINING_QUEUE)
    def train(plan: dict, searched: list[dict]) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from mlops_lib.datasets import TrainingError
        from mlops_lib.training import finish_training

        try:
            return finish_training(project, plan, searched)
        except TrainingError as exc:
            raise AirflowFailException(str(exc)) from exc

    @task
    def gate(trained: dict) -> dict:
        from mlops_lib.registry import evaluate_gate

        return evaluate_gate(project, trained["version"], trained["commit"])

    @task(outlets=[champion])
    def promote(decision: dict, **context) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from mlops_lib.registry import PROMOTE
        from mlops_lib.registry import promote as run

        if decision["decision"] != PROMOTE:
            raise AirflowSkipException(
                f"champion unchanged: v{decision['version']} {decision['decision']}: "
                f"{decision['reason']}"
            )
        out = run(project, decision["version"])
        context["outlet_events"][champion].extra = {
            "version": out["version"],
            "previous": out["previous"],
        }
        return out

    plan = plan_search(commit, drift)
    searched = search.partial(plan=plan).expand(shard=list(range(t.parallel)))
    return promote(gate(train(plan, searched)))


def build_train(spec: ProjectSpec) -> DAG:
    """``<project>__train``: resolve commit, AutoML + register, gate, promote."""
    project = spec.name
    # A project with features trains once its views are computed for the new data.
    data = features_asset(spec) if spec.feature_store else dataset_asset(spec)
    t = spec.training

    @dag(
        dag_id=f"{project}__train",
        schedule=[data],
        catchup=False,
        tags=["mlops", "train", f"project:{project}", *spec.airflow.tags],
        doc_md=TRAIN_DOC.format(
            name=project,
            families=", ".join(t.families),
            trials=t.budget.trials,
            seconds=t.budget.seconds,
            folds=t.cv_folds,
            metric=t.metric,
            parallel=t.parallel,
        ),
        default_args=default_args(spec),
        max_active_runs=1,
    )
    def train_dag() -> None:
        @task
        def resolve_data(**context) -> str:
            from airflow.sdk.exceptions import AirflowFailException

            from mlops_lib.datasets import TrainingError
            from mlops_lib.training import resolve_commit

            # Several batches may have arrived since the last run: train on the newest.
            events = [
                e for evs in (context.get("triggering_asset_events") or {}).values() for e in evs
            ]
            newest = max(events, key=lambda e: e.timestamp) if events else None
            try:
                return resolve_commit(project, newest.extra if newest else None)
            except TrainingError as exc:  # a commit that is not on main: no retry
                raise AirflowFailException(str(exc)) from exc

        training_chain(spec, resolve_data())

    return train_dag()


DEPLOY_DOC = """
### {name}: deploy

Runs whenever `{name}` gets a new champion (the `{name}_champion` asset: the training DAG's
`promote`, or `mlops model approve`) and on demand. The project's stable endpoint is
`{endpoint}` (`/predict`, `/readyz`, `/metrics`, `/docs`).

* `package`: imports `models:/{name}/<champion version>` into the BentoML store and runs
  `bentoml build` (pinned requirements, the spec and model version baked into the Bento);
  the Bento tag is recorded as a new deployment in the lineage store;
* `start`: serves the Bento as the spec's `serving.replicas` ({replicas}) processes, each on a
  free port of its own, until every one's `/readyz` answers; a compiled graph that keeps any
  replica from starting gives way to the pipeline (every replica restarts);
* `smoke_test`: {smoke_rows} holdout rows of the model's training commit must get exactly the
  MLflow model's predictions and probabilities over HTTP from every replica (a miss on any
  replica is a miss);
* `switch`: points the stable endpoint at the new deployment's replicas (the gateway balances
  them by least connections and takes out one that stops answering, retrying its request on
  another), then stops every replica of the previous deployment and retires it. Every served
  row goes to the prediction log (lakeFS branch `monitoring`).

**When it fails**

* `start` or `smoke_test` failed: the new Bento never took traffic; the previous deployment
  keeps serving; the deployment is marked `failed` with the reason
  (`mlops deploy list {name}`; its server logs are
  `.stack/logs/deployment-{name}-<id>.log`, replica i's `...-<id>-r<i>.log`).
  Usually the model does not accept the project's schema or differs from its registry copy.
* `package` failed with a connection error: MLflow is down; `mlops stack up`, the task retries.
* `package` refused "neither the promotion gate nor an operator approved it": `@champion` was
  moved by hand in MLflow; the serving model is unchanged. Move the alias back, or approve a
  held version with `mlops model approve {name} VERSION`.
* To go back to the previous model: `mlops deploy rollback {name}`.
"""


def _deploy_step(name: str, deployment_id: int) -> dict:
    """Run one step of ``mlops_lib.serving.deploy``; a deployment that cannot go live fails
    the task without retry (the candidate is already stopped and marked failed)."""
    from airflow.sdk.exceptions import AirflowFailException

    from mlops_lib.serving import deploy

    try:
        return getattr(deploy, name)(deployment_id)
    except deploy.DeploymentError as exc:
        raise AirflowFailException(str(exc)) from exc


def build_deploy(spec: ProjectSpec) -> DAG:
    """``<project>__deploy``: package the champion, start, smoke-test, switch."""
    project = spec.name
    settings = get_settings()

    @dag(
        dag_id=f"{project}__deploy",
        schedule=[champion_asset(spec)],
        catchup=False,
        tags=["mlops", "deploy", f"project:{project}", *spec.airflow.tags],
        doc_md=DEPLOY_DOC.format(
            name=project,
            endpoint=f"{settings.serving_base_url}/{project}",
            smoke_rows=settings.smoke_rows,
            replicas=spec.serving.replicas,
        ),
        default_args=default_args(spec),
        max_active_runs=1,
    )
    def deploy_dag() -> None:
        @task(queue=TRAINING_QUEUE)
        def package(**context) -> dict:
            from airflow.sdk.exceptions import AirflowFailException

            from mlops_lib.serving.deploy import DeploymentError
            from mlops_lib.serving.deploy import package as run

            # The champion now, not the one in the event: a newer promotion may have landed.
            try:
                return run(project, dag_run_id=context["run_id"])
            except DeploymentError as exc:  # no champion, or one nobody approved: no retry
                raise AirflowFailException(str(exc)) from exc

        @task(retries=0)
        def start(built: dict) -> dict:
            return _deploy_step("start", built["id"])

        @task(retries=0)
        def smoke_test(started: dict) -> dict:
            return _deploy_step("smoke_test", started["id"])

        @task(retries=0)
        def switch(checked: dict) -> dict:
            from mlops_lib.serving.deploy import switch as run

            return run(checked["id"])

        switch(smoke_test(start(package())))

    return deploy_dag()


MONITOR_DOC = """
### {name}: monitor

Runs `{schedule}` (the spec's `monitoring.schedule`) and on demand. One task, `monitor`:

* profiles every closed hour window of the prediction log (lakeFS branch `monitoring`,
  `monitoring/{name}/predictions/`) once, into mergeable whylogs profiles
  (`monitoring/{name}/profiles/`);
* merges the windows since the last report and scores drift per feature and on the model's
  score against the champion's reference profile (method `{method}`, threshold
  {threshold});
* writes the report as JSON and HTML to lakeFS (`monitoring/{name}/reports/`) and as a run of
  the MLflow experiment `{name}-monitoring`, records it in the lineage store, and emits the
  asset `{name}_drift` whose extra carries the scores and whether the drift policy fired
  (at least {k} drifted features, or prediction drift above {pred_limit}).

Conf `{{"include_open_window": true}}` also reports the current, still open hour.
`mlops monitor report {name} --open` shows the latest report.

A run ends *skipped* while there is nothing to compare with: no champion yet, or a champion
without a reference profile (every version trained by the platform has one).

**When it fails**

* a connection error: lakeFS or MLflow is down; `mlops stack up`, the task retries.
"""


def drift_asset(spec: ProjectSpec) -> Asset:
    """The project's drift reports (events carry the scores and the policy's verdict)."""
    return Asset(name=f"{spec.name}_drift", uri=f"mlops://monitoring/{spec.name}/drift")


def build_monitor(spec: ProjectSpec) -> DAG:
    """``<project>__monitor``: profile windows, score drift, report, emit the drift asset."""
    project = spec.name
    drift = drift_asset(spec)
    m = spec.monitoring

    @dag(
        dag_id=f"{project}__monitor",
        schedule=m.schedule,
        catchup=False,
        tags=["mlops", "monitor", f"project:{project}", *spec.airflow.tags],
        doc_md=MONITOR_DOC.format(
            name=project,
            schedule=m.schedule,
            method=m.method,
            threshold=m.drift_threshold,
            k=m.min_drifted_features,
            pred_limit=m.prediction_drift_limit,
        ),
        default_args=default_args(spec),
        params={
            "include_open_window": Param(
                False, type="boolean", description="Also report the current hour"
            )
        },
        max_active_runs=1,
    )
    def monitor_dag() -> None:
        @task(outlets=[drift])
        def monitor(**context) -> dict:
            from airflow.sdk.exceptions import AirflowSkipException

            from mlops_lib.monitoring.report import NothingToMonitor
            from mlops_lib.monitoring.report import monitor as run

            conf = context["dag_run"].conf or {}
            try:
                out = run(
                    project,
                    include_open_window=bool(
                        conf.get("include_open_window", context["params"]["include_open_window"])
                    ),
                    dag_run_id=context["run_id"],
                )
            except NothingToMonitor as exc:
                raise AirflowSkipException(str(exc)) from exc
            context["outlet_events"][drift].extra = out
            return out

        monitor()

    return monitor_dag()


CT_DOC = """
### {name}: continuous training

Runs on every drift report (the `{name}_drift` asset the monitor DAG emits) and on demand:

* `wait_for_drift` (DriftPolicySensor, reschedule mode): goes on when a report's drift policy
  fired and it is not part of the episode of the last retraining (cooldown
  {cooldown} min); otherwise the run ends skipped: nothing to do;
* `claim`: marks the report as acted on by this run (earlier fired ones join its episode);
* `resolve_data`: labelled production predictions not used yet (labels batches ingested by
  `{name}__ingest_labels`) go through the quality gate onto lakeFS `main` as
  `datasets/{name}/production/labels-through=<stamp>/`, each row with the key and event time
  its request sent and its request id and row; the task returns the `main` commit to train on
  (main's head when there are no new labels or the batch is rejected: the log says why and
  those labels are tried again next time). A rejected batch raises an alert (log and the
  `mlops_alerts` webhook) with the rejection report's `lakefs://` URI. When nothing was added
  and `main` is still at the champion's commit, the run ends **skipped**: nothing new to
  learn from. The outcome is recorded on the drift report (`mlops lineage {name}`);
* `train` -> `gate` -> `promote`: the same training code, gate and promotion as
  `{name}__train`; the new version carries the tag `drift_report_id`. When the holdout holds
  labelled production rows, champion and challenger are judged on them. A version that
  does not beat the champion by more than `min_improvement` leaves the champion serving (the
  reason, naming the rule, is in its `gate_reason` tag and the lineage); a promotion emits
  `{name}_champion`, so `{name}__deploy` serves it.

**When it fails**: as `{name}__train`; the drift report stays claimed by this run
(`mlops lineage {name}`); trigger the DAG again to retry.
"""


def build_continuous_training(spec: ProjectSpec) -> DAG:
    """``<project>__continuous_training``: drift sensor, claim, retrain, gate, promote."""
    from mlops_airflow.sensors import DriftPolicySensor

    project = spec.name

    @dag(
        dag_id=f"{project}__continuous_training",
        schedule=[drift_asset(spec)],
        catchup=False,
        tags=["mlops", "continuous-training", f"project:{project}", *spec.airflow.tags],
        doc_md=CT_DOC.format(name=project, cooldown=spec.monitoring.cooldown_minutes),
        default_args=default_args(spec),
        max_active_runs=1,
    )
    def ct_dag() -> None:
        wait = DriftPolicySensor(task_id="wait_for_drift", project=project)

        @task
        def claim(found: dict, **context) -> dict:
            from mlops_lib.continuous_training import claim_drift

            claim_drift(project, found["report_id"], context["run_id"])
            return found

        @task
        def resolve_data(found: dict, **context) -> str:
            from airflow.sdk.exceptions import AirflowSkipException
            from mlops_airflow.notifiers import MLOpsFailureNotifier

            from mlops_lib.continuous_training import fold_in

            fold = fold_in(project, context["run_id"], found["report_id"])
            if fold.get("rejected"):
                MLOpsFailureNotifier(project=project).alert(
                    context,
                    event="production_batch_rejected",
                    error=f"labelled production batch rejected: {fold['rejected']}",
                    report=fold["rejected"],
                )
            if fold.get("skipped"):
                raise AirflowSkipException(fold["skipped"])
            return fold["commit_id"]

        claimed = claim(wait.output)
        training_chain(spec, resolve_data(claimed), claimed)

    return ct_dag()


LABELS_DOC = """
### {name}: ingest labels

Manual runs (conf `{{"source": "<csv or parquet path>"}}`): a labels batch for served
predictions, with the columns `request_id` (as the service returned it), `row` (the
instance's position in the request; 0 when absent) and `{target}`. It is checked against
the spec and the prediction log and stored on the lakeFS branch `monitoring` under
`monitoring/{name}/labels/`. The next `{name}__monitor` run reports the live `{metric}` of
the champion on them{floor}; `{name}__continuous_training` adds the labelled rows to its
training data.

**When it fails**: *batch rejected* lists every problem (missing columns, labels outside
the allowed values, duplicates, request ids the service never answered); nothing is
stored. Fix the file and trigger again.
"""


def build_ingest_labels(spec: ProjectSpec) -> DAG:
    """``<project>__ingest_labels``: check a labels batch and store it for monitoring."""
    project = spec.name
    floor = spec.monitoring.metric_floor

    @dag(
        dag_id=f"{project}__ingest_labels",
        schedule=None,
        catchup=False,
        tags=["mlops", "labels", f"project:{project}", *spec.airflow.tags],
        doc_md=LABELS_DOC.format(
            name=project,
            target=spec.target.column,
            metric=spec.training.metric,
            floor=f" (the drift policy fires below {floor})" if floor is not None else "",
        ),
        default_args=default_args(spec),
        params={"source": Param(None, type=["null", "string"], description="Labels file")},
        max_active_runs=1,
    )
    def labels_dag() -> None:
        @task
        def ingest_labels(**context) -> dict:
            from airflow.sdk.exceptions import AirflowFailException

            from mlops_lib.labels import ingest_labels as run
            from mlops_lib.quality import DataQualityError

            source = (context["dag_run"].conf or {}).get("source") or context["params"]["source"]
            if not source:
                raise AirflowFailException("conf 'source' (a labels file path) is required")
            try:
                return run(project, source)
            except DataQualityError as exc:
                raise AirflowFailException(str(exc)) from exc

        ingest_labels()

    return labels_dag()


def build_invalid(path: str, error: SpecError) -> DAG:
    """A paused placeholder that shows a broken spec's errors in the UI."""
    from mlops_airflow.notifiers import MLOpsFailureNotifier

    stem = Path(path).stem
    errors = "\n".join(error.problems)

    @dag(
        dag_id=f"{stem}__invalid_spec",
        schedule=None,
        catchup=False,
        is_paused_upon_creation=True,
        tags=["mlops", "invalid-spec", f"project:{stem}"],
        doc_md=INVALID_DOC.format(path=path, errors=errors),
        default_args={
            "owner": "ml-platform",
            "retries": 0,
            "on_failure_callback": MLOpsFailureNotifier(project=stem),
        },
    )
    def invalid_dag() -> None:
        @task
        def report_spec_errors() -> None:
            raise ValueError(str(error))

        report_spec_errors()

    return invalid_dag()


def generate(projects_dir: Path) -> dict[str, DAG]:
    """Every DAG of every spec in the folder, by dag id."""
    specs, errors = discover(projects_dir)
    dags: dict[str, DAG] = {}
    for spec in specs.values():
        builders = [build_ingest, build_features] if spec.feature_store else [build_ingest]
        for builder in (
            *builders,
            build_train,
            build_deploy,
            build_monitor,
            build_ingest_labels,
            build_continuous_training,
        ):
            built = builder(spec)
            dags[built.dag_id] = built
    for path, error in errors.items():
        warnings.warn(str(error), stacklevel=1)
        built = build_invalid(path, error)
        dags[built.dag_id] = built
    return dags


globals().update(generate(get_settings().projects_dir))
