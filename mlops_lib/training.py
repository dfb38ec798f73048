"""Training on versioned data: AutoML on a lakeFS commit, tracked and registered in MLflow.

The ``<project>__train`` DAG calls :func:`resolve_commit`, :func:`train`, then the gate in
:mod:`mlops_lib.registry`. References only: commit ids, MLflow run ids, model URIs.
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_lib import __version__
from mlops_lib import versioning as vc
from mlops_lib.settings import Settings, get_settings
from mlops_lib.spec import ProjectSpec

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)
PACKAGE_DIR = Path(__file__).resolve().parent
RUN_KEY_TAG = "mlops.run_key"


class TrainingError(RuntimeError):
    """The data at a commit cannot train a model; the message names the cause."""


def resolve_commit(
    project: str, event_extra: dict | None = None, settings: Settings | None = None
) -> str:
    """The commit to train on: from the triggering asset event, else main's head."""
    if event_extra and event_extra.get("commit_id"):
        return str(event_extra["commit_id"])
    return vc.head(project, vc.MAIN, settings or get_settings())


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


def load_data(project: str, commit: str, settings: Settings | None = None) -> pd.DataFrame:
    """Every accepted partition at exactly this commit."""
    from mlops_lib.ingest import read_dataset

    return read_dataset(project, commit, settings or get_settings())


def check_trainable(df: pd.DataFrame, spec: ProjectSpec, commit: str) -> None:
    """Raise TrainingError when the data cannot train a model."""
    target = spec.target.column
    where = f"lakeFS {vc.repo_name(spec.name)}@{commit[:12]}"
    if df.empty:
        raise TrainingError(f"no accepted data at {where}")
    if target not in df.columns:
        raise TrainingError(f"target column {target!r} is missing at {where}")
    missing = [c for c in spec.features if c not in df.columns]
    if missing:
        raise TrainingError(f"feature columns {missing} are missing at {where}")
    labelled = int(df[target].notna().sum())
    if labelled < spec.training.min_rows:
        raise TrainingError(
            f"{labelled} labelled rows at {where}, fewer than training.min_rows="
            f"{spec.training.min_rows}"
        )
    if spec.target.task == "classification" and df[target].nunique(dropna=True) < 2:
        only = df[target].dropna().unique().tolist()
        raise TrainingError(f"target {target!r} has a single class {only} at {where}")


def split(df: pd.DataFrame, spec: ProjectSpec) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train/holdout split, fixed for given data: by time when the spec has an event time,
    else stratified (classification) or random, seeded."""
    from sklearn.model_selection import train_test_split

    df = df[df[spec.target.column].notna()]
    order = [c for c in (spec.schema.event_time, spec.schema.key) if c]
    if order:
        df = df.sort_values(order, kind="mergesort").reset_index(drop=True)
    frac = spec.training.holdout_fraction
    if spec.schema.event_time:
        cut = round(len(df) * (1 - frac))
        train, holdout = df.iloc[:cut], df.iloc[cut:]
    else:
        stratify = df[spec.target.column] if spec.target.task == "classification" else None
        train, holdout = train_test_split(
            df, test_size=frac, random_state=spec.training.seed, stratify=stratify
        )
    cap = spec.training.max_train_rows
    if cap and len(train) > cap:
        train = train.iloc[-cap:]
    return train.reset_index(drop=True), holdout.reset_index(drop=True)


def holdout_for(project: str, commit: str, settings: Settings | None = None):
    """The holdout (inputs, labels) of a commit, as every model is evaluated on it."""
    from mlops_lib.features import model_input
    from mlops_lib.ingest import project_spec

    settings = settings or get_settings()
    spec = project_spec(project, settings)
    df = load_data(project, commit, settings)
    check_trainable(df, spec, commit)
    _, holdout = split(df, spec)
    return model_input(holdout, spec), holdout[spec.target.column]


def pip_requirements() -> list[str]:
    """Pinned requirements of the logged model (skips MLflow's slow inference)."""
    from importlib.metadata import version

    return [
        f"{name}=={version(name)}"
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


def train(
    project: str,
    commit: str,
    *,
    dag_id: str = "",
    run_id: str = "",
    trigger: str = "",
    extra_tags: dict[str, str] | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """AutoML on the data at ``commit``; log to MLflow; register as ``challenger``.

    ``extra_tags`` go to the MLflow run and the registered version (e.g. the id of the
    drift report that caused a continuous-training run).

    Idempotent per (dag id, run id): a retry after a failure returns the version the
    first try registered instead of registering another.
    """
    import mlflow
    from mlflow.models import infer_signature
    from mlflow.tracking import MlflowClient

    from mlops_lib.automl import holdout_metrics, make_estimator, search
    from mlops_lib.features import build_pipeline, model_input
    from mlops_lib.ingest import project_spec
    from mlops_lib.lineage import lineage_store
    from mlops_lib.mlflow_lakefs import lakefs_dataset

    settings = settings or get_settings()
    spec = project_spec(project, settings)
    mlflow.set_tracking_uri(settings.mlflow_url)
    client = MlflowClient(settings.mlflow_url)
    run_key = f"{dag_id}:{run_id}" if run_id else ""
    if run_key:
        existing = _existing_version(client, project, run_key)
        if existing is not None:
            log.info("version %s already registered by this run; reusing it", existing.version)
            return _result(project, existing, commit, client)

    started = time.monotonic()
    df = load_data(project, commit, settings)
    check_trainable(df, spec, commit)
    train_df, holdout = split(df, spec)
    target = spec.target.column
    X, y = model_input(train_df, spec), train_df[target]
    Xh, yh = model_input(holdout, spec), holdout[target]
    log.info(
        "training %s on lakeFS %s@%s: %d train rows, %d holdout rows",
        project,
        vc.repo_name(project),
        commit[:12],
        len(X),
        len(Xh),
    )
    mlflow.set_experiment(project)
    tags = {
        "lakefs_commit": commit,
        "lakefs_uri": vc.lakefs_uri(project, commit, f"datasets/{project}"),
        "spec_hash": spec.spec_hash(),
        "code_version": code_version(settings),
        "dag_id": dag_id,
        "dag_run_id": run_id,
        "trigger": trigger,
        **(extra_tags or {}),
    }
    with mlflow.start_run(run_name=f"train@{commit[:12]}", tags=tags) as parent:

        def on_trial(trial) -> None:
            with mlflow.start_run(run_name=f"trial-{trial.number}-{trial.family}", nested=True):
                mlflow.log_params({"family": trial.family, **trial.params})
                mlflow.log_metrics(
                    {
                        f"cv_{spec.training.metric}": trial.cv_score,
                        "cv_std": trial.cv_std,
                        "fit_seconds": trial.seconds,
                    }
                )
            log.info(
                "trial %d %s cv %s=%.4f",
                trial.number,
                trial.family,
                spec.training.metric,
                trial.cv_score,
            )

        result = search(spec, X, y, on_trial=on_trial)
        best = result.best
        model = build_pipeline(
            spec, make_estimator(best.family, best.params, spec.target.task, spec.training.seed)
        )
        model.fit(X, y)
        metrics = holdout_metrics(model, Xh, yh, spec.target.task)
        mlflow.log_params(
            {
                "family": best.family,
                **best.params,
                "trials": len(result.trials),
                "train_rows": len(X),
                "holdout_rows": len(Xh),
            }
        )
        mlflow.log_metrics({f"holdout_{k}": v for k, v in metrics.items()})
        mlflow.log_metric(f"cv_{spec.training.metric}", best.cv_score)
        mlflow.log_input(
            lakefs_dataset(train_df, project, commit, target=target), context="training"
        )
        mlflow.log_dict({"trials": [asdict(t) for t in result.trials]}, "automl/trials.json")
        example = Xh.head(5)
        signature = infer_signature(example, model.predict(example))
        info = mlflow.sklearn.log_model(
            sk_model=model,
            name="model",
            signature=signature,
            input_example=example,
            pip_requirements=pip_requirements(),
            code_paths=[str(PACKAGE_DIR)],
            serialization_format="skops",
            skops_trusted_types=trusted_types(model),
        )
        mv = mlflow.register_model(
            info.model_uri,
            project,
            tags={
                RUN_KEY_TAG: run_key,
                "lakefs_commit": commit,
                "mlflow_run_id": parent.info.run_id,
                **(extra_tags or {}),
            },
        )
        client.set_registered_model_alias(project, "challenger", mv.version)
        for k, v in metrics.items():
            client.set_model_version_tag(project, mv.version, f"holdout_{k}", str(v))
        # What monitoring compares served traffic with: the holdout as served rows look.
        from mlops_lib.monitoring import reference_frame, save_reference

        ref_path = save_reference(
            project,
            mv.version,
            reference_frame(spec, model, holdout),
            run_id=parent.info.run_id,
            settings=settings,
        )
        client.set_model_version_tag(
            project, mv.version, "reference_profile", vc.lakefs_uri(project, "monitoring", ref_path)
        )
    seconds = time.monotonic() - started
    store = lineage_store(settings)
    store.record_training(
        project=project,
        mlflow_run_id=parent.info.run_id,
        data_commit=commit,
        spec_hash=spec.spec_hash(),
        code_version=tags["code_version"],
        dag_id=dag_id,
        dag_run_id=run_id,
        best_family=best.family,
        cv_score=best.cv_score,
        trials=len(result.trials),
        seconds=round(seconds, 2),
        trigger=trigger,
    )
    store.record_model_version(
        project=project,
        version=int(mv.version),
        model_uri=f"models:/{project}/{mv.version}",
        mlflow_run_id=parent.info.run_id,
        data_commit=commit,
        holdout_metrics=metrics,
    )
    log.info(
        "registered %s version %s (%s, holdout %s) from MLflow run %s in %.0fs",
        project,
        mv.version,
        best.family,
        json.dumps(metrics),
        parent.info.run_id,
        seconds,
    )
    return {
        "version": int(mv.version),
        "model_uri": f"models:/{project}/{mv.version}",
        "mlflow_run_id": parent.info.run_id,
        "commit": commit,
        "family": best.family,
        "holdout_metrics": metrics,
    }


def _result(project: str, mv: Any, commit: str, client: Any) -> dict[str, Any]:
    client.set_registered_model_alias(project, "challenger", mv.version)
    tags = mv.tags or {}
    metrics = {
        k.removeprefix("holdout_"): float(v) for k, v in tags.items() if k.startswith("holdout_")
    }
    return {
        "version": int(mv.version),
        "model_uri": f"models:/{project}/{mv.version}",
        "mlflow_run_id": tags.get("mlflow_run_id", mv.run_id),
        "commit": tags.get("lakefs_commit", commit),
        "family": "",
        "holdout_metrics": metrics,
    }
