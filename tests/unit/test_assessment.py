"""The use-case assessment: profile, target balance, leakage suspects, baseline, verdict,
its files and `mlops project assess` (MLflow unreachable: nothing listens on port 1)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris

from mlops_lib import assessment as am
from mlops_lib.assessment import (
    Assessment,
    AssessmentError,
    Baseline,
    ClassCount,
    CurvePoint,
    CvScore,
    DataProfile,
    Distribution,
    LeakageSuspect,
    TargetBalance,
    assess,
    assess_frame,
    render_html,
    verdict,
)
from mlops_lib.cli import main
from mlops_lib.quality import coerce
from mlops_lib.settings import Settings
from mlops_lib.spec import load_spec

CLOSED = "http://127.0.0.1:1"  # nothing listens there


def _types(df: pd.DataFrame) -> dict[str, dict[str, str]]:
    kinds = {"i": "int", "u": "int", "f": "float", "b": "bool"}
    return {str(c): {"type": kinds.get(df[c].dtype.kind, "string")} for c in df.columns}


def _project(
    tmp_path: Path, name: str, df: pd.DataFrame, task: str = "classification", **training
) -> Path:
    """The data as tmp_path/<name>.csv and a spec for it in tmp_path/projects; the CSV."""
    data = tmp_path / f"{name}.csv"
    df.to_csv(data, index=False)
    spec = {
        "name": name,
        "source": {"path": str(data)},
        "schema": {"columns": _types(df)},
        "target": {"column": "target", "task": task},
        "training": {"min_rows": 100, **training},
    }
    (tmp_path / "projects").mkdir(exist_ok=True)
    (tmp_path / "projects" / f"{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return data


def _settings(tmp_path: Path) -> Settings:
    return Settings(
        projects_dir=tmp_path / "projects",
        stack_dir=tmp_path / "stack",
        mlflow_tracking_uri=CLOSED,
        read_credentials_file=False,
    )


def _frame_assessment(tmp_path: Path, name: str, df: pd.DataFrame, task="classification", **kw):
    _project(tmp_path, name, df, task, **kw)
    spec = load_spec(tmp_path / "projects" / f"{name}.yaml")
    return assess_frame(spec, coerce(df, spec))


@pytest.fixture(scope="module")
def cancer() -> pd.DataFrame:
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    return X.assign(target=y)


# Data to verdict -----------------------------------------------------------------------
def test_breast_cancer_is_feasible_and_its_files_are_written(tmp_path, cancer) -> None:
    data = _project(tmp_path, "cancer", cancer)
    run = assess("cancer", data=str(data), settings=_settings(tmp_path))
    a = run.assessment
    assert a.verdict.label == "feasible", a.verdict
    assert a.profile.rows == 569 and a.profile.columns == 31
    assert a.baseline is not None and a.baseline.metric == "roc_auc"
    assert a.baseline.model.mean > 0.95 > 0.55 > a.baseline.dummy.mean
    assert [p.fraction for p in a.baseline.curve] == [0.25, 0.5, 1.0]
    assert a.leakage == []
    folder = tmp_path / "stack" / "assessments" / "cancer"
    assert run.json_path == folder / "assessment.json" and run.html_path.exists()
    assert json.loads(run.json_path.read_text())["verdict"]["label"] == "feasible"


def test_pure_noise_features_are_not_feasible(tmp_path, cancer) -> None:
    rng = np.random.default_rng(0)
    noise = pd.DataFrame(rng.normal(size=(len(cancer), 6)), columns=[f"n{i}" for i in range(6)])
    a = _frame_assessment(tmp_path, "noise", noise.assign(target=cancer["target"]))
    assert a.verdict.label == "not feasible"
    assert "does not beat the dummy" in a.verdict.reasons[0] or "spread" in a.verdict.reasons[0]


def test_a_feature_copying_the_target_is_a_named_suspect_and_the_verdict_at_most_weak(
    tmp_path, cancer
) -> None:
    a = _frame_assessment(tmp_path, "leaky", cancer.assign(copy=cancer["target"]))
    assert [(s.column, s.kind) for s in a.leakage] == [("copy", "predicts the target")]
    assert a.verdict.label == "weak"
    assert any("copy" in r and "inflated" in r for r in a.verdict.reasons)


def test_a_category_that_spells_out_the_target_is_a_leakage_suspect(tmp_path, cancer) -> None:
    status = cancer["target"].map({0: "removed", 1: "kept"})
    a = _frame_assessment(tmp_path, "spelled", cancer.assign(status=status))
    assert [s.column for s in a.leakage] == ["status"]


def test_a_regression_feature_nearly_equal_to_the_target_is_a_leakage_suspect(tmp_path) -> None:
    X, y = load_diabetes(return_X_y=True, as_frame=True)
    noisy = y * 2 + np.random.default_rng(1).normal(0, 1, len(y))
    a = _frame_assessment(tmp_path, "diabetes", X.assign(target=y, echo=noisy), "regression")
    assert [s.column for s in a.leakage] == ["echo"]
    assert a.target.distribution is not None and a.target.distribution.max == 346
    assert a.baseline is not None and a.baseline.lower_is_better  # rmse
    assert a.baseline.model.mean < a.baseline.dummy.mean
    assert a.verdict.label == "weak"


def test_an_identifier_among_the_features_is_flagged_id_like(tmp_path, cancer) -> None:
    ids = cancer.assign(order_id=[f"o-{i:05d}" for i in range(len(cancer))])
    a = _frame_assessment(tmp_path, "with_ids", ids)
    assert [(s.column, s.kind) for s in a.leakage] == [("order_id", "id-like")]


def test_a_multiclass_target_is_scored_and_the_curve_skips_fractions_short_of_rows(
    tmp_path,
) -> None:
    X, y = load_iris(return_X_y=True, as_frame=True)
    species = y.map({0: "setosa", 1: "versicolor", 2: "virginica"})
    a = _frame_assessment(tmp_path, "iris", X.assign(target=species), metric="f1")
    assert [c.label for c in a.target.classes] == ["setosa", "versicolor", "virginica"]
    assert a.baseline is not None and a.baseline.model.mean > 0.8
    assert a.baseline.skipped_fractions == [0.1, 0.25]
    assert [p.fraction for p in a.baseline.curve] == [0.5, 1.0]


def test_target_balance_flags_rare_classes_and_classes_smaller_than_the_folds(
    tmp_path, cancer
) -> None:
    target = cancer["target"].copy()
    target.iloc[:2] = 7  # a class of two rows: rare, and smaller than 3 folds
    a = _frame_assessment(tmp_path, "rare", cancer.assign(target=target))
    assert a.target.rare == ["7"] and a.target.too_few == ["7"]
    assert a.baseline is not None and a.baseline.folds == 2
    assert any("rare classes" in n for n in a.verdict.notes)


def test_the_profile_flags_constant_and_all_null_columns(tmp_path, cancer) -> None:
    df = cancer.assign(same=1, empty=np.nan, colour="red")
    df.loc[:9, "colour"] = "blue"
    a = _frame_assessment(tmp_path, "flags", df)
    assert a.profile.constant == ["same"] and a.profile.all_null == ["empty"]
    colour = next(p for p in a.profile.profiles if p.name == "colour")
    assert [(t.value, t.count) for t in colour.top] == [("red", 559), ("blue", 10)]
    radius = next(p for p in a.profile.profiles if p.name == "mean radius")
    assert radius.min == pytest.approx(6.981) and radius.null_fraction == 0


def test_data_larger_than_the_cap_is_sampled_with_the_spec_seed(
    tmp_path, cancer, monkeypatch
) -> None:
    monkeypatch.setattr(am, "MAX_ROWS", 300)
    data = _project(tmp_path, "capped", cancer)
    spec = load_spec(tmp_path / "projects" / "capped.yaml")
    first, _, rows = am.load_data(spec, str(data), _settings(tmp_path))
    again, _, _ = am.load_data(spec, str(data), _settings(tmp_path))
    assert (len(first), rows) == (300, 569)
    pd.testing.assert_frame_equal(first, again)


def test_data_missing_a_spec_column_is_refused(tmp_path, cancer) -> None:
    data = _project(tmp_path, "short", cancer)
    cancer.drop(columns=["mean radius"]).to_csv(data, index=False)
    with pytest.raises(AssessmentError, match="mean radius"):
        assess("short", data=str(data), settings=_settings(tmp_path))


def test_data_whose_column_does_not_hold_its_type_is_refused_naming_it(tmp_path, cancer) -> None:
    data = _project(tmp_path, "typed", cancer)
    cancer.assign(**{"mean area": "n/a"}).to_csv(data, index=False)
    with pytest.raises(AssessmentError, match=r"column 'mean area' does not hold .* float"):
        assess("typed", data=str(data), settings=_settings(tmp_path))


def test_the_html_escapes_column_names_and_values(tmp_path, cancer) -> None:
    df = cancer.assign(**{"<b>tag</b>": "<script>alert(1)</script>"})
    page = render_html(_frame_assessment(tmp_path, "escaped", df))
    assert "<script>" not in page and "<b>tag</b>" not in page
    assert "&lt;b&gt;tag&lt;/b&gt;" in page and "&lt;script&gt;alert(1)" in page


# The verdict's rules -------------------------------------------------------------------
def _balance(rows: int = 1000, task: str = "classification") -> TargetBalance:
    if task == "regression":
        spread = Distribution(mean=5, std=2, min=0, p25=3, median=5, p75=7, max=10)
        return TargetBalance(task, rows, 0, distribution=spread)
    half = rows // 2
    classes = [ClassCount("a", half, 0.5), ClassCount("b", rows - half, 0.5)]
    return TargetBalance(task, rows, 0, classes=classes)


def _scores(metric: str, dummy: float, model: float, std: float = 0.01, half=None) -> Baseline:
    curve = [CurvePoint(1.0, 800, model, std)]
    if half is not None:
        curve.insert(0, CurvePoint(0.5, 400, half, std))
    return Baseline(
        metric=metric,
        lower_is_better=metric in ("rmse", "mae", "log_loss"),
        folds=3,
        rows=1000,
        dummy=CvScore(dummy, 0.0),
        model=CvScore(model, std),
        curve=curve,
        skipped_fractions=[],
        encoding="onehot",
    )


def test_verdict_feasible_when_the_model_beats_the_dummy_clearly_and_the_curve_is_flat() -> None:
    v = verdict(_balance(), _scores("roc_auc", 0.5, 0.9, half=0.89), [])
    assert v.label == "feasible" and "beats the dummy baseline clearly" in v.reasons[0]


def test_verdict_not_feasible_when_the_model_does_not_beat_the_dummy_by_a_margin() -> None:
    v = verdict(_balance(), _scores("roc_auc", 0.5, 0.51), [])
    assert v.label == "not feasible" and "does not beat the dummy" in v.reasons[0]


def test_verdict_not_feasible_when_the_gain_is_within_the_spread_across_folds() -> None:
    v = verdict(_balance(), _scores("roc_auc", 0.5, 0.56, std=0.08), [])
    assert v.label == "not feasible" and "spread" in v.reasons[0]


def test_verdict_reads_lower_is_better_metrics_the_right_way() -> None:
    worse = verdict(_balance(task="regression"), _scores("rmse", 10.0, 11.0), [])
    better = verdict(_balance(task="regression"), _scores("rmse", 10.0, 4.0, half=4.1), [])
    assert worse.label == "not feasible"
    assert better.label == "feasible"


def test_verdict_weak_when_the_gain_over_the_dummy_is_small() -> None:
    v = verdict(_balance(), _scores("accuracy", 0.8, 0.83, std=0.005), [])
    assert v.label == "weak" and "gains little" in v.reasons[0]


def test_verdict_weak_when_the_learning_curve_still_rises_steeply() -> None:
    v = verdict(_balance(), _scores("roc_auc", 0.5, 0.85, half=0.78), [])
    assert v.label == "weak" and "more data would help" in v.reasons[0]


def test_verdict_weak_with_leakage_suspects_says_the_score_may_be_inflated() -> None:
    suspect = LeakageSuspect("refund", "predicts the target", 0.99, "alone predicts it")
    v = verdict(_balance(), _scores("roc_auc", 0.5, 0.99, half=0.99), [suspect])
    assert v.label == "weak" and "refund" in v.reasons[0] and "inflated" in v.reasons[0]


def test_verdict_not_feasible_with_too_few_rows_a_single_class_or_a_constant_target() -> None:
    single = TargetBalance("classification", 500, 0, classes=[ClassCount("a", 500, 1.0)])
    constant = _balance(task="regression")
    constant.distribution.std = 0.0
    assert "too few" in verdict(_balance(rows=20), None, []).reasons[0]
    assert verdict(single, None, []).label == "not feasible"
    assert "constant" in verdict(constant, None, []).reasons[0]


def test_verdict_notes_missing_labels_and_rows_below_training_min_rows() -> None:
    balance = _balance(rows=600)
    balance.missing = 7
    v = verdict(balance, _scores("roc_auc", 0.5, 0.9, half=0.9), [], min_rows=1000)
    assert v.label == "feasible"
    assert any("7 rows have no label" in n for n in v.notes)
    assert any("training.min_rows=1000" in n for n in v.notes)


# The command ---------------------------------------------------------------------------
@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLOPS_PROJECTS_DIR", str(tmp_path / "projects"))
    monkeypatch.setenv("MLOPS_STACK_DIR", str(tmp_path / "stack"))
    monkeypatch.setenv("MLOPS_MLFLOW_TRACKING_URI", CLOSED)
    monkeypatch.setenv("MLOPS_DATA_ROOTS", str(tmp_path))
    return tmp_path


def test_assess_writes_both_files_and_says_the_mlflow_run_was_not_logged(cli_env, cancer) -> None:
    data = _project(cli_env, "cancer", cancer)
    out = cli_env / "out"
    result = CliRunner().invoke(
        main, ["project", "assess", "cancer", "--data", str(data), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert (out / "assessment.json").is_file() and (out / "assessment.html").is_file()
    assert "verdict: FEASIBLE" in result.output
    assert "dummy baseline  roc_auc 0.5000" in result.output
    not_logged = [line for line in result.output.splitlines() if "not logged" in line]
    assert len(not_logged) == 1 and CLOSED in not_logged[0]


def test_assess_reads_the_spec_source_and_prints_json(cli_env, cancer) -> None:
    _project(cli_env, "cancer", cancer)
    result = CliRunner().invoke(main, ["project", "assess", "cancer", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["verdict"]["label"] == "feasible" and doc["mlflow"]["run_id"] is None
    assert doc["files"]["json"] == str(cli_env / "stack/assessments/cancer/assessment.json")
    assert "not reachable" in doc["mlflow"]["note"]


def test_assess_of_an_unknown_project_or_unreadable_data_exits_1(cli_env, cancer) -> None:
    _project(cli_env, "cancer", cancer)
    unknown = CliRunner().invoke(main, ["project", "assess", "nope"])
    assert unknown.exit_code == 1 and "no spec for project 'nope'" in unknown.output
    garbage = cli_env / "garbage.parquet"
    garbage.write_text("not parquet")
    unreadable = CliRunner().invoke(main, ["project", "assess", "cancer", "--data", str(garbage)])
    assert unreadable.exit_code == 1 and "cannot read" in unreadable.output


# The MLflow run -------------------------------------------------------------------------
@pytest.fixture
def file_tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings whose MLflow is a file store in tmp_path (it has no health check to answer).

    Logging points this process's MLflow client at it and sets the active experiment:
    both are put back afterwards."""
    import mlflow
    from mlflow.tracking import fluent
    from mlflow.tracking._tracking_service import utils as tracking

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setattr(am, "mlflow_unreachable", lambda settings: None)
    names = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID")
    saved = {name: os.environ.get(name) for name in names}
    uri, experiment = tracking._tracking_uri, fluent._active_experiment_id
    yield Settings(
        projects_dir=tmp_path / "projects",
        stack_dir=tmp_path / "stack",
        mlflow_tracking_uri=(tmp_path / "mlruns").as_uri(),
        read_credentials_file=False,
    )
    mlflow.set_tracking_uri(uri)
    fluent._active_experiment_id = experiment
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def test_the_mlflow_run_goes_to_the_experiment_named_after_the_project(
    tmp_path, file_tracking
) -> None:
    from mlflow.tracking import MlflowClient

    profile = DataProfile("data/cancer.csv", 1000, 1000, 3, [], [], [], [])
    scores = _scores("roc_auc", 0.5, 0.9, half=0.89)
    assessment = Assessment(
        project="cancer",
        created_at="2026-11-29T06:00:00+00:00",
        task="classification",
        metric="roc_auc",
        profile=profile,
        target=_balance(),
        leakage=[],
        baseline=scores,
        verdict=verdict(_balance(), scores, []),
        seconds=1.0,
    )
    files = am.write_files(assessment, tmp_path / "out")
    run_id, note = am.log_to_mlflow(assessment, list(files), file_tracking)
    assert note == "" and run_id
    client = MlflowClient(file_tracking.mlflow_url)
    run = client.get_run(run_id)
    assert client.get_experiment(run.info.experiment_id).name == "cancer-assessment"
    assert run.data.tags["verdict"] == "feasible" and run.data.params["metric"] == "roc_auc"
    assert run.data.metrics["model_cv_score"] == 0.9
    logged = [f.path for f in client.list_artifacts(run_id, "assessment")]
    assert sorted(logged) == ["assessment/assessment.html", "assessment/assessment.json"]


def test_dates_not_written_in_their_declared_format_are_named() -> None:
    from mlops_lib.assessment import AssessmentError, _cast
    from mlops_lib.spec import parse_spec

    spec = parse_spec(
        {
            "name": "dated",
            "source": {"path": "data/x.csv"},
            "schema": {
                "columns": {
                    "day": {"type": "datetime", "format": "%d.%m.%Y"},
                    "x": {"type": "float"},
                    "y": {"type": "int"},
                }
            },
            "target": {"column": "y", "task": "classification"},
        }
    )
    frame = pd.DataFrame({"day": ["31.01.2026", "2026-02-01"], "x": [1.0, 2.0], "y": [0, 1]})
    with pytest.raises(AssessmentError, match=r"'day': 1 values are not dates written as"):
        _cast(frame, spec, "data.csv")
