"""Every DAG file imports cleanly, fast, without heavy libraries, DB or network at parse time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
DAG_FILES = sorted(p for p in DAGS.glob("*.py") if not p.name.startswith("_"))
HEAVY = ("pandas", "sklearn", "mlflow", "bentoml", "whylogs", "lakefs")

# Runs in a clean interpreter: sockets are refused, the metadata DB points at a file that
# must not appear, and Airflow's own per-file import timeout is one second.
PROBE = r"""
import json, socket, sys, time
def refuse(*a, **k):
    raise RuntimeError("network access at DAG parse time")
socket.socket.connect = refuse
socket.create_connection = refuse
from airflow.dag_processing.dagbag import DagBag
heavy_before = {m for m in sys.modules}
t0 = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1], safe_mode=False)
print(json.dumps({
    "errors": {k: str(v) for k, v in bag.import_errors.items()},
    "dags": {d: bag.dags[d].fileloc for d in bag.dag_ids},
    "meta": {d: {"tags": sorted(bag.dags[d].tags), "doc_md": bag.dags[d].doc_md or "",
                 "owner": bag.dags[d].default_args.get("owner"),
                 "retries": bag.dags[d].default_args.get("retries", 0),
                 "notifier": type(bag.dags[d].default_args.get("on_failure_callback")).__name__,
                 "backoff": bag.dags[d].default_args.get("retry_exponential_backoff")}
             for d in bag.dag_ids},
    "heavy": sorted(m for m in sys.modules if m.split(".")[0] in %r and m not in heavy_before),
    "stats": [{"file": s.file, "duration": s.duration.total_seconds()} for s in bag.dagbag_stats],
}))
"""


@pytest.fixture(scope="module")
def parsed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    home = tmp_path_factory.mktemp("airflow-home")
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "1",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'must-not-exist.db'}",
    }
    proc = subprocess.run(
        [sys.executable, "-c", PROBE % (HEAVY,), str(DAGS)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["db_touched"] = (home / "must-not-exist.db").exists()
    return result


def test_there_are_dag_files() -> None:
    assert DAG_FILES, "dags/ holds no DAG files"


def test_no_import_errors(parsed: dict) -> None:
    assert parsed["errors"] == {}


def test_every_file_defines_a_dag(parsed: dict) -> None:
    files_with_dags = {Path(f).name for f in parsed["dags"].values()}
    assert files_with_dags == {p.name for p in DAG_FILES}


def test_no_heavy_imports_at_parse_time(parsed: dict) -> None:
    assert parsed["heavy"] == []


def test_no_database_touched_at_parse_time(parsed: dict) -> None:
    assert parsed["db_touched"] is False


def test_every_dag_has_owner_tags_docs_retries_and_a_failure_notifier(parsed: dict) -> None:
    for dag_id, meta in parsed["meta"].items():
        assert meta["tags"], dag_id
        assert "fails" in meta["doc_md"], dag_id
        assert meta["owner"] not in (None, "airflow"), dag_id
        assert meta["retries"] >= 1 and meta["backoff"] is True, dag_id
        assert meta["notifier"] == "MLOpsFailureNotifier", dag_id
