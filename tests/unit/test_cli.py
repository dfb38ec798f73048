from pathlib import Path

import pytest
from click.testing import CliRunner

from mlops_lib import __version__
from mlops_lib.cli import main


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
