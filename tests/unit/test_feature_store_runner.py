"""The feature store runner, run for real in its own environment on a tiny Feast repo.

Feast needs numpy >= 2 and the platform keeps numpy < 2, so Feast lives in
``feature_store/.venv`` (made by ``make setup``) and the platform calls
``python -m mlops_feature_store <command> <json>`` there. These tests do the same: the repo
has a SQL registry in a SQLite file, the file offline store over a hand-made parquet file
and a SQLite online store.

Point-in-time correctness is the point: a label row gets the latest feature value at or
before its time, never a later one, and nulls when that value is older than the view's
TTL or the entity has no value at all.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

FEATURE_STORE = Path(__file__).resolve().parents[2] / "feature_store"
PYTHON = FEATURE_STORE / ".venv" / "bin" / "python"

pytestmark = pytest.mark.skipif(
    not PYTHON.exists(),
    reason="feature_store/.venv is missing (Feast's own environment): `make setup` creates it",
)

T0 = pd.Timestamp("2025-01-01T00:00:00Z")
DAY = pd.Timedelta(days=1)
HOUR = pd.Timedelta(hours=1)
FEATURES = ["customer_stats:total_spend", "customer_stats:orders"]

# customer 1 changes three times; customer 2 has one old value; customer 3 has none.
SOURCE_ROWS = [
    (1, T0, 10.0, 1),
    (1, T0 + DAY, 20.0, 2),
    (1, T0 + 3 * DAY, 30.0, 3),
    (2, T0, 5.0, 7),
]

DEFINITIONS = """
from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64

customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64)

customer_stats = FeatureView(
    name="customer_stats",
    entities=[customer],
    ttl=timedelta(days=2),
    schema=[Field(name="total_spend", dtype=Float64), Field(name="orders", dtype=Int64)],
    source=FileSource(
        name="customer_stats_source",
        path="data/customer_stats.parquet",
        timestamp_field="event_timestamp",
    ),
)
"""


def run(command: str, args: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """The runner as the platform calls it: one JSON document in, one out."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(
        [str(PYTHON), "-m", "mlops_feature_store", command, json.dumps(args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.stdout.count("\n") == 1, f"one JSON line expected:\n{done.stdout}\n{done.stderr}"
    return done.returncode, json.loads(done.stdout)


def ok(command: str, args: dict[str, Any]) -> dict[str, Any]:
    code, document = run(command, args)
    assert code == 0, document
    return document


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Feast repo, applied: SQL registry (SQLite), file offline, SQLite online store."""
    root = tmp_path_factory.mktemp("feature_repo")
    (root / "data").mkdir()
    source = pd.DataFrame(
        SOURCE_ROWS, columns=["customer_id", "event_timestamp", "total_spend", "orders"]
    )
    source.to_parquet(root / "data" / "customer_stats.parquet", index=False)
    (root / "definitions.py").write_text(DEFINITIONS)
    (root / "feature_store.yaml").write_text(
        textwrap.dedent(f"""\
            project: runner_test
            provider: local
            registry:
              registry_type: sql
              path: sqlite:///{root / "registry.db"}
              cache_ttl_seconds: 0
            offline_store:
              type: file
            online_store:
              type: sqlite
              path: {root / "online.db"}
            entity_key_serialization_version: 3
            """)
    )
    applied = ok("apply", {"repo": str(root)})
    assert "Created feature view customer_stats" in applied["log"]
    return root


def test_apply_registers_the_view_and_list_describes_it(repo: Path) -> None:
    listed = ok("list", {"repo": str(repo)})
    assert listed["entities"] == [
        {"name": "customer", "join_key": "customer_id", "value_type": "INT64", "description": ""}
    ]
    (view,) = listed["feature_views"]
    assert view["name"] == "customer_stats"
    assert view["entities"] == ["customer"]
    assert view["ttl_seconds"] == 2 * 24 * 3600
    assert view["features"] == [
        {"name": "total_spend", "dtype": "Float64"},
        {"name": "orders", "dtype": "Int64"},
    ]
    assert view["source"]["path"] == "data/customer_stats.parquet"


def test_historical_features_are_point_in_time_correct(repo: Path, tmp_path: Path) -> None:
    labels = pd.DataFrame(
        [
            (1, T0 + 12 * HOUR, "between the 1st and 2nd value: the 1st"),
            (1, T0 + DAY, "exactly at the 2nd value: the 2nd"),
            (1, T0 + 2 * DAY, "before the 3rd value: the 2nd, never the later 3rd"),
            (1, T0 - HOUR, "before any value: null"),
            (2, T0 + DAY, "1 day after its value, within the 2-day TTL: the value"),
            (2, T0 + 5 * DAY, "5 days after its only value, past the TTL: null"),
            (3, T0 + DAY, "an entity without rows: null"),
            (1, T0 + DAY, "a second label at the same key and time: the 2nd too"),
        ],
        columns=["customer_id", "event_timestamp", "case"],
    )
    labels.to_parquet(tmp_path / "labels.parquet", index=False)
    output = tmp_path / "out" / "training.parquet"

    answer = ok(
        "historical",
        {
            "repo": str(repo),
            "entity_df": str(tmp_path / "labels.parquet"),
            "features": FEATURES,
            "output": str(output),
        },
    )

    assert answer["rows"] == len(labels)
    assert answer["columns"] == [
        "customer_id",
        "event_timestamp",
        "case",
        "total_spend",
        "orders",
    ]
    got = pd.read_parquet(output)
    assert got["case"].tolist() == labels["case"].tolist()  # every row, in the labels' order
    spend = [None if math.isnan(v) else v for v in got["total_spend"]]
    orders = [None if pd.isna(v) else int(v) for v in got["orders"]]
    assert spend == [10.0, 20.0, 20.0, None, 5.0, None, None, 20.0]
    assert orders == [1, 2, 2, None, 7, None, None, 2]


def test_materialize_then_online_serves_the_latest_values(repo: Path) -> None:
    def online() -> dict[str, list]:
        rows = [{"customer_id": 1}, {"customer_id": 2}, {"customer_id": 999}]
        answer = ok("online", {"repo": str(repo), "features": FEATURES, "entity_rows": rows})
        return answer["features"]

    # Up to T0 + 2 days: customer 1's 2nd value is the latest.
    done = ok(
        "materialize",
        {
            "repo": str(repo),
            "start_date": (T0 - DAY).isoformat(),
            "end_date": (T0 + 2 * DAY).isoformat(),
        },
    )
    assert done["mode"] == "range"
    assert done["feature_views"] == [
        {
            "name": "customer_stats",
            "start": (T0 - DAY).isoformat(),
            "end": (T0 + 2 * DAY).isoformat(),
        }
    ]
    assert online() == {
        "customer_id": [1, 2, 999],
        "total_spend": [20.0, 5.0, None],  # an unknown entity: null features, no error
        "orders": [2, 7, None],
    }

    # Incremental: from the last end to T0 + 4 days brings customer 1's 3rd value.
    done = ok("materialize", {"repo": str(repo), "end_date": (T0 + 4 * DAY).isoformat()})
    assert done["mode"] == "incremental"
    assert done["feature_views"][0]["start"] == (T0 + 2 * DAY).isoformat()
    served = online()
    assert served["total_spend"] == [30.0, 5.0, None]
    assert served["orders"] == [3, 7, None]
    # Customer 2's value is 4 days old at T0 + 4 days, past the 2-day TTL, and still
    # served: Feast's online reads do not apply the TTL (feast-dev/feast#1802).


def test_user_errors_exit_2_with_a_message(repo: Path, tmp_path: Path) -> None:
    code, answer = run(
        "online",
        {"repo": str(repo), "features": ["no_such_view:x"], "entity_rows": [{"customer_id": 1}]},
    )
    assert (code, answer) == (
        2,
        {"error": "unknown feature view 'no_such_view'; the registry has ['customer_stats']"},
    )

    code, answer = run(
        "online",
        {"repo": str(repo), "features": FEATURES, "entity_rows": [{"driver_id": 1}]},
    )
    assert code == 2
    assert "unknown entity key(s) ['driver_id']" in answer["error"]

    missing = tmp_path / "no_labels.parquet"
    code, answer = run(
        "historical",
        {
            "repo": str(repo),
            "entity_df": str(missing),
            "features": FEATURES,
            "output": str(tmp_path / "out.parquet"),
        },
    )
    assert (code, answer) == (2, {"error": f"entity_df: no such file {missing}"})
