"""A matrix of real public datasets through the whole loop on the real stack.

scikit-learn ships each dataset (no download): wine (multiclass, string labels), breast
cancer (binary, bool labels) and diabetes (regression). Each is written to CSV as a user
would bring it, each with its own key and a date in a format of their own; the older three
quarters are the first batch, the newest quarter is served later. Every project goes ``mlops
project init -> assess -> ingest -> train -> deploy -> traffic -> labels -> monitor``, all
three at once through their DAGs (the dataset and champion assets chain ingest, training and
deployment); breast cancer then goes through continuous training on its labelled production
rows. The figures of each stage go to ``test-output/datasets/`` beside the assess verdicts.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mlops_lib.airflow_api import AirflowClient
from mlops_lib.settings import Settings, settings_env
from mlops_lib.tracking import connect as connect_mlflow

from .conftest import MLOPS, REPO, mlops_cli

pytestmark = pytest.mark.integration
OUTPUT = REPO / "test-output" / "datasets"
STAGES = ("ingest", "train", "deploy", "monitor")


@dataclass
class Case:
    """One dataset: how it is written, its target and what the draft must infer."""

    name: str
    frame: pd.DataFrame
    target: str
    task: str
    key: str | None = None
    event_time: str | None = None
    date_format: str | None = None
    figures: dict = field(default_factory=dict)


def _dated(frame: pd.DataFrame, key: str, when: str, kind: str, seed: int) -> pd.DataFrame:
    """Rows in a seeded random order, one a day up to a year ago, with a unique key."""
    frame = frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    days = pd.Timestamp("2025-06-01") + pd.to_timedelta(np.arange(len(frame)), unit="D") / 4
    written = {
        "dmy": days.strftime("%d.%m.%Y"),
        "ymd": days.strftime("%Y/%m/%d"),
        "epoch": (days - pd.Timestamp("1970-01-01")) // pd.Timedelta(seconds=1),
    }[kind]
    return frame.assign(**{key: [f"{key[:1].upper()}{i:05d}" for i in range(len(frame))]}).assign(
        **{when: written}
    )


def cases() -> list[Case]:
    from sklearn import datasets

    wine = datasets.load_wine(as_frame=True)
    wine_frame = wine.frame.drop(columns="target").assign(
        cultivar=[str(wine.target_names[i]) for i in wine.target]
    )
    cancer = datasets.load_breast_cancer(as_frame=True)
    cancer_frame = cancer.frame.drop(columns="target").assign(malignant=cancer.target == 0)
    diabetes = datasets.load_diabetes(as_frame=True, scaled=False)
    diabetes_frame = diabetes.frame.rename(columns={"target": "progression"})
    return [
        Case(
            "ds_wine",
            _dated(wine_frame, "sample id", "Measured On", "dmy", 1),
            "cultivar",
            "classification",
            key="sample id",
            event_time="Measured On",
            date_format="%d.%m.%Y",
        ),
        Case(
            "ds_breast_cancer",
            _dated(cancer_frame, "patient", "recorded_at", "epoch", 2).assign(
                patient=lambda d: np.arange(len(d)) + 1000,
                # A date feature written day first: its weekday and day of year are inputs.
                **{
                    "biopsy day": lambda d: pd.to_datetime(d["recorded_at"], unit="s").dt.strftime(
                        "%d.%m.%Y"
                    )
                },
            ),
            "malignant",
            "classification",
            key="patient",
            event_time="recorded_at",
            date_format="epoch_s",
        ),
        Case(
            "ds_diabetes",
            _dated(diabetes_frame, "visit", "visit.date", "ymd", 3),
            "progression",
            "regression",
            key="visit",
            event_time="visit.date",
            date_format="%Y/%m/%d",
        ),
    ]


def _split(case: Case) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The first batch (older rows) and the newest quarter, served later."""
    cut = int(len(case.frame) * 0.75)
    return case.frame.iloc[:cut], case.frame.iloc[cut:]


def _small_budget(path: Path) -> None:
    """The draft as init wrote it, with a test-sized search and monitoring that acts now."""
    spec = yaml.safe_load(path.read_text())
    spec["training"]["budget"] = {"trials": 1, "seconds": 60}
    spec["monitoring"] = dict(spec.get("monitoring") or {}, cooldown_minutes=0)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))


def _timed(figures: dict, stage: str, work: Callable[[], object]) -> object:
    started = time.monotonic()
    out = work()
    figures[f"{stage}_s"] = round(time.monotonic() - started, 1)
    return out


def _run_seconds(airflow: AirflowClient, dag_id: str, run_id: str) -> float:
    run = airflow.dag_run(dag_id, run_id)
    start, end = (datetime.fromisoformat(run[k]) for k in ("start_date", "end_date"))
    return round((end - start).total_seconds(), 1)


@pytest.fixture(scope="module")
def matrix(stack: Settings, tmp_path_factory) -> Iterator[dict[str, Case]]:
    """Every case drafted and taken through ingest, training and deployment by its DAGs;
    assessed meanwhile (the assessments run beside the DAG runs)."""
    folder = tmp_path_factory.mktemp("datasets", numbered=False)
    airflow = AirflowClient.from_settings(stack)
    out = {case.name: _drafted(stack, case, folder) for case in cases()}
    assessing = {name: _assess(stack, name) for name in out}
    since = datetime.now(UTC).isoformat()
    for case in out.values():
        for stage in ("ingest", "train", "deploy", "monitor", "ingest_labels"):
            airflow.prepare(f"{case.name}__{stage}", timeout=180)
        case.figures["ingest_run"] = airflow.trigger(
            f"{case.name}__ingest", {"source": case.figures["data"]}
        )
    for case in out.values():
        _follow_chain(airflow, case, since)
    for name, proc in assessing.items():
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stdout + stderr
        out[name].figures["assessment"] = json.loads(stdout)
        out[name].figures["assess_s"] = out[name].figures["assessment"]["seconds"]
    yield out
    _write_figures(out)


def _drafted(stack: Settings, case: Case, folder: Path) -> Case:
    """The case's first batch as a CSV, and its spec drafted by `mlops project init`."""
    first, _ = _split(case)
    data = folder / f"{case.name}.csv"
    first.to_csv(data, index=False)
    started = time.monotonic()
    drafted = mlops_cli(
        stack, "project", "init", case.name, "--data", str(data), "--target", case.target
    )
    assert drafted.returncode == 0, drafted.stdout + drafted.stderr
    case.figures["init_s"] = round(time.monotonic() - started, 1)
    _small_budget(stack.projects_dir / f"{case.name}.yaml")
    case.figures["rows"], case.figures["columns"] = case.frame.shape
    case.figures["data"] = str(data)
    return case


def _assess(stack: Settings, name: str) -> subprocess.Popen:
    """`mlops project assess NAME --json`, started in the background."""
    env = {**os.environ, **settings_env(stack)}
    return subprocess.Popen(
        [MLOPS, "project", "assess", name, "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _write_figures(matrix: dict[str, Case]) -> None:
    """What each case measured, for the record (test-output/datasets/matrix.json)."""
    OUTPUT.mkdir(parents=True, exist_ok=True)
    rows = []
    for case in matrix.values():
        f = case.figures
        verdict = f["assessment"]["verdict"]
        rows.append(
            {
                "dataset": case.name,
                "rows": f["rows"],
                "columns": f["columns"],
                "task": case.task,
                "metric": f.get("metric"),
                "champion_holdout": f.get("champion"),
                "dummy_cv": f.get("dummy"),
                "verdict": verdict["label"],
                "reasons": verdict["reasons"],
                "seconds": {k: v for k, v in f.items() if k.endswith("_s")},
                "live": f.get("live"),
            }
        )
    (OUTPUT / "matrix.json").write_text(json.dumps(rows, indent=2, default=str))


def _follow_chain(airflow: AirflowClient, case: Case, since: str) -> None:
    """Ingest, then the training and the deployment the assets started, each to success."""
    run_id = case.figures["ingest_run"]
    for stage in ("ingest", "train", "deploy"):
        dag_id = f"{case.name}__{stage}"
        if stage != "ingest":
            run_id = airflow.wait_for_asset_run(dag_id, since=since, timeout=600)
        state = airflow.follow(dag_id, run_id, timeout=900)
        assert state == "success", (dag_id, airflow.task_states(dag_id, run_id))
        case.figures[f"{stage}_s"] = _run_seconds(airflow, dag_id, run_id)


def _served_rows(case: Case) -> pd.DataFrame:
    _, newest = _split(case)
    return newest.reset_index(drop=True)


def test_every_dataset_is_drafted_from_its_data_with_its_key_date_and_task(
    stack: Settings, matrix: dict[str, Case]
) -> None:
    from mlops_lib.spec import project_spec

    for case in matrix.values():
        spec = project_spec(case.name, stack)
        assert spec.target.task == case.task, case.name
        assert (spec.schema.key, spec.schema.event_time) == (case.key, case.event_time)
        if case.event_time:
            assert spec.schema.columns[case.event_time].format == case.date_format, case.name
        assert set(spec.features) == set(case.frame.columns) - {
            case.target,
            case.key,
            case.event_time,
        }


def test_every_champion_beats_the_dummy_baseline_of_its_assessment(
    stack: Settings, matrix: dict[str, Case]
) -> None:
    from mlops_lib.metrics import LOWER_IS_BETTER
    from mlops_lib.registry import champion_version, model_version_tags
    from mlops_lib.spec import project_spec

    for case in matrix.values():
        metric = project_spec(case.name, stack).training.metric
        assessment = case.figures["assessment"]
        assert assessment["verdict"]["label"] == "feasible", (case.name, assessment["verdict"])
        assert assessment["mlflow"]["run_id"], assessment["mlflow"]
        version = champion_version(case.name, stack)
        assert version is not None, case.name
        score = float(model_version_tags(case.name, version, stack)[f"holdout_{metric}"])
        dummy = assessment["baseline"]["dummy"]["mean"]
        case.figures |= {"metric": metric, "champion": score, "dummy": dummy, "version": version}
        better = score < dummy if metric in LOWER_IS_BETTER else score > dummy
        assert better, (case.name, metric, score, dummy)


@pytest.fixture(scope="module")
def served(stack: Settings, matrix: dict[str, Case]) -> dict[str, pd.DataFrame]:
    """The newest quarter of each dataset served on its stable endpoint; returns the labels
    of the rows sent (request id, row, target), once the prediction log holds them."""
    from mlops_lib.labels import wait_logged
    from mlops_lib.spec import project_spec
    from mlops_lib.traffic import send

    out = {}
    for case in matrix.values():
        spec = project_spec(case.name, stack)
        rows = _served_rows(case)
        url = f"{stack.serving_base_url}/{case.name}/predict"
        sent = _timed(
            case.figures,
            "traffic",
            lambda u=url, r=rows, s=spec: send(
                u, r, s.features + s.identity, s.target.column, rows_per_request=25, concurrency=2
            ),
        )
        out[case.name] = sent.labels
    for case in matrix.values():
        missing = wait_logged(case.name, set(out[case.name]["request_id"]), stack, timeout=120)
        assert not missing, (case.name, missing)
    return out


def test_every_served_answer_fits_its_task(stack: Settings, matrix: dict[str, Case]) -> None:
    import httpx

    from mlops_lib.spec import project_spec

    for case in matrix.values():
        spec = project_spec(case.name, stack)
        rows = _served_rows(case).head(3)
        body = json.loads(rows[spec.features].to_json(orient="records"))
        resp = httpx.post(
            f"{stack.serving_base_url}/{case.name}/predict", json={"instances": body}, timeout=30
        )
        assert resp.status_code == 200, (case.name, resp.text)
        answer = resp.json()
        if case.task == "regression":
            assert "probabilities" not in answer or not answer["probabilities"], answer
            assert all(isinstance(p, float) for p in answer["predictions"]), answer
        else:
            known = {str(v) for v in case.frame[case.target].unique()}
            assert {str(p) for p in answer["predictions"]} <= known, answer
            assert set(answer["probabilities"][0]) == known, answer


@pytest.fixture(scope="module")
def monitored(
    stack: Settings, matrix: dict[str, Case], served: dict[str, pd.DataFrame], tmp_path_factory
) -> dict[str, dict]:
    """Each dataset's served rows labelled, then one monitor run per project (all at once)."""
    from mlops_lib.labels import ingest_labels

    airflow = AirflowClient.from_settings(stack)
    folder = tmp_path_factory.mktemp("dataset-labels")
    runs = {}
    for case in matrix.values():
        path = folder / f"{case.name}.csv"
        served[case.name].to_csv(path, index=False)
        _timed(
            case.figures, "labels", lambda n=case.name, p=path: ingest_labels(n, p, settings=stack)
        )
        runs[case.name] = airflow.trigger(f"{case.name}__monitor", {"include_open_window": True})
    reports = {}
    for case in matrix.values():
        dag_id, run_id = f"{case.name}__monitor", runs[case.name]
        state = airflow.follow(dag_id, run_id, timeout=600)
        assert state == "success", airflow.task_log_tail(dag_id, run_id, "monitor", 1, lines=60)
        case.figures["monitor_s"] = _run_seconds(airflow, dag_id, run_id)
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/monitor/xcomEntries/return_value"
        reports[case.name] = airflow.request("GET", path, params={"deserialize": "true"}).json()[
            "value"
        ]
    return reports


def test_every_monitor_report_scores_the_labelled_traffic(
    matrix: dict[str, Case], monitored: dict[str, dict]
) -> None:
    for case in matrix.values():
        report = monitored[case.name]
        live = report["live_metric"]
        assert live["value"] is not None and live["rows"] > 0, (case.name, live)
        case.figures["live"] = live


def test_breast_cancer_retrains_on_its_labelled_production_rows(
    stack: Settings, matrix: dict[str, Case], monitored: dict[str, dict]
) -> None:
    from mlops_lib.lineage import lineage_store
    from mlops_lib.registry import champion_version, model_version_tags

    case = matrix["ds_breast_cancer"]
    airflow = AirflowClient.from_settings(stack)
    dag_id = f"{case.name}__continuous_training"
    airflow.prepare(dag_id, timeout=180)
    report = lineage_store(stack).record_drift_report(
        project=case.name,
        model_version=champion_version(case.name, stack),
        rows=len(_served_rows(case)),
        drifted_features=["mean radius", "worst area"],
        fired=True,
        reason="2 of 30 features drifted (test)",
    )
    run_id, state = airflow.run(dag_id, timeout=900)
    states = airflow.task_states(dag_id, run_id)
    assert state == "success" and states["train"] == "success", states
    case.figures["continuous_training_s"] = _run_seconds(airflow, dag_id, run_id)
    outcome = lineage_store(stack).drift_report(report["id"])["outcome"]
    served = len(_served_rows(case))
    assert f"with {served} labelled production rows folded in" in outcome, outcome
    found = connect_mlflow(stack).search_model_versions(f"name = '{case.name}'")
    newest = max(int(v.version) for v in found)
    assert model_version_tags(case.name, newest, stack).get("gate_decision"), newest
