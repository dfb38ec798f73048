"""The call into Feast's own environment: ``python -m mlops_feature_store <command> <json>``.

Feast needs numpy >= 2 and the platform keeps numpy < 2 (whylogs), so Feast runs in
``feature_store/.venv`` (``make setup`` syncs it from ``feature_store/uv.lock``), the way
Airflow's ``ExternalPythonOperator`` runs a task in another interpreter. Nothing in the
platform's environment imports Feast; this module runs the command and reads its one JSON
line (see ``feature_store/src/mlops_feature_store/runner.py`` for the commands).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from mlops_lib.settings import Settings

EXIT_USER_ERROR = 2


class FeatureStoreError(RuntimeError):
    """Feast failed; the message gives its error (the traceback went to the task log)."""


class FeatureStoreUserError(FeatureStoreError, ValueError):
    """Feast was asked for something that is not there (a view, a feature, a file)."""


def feast_python(settings: Settings) -> Path:
    """The interpreter of Feast's environment."""
    return settings.repo_root / "feature_store" / ".venv" / "bin" / "python"


def feast_env() -> dict[str, str]:
    """This process's environment without what points Python at the platform's venv."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def run(settings: Settings, command: str, args: dict[str, Any], timeout: float = 900) -> dict:
    """Run one runner command; its JSON answer, or FeatureStore(User)Error with its error."""
    python = feast_python(settings)
    if not python.exists():
        raise FeatureStoreError(
            f"Feast's environment is missing ({python}); `make setup` creates it"
        )
    done = subprocess.run(
        [str(python), "-m", "mlops_feature_store", command, "-"],
        input=json.dumps(args),
        capture_output=True,
        text=True,
        env=feast_env(),
        timeout=timeout,
        check=False,
    )
    try:
        answer = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        answer = {"error": f"no answer (exit {done.returncode}): {done.stderr[-2000:]}"}
    if done.returncode == 0:
        return answer
    if done.returncode == EXIT_USER_ERROR:
        raise FeatureStoreUserError(f"feast {command}: {answer.get('error')}")
    raise FeatureStoreError(f"feast {command}: {answer.get('error')}\n{done.stderr[-3000:]}")
