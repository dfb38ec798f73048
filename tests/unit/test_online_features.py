"""Online features at serving time, against a real Feast feature server.

A tiny Feast repo (file registry, SQLite online store, one parquet source) is applied and
materialized with the platform's runner in ``feature_store/.venv``, then ``feast serve``
runs from the same environment for the module. The client reads its address from the
project's ``server.json`` as serving does. Then the service's request path without
BentoML: the request schema of a model with store features (its join key required, store
features never sent), the lookup joining the request's columns, scoring through the
pipeline and the compiled graph, the prediction log keeping what the model saw, and the
answers to a lookup that failed (422, 503).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from mlops_lib.feature_store import repo
from mlops_lib.feature_store.online import (
    FeatureStoreUnavailable,
    OnlineFeatureClient,
    OnlineFeatures,
    UnknownEntities,
    model_join_keys,
)
from mlops_lib.feature_store.paths import server_file
from mlops_lib.settings import Settings, load_settings
from mlops_lib.spec import ProjectSpec, parse_spec

from .specs import churn_spec
from .test_feature_store_runner import PYTHON, ok

FEAST = PYTHON.with_name("feast")
HEALTH_DEADLINE = 90.0  # seconds: a generous bound on the server's start on a busy machine

pytestmark = pytest.mark.skipif(
    not FEAST.exists(),
    reason="feature_store/.venv is missing (Feast's own environment): `make setup` creates it",
)

# Recent values: the client treats a value older than its view's TTL (90 days) as missing.
T0 = pd.Timestamp.now(tz="UTC").floor("D") - pd.Timedelta(days=3)
DAY = pd.Timedelta(days=1)
TICKETS, PAYMENT = "customer_activity__tickets_30d", "customer_activity__payment_mean_90d"

# C-1 changed once (the later value is online); C-2 has a stored null payment mean (a known
# customer without payments); C-3 one value; C-404 nothing.
SOURCE_ROWS = [
    ("C-1", T0 - DAY, 1, 10.0),
    ("C-1", T0, 3, 12.5),
    ("C-2", T0, 0, None),
    ("C-3", T0, 1, 7.0),
]


def shop_spec(unknown_entity: str = "reject") -> ProjectSpec:
    """A project whose model takes the view above: two store features besides x and plan."""
    return parse_spec(
        {
            "name": "shop",
            "source": {"path": "data/shop/*.parquet"},
            "schema": {
                "key": "customer_id",
                "event_time": "event_time",
                "columns": {
                    "customer_id": {"type": "string", "nullable": False},
                    "event_time": {"type": "datetime"},
                    "x": {"type": "float"},
                    "plan": {"type": "category", "allowed": ["basic", "pro"]},
                    "y": {"type": "int", "allowed": [0, 1]},
                },
            },
            "target": {"column": "y", "task": "classification"},
            "training": {"min_rows": 10},
            "features": {
                "entities": {"customer": {"join_key": "customer_id"}},
                "sources": {
                    "events": {
                        "path": "data/shop/events/*.parquet",
                        "timestamp": "event_time",
                        "columns": {
                            "customer_id": {"type": "string", "nullable": False},
                            "event_time": {"type": "datetime", "nullable": False},
                            "kind": {"type": "category", "allowed": ["ticket", "payment"]},
                            "amount": {"type": "float"},
                        },
                    }
                },
                "views": {
                    "customer_activity": {
                        "entity": "customer",
                        "source": "events",
                        "ttl_days": 90,
                        "features": {
                            "tickets_30d": {
                                "aggregate": "count",
                                "days": 30,
                                "where": {"kind": "ticket"},
                            },
                            "payment_mean_90d": {
                                "aggregate": "mean",
                                "column": "amount",
                                "days": 90,
                                "where": {"kind": "payment"},
                            },
                        },
                    }
                },
                "model": ["customer_activity"],
                "unknown_entity": unknown_entity,
            },
        }
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def feast_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


@pytest.fixture(scope="module")
def feast_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Feast repo, applied and materialized (file registry, SQLite online store)."""
    root = tmp_path_factory.mktemp("online_repo")
    (root / "data").mkdir()
    source = pd.DataFrame(
        SOURCE_ROWS, columns=["customer_id", "event_timestamp", "tickets_30d", "payment_mean_90d"]
    )
    source["tickets_30d"] = source["tickets_30d"].astype("int64")
    source.to_parquet(root / "data" / "customer_activity.parquet", index=False)
    # The files the platform generates for the spec (repo.py), served by the real server.
    spec = shop_spec()
    (root / repo.DEFINITIONS_FILE).write_text(repo.definitions_text(spec, "0123abcd" * 8))
    (root / repo.CONFIG_FILE).write_text(repo.config_text(spec, root / "online.db"))
    applied = ok("apply", {"repo": str(root)})
    assert "Created feature view customer_activity" in applied["log"]
    assert (root / repo.view_file("customer_activity")).is_file()
    interval = {"start_date": (T0 - 2 * DAY).isoformat(), "end_date": (T0 + DAY).isoformat()}
    ok("materialize", {"repo": str(root), **interval})
    return root


@pytest.fixture(scope="module")
def feature_server(feast_repo: Path) -> Iterator[str]:
    """``feast serve`` on a free port until the module ends; its URL once /health answers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (feast_repo / "serve.log").open("w")
    proc = subprocess.Popen(
        [
            str(FEAST),
            "-c",
            str(feast_repo),
            "serve",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "--no-access-log",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=feast_env(),
        start_new_session=True,  # its workers in its own group: all stopped at teardown
    )
    started = time.monotonic()
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"feast serve exited ({proc.returncode}):\n{_tail(feast_repo)}")
            try:
                if httpx.get(url + "/health", timeout=1.0, trust_env=False).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() - started > HEALTH_DEADLINE:
                pytest.fail(
                    f"feast serve not healthy in {HEALTH_DEADLINE:g} s:\n{_tail(feast_repo)}"
                )
            time.sleep(0.1)
        print(f"feast serve healthy after {time.monotonic() - started:.1f} s")
        yield url
    finally:
        _stop(proc)
        log.close()


def _tail(repo: Path) -> str:
    return (repo / "serve.log").read_text()[-3000:]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(15)


@pytest.fixture(autouse=True)
def _no_caller_settings(isolated_environment: None) -> None:
    """No MLOPS_* variable or .env file of the caller reaches the settings."""


def settings_at(tmp_path: Path, url: str | None, **overrides) -> Settings:
    """Settings whose stack holds the shop project's server.json naming ``url``."""
    settings = load_settings(stack_dir=tmp_path / "stack", projects_dir=tmp_path, **overrides)
    if url is not None:
        path = server_file(settings, "shop")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"url": url, "pid": 0}))
    return settings


def client_for(tmp_path: Path, url: str | None, unknown: str = "reject", **overrides):
    return OnlineFeatureClient(shop_spec(unknown), settings_at(tmp_path, url, **overrides))


# the client ----------------------------------------------------------------------------


def test_known_keys_get_their_latest_values_in_row_order(feature_server, tmp_path) -> None:
    client = client_for(tmp_path, feature_server)
    keys = ["C-3", "C-1", "C-2", "C-1"]
    want = OnlineFeatures(
        columns={TICKETS: [1, 3, 0, 3], PAYMENT: [7.0, 12.5, None, 12.5]},
        found=[True, True, True, True],  # C-2's stored null: a known customer all the same
    )
    assert asyncio.run(client.fetch(keys)) == want
    assert client.fetch_sync(keys) == want
    client.close()


def test_the_async_client_keeps_its_connection_across_lookups(feature_server, tmp_path) -> None:
    client = client_for(tmp_path, feature_server)

    async def twice() -> tuple[OnlineFeatures, OnlineFeatures, bool]:
        first = await client.fetch(["C-1"])
        used = client._client
        second = await client.fetch(["C-3"])
        same = client._client is used
        await client.aclose()
        return first, second, same

    first, second, same = asyncio.run(twice())
    assert first.columns == {TICKETS: [3], PAYMENT: [12.5]}
    assert second.columns == {TICKETS: [1], PAYMENT: [7.0]}
    assert same


def test_an_unknown_key_is_rejected_naming_the_key_and_its_value(feature_server, tmp_path) -> None:
    client = client_for(tmp_path, feature_server, "reject")
    with pytest.raises(UnknownEntities) as err:
        asyncio.run(client.fetch(["C-1", "C-404", "C-2", "C-404", "C-405"]))
    assert err.value.key == "customer_id"
    assert err.value.values == ["C-404", "C-405"]
    assert err.value.rows == {1: "C-404", 3: "C-404", 4: "C-405"}
    assert "customer_id 'C-404', 'C-405'" in str(err.value) and "'shop'" in str(err.value)


def test_with_default_an_unknown_key_gets_no_values(feature_server, tmp_path) -> None:
    client = client_for(tmp_path, feature_server, "default")
    got = client.fetch_sync(["C-404", "C-1"])
    assert got == OnlineFeatures({TICKETS: [None, 3], PAYMENT: [None, 12.5]}, [False, True])


def test_no_rows_need_no_lookup(tmp_path) -> None:
    client = client_for(tmp_path, None)  # no server at all: nothing is asked
    assert client.fetch_sync([]) == OnlineFeatures({TICKETS: [], PAYMENT: []}, [])


def test_a_stopped_server_is_unavailable_naming_the_feature_server(tmp_path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    client = client_for(tmp_path, url)
    for fetch in (lambda: asyncio.run(client.fetch(["C-1"])), lambda: client.fetch_sync(["C-1"])):
        with pytest.raises(FeatureStoreUnavailable) as err:
            fetch()
        assert err.value.url == url
        assert f"feature store of project 'shop' (feature server at {url})" in str(err.value)
        assert "not reachable" in str(err.value)


def test_a_server_that_never_started_is_unavailable(tmp_path) -> None:
    client = client_for(tmp_path, None)
    with pytest.raises(FeatureStoreUnavailable, match=r"not running: .*server\.json does not"):
        client.fetch_sync(["C-1"])


def test_a_server_that_does_not_answer_in_time_is_unavailable(tmp_path) -> None:
    with socket.socket() as silent:  # accepts connections (the backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        client = client_for(tmp_path, url, feature_lookup_timeout=0.3)
        started = time.monotonic()
        with pytest.raises(FeatureStoreUnavailable, match=r"no answer within 0.3 s"):
            asyncio.run(client.fetch(["C-1"]))
        with pytest.raises(FeatureStoreUnavailable, match=r"no answer within 0.3 s"):
            client.fetch_sync(["C-1"])
        assert time.monotonic() - started < 3


def test_a_restarted_server_on_another_port_is_found_again(feature_server, tmp_path) -> None:
    client = client_for(tmp_path, f"http://127.0.0.1:{free_port()}")
    client.url()  # the old address, cached
    settings_at(tmp_path, feature_server)  # the server came back elsewhere
    assert asyncio.run(client.fetch(["C-3"])).columns == {TICKETS: [1], PAYMENT: [7.0]}
    assert client.url() == feature_server


def test_a_view_the_server_does_not_know_is_unavailable_with_feasts_reason(
    feature_server, tmp_path
) -> None:
    client = client_for(tmp_path, feature_server)
    client.references = ["no_such_view:x"]
    client.columns = ["no_such_view__x"]
    with pytest.raises(FeatureStoreUnavailable) as err:
        client.fetch_sync(["C-1"])
    assert "refused the lookup (HTTP 404): Feature view no_such_view does not exist" in str(
        err.value
    )


# the service's request path ------------------------------------------------------------


def test_a_request_must_send_the_join_key_and_never_store_features() -> None:
    from mlops_lib.serving.schema import (
        ColumnarError,
        column_adapters,
        instance_row,
        request_model,
        validate_columns,
    )

    spec = churn_spec(features=True)
    assert model_join_keys(spec) == ["customer_id"]
    row = {
        "tenure_months": 5, "monthly_charges": 50.0, "total_charges": 250.0,
        "contract": "one_year", "payment_method": "credit_card", "internet_service": "dsl",
        "support_calls": 1, "age": 40, "region": "north",
    }  # fmt: skip
    model = request_model(spec)
    assert model.model_validate({"instances": [row | {"customer_id": "C-1"}]})

    def problems(body: dict) -> set[tuple]:
        with pytest.raises(ValidationError) as err:
            model.model_validate(body)
        return {(tuple(e["loc"]), e["type"]) for e in err.value.errors()}

    assert problems({"instances": [row]}) == {(("instances", 0, "customer_id"), "missing")}
    assert (("instances", 0, "customer_id"), "string_type") in problems(
        {"instances": [row | {"customer_id": None}]}
    )
    sent_store = row | {"customer_id": "C-1", "customer_activity__tickets_30d": 3}
    assert problems({"instances": [sent_store]}) == {
        (("instances", 0, "customer_activity__tickets_30d"), "extra_forbidden")
    }
    # The row type the service validates with says the same.
    from pydantic import TypeAdapter

    with pytest.raises(ValidationError) as err:
        TypeAdapter(list[instance_row(spec)]).validate_python([row])
    assert [(e["loc"], e["type"]) for e in err.value.errors()] == [((0, "customer_id"), "missing")]

    adapters = column_adapters(spec)
    columns = list(row)
    with pytest.raises(ColumnarError) as columnar:
        validate_columns(spec, adapters, [*columns, TICKETS], [[*row.values(), 3]])
    found = {(tuple(e["loc"]), e["type"]): e["msg"] for e in columnar.value.errors}
    assert found[("columns", "customer_id"), "missing"].startswith("join key missing")
    assert "comes from the feature store" in found[("columns", len(columns)), "extra_forbidden"]
    values = validate_columns(spec, adapters, [*columns, "customer_id"], [[*row.values(), "C-1"]])
    assert values["customer_id"] == ["C-1"] and values["event_time"] == [None]


def test_a_project_without_store_features_requests_as_before() -> None:
    from mlops_lib.features import column_groups
    from mlops_lib.serving.schema import column_adapters, required_columns

    spec = churn_spec()
    assert spec.store_features == [] and model_join_keys(spec) == []
    assert required_columns(spec) == spec.features
    assert list(column_adapters(spec)) == [*spec.features, *spec.identity]
    numeric, categorical = column_groups(spec)
    assert numeric == [
        "tenure_months", "monthly_charges", "total_charges", "support_calls", "age",
        "charges_per_tenure", "calls_per_year",
    ]  # fmt: skip
    assert categorical == ["contract", "payment_method", "internet_service", "region"]


def shop_rows(n: int, seed: int = 0) -> pd.DataFrame:
    """Labelled rows with their store features joined, as training sees them."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "customer_id": [f"C-{i}" for i in range(n)],
            "x": rng.normal(size=n),
            "plan": rng.choice(["basic", "pro"], n),
            TICKETS: rng.poisson(2, n).astype("float64"),
            PAYMENT: rng.normal(50, 10, n),
        }
    )
    frame.loc[::7, PAYMENT] = np.nan  # customers without payments
    frame["y"] = ((frame["x"] + frame[TICKETS] - 2 + (frame["plan"] == "pro")) > 0).astype(int)
    return frame


@pytest.fixture(scope="module")
def shop_model():
    """A pipeline fitted on x, plan and the two store features."""
    from mlops_lib.automl import make_estimator
    from mlops_lib.features import build_pipeline, model_input, model_target

    spec = shop_spec()
    frame = shop_rows(300)
    pipeline = build_pipeline(spec, make_estimator("linear", {}, "classification", 0))
    pipeline.fit(model_input(frame, spec), model_target(frame, spec))
    return pipeline


def test_store_features_are_numeric_model_inputs(shop_model) -> None:
    from mlops_lib.features import column_groups, model_input

    spec = shop_spec()
    assert spec.model_inputs == ["x", "plan", TICKETS, PAYMENT]
    assert column_groups(spec) == (["x", TICKETS, PAYMENT], ["plan"])
    frame = model_input(shop_rows(3), spec)
    assert list(frame.columns) == ["x", "plan", TICKETS, PAYMENT]
    assert frame[TICKETS].dtype == frame[PAYMENT].dtype == "float64"
    # A frame without them (rows nobody looked up) has them missing: imputed, not an error.
    bare = model_input(shop_rows(3).drop(columns=[TICKETS, PAYMENT]), spec)
    assert bare[[TICKETS, PAYMENT]].isna().all().all()
    assert shop_model.predict_proba(bare).shape == (3, 2)


def test_a_value_older_than_its_views_ttl_is_missing() -> None:
    from mlops_lib.feature_store.online import _unexpired

    now = pd.Timestamp.now(tz="UTC")
    stamps = [(now - pd.Timedelta(days=d)).isoformat() for d in (1, 89, 91)]
    assert _unexpired([1, 2, 3], stamps, 90 * 86400.0) == [1, 2, None]


def test_the_request_path_scores_and_logs_the_store_features(
    feature_server, tmp_path, shop_model
) -> None:
    """Validated columns -> store features looked up -> scored by the pipeline and the
    compiled graph alike -> the prediction log keeps what the model took."""
    from mlops_lib.features import model_input
    from mlops_lib.serving.compiled import OnnxScorer, compile_pipeline
    from mlops_lib.serving.prediction_log import PredictionLog
    from mlops_lib.serving.predictor import Predictor
    from mlops_lib.serving.schema import column_adapters, validate_columns
    from mlops_lib.serving.store_features import StoreFeatures

    spec = shop_spec("default")
    store = StoreFeatures.of(spec, settings_at(tmp_path, feature_server))
    assert store is not None
    sent = validate_columns(
        spec,
        column_adapters(spec),
        ["x", "plan", "customer_id"],
        [[0.5, "pro", "C-1"], [-1.0, "basic", "C-404"], [0.1, None, "C-2"]],
    )

    async def lookup() -> dict:
        columns = await store.add(sent)
        await store.aclose()
        return columns

    columns = asyncio.run(lookup())
    assert columns[TICKETS] == [3, None, 0] and columns[PAYMENT] == [12.5, None, None]
    assert columns["customer_id"] == ["C-1", "C-404", "C-2"]

    predictor = Predictor(spec, shop_model, "4")
    scores = predictor.scores(predictor.frame_from_columns(columns))
    want = shop_model.predict_proba(
        model_input(pd.DataFrame({k: columns[k] for k in spec.model_inputs}), spec)
    )
    np.testing.assert_allclose(scores, want)
    compiled = compile_pipeline(shop_model, model_input(shop_rows(40, seed=1), spec))
    assert compiled.runtime == "onnx", compiled.reason
    graph = OnnxScorer(compiled.onnx, shop_model)
    assert graph.takes_columns
    np.testing.assert_allclose(graph.scores_columns(columns), want, atol=1e-6)

    log = PredictionLog(
        "shop", "4", tmp_path / "spool", None, flush_seconds=60,
        column_types={name: spec.input_column(name).type for name in spec.store_features},
    )  # fmt: skip
    answer = predictor.columnar_response(scores)
    log.record("r1", columns, answer["predictions"], predictor.log_scores(scores))
    (served,) = log.flush()
    log.record("r2", {**columns, TICKETS: [None] * 3, PAYMENT: [None] * 3}, [0, 0, 0], [0.0] * 3)
    (unknown,) = log.flush()
    table = pq.read_table(served)
    assert table.column(TICKETS).to_pylist() == [3, None, 0]
    assert table.column(PAYMENT).to_pylist() == [12.5, None, None]
    assert table.column("customer_id").to_pylist() == ["C-1", "C-404", "C-2"]
    for path in (served, unknown):  # typed as the store keeps them, even without any value
        schema = pq.read_schema(path)
        assert (schema.field(TICKETS).type, schema.field(PAYMENT).type) == (
            pa.int64(),
            pa.float64(),
        )


def test_failed_lookups_are_answered_422_and_503_naming_key_and_store() -> None:
    from mlops_lib.serving.store_features import lookup_failure

    unknown = UnknownEntities("shop", "customer_id", {1: "C-404", 3: "C-404", 4: "C-405"})
    status, body = lookup_failure(unknown, columnar=False)
    assert status == 422
    assert body["unknown"] == {"customer_id": ["C-404", "C-405"]}
    assert [(d["loc"], d["input"], d["type"]) for d in body["detail"]] == [
        (["instances", 1, "customer_id"], "C-404", "unknown_entity"),
        (["instances", 3, "customer_id"], "C-404", "unknown_entity"),
        (["instances", 4, "customer_id"], "C-405", "unknown_entity"),
    ]
    status, body = lookup_failure(unknown, columnar=True)
    assert body["detail"][0]["loc"] == ["data", 1, "customer_id"]

    down = FeatureStoreUnavailable("shop", "http://127.0.0.1:6566", "not reachable (refused)")
    status, body = lookup_failure(down, columnar=False)
    assert status == 503
    (entry,) = body["detail"]
    assert entry["loc"] == ["feature_store"] and entry["type"] == "feature_store_unavailable"
    assert (
        "feature store of project 'shop' (feature server at http://127.0.0.1:6566)"
        in (entry["msg"])
    )
