from pathlib import Path

import pytest
from click.testing import CliRunner

from mlops_lib import __version__
from mlops_lib.cli import _model_cell, main


def test_help_lists_the_stack_commands() -> None:
    result = CliRunner().invoke(main, ["stack", "--help"])
    assert result.exit_code == 0
    for cmd in ("up", "down", "status", "install", "credentials"):
        assert cmd in result.output


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert __version__ in result.output


def test_status_json_of_a_stopped_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    monkeypatch.setenv("MLOPS_STACK_DIR", str(tmp_path))
    monkeypatch.setenv("MLOPS_LAKEFS_PORT", "1")  # nothing listens there
    result = CliRunner().invoke(main, ["stack", "status", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["service"]: r for r in json.loads(result.output)["services"]}
    assert rows["lakefs"]["state"] == "stopped"
    assert rows["lakefs"]["pid"] is None
    assert rows["lakefs"]["log"].endswith("lakefs.log")


def test_bad_backend_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["stack", "up", "--backend", "oracle"])
    assert result.exit_code == 2
    assert "oracle" in result.output


def test_lineage_prints_the_last_failure_and_its_json_has_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from mlops_lib.lineage import record_stage_failure
    from mlops_lib.settings import load_settings

    url = f"sqlite:///{tmp_path}/lineage.db"
    monkeypatch.setenv("MLOPS_STACK_DIR", str(tmp_path))
    monkeypatch.setenv("MLOPS_LINEAGE_DB_URL", url)
    record_stage_failure(
        "churn",
        dag_id="churn__train",
        dag_run_id="manual__1",
        task_id="train",
        error=ValueError("single class in target 'churned'\nmore"),
        try_number=2,
        settings=load_settings(stack_dir=tmp_path, lineage_db_url=url),
    )
    result = CliRunner().invoke(main, ["lineage", "churn"])
    assert result.exit_code == 0, result.output
    assert (
        "last failure: train (churn__train run manual__1, task train): "
        "ValueError: single class in target 'churned'"
    ) in result.output
    assert "resolved" not in result.output
    doc = json.loads(CliRunner().invoke(main, ["lineage", "churn", "--json"]).output)
    assert doc["last_failure"]["cause"] == "ValueError: single class in target 'churned'"
    assert doc["last_failure"]["resolved"] is False and doc["last_failure"]["try_number"] == 2
    other = json.loads(CliRunner().invoke(main, ["lineage", "fraud", "--json"]).output)
    assert other["last_failure"] is None


@pytest.mark.parametrize(
    ("row", "cell"),
    [
        ({"model_version": 3, "runtime": "onnx"}, "v3 onnx"),
        ({"model_version": "12", "runtime": "sklearn"}, "v12 sklearn"),
        ({"model_version": 3}, "v3"),  # runtime not known (yet)
        ({"model_version": 3, "runtime": ""}, "v3"),
        ({"model_version": None, "runtime": "onnx"}, ""),  # nothing served
        ({}, ""),
    ],
)
def test_the_status_model_cell_shows_the_served_version_and_its_runtime(row, cell) -> None:
    assert _model_cell(row) == cell
