"""The BentoML service of a registered model, served for real and probed over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from mlops_lib import demo_data
from mlops_lib.settings import Settings
from mlops_lib.stack.procs import ManagedProcess, free_port, http_ok

from .conftest import FAULTS_PROJECT

pytestmark = pytest.mark.integration
PROJECT = FAULTS_PROJECT  # same schema as the demo project, its own registry entry


@pytest.fixture(scope="module")
def registered(stack: Settings) -> dict:
    """A small model of the project logged and registered as MLflow would for training."""
    import mlflow
    from sklearn.linear_model import LogisticRegression

    from mlops_lib import versioning as vc
    from mlops_lib.features import build_pipeline, model_input
    from mlops_lib.spec import project_spec
    from mlops_lib.training import pip_requirements, trusted_types

    spec = project_spec(PROJECT, stack)
    vc.repository(PROJECT, stack)  # a served project has its repository (the log goes there)
    df = demo_data.generate("clean", rows=5000, seed=401)
    model = build_pipeline(spec, LogisticRegression(max_iter=1000))
    model.fit(model_input(df, spec), df["churned"])
    mlflow.set_tracking_uri(stack.mlflow_url)
    mlflow.set_experiment(f"{PROJECT}-serving-test")
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            sk_model=model,
            name="model",
            input_example=model_input(df.head(3), spec),
            pip_requirements=pip_requirements(),
            serialization_format="skops",
            skops_trusted_types=trusted_types(model),
        )
    mv = mlflow.register_model(info.model_uri, PROJECT)
    return {"version": int(mv.version), "uri": f"models:/{PROJECT}/{mv.version}", "spec": spec}


@pytest.fixture(scope="module")
def service(stack: Settings, registered: dict, tmp_path_factory) -> Iterator[str]:
    from mlops_lib.serving.package import import_model, serve_command, serve_env

    tag = import_model(PROJECT, registered["uri"], registered["version"], stack)
    port = free_port()
    folder = tmp_path_factory.mktemp("serving")
    proc = ManagedProcess("bento", folder / "run", folder / "logs")
    proc.start(
        serve_command(PROJECT, tag, registered["version"], port), env=serve_env(stack, PROJECT)
    )
    url = f"http://127.0.0.1:{port}"
    try:
        proc.wait_healthy(lambda: http_ok(f"{url}/readyz"), timeout=120)
        yield url
    finally:
        proc.stop()


def rows(n: int = 5, seed: int = 402) -> list[dict]:
    from mlops_lib.spec import load_spec

    from .conftest import REPO

    spec = load_spec(REPO / "projects" / "churn.yaml")  # same features as PROJECT
    df = demo_data.generate("clean", rows=n, seed=seed)
    return json.loads(df[spec.features].to_json(orient="records"))


def test_predictions_match_the_mlflow_model(service: str, registered: dict) -> None:
    import mlflow.sklearn
    import pandas as pd

    from mlops_lib.features import model_input

    batch = rows(20)
    resp = httpx.post(f"{service}/predict", json={"instances": batch}, timeout=30)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["model_version"] == str(registered["version"])
    assert len(body["predictions"]) == 20 and len(body["probabilities"]) == 20
    model = mlflow.sklearn.load_model(registered["uri"])
    expected = model.predict_proba(model_input(pd.DataFrame(batch), registered["spec"]))[:, 1]
    served = [p["1"] for p in body["probabilities"]]
    assert served == pytest.approx(expected.tolist(), abs=1e-12)


def test_instances_pass_their_key_and_event_time_through_to_the_prediction_log(
    stack: Settings, service: str
) -> None:
    from mlops_lib.labels import REQUEST_ID, read_predictions, wait_logged

    batch = [
        r | {"customer_id": f"K-{i}", "event_time": "2026-11-01T08:00:00Z"}
        for i, r in enumerate(rows(2))
    ]
    resp = httpx.post(f"{service}/predict", json={"instances": batch}, timeout=30)
    assert resp.status_code == 200, resp.text
    request_id = resp.json()["request_id"]
    assert wait_logged(PROJECT, {request_id}, stack, timeout=120) == 0
    logged = read_predictions(PROJECT, stack)
    mine = logged[logged[REQUEST_ID] == request_id].sort_values("row")
    assert mine["customer_id"].tolist() == ["K-0", "K-1"]
    assert mine["event_time"].astype(str).str.startswith("2026-11-01 08:00:00").all()
    wrong = httpx.post(
        f"{service}/predict", json={"instances": [rows(1)[0] | {"customer_id": 7}]}, timeout=30
    )
    assert wrong.status_code == 400
    assert ["instances", 0, "customer_id"] in [d["loc"] for d in wrong.json()["detail"]]


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda r: r | {"age": "old"}, "age"),
        (lambda r: {k: v for k, v in r.items() if k != "region"}, "region"),
        (lambda r: r | {"planet": "mars"}, "planet"),
        (lambda r: r | {"support_calls": 99}, "support_calls"),
        (lambda r: r | {"contract": "three_year"}, "contract"),
    ],
)
def test_malformed_rows_get_400_naming_the_field(service: str, mutate, field: str) -> None:
    good = rows(2)
    resp = httpx.post(f"{service}/predict", json={"instances": [good[0], mutate(good[1])]})
    assert resp.status_code == 400, resp.text
    locs = [d["loc"] for d in resp.json()["detail"]]
    assert ["instances", 1, field] in locs


def columnar(batch: list[dict]) -> dict:
    names = list(batch[0])
    return {"columns": names, "data": [[r[n] for n in names] for r in batch]}


def test_the_columnar_form_answers_like_the_row_form(service: str) -> None:
    from mlops_lib.serving.package import RUNTIME_HEADER

    batch = rows(50, seed=405)
    by_rows = httpx.post(f"{service}/predict", json={"instances": batch}, timeout=30)
    by_columns = httpx.post(f"{service}/predict", json=columnar(batch), timeout=30)
    assert by_rows.status_code == by_columns.status_code == 200, by_columns.text
    a, b = by_rows.json(), by_columns.json()
    assert b["predictions"] == a["predictions"]
    names = b["probabilities"]["columns"]
    assert b["probabilities"]["data"] == [[p[n] for n in names] for p in a["probabilities"]]
    # Served from the working folder, without a compiled graph: the pipeline scores.
    assert by_columns.headers[RUNTIME_HEADER] == "sklearn"


def test_a_bad_columnar_request_gets_400_naming_row_and_column(service: str) -> None:
    body = columnar(rows(3))
    age = body["columns"].index("age")
    body["columns"].append("planet")
    body["data"] = [[*r, "mars"] for r in body["data"]]
    resp = httpx.post(f"{service}/predict", json=body, timeout=30)
    assert resp.status_code == 400, resp.text
    locs = [d["loc"] for d in resp.json()["detail"]]
    assert ["columns", len(body["columns"]) - 1] in locs
    short = columnar(rows(2))
    short["data"][1] = short["data"][1][:-1]
    resp = httpx.post(f"{service}/predict", json=short, timeout=30)
    assert resp.status_code == 400 and ["data", 1] in [d["loc"] for d in resp.json()["detail"]]
    bad_cell = columnar(rows(3))
    bad_cell["data"][2][age] = "old"
    resp = httpx.post(f"{service}/predict", json=bad_cell, timeout=30)
    assert resp.status_code == 400
    assert ["data", 2, "age"] in [d["loc"] for d in resp.json()["detail"]]


def test_a_request_with_both_forms_or_neither_gets_400(service: str) -> None:
    batch = rows(2)
    both = {"instances": batch} | columnar(batch)
    half = {"instances": batch, "data": [[1]]}
    for body in (both, half, {"columns": ["age"]}, {}):
        resp = httpx.post(f"{service}/predict", json=body, timeout=30)
        assert resp.status_code == 400, (body, resp.text)
        assert resp.json()["detail"][0]["loc"] == ["instances"]


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_get_400_naming_the_field(service: str, value: str) -> None:
    """JSON text with NaN, +-Infinity or a number too large for a float (the parser reads
    1e400 as infinity) is refused for that row's field, not scored."""
    good = rows(2)
    text = json.dumps({"instances": [good[0], good[1] | {"monthly_charges": 1.5}]})
    text = text.replace('"monthly_charges": 1.5', f'"monthly_charges": {value}')
    resp = httpx.post(
        f"{service}/predict", content=text.encode(), headers={"content-type": "application/json"}
    )
    assert resp.status_code == 400, resp.text
    locs = [d["loc"] for d in resp.json()["detail"]]
    assert ["instances", 1, "monthly_charges"] in locs


@pytest.mark.parametrize(
    "payload",
    [
        b"{not json",
        b'{"instances": []}',
        b'{"rows": []}',
        json.dumps({"instances": [{}] * 1001}).encode(),
    ],
)
def test_bad_payloads_get_4xx_not_5xx(service: str, payload: bytes) -> None:
    resp = httpx.post(
        f"{service}/predict", content=payload, headers={"content-type": "application/json"}
    )
    assert 400 <= resp.status_code < 500, resp.text


def test_health_and_metrics_endpoints(service: str) -> None:
    assert httpx.get(f"{service}/livez").status_code == 200
    assert httpx.get(f"{service}/readyz").status_code == 200
    metrics = httpx.get(f"{service}/metrics")
    assert metrics.status_code == 200 and "request" in metrics.text


def test_openapi_describes_the_spec_schema(service: str) -> None:
    doc = httpx.get(f"{service}/docs.json").json()
    text = json.dumps(doc)
    assert "/predict" in doc["paths"]
    for name in ("tenure_months", "contract", "month_to_month", "support_calls"):
        assert name in text, name


def test_load_5k_requests_with_10_percent_malformed(service: str, registered: dict) -> None:
    """Every malformed request gets a 4xx, every valid one the model's answer, never a 5xx."""
    import asyncio
    import itertools

    import mlflow.sklearn
    import pandas as pd

    from mlops_lib.features import model_input

    good = rows(200, seed=404)
    model = mlflow.sklearn.load_model(registered["uri"])
    expected = model.predict(model_input(pd.DataFrame(good), registered["spec"])).tolist()
    malformed = [
        json.dumps({"instances": [good[0] | {"age": "old"}]}).encode(),
        json.dumps({"instances": [{k: v for k, v in good[1].items() if k != "region"}]}).encode(),
        json.dumps({"instances": [good[2] | {"planet": "mars"}]}).encode(),
        json.dumps({"instances": [good[3] | {"support_calls": -5}]}).encode(),
        json.dumps({"instances": [good[4] | {"contract": "forever"}]}).encode(),
        b'{"instances": []}',
        b"{not json",
        b'{"instances": [null]}',
    ]
    total, concurrency = 5_000, 16
    counter = itertools.count()
    outcome = {"ok": 0, "4xx": 0, "wrong": [], "5xx": [], "bad_accepted": []}

    async def worker(client: httpx.AsyncClient) -> None:
        while (i := next(counter)) < total:
            if i % 10 == 0:
                body = malformed[(i // 10) % len(malformed)]
                resp = await client.post("/predict", content=body, headers=JSON)
                if resp.status_code >= 500:
                    outcome["5xx"].append((i, resp.status_code, resp.text[:200]))
                elif 400 <= resp.status_code < 500:
                    outcome["4xx"] += 1
                else:
                    outcome["bad_accepted"].append((i, resp.status_code))
                continue
            k = i % len(good)
            resp = await client.post("/predict", json={"instances": [good[k]]})
            if resp.status_code >= 500:
                outcome["5xx"].append((i, resp.status_code, resp.text[:200]))
            elif resp.status_code != 200 or resp.json()["predictions"] != [expected[k]]:
                outcome["wrong"].append((i, resp.status_code, resp.text[:200]))
            else:
                outcome["ok"] += 1

    async def main() -> None:
        limits = httpx.Limits(max_connections=concurrency)
        async with httpx.AsyncClient(base_url=service, timeout=60, limits=limits) as client:
            await asyncio.gather(*(worker(client) for _ in range(concurrency)))

    asyncio.run(main())
    assert outcome["5xx"] == [], outcome["5xx"][:5]
    assert outcome["wrong"] == [] and outcome["bad_accepted"] == []
    assert outcome["4xx"] == total // 10 and outcome["ok"] == total - total // 10
    assert httpx.get(f"{service}/readyz").status_code == 200


JSON = {"content-type": "application/json"}
