from pathlib import Path

import pytest
import yaml

from mlops_lib.spec import SpecError, discover, load_spec, parse_spec

REPO = Path(__file__).resolve().parents[2]
CHURN = REPO / "projects" / "churn.yaml"


def churn() -> dict:
    return yaml.safe_load(CHURN.read_text())


def write(tmp_path: Path, data: dict, name: str = "churn") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_demo_spec_is_valid() -> None:
    spec = load_spec(CHURN)
    assert spec.name == "churn"
    assert spec.target.task == "classification"
    assert spec.schema.key == "customer_id" and spec.schema.event_time == "event_time"
    assert "churned" not in spec.features and "customer_id" not in spec.features
    assert len(spec.spec_hash()) == 16


def test_unknown_keys_are_errors_naming_file_and_key(tmp_path: Path) -> None:
    data = churn()
    data["trainig"] = {"metric": "f1"}
    data["schema"]["columns"]["age"]["maximum"] = 3
    with pytest.raises(SpecError) as err:
        load_spec(write(tmp_path, data))
    text = str(err.value)
    assert str(tmp_path / "churn.yaml") in text
    assert "trainig: unknown key" in text
    assert "schema.columns.age.maximum: unknown key" in text


def test_every_problem_is_listed_with_what_was_expected(tmp_path: Path) -> None:
    data = churn()
    del data["target"]["task"]
    data["schema"]["columns"]["age"]["type"] = "decimal"
    data["rules"][1]["value"] = 3
    with pytest.raises(SpecError) as err:
        load_spec(write(tmp_path, data))
    problems = err.value.problems
    assert "target.task: required key is missing" in problems
    assert any(p.startswith("schema.columns.age.type: Input should be 'int'") for p in problems)
    assert any(
        p.startswith("rules[1].value: Input should be less than or equal to 1") for p in problems
    )


def test_cross_references_are_checked() -> None:
    data = churn()
    data["target"]["column"] = "left"
    data["schema"]["key"] = "id"
    with pytest.raises(SpecError) as err:
        parse_spec(data)
    assert "not one of the columns" in str(err.value)


def test_name_must_match_the_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="must match the file name 'other'"):
        load_spec(write(tmp_path, churn(), name="other"))


def test_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "churn.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)
    with pytest.raises(SpecError, match="cannot read the file"):
        load_spec(tmp_path / "nope.yaml")


def test_source_needs_exactly_one_kind() -> None:
    data = churn()
    data["source"] = {"path": "x.csv", "sql": {"url": "sqlite://", "query": "select 1"}}
    with pytest.raises(SpecError, match="exactly one of 'path' or 'sql'"):
        parse_spec(data)


def test_discover_keeps_good_specs_next_to_broken_ones(tmp_path: Path) -> None:
    write(tmp_path, churn())
    broken = churn() | {"name": "broken"}
    broken["bogus"] = 1
    write(tmp_path, broken, name="broken")
    specs, errors = discover(tmp_path)
    assert list(specs) == ["churn"]
    assert list(errors) == [str(tmp_path / "broken.yaml")]


@pytest.mark.parametrize("name", ["request_id", "row", "ts", "score"])
def test_column_names_the_prediction_log_uses_are_refused(name: str) -> None:
    data = churn()
    data["schema"]["columns"][name] = {"type": "float"}
    with pytest.raises(SpecError) as err:
        parse_spec(data)
    assert f"column names ['{name}'] are reserved" in str(err.value)


def test_serving_replicas_default_to_one_and_go_up_to_eight() -> None:
    data = churn()
    data["serving"].pop("replicas", None)
    assert parse_spec(data).serving.replicas == 1
    data["serving"]["replicas"] = 8
    assert parse_spec(data).serving.replicas == 8


@pytest.mark.parametrize(
    ("replicas", "expected"),
    [(0, "greater than or equal to 1"), (9, "less than or equal to 8"), ("two", "integer")],
)
def test_serving_replicas_outside_one_to_eight_are_refused(replicas: object, expected: str) -> None:
    data = churn()
    data["serving"]["replicas"] = replicas
    with pytest.raises(SpecError) as err:
        parse_spec(data)
    problem = next(p for p in err.value.problems if p.startswith("serving.replicas: "))
    assert expected in problem
