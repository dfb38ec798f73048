"""Training on versioned data: AutoML on a lakeFS commit, tracked and registered in MLflow.

The ``<project>__train`` DAG calls :func:`resolve_commit`, :func:`open_search` (the MLflow
parent run and the shared Optuna study), :func:`search_trials` in ``training.parallel``
mapped tasks (on any worker), :func:`finish_training` (refit, register), then the gate in
:mod:`mlops_lib.registry`; :func:`train` runs the same steps in one process. References
only: commit ids, MLflow run ids, study names, model URIs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

from mlops_lib import __version__, layout
from mlops_lib import versioning as vc
from mlops_lib.automl import (
    SearchResult,
    Trial,
    create_search,
    make_estimator,
    run_trials,
    search_result,
    study_storage,
)
from mlops_lib.datasets import Holdout, TrainingError, holdout, split, trainable
from mlops_lib.feature_store.store import ensure_repo, feature_lineage
from mlops_lib.features import build_pipeline, model_input, model_target
from mlops_lib.lineage import lineage_store
from mlops_lib.metrics import holdout_metrics
from mlops_lib.monitoring.reference import reference_frame, save_reference
from mlops_lib.registry import champion_version
from mlops_lib.settings import Settings, get_settings
from mlops_lib.spec import ProjectSpec, project_spec
from mlops_lib.tracking import connect as connect_mlflow

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)
PACKAGE_DIR = Path(__file__).resolve().parent
RUN_KEY_TAG = "mlops.run_key"


class NothingToTrain(RuntimeError):
    """The champion was trained on this commit with this spec and code: training again
    would only register a copy of it. The message says so."""


class TrainedVersion(TypedDict):
    """A registered challenger: what the train task hands the gate."""

    version: int
    model_uri: str
    mlflow_run_id: str
    commit: str
    family: str
    holdout_metrics: dict[str, float]


def resolve_commit(
    project: str, event_extra: dict | None = None, settings: Settings | None = None
) -> str:
    """The commit to train on: from the triggering asset event, else main's head.

    An event's commit must be in main's history: anything else (a rejected ingest branch, an
    unknown id) is refused with a TrainingError.
    """
    settings = settings or get_settings()
    if event_extra and event_extra.get("commit_id"):
        commit = str(event_extra["commit_id"])
        if not vc.on_branch(project, commit, layout.MAIN, settings):
            raise TrainingError(
                f"asset event commit {commit!r} is not on lakeFS {layout.MAIN!r} of {project}: "
                f"only published (validated and merged) data is trained on"
            )
        return commit
    return vc.head(project, layout.MAIN, settings)


def unchanged_since_champion(spec: ProjectSpec, commit: str, settings: Settings) -> str | None:
    """Why training on ``commit`` would repeat the champion, or None (no champion, or a
    different commit, spec or code)."""
    version = champion_version(spec.name, settings)
    if version is None:
        return None
    client = connect_mlflow(settings)
    mv = client.get_model_version(spec.name, str(version))
    if (mv.tags or {}).get("lakefs_commit") != commit or not mv.run_id:
        return None
    tags = client.get_run(mv.run_id).data.tags
    if tags.get("spec_hash") != spec.spec_hash() or tags.get("code_version") != code_version(
        settings
    ):
        return None
    return (
        f"{spec.name} v{version} (@champion) was trained on lakeFS "
        f"{layout.repo_name(spec.name)}@{commit[:12]} with the same spec and code: "
        f"nothing new to train on"
    )


def code_version(settings: Settings | None = None) -> str:
    """Git sha of the checkout when available, else the package version."""
    settings = settings or get_settings()
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=settings.repo_root,
            capture_output=True,
            text=True,
            timeout=5,
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return __version__


def pip_requirements() -> list[str]:
    """Pinned requirements of the logged model (skips MLflow's slow inference)."""
    return [
        f"{name}=={installed_version(name)}"
        for name in ("scikit-learn", "pandas", "numpy", "scipy", "mlflow", "cloudpickle")
    ]


def trusted_types(model: Any) -> list[str]:
    """Types of our own fitted pipeline that skops must be told to trust (we built it)."""
    import skops.io as sio

    untrusted = sio.get_untrusted_types(data=sio.dumps(model))
    return [t for t in untrusted if t.split(".")[0] in ("sklearn", "numpy", "scipy", "mlops_lib")]


def _existing_version(client: Any, project: str, run_key: str) -> Any | None:
    try:
        versions = client.search_model_versions(f"name = '{project}'")
    except Exception:  # registered model does not exist yet
        return None
    for mv in versions:
        if (mv.tags or {}).get(RUN_KEY_TAG) == run_key:
            return mv
    return None


@dataclass
class _Fit:
    """What one AutoML run produced: the search, the refit winner and its holdout metrics."""

    search: SearchResult
    model: Any
    metrics: dict[str, float]
    train_rows: pd.DataFrame
    X: pd.DataFrame
    holdout: Holdout


class SearchPlan(TypedDict):
    """An opened search: what the trial tasks and the train task share (references only).

    ``registered``: the version an earlier try of this run registered (nothing left to
    search)."""

    project: str
    commit: str
    mlflow_run_id: str
    study: str
    run_key: str
    dag_id: str
    run_id: str
    trigger: str
    extra_tags: dict[str, str]
    code_version: str
    opened_at: float
    registered: int | None


class TrialsRun(TypedDict):
    """What one trial task did: the trials it finished, where, in how long."""

    shard: int
    worker: str
    trials: int
    seconds: float


def worker_name(settings: Settings) -> str:
    """Who runs trials here: the Celery worker's name, else this host (one process each)."""
    return settings.worker_name or f"local@{socket.gethostname()}"


class RunOptions(TypedDict, total=False):
    """Who asks for a training run and how (all optional): the DAG id and run id (the run's
    identity: a retry with the same ones finds the first try's work), the trigger, tags for
    the MLflow run and the registered version (e.g. the drift report that caused it), and
    ``retrain_unchanged`` (train even when the champion came from the same data and code)."""

    dag_id: str
    run_id: str
    trigger: str
    extra_tags: dict[str, str] | None
    retrain_unchanged: bool


def open_search(
    project: str, commit: str, *, settings: Settings | None = None, **run: Unpack[RunOptions]
) -> SearchPlan:
    """Open the AutoML search of a training run: the MLflow parent run and the Optuna study
    that trial tasks share.

    Idempotent per (dag id, run id): a retry finds the parent run (and its study) of the
    first try, or the version it registered. Raises NothingToTrain when the champion was
    trained on ``commit`` with the same spec and code, unless ``retrain_unchanged``."""
    settings = settings or get_settings()
    spec = project_spec(project, settings)
    client = connect_mlflow(settings)
    dag_id, run_id = run.get("dag_id", ""), run.get("run_id", "")
    run_key = f"{dag_id}:{run_id}" if run_id else ""
    plan: SearchPlan = {
        "project": project,
        "commit": commit,
        "mlflow_run_id": "",
        "study": "",
        "run_key": run_key,
        "dag_id": dag_id,
        "run_id": run_id,
        "trigger": run.get("trigger", ""),
        "extra_tags": dict(run.get("extra_tags") or {}),
        "code_version": code_version(settings),
        "opened_at": time.time(),
        "registered": None,
    }
    if run_key and (existing := _existing_version(client, project, run_key)) is not None:
        return plan | {"registered": int(existing.version)}
    if not run.get("retrain_unchanged") and (
        same := unchanged_since_champion(spec, commit, settings)
    ):
        raise NothingToTrain(same)
    parent = _parent_run(spec, client, plan, settings)
    plan["mlflow_run_id"] = parent
    plan["study"] = f"{project}.{parent}"
    create_search(spec, study_storage(settings, plan["study"]), plan["study"])
    return plan


def _parent_run(spec: ProjectSpec, client: Any, plan: SearchPlan, settings: Settings) -> str:
    """The MLflow parent run of the training run (the first try's when it exists)."""
    import mlflow  # heavy: kept out of DAG parsing

    experiment_id = mlflow.set_experiment(spec.name).experiment_id
    if plan["run_key"]:
        found = client.search_runs(
            [experiment_id], f"tags.`{RUN_KEY_TAG}` = '{plan['run_key']}'", max_results=1
        )
        if found:
            return found[0].info.run_id
    tags = _run_tags(spec, plan, settings) | {RUN_KEY_TAG: plan["run_key"]}
    run = client.create_run(experiment_id, tags=tags, run_name=f"train@{plan['commit'][:12]}")
    return run.info.run_id


def search_trials(
    project: str, plan: SearchPlan, shard: int = 0, settings: Settings | None = None
) -> TrialsRun:
    """Run trials of the plan's search until its budget is spent (across every trial task);
    each trial becomes a nested MLflow run tagged with the worker that ran it."""
    settings = settings or get_settings()
    worker = worker_name(settings)
    started = time.monotonic()
    if plan["registered"] is not None:
        return {"shard": shard, "worker": worker, "trials": 0, "seconds": 0.0}
    spec = project_spec(project, settings)
    with _ends_failed_on_bad_data(plan, settings):
        train_rows, _ = _split(spec, plan["commit"], settings)
    X, y = model_input(train_rows, spec), model_target(train_rows, spec)
    log_trial = _trial_logger(spec, connect_mlflow(settings), plan["mlflow_run_id"], shard)
    done = run_trials(
        spec,
        study_storage(settings, plan["study"]),
        plan["study"],
        X,
        y,
        shard=shard,
        worker=worker,
        on_trial=log_trial,
    )
    seconds = time.monotonic() - started
    log.info("shard %d on %s: %d trials in %.0fs", shard, worker, len(done), seconds)
    return {"shard": shard, "worker": worker, "trials": len(done), "seconds": round(seconds, 2)}


@contextlib.contextmanager
def _ends_failed_on_bad_data(plan: SearchPlan, settings: Settings) -> Iterator[None]:
    """A training failure no retry can fix (untrainable data, every trial failed) ends the
    MLflow parent run FAILED; a transient one leaves it running for the retry."""
    try:
        yield
    except TrainingError:
        with contextlib.suppress(Exception):  # the failure itself is what matters
            connect_mlflow(settings).set_terminated(plan["mlflow_run_id"], "FAILED")
        raise


def _trial_logger(spec: ProjectSpec, client: Any, parent: str, shard: int) -> Callable:
    """Log one AutoML trial as a nested MLflow run of the parent (from any process)."""
    from mlflow.entities import Metric, Param
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    experiment_id = client.get_run(parent).info.experiment_id
    metric = spec.training.metric

    def log_trial(trial: Trial) -> None:
        tags = {MLFLOW_PARENT_RUN_ID: parent, "mlops.worker": trial.worker}
        run = client.create_run(
            experiment_id,
            run_name=f"trial-{trial.number}-{trial.family}",
            tags=tags | {"mlops.shard": str(shard)},
        )
        now = int(time.time() * 1000)
        values = {f"cv_{metric}": trial.cv_score, "cv_std": trial.cv_std}
        values["fit_seconds"] = trial.seconds
        client.log_batch(
            run.info.run_id,
            metrics=[Metric(k, v, now, 0) for k, v in values.items()],
            params=[Param(k, str(v)) for k, v in {"family": trial.family, **trial.params}.items()],
        )
        client.set_terminated(run.info.run_id)
        log.info("trial %d %s cv %s=%.4f", trial.number, trial.family, metric, trial.cv_score)

    return log_trial


def finish_training(
    project: str,
    plan: SearchPlan,
    searched: list[TrialsRun] | None = None,
    settings: Settings | None = None,
) -> TrainedVersion:
    """Refit the search's winner on all training rows, log it on the parent run, register
    it as ``challenger`` with the monitoring reference and the lineage rows.

    Idempotent per (dag id, run id): a retry after a failure returns the version the first
    try registered instead of registering another. Raises SearchFailed when every trial
    failed on the data."""
    import mlflow  # heavy: kept out of DAG parsing

    settings = settings or get_settings()
    spec = project_spec(project, settings)
    client = connect_mlflow(settings)
    run = (plan["dag_id"], plan["run_id"], plan["trigger"])
    existing = _existing_version(client, project, plan["run_key"]) if plan["run_key"] else None
    if existing is not None:
        log.info("version %s already registered by this run; reusing it", existing.version)
        return _finish_registered(
            spec, existing, plan["commit"], client, run=run, settings=settings
        )
    commit, parent = plan["commit"], plan["mlflow_run_id"]
    with _ends_failed_on_bad_data(plan, settings):
        result = search_result(spec, study_storage(settings, plan["study"]), plan["study"])
    train_rows, held = _split(spec, commit, settings)
    mlflow.set_experiment(project)
    with mlflow.start_run(run_id=parent):
        fit = _refit(spec, result, train_rows, held)
        _log_run(spec, fit, commit)
        if searched:
            workers = sorted({s["worker"] for s in searched if s["trials"]})
            mlflow.set_tags(
                {"mlops.trial_tasks": len(searched), "mlops.workers": ",".join(workers)}
            )
        version = _log_and_register(
            spec, fit, client, parent, plan["run_key"], commit, plan["extra_tags"]
        )
        _keep_reference(spec, fit, client, version, parent, settings)
    seconds = time.time() - plan["opened_at"]
    _record_lineage(
        spec,
        fit,
        version,
        parent,
        commit,
        code=plan["code_version"],
        run=run,
        seconds=seconds,
        settings=settings,
    )
    log.info(
        "registered %s version %s (%s, holdout %s) from MLflow run %s in %.0fs",
        project,
        version,
        fit.search.best.family,
        json.dumps(fit.metrics),
        parent,
        seconds,
    )
    return {
        "version": version,
        "model_uri": f"models:/{project}/{version}",
        "mlflow_run_id": parent,
        "commit": commit,
        "family": fit.search.best.family,
        "holdout_metrics": fit.metrics,
    }


def train(
    project: str, commit: str, *, settings: Settings | None = None, **run: Unpack[RunOptions]
) -> TrainedVersion:
    """AutoML on the data at ``commit`` in this process: open the search, run its trials,
    register the winner as ``challenger`` (the DAG runs the same steps as tasks).

    ``run`` as for :func:`open_search`: idempotent per (dag id, run id); raises
    NothingToTrain as it does."""
    plan = open_search(project, commit, settings=settings, **run)
    searched = search_trials(project, plan, 0, settings)
    return finish_training(project, plan, [searched], settings)


def _split(spec: ProjectSpec, commit: str, settings: Settings) -> tuple[pd.DataFrame, Holdout]:
    """Training rows and the holdout of the data at the commit."""
    train_rows, holdout_rows = split(trainable(spec, commit, settings), spec)
    held = Holdout(spec, holdout_rows)
    log.info(
        "training %s on lakeFS %s@%s: %d train rows, %d holdout rows",
        spec.name,
        layout.repo_name(spec.name),
        commit[:12],
        len(train_rows),
        len(held.X),
    )
    return train_rows, held


def _run_tags(spec: ProjectSpec, plan: SearchPlan, settings: Settings) -> dict[str, str]:
    """Tags of the MLflow parent run: data commit, spec, code and what triggered it."""
    project, commit = spec.name, plan["commit"]
    return {
        "lakefs_commit": commit,
        "lakefs_uri": layout.lakefs_uri(project, commit, layout.dataset_prefix(project)),
        "spec_hash": spec.spec_hash(),
        "code_version": plan["code_version"],
        "dag_id": plan["dag_id"],
        "dag_run_id": plan["run_id"],
        "trigger": plan["trigger"],
        **_feature_tags(spec, commit, settings),
        **plan["extra_tags"],
    }


def _feature_tags(spec: ProjectSpec, commit: str, settings: Settings) -> dict[str, str]:
    """The feature store part of the training set: views, registry hash, commit."""
    if not spec.store_features:
        return {}
    lineage = feature_lineage(ensure_repo(spec, commit, settings))
    return {f"mlops.features.{k}": str(v) for k, v in lineage.items()}


def _refit(
    spec: ProjectSpec, result: SearchResult, train_rows: pd.DataFrame, held: Holdout
) -> _Fit:
    """The search's winner refit on all training rows, with its holdout metrics."""
    X, y = model_input(train_rows, spec), model_target(train_rows, spec)
    best = result.best
    model = build_pipeline(
        spec, make_estimator(best.family, best.params, spec.target.task, spec.training.seed)
    )
    model.fit(X, y)
    metrics = holdout_metrics(model, held.X, held.y, spec)
    return _Fit(result, model, metrics, train_rows, X, held)


def _log_run(spec: ProjectSpec, fit: _Fit, commit: str) -> None:
    """Parameters, metrics, the lakeFS dataset and the trials on the parent run."""
    import mlflow  # heavy: kept out of DAG parsing

    from mlops_lib.mlflow_lakefs import lakefs_dataset  # imports MLflow

    best = fit.search.best
    mlflow.log_params(
        {
            "family": best.family,
            **best.params,
            "trials": len(fit.search.trials),
            "train_rows": len(fit.X),
            "holdout_rows": len(fit.holdout.X),
        }
    )
    mlflow.log_metrics({f"holdout_{k}": v for k, v in fit.metrics.items()})
    mlflow.log_metric(f"cv_{spec.training.metric}", best.cv_score)
    dataset = lakefs_dataset(fit.train_rows, spec.name, commit, target=spec.target.column)
    mlflow.log_input(dataset, context="training")
    mlflow.log_dict({"trials": [asdict(t) for t in fit.search.trials]}, "automl/trials.json")


def _log_and_register(
    spec: ProjectSpec,
    fit: _Fit,
    client: Any,
    parent_run_id: str,
    run_key: str,
    commit: str,
    extra_tags: dict[str, str] | None,
) -> int:
    """Log the model (signature, example, pinned requirements) and register it as
    ``challenger`` with its holdout metrics as tags; returns the version."""
    import mlflow  # heavy: kept out of DAG parsing
    from mlflow.models import infer_signature

    project = spec.name
    example = fit.holdout.X.head(5)
    info = mlflow.sklearn.log_model(
        sk_model=fit.model,
        name="model",
        signature=infer_signature(example, fit.model.predict(example)),
        input_example=example,
        pip_requirements=pip_requirements(),
        code_paths=[str(PACKAGE_DIR)],
        serialization_format="skops",
        skops_trusted_types=trusted_types(fit.model),
    )
    tags = {RUN_KEY_TAG: run_key, "lakefs_commit": commit, "mlflow_run_id": parent_run_id}
    mv = mlflow.register_model(info.model_uri, project, tags={**tags, **(extra_tags or {})})
    client.set_registered_model_alias(project, "challenger", mv.version)
    for k, v in fit.metrics.items():
        client.set_model_version_tag(project, mv.version, f"holdout_{k}", str(v))
    return int(mv.version)


def _keep_reference(
    spec: ProjectSpec,
    fit: _Fit,
    client: Any,
    version: int,
    parent_run_id: str,
    settings: Settings,
) -> None:
    """What monitoring compares served traffic with: the holdout as served rows look."""
    project = spec.name
    frame = reference_frame(spec, fit.model, fit.holdout.rows)
    path = save_reference(project, version, frame, run_id=parent_run_id, settings=settings)
    uri = layout.lakefs_uri(project, layout.MONITORING_BRANCH, path)
    client.set_model_version_tag(project, str(version), "reference_profile", uri)


def _record_lineage(
    spec: ProjectSpec,
    fit: _Fit,
    version: int,
    parent_run_id: str,
    commit: str,
    *,
    code: str,
    run: tuple[str, str, str],
    seconds: float,
    settings: Settings,
) -> None:
    """The training run and the registered version in the lineage store.

    ``run``: the DAG id, DAG run id and trigger of the training."""
    project = spec.name
    dag_id, dag_run_id, trigger = run
    best = fit.search.best
    store = lineage_store(settings)
    store.record_training(
        project=project,
        mlflow_run_id=parent_run_id,
        data_commit=commit,
        spec_hash=spec.spec_hash(),
        code_version=code,
        dag_id=dag_id,
        dag_run_id=dag_run_id,
        best_family=best.family,
        cv_score=best.cv_score,
        trials=len(fit.search.trials),
        seconds=round(seconds, 2),
        trigger=trigger,
        features=dict(feature_lineage(ensure_repo(spec, commit, settings)))
        if spec.store_features
        else None,
    )
    store.record_model_version(
        project=project,
        version=version,
        model_uri=f"models:/{project}/{version}",
        mlflow_run_id=parent_run_id,
        data_commit=commit,
        holdout_metrics=fit.metrics,
    )


def _finish_registered(
    spec: ProjectSpec,
    mv: Any,
    commit: str,
    client: Any,
    *,
    run: tuple[str, str, str],
    settings: Settings,
) -> TrainedVersion:
    """A version an earlier try registered before it failed: do what that try left undone
    (holdout metric tags, the reference profile, the lineage rows) and return it."""
    import mlflow.sklearn  # heavy: kept out of DAG parsing

    project, version = spec.name, int(mv.version)
    tags = mv.tags or {}
    commit = tags.get("lakefs_commit", commit)
    parent_run_id = tags.get("mlflow_run_id", mv.run_id)
    client.set_registered_model_alias(project, "challenger", str(version))
    model = mlflow.sklearn.load_model(f"models:/{project}/{version}")
    held = holdout(spec, commit, settings)
    metrics = holdout_metrics(model, held.X, held.y, spec)
    for k, v in metrics.items():
        client.set_model_version_tag(project, str(version), f"holdout_{k}", str(v))
    if "reference_profile" not in tags:
        frame = reference_frame(spec, model, held.rows)
        path = save_reference(project, version, frame, run_id=parent_run_id, settings=settings)
        uri = layout.lakefs_uri(project, layout.MONITORING_BRANCH, path)
        client.set_model_version_tag(project, str(version), "reference_profile", uri)
    mlflow_run = client.get_run(parent_run_id)
    _record_recovered_lineage(spec, version, mlflow_run, commit, metrics, run, settings)
    return {
        "version": version,
        "model_uri": f"models:/{project}/{version}",
        "mlflow_run_id": parent_run_id,
        "commit": commit,
        "family": mlflow_run.data.params.get("family", ""),
        "holdout_metrics": metrics,
    }


def _record_recovered_lineage(
    spec: ProjectSpec,
    version: int,
    mlflow_run: Any,
    commit: str,
    metrics: dict[str, float],
    run: tuple[str, str, str],
    settings: Settings,
) -> None:
    """Lineage rows of a recovered version, from what its MLflow run recorded."""
    parent_run_id = mlflow_run.info.run_id
    params, run_metrics, tags = (
        mlflow_run.data.params,
        mlflow_run.data.metrics,
        mlflow_run.data.tags,
    )
    dag_id, dag_run_id, trigger = run
    store = lineage_store(settings)
    store.record_training(
        project=spec.name,
        mlflow_run_id=parent_run_id,
        data_commit=commit,
        spec_hash=tags.get("spec_hash", spec.spec_hash()),
        code_version=tags.get("code_version", ""),
        dag_id=dag_id,
        dag_run_id=dag_run_id,
        best_family=params.get("family", ""),
        cv_score=run_metrics.get(f"cv_{spec.training.metric}"),
        trials=int(params.get("trials", 0)),
        trigger=trigger,
    )
    store.record_model_version(
        project=spec.name,
        version=version,
        model_uri=f"models:/{spec.name}/{version}",
        mlflow_run_id=parent_run_id,
        data_commit=commit,
        holdout_metrics=metrics,
    )
