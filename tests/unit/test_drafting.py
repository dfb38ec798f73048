"""Drafting a spec from data (`mlops project init`): inferred types, task, rules, no overwrite."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_wine

from mlops_lib.cli import main
from mlops_lib.drafting import Draft, DraftError, init_project
from mlops_lib.quality import check_batch, coerce
from mlops_lib.settings import Settings
from mlops_lib.sources import read_file
from mlops_lib.spec import METRICS, ProjectSpec, load_spec

NOW = datetime(2025, 6, 1, tzinfo=UTC)


def settings(tmp_path: Path) -> Settings:
    return Settings(
        repo_root=tmp_path,
        projects_dir=tmp_path / "projects",
        stack_dir=tmp_path / ".stack",
        read_credentials_file=False,
    )


def draft(
    tmp_path: Path, frame: pd.DataFrame, target: str, name: str = "proj", **kw
) -> tuple[Draft, ProjectSpec]:
    """Write the frame under data/, draft a spec from it and load the written spec."""
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    frame.to_csv(data / f"{name}.csv", index=False)
    out = init_project(
        name,
        f"data/{name}.csv",
        target,
        settings=settings(tmp_path),
        base_dir=tmp_path,
        now=NOW,
        **kw,
    )
    assert out.path == tmp_path / "projects" / f"{name}.yaml"
    return out, load_spec(out.path)


def wine() -> pd.DataFrame:
    bunch = load_wine(as_frame=True)
    frame = bunch.frame
    frame["target"] = frame["target"].map(dict(enumerate(bunch.target_names)))
    return frame


def column_line(text: str, name: str) -> str:
    return next(line for line in text.splitlines() if line.strip().startswith(f"{name}:"))


def test_wine_with_class_names_is_multiclass_with_its_classes_allowed(tmp_path: Path) -> None:
    out, spec = draft(tmp_path, wine(), "target", "wine")
    assert spec.target.task == "classification"
    assert spec.schema.columns["target"].type == "category"
    assert spec.schema.columns["target"].allowed == ["class_0", "class_1", "class_2"]
    assert spec.training.metric in METRICS["classification"]
    assert spec.training.metric == "accuracy"  # the smallest class has 27% of rows
    assert spec.target.positive_class is None
    assert spec.schema.columns["alcohol"].type == "float"
    assert "od280/od315_of_diluted_wines" in spec.schema.columns
    assert "task: 3 distinct text labels -> classification" in out.text


def test_diabetes_is_a_regression_on_rmse(tmp_path: Path) -> None:
    _, spec = draft(tmp_path, load_diabetes(as_frame=True).frame, "target", "diabetes")
    assert spec.target.task == "regression"
    assert spec.training.metric == "rmse"
    assert spec.schema.columns["target"].type == "float"
    assert spec.promotion.guards == {"r2": 0.01}


def test_breast_cancer_with_a_bool_target_is_binary_on_roc_auc(tmp_path: Path) -> None:
    frame = load_breast_cancer(as_frame=True).frame
    frame["target"] = frame["target"].astype(bool)
    out, spec = draft(tmp_path, frame, "target", "cancer")
    assert spec.target.task == "classification"
    assert spec.schema.columns["target"].type == "bool"
    assert spec.schema.columns["target"].allowed == [False, True]
    assert spec.target.positive_class is True
    assert spec.training.metric == "roc_auc"
    assert '"mean radius": {type: float' in out.text  # names with spaces are quoted


def test_digits_ten_whole_number_classes_are_multiclass(tmp_path: Path) -> None:
    _, spec = draft(tmp_path, load_digits(as_frame=True).frame, "target", "digits")
    assert spec.target.task == "classification"
    assert spec.schema.columns["target"].allowed == list(range(10))
    pixel = spec.schema.columns["pixel_0_1"]  # written as 0.0, 1.0, ...
    assert pixel.type == "float" and pixel.min == 0
    assert len(spec.schema.columns) == 65


def test_imbalanced_classes_get_macro_f1_and_the_reason(tmp_path: Path) -> None:
    labels = ["a"] * 95 + ["b"] * 100 + ["c"] * 5
    frame = pd.DataFrame({"x": np.arange(200) % 7, "label": labels})
    out, spec = draft(tmp_path, frame, "label")
    assert spec.training.metric == "f1_macro"
    assert "metric f1_macro because the smallest class has 2% of rows" in out.text


def test_a_zero_one_target_stays_int_with_positive_class_1(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=300), "churned": (rng.random(300) < 0.8) * 1})
    _, spec = draft(tmp_path, frame, "churned")
    assert spec.schema.columns["churned"].type == "int"
    assert spec.schema.columns["churned"].allowed == [0, 1]
    assert spec.target.positive_class == 1
    assert spec.training.metric == "roc_auc"


def test_the_minority_class_is_positive_without_a_usual_label(tmp_path: Path) -> None:
    frame = pd.DataFrame({"x": np.arange(100) % 9, "fate": ["stay"] * 70 + ["leave"] * 30})
    out, spec = draft(tmp_path, frame, "fate")
    assert spec.target.positive_class == "leave"
    assert "the minority class (30% of rows)" in out.text


def test_column_names_with_spaces_dots_and_capitals_are_kept(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    names = ["Total Charges", "pH.value", "MonthlyFee", "city name", "yes", "null", "1st"]
    frame = pd.DataFrame({n: rng.normal(size=50) for n in names})
    frame["Churn Label"] = ["Yes", "No"] * 25
    _, spec = draft(tmp_path, frame, "Churn Label")
    assert list(spec.schema.columns) == [*names, "Churn Label"]
    assert spec.target.column == "Churn Label"
    assert spec.target.positive_class == "Yes"


@pytest.mark.parametrize(
    ("written", "fmt"),
    [
        ("%Y/%m/%d", "%Y/%m/%d"),
        ("%d.%m.%Y", "%d.%m.%Y"),
        ("%d/%m/%Y", "%d/%m/%Y"),
        ("%m/%d/%Y", "%m/%d/%Y"),
        ("%Y-%m-%d", None),
        ("%Y-%m-%dT%H:%M:%S", None),
        ("%Y/%m/%d %H:%M", "%Y/%m/%d %H:%M"),
    ],
)
def test_text_dates_get_their_format(tmp_path: Path, written: str, fmt: str | None) -> None:
    days = pd.date_range("2024-01-01", periods=60, freq="D") + pd.Timedelta(hours=7)
    frame = pd.DataFrame({"day": days.strftime(written), "x": np.arange(60) % 7, "y": [0, 1] * 30})
    _, spec = draft(tmp_path, frame, "y")
    column = spec.schema.columns["day"]
    assert column.type == "datetime"
    assert column.format == fmt
    assert spec.schema.event_time == "day"


def test_epoch_seconds_under_a_time_name_are_datetimes(tmp_path: Path) -> None:
    seconds = 1_700_000_000 + np.arange(100) * 3600
    frame = pd.DataFrame({"created_at": seconds, "visits": seconds % 97, "y": [0, 1] * 50})
    out, spec = draft(tmp_path, frame, "y")
    assert spec.schema.columns["created_at"].type == "datetime"
    assert spec.schema.columns["created_at"].format == "epoch_s"
    assert spec.schema.columns["visits"].type == "int"
    assert spec.schema.event_time == "created_at"
    assert "format epoch_s" in column_line(out.text, "created_at")


def test_big_numbers_without_a_time_name_stay_ints(tmp_path: Path) -> None:
    frame = pd.DataFrame({"amount": 1_700_000_000 + np.arange(100) % 9, "y": [0, 1] * 50})
    _, spec = draft(tmp_path, frame, "y")
    assert spec.schema.columns["amount"].type == "int"


def test_dates_fitting_day_and_month_first_stay_text_with_a_warning(tmp_path: Path) -> None:
    days = pd.date_range("2024-01-01", periods=12, freq="MS")  # day 01 of every month
    frame = pd.DataFrame({"day": days.strftime("%d/%m/%Y"), "x": [1, 2, 3] * 4, "y": [0, 1] * 6})
    out, spec = draft(tmp_path, frame, "y")
    assert spec.schema.columns["day"].type == "string"
    assert any("'day'" in w and "%d/%m/%Y and %m/%d/%Y" in w for w in out.warnings)


def test_datetime_features_get_parts_and_the_event_time_none(tmp_path: Path) -> None:
    days = pd.date_range("2024-01-01", periods=80, freq="D")
    frame = pd.DataFrame(
        {
            "signup": days.strftime("%Y-%m-%d"),
            "event_time": (days + pd.Timedelta(days=3)).strftime("%Y-%m-%d %H:%M:%S"),
            "y": [0, 1] * 40,
        }
    )
    _, spec = draft(tmp_path, frame, "y")
    assert spec.schema.event_time == "event_time"
    assert spec.schema.columns["signup"].parts == ["day_of_year", "weekday"]
    assert spec.schema.columns["event_time"].parts == []
    assert any(r.rule == "event_time_not_in_future" for r in spec.rules)


def test_a_column_with_future_times_is_not_the_event_time(tmp_path: Path) -> None:
    due = pd.date_range("2026-01-01", periods=40, freq="D").strftime("%Y-%m-%d")
    frame = pd.DataFrame({"due_date": due, "y": [0, 1] * 20})
    _, spec = draft(tmp_path, frame, "y")
    assert spec.schema.event_time is None
    assert not any(r.rule == "event_time_not_in_future" for r in spec.rules)
    assert spec.schema.columns["due_date"].parts == ["day_of_year", "weekday"]


def test_200_rows_train_and_pass_min_rows(tmp_path: Path) -> None:
    frame = wine().head(200)
    _, spec = draft(tmp_path, frame, "target")
    (min_rows,) = [r for r in spec.rules if r.rule == "min_rows"]
    assert 10 <= min_rows.value <= len(frame)
    assert 10 <= spec.training.min_rows <= len(frame)


def test_200_columns_draft(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    frame = pd.DataFrame(rng.normal(size=(120, 210)), columns=[f"f{i}" for i in range(210)])
    frame["y"] = rng.normal(size=120) * 10
    _, spec = draft(tmp_path, frame, "y")
    assert len(spec.schema.columns) == 211
    assert spec.target.task == "regression"


def test_a_constant_and_an_all_null_column_still_draft(tmp_path: Path) -> None:
    frame = wine()
    frame["version"] = 3
    frame["notes"] = np.nan
    out, spec = draft(tmp_path, frame, "target")
    constant = spec.schema.columns["version"]
    assert constant.type == "int" and constant.min <= 3 <= constant.max
    assert "one value" in column_line(out.text, "version")
    empty = spec.schema.columns["notes"]
    assert empty.nullable is True
    (nulls,) = [r for r in spec.rules if r.rule == "max_null_fraction"]
    assert nulls.columns is not None and "notes" not in nulls.columns
    assert any("'notes'" in w for w in out.warnings)


def test_a_unique_id_column_becomes_the_key(tmp_path: Path) -> None:
    frame = wine()
    frame.insert(0, "CustomerID", [f"C{i:05d}" for i in range(len(frame))])
    out, spec = draft(tmp_path, frame, "target")
    assert spec.schema.key == "CustomerID"
    assert "CustomerID" not in spec.features
    assert any(r.rule == "unique_key" for r in spec.rules)
    assert "# key candidate: unique and non-null, named like an id" in out.text


def test_a_row_number_column_is_a_key_and_a_target_never_is(tmp_path: Path) -> None:
    frame = pd.DataFrame({"Unnamed: 0": range(50), "x": np.arange(50) % 5, "y": range(50)})
    _, spec = draft(tmp_path, frame, "y")
    assert spec.schema.key == "Unnamed: 0"
    assert spec.target.task == "regression"


def test_no_key_without_a_unique_column(tmp_path: Path) -> None:
    _, spec = draft(tmp_path, wine(), "target")
    assert spec.schema.key is None
    assert not any(r.rule == "unique_key" for r in spec.rules)


def test_ranges_are_widened_and_stay_non_negative(tmp_path: Path) -> None:
    frame = pd.DataFrame({"count": [0, 50, 100] * 10, "temp": [-5.0, 5.25, 15.0] * 10})
    frame["y"] = [0, 1] * 15
    _, spec = draft(tmp_path, frame, "y")
    assert (spec.schema.columns["count"].min, spec.schema.columns["count"].max) == (0, 150)
    temp = spec.schema.columns["temp"]
    assert temp.min == pytest.approx(-15.0) and temp.max == pytest.approx(25.0)


def test_ints_with_empty_cells_stay_ints_and_are_nullable(tmp_path: Path) -> None:
    frame = pd.DataFrame({"age": [20, None, 40, 31] * 10, "y": [0, 1] * 20})
    _, spec = draft(tmp_path, frame, "y")
    assert spec.schema.columns["age"].type == "int"
    assert spec.schema.columns["age"].nullable is True
    assert spec.schema.columns["y"].nullable is False


def test_flags_yes_no_text_and_categories(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "is_active": [0, 1] * 30,
            "count_01": [0, 1] * 30,
            "paid": ["true", "false"] * 30,
            "smoker": ["yes", "no", "no"] * 20,
            "plan": ["basic", "pro", "team"] * 20,
            "comment": [f"free text {i}" for i in range(60)],
            "y": range(60),
        }
    )
    out, spec = draft(tmp_path, frame, "y")
    columns = spec.schema.columns
    assert columns["is_active"].type == "bool"
    assert columns["count_01"].type == "int"
    assert columns["paid"].type == "bool"  # read as booleans, as ingest reads them
    assert columns["smoker"].type == "category" and columns["smoker"].allowed == ["no", "yes"]
    assert "yes/no text" in column_line(out.text, "smoker")
    assert columns["plan"].allowed == ["basic", "pro", "team"]
    assert columns["comment"].type == "string"
    assert spec.schema.key == "comment"


def test_a_wide_categorical_feature_makes_the_encoding_ordinal(tmp_path: Path) -> None:
    frame = pd.DataFrame({"city": [f"city{i % 60}" for i in range(600)], "y": [0, 1] * 300})
    out, spec = draft(tmp_path, frame, "y")
    assert spec.training.encoding == "ordinal"
    assert "city (60)" in out.text


def test_a_class_with_few_rows_lowers_the_folds(tmp_path: Path) -> None:
    frame = pd.DataFrame({"x": np.arange(40) % 6, "y": ["a"] * 20 + ["b"] * 17 + ["c"] * 3})
    _, spec = draft(tmp_path, frame, "y")
    assert spec.training.cv_folds == 2


def test_task_can_be_given(tmp_path: Path) -> None:
    frame = pd.DataFrame({"x": np.arange(100) % 8, "grade": np.arange(100) % 5})
    _, spec = draft(tmp_path, frame, "grade", task="regression")
    assert spec.target.task == "regression"
    with pytest.raises(DraftError, match="regression needs numbers"):
        draft(tmp_path, wine(), "target", "other", task="regression")


def test_a_parquet_file_is_sampled(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    frame = wine()
    frame["when"] = pd.date_range("2024-01-01", periods=len(frame), freq="h", tz="UTC")
    frame.to_parquet(tmp_path / "data" / "w.parquet")
    out = init_project(
        "w_pq", "data/*.parquet", "target", settings=settings(tmp_path), base_dir=tmp_path, now=NOW
    )
    spec = load_spec(out.path)
    assert spec.source.path == "data/*.parquet"
    assert spec.schema.columns["when"].type == "datetime"
    assert spec.schema.event_time == "when"


def test_the_source_path_resolves_from_the_repository_root(tmp_path: Path) -> None:
    repo, elsewhere = tmp_path / "repo", tmp_path / "elsewhere"
    (repo / "data" / "w").mkdir(parents=True)
    elsewhere.mkdir()
    wine().to_csv(repo / "data" / "w" / "b.csv", index=False)
    wine().to_csv(elsewhere / "b.csv", index=False)
    conf = settings(repo)
    inside = init_project("a1", "w/b.csv", "target", settings=conf, base_dir=repo / "data")
    assert load_spec(inside.path).source.path == "data/w/b.csv"
    assert inside.warnings == ()
    outside = init_project("a2", "b.csv", "target", settings=conf, base_dir=elsewhere)
    assert load_spec(outside.path).source.path == (elsewhere / "b.csv").as_posix()
    assert any("outside the data roots" in w for w in outside.warnings)


def test_an_existing_spec_is_never_overwritten(tmp_path: Path) -> None:
    first, _ = draft(tmp_path, wine(), "target", "wine")
    before = first.path.read_text()
    with pytest.raises(DraftError, match="never overwrites"):
        draft(tmp_path, wine(), "target", "wine")
    assert first.path.read_text() == before
    (tmp_path / "projects" / "other.yml").write_text("name: other\n")
    with pytest.raises(DraftError, match=r"other\.yml exists"):
        draft(tmp_path, wine(), "target", "other")


def test_a_reserved_column_name_is_an_error_naming_it(tmp_path: Path) -> None:
    frame = wine().rename(columns={"hue": "prediction"})
    with pytest.raises(DraftError, match=r"\['prediction'\] are reserved"):
        draft(tmp_path, frame, "target")
    assert not (tmp_path / "projects" / "proj.yaml").exists()


@pytest.mark.parametrize("name", ["Wine", "9lives", "x", "my-project"])
def test_a_name_the_spec_refuses_is_an_error(tmp_path: Path, name: str) -> None:
    with pytest.raises(DraftError, match="lowercase letters"):
        draft(tmp_path, wine(), "target", name)


def test_an_unknown_target_lists_the_columns(tmp_path: Path) -> None:
    with pytest.raises(DraftError, match=r"'class' is not a column .*alcohol, malic_acid"):
        draft(tmp_path, wine(), "class")


def test_the_data_passes_the_quality_gate_of_its_draft(tmp_path: Path) -> None:
    days = pd.date_range("2024-01-01", periods=90, freq="D") + pd.Timedelta(hours=7)
    frame = pd.DataFrame(
        {
            "order id": [f"o{i}" for i in range(90)],
            "ymd": days.strftime("%Y/%m/%d"),
            "dmy": days.strftime("%d.%m.%Y"),
            "iso": days.strftime("%Y-%m-%dT%H:%M:%S"),
            "paid_at": 1_700_000_000 + np.arange(90) * 3600,
            "is_active": [0, 1, 1] * 30,
            "smoker": ["yes", "no", "no"] * 30,
            "age": [20.0, np.nan, 40.0] * 30,
            "Plan.Name": ["basic", "pro", "team"] * 30,
            "const": 3,
            "empty": np.nan,
            "y": ["a", "b", "c"] * 30,
        }
    )
    _, spec = draft(tmp_path, frame, "y")
    assert (spec.schema.key, spec.schema.event_time) == ("order id", "paid_at")
    batch = read_file(tmp_path / "data" / "proj.csv")
    report = check_batch(batch, spec, now=NOW)
    assert report.violations == [], report.summary()
    assert len(coerce(batch, spec)) == 90


def test_every_column_line_carries_its_reason(tmp_path: Path) -> None:
    out, spec = draft(tmp_path, wine(), "target")
    for name in spec.schema.columns:
        assert "  # " in column_line(out.text, name), name
    assert yaml.safe_load(out.text)["name"] == "proj"


def test_cli_drafts_the_spec_prints_the_choices_and_refuses_to_overwrite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_PROJECTS_DIR", str(tmp_path / "projects"))
    monkeypatch.setenv("MLOPS_STACK_DIR", str(tmp_path / ".stack"))
    monkeypatch.chdir(tmp_path)
    wine().to_csv(tmp_path / "wine.csv", index=False)
    args = ["project", "init", "wine", "--data", "wine.csv", "--target", "target"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    written = tmp_path / "projects" / "wine.yaml"
    assert f"wrote {written}" in result.output
    assert "target target: classification; metric accuracy" in result.output
    assert "key: none found" in result.output
    assert f"mlops project validate {written}" in result.output
    assert "mlops run wine ingest" in result.output
    assert load_spec(written).name == "wine"
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 1
    assert "never overwrites" in again.output
