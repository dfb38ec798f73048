"""Fixtures shared by unit tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlops_lib.settings import ENV_PREFIX


@pytest.fixture
def isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No MLOPS_* variable nor .env file of the caller reaches the settings."""
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
