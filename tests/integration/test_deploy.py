"""Deployments on the real stack: champion asset -> deploy DAG -> gateway, failure, rollback.

The tests share one project and run in any order: each one that needs a deployment serving
takes the ``live`` fixture, which deploys a champion when nothing serves (or restores one a
crash left down), and asserts about the deployment it found or the versions it registers:
a champion goes live, a broken version fails its smoke test while the live one keeps
serving, a new champion replaces the live one, rollback returns to it, a killed deployment
comes back with `stack up`, the prediction log reaches lakeFS, and a deployment of two
replicas loses no request when one of them is killed under traffic.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from mlops_lib import demo_data, platform_stack
from mlops_lib import versioning as vc
from mlops_lib.airflow_api import AirflowClient
from mlops_lib.settings import Settings
from mlops_lib.stack.procs import http_ok
from mlops_lib.tracking import connect as connect_mlflow

from .conftest import DEPLOY_PROJECT, approve_champion, mlops_cli, register_model

pytestmark = pytest.mark.integration
PROJECT = DEPLOY_PROJECT
DEPLOY = f"{PROJECT}__deploy"
OUTPUT = Path(__file__).resolve().parents[2] / "test-output" / "deploy"


@pytest.fixture(scope="module")
def world(stack: Settings, tmp_path_factory) -> dict:
    """A clean batch on lakeFS main and the deploy DAG unpaused."""
    from mlops_lib.ingest import ingest_now
    from mlops_lib.spec import project_spec

    folder = tmp_path_factory.mktemp("deploy-data")
    src = demo_data.write(demo_data.generate("clean", rows=4000, seed=501), folder / "b.parquet")
    published = ingest_now(PROJECT, source=str(src), settings=stack)
    airflow = AirflowClient.from_settings(stack)
    airflow.prepare(DEPLOY, timeout=180)
    return {
        "commit": published["commit_id"],
        "spec": project_spec(PROJECT, stack),
        "airflow": airflow,
    }


def register(
    stack: Settings, world: dict, *, seed: int, broken: bool = False, estimator=None
) -> int:
    """Log and register a model trained on the batch (tagged with its commit, as training does).
    ``estimator``: the pipeline's model (a logistic regression by default).

    ``broken``: the pipeline also expects a column the project does not have, so it cannot
    score the project's requests (a package that must never go live).
    """
    from sklearn.linear_model import LogisticRegression

    from mlops_lib.features import build_pipeline, model_input

    spec = world["spec"]
    df = demo_data.generate("clean", rows=3000, seed=seed)
    x = model_input(df, spec)
    model = build_pipeline(spec, estimator or LogisticRegression(max_iter=500 + seed % 7))
    if broken:
        from sklearn.compose import ColumnTransformer
        from sklearn.pipeline import Pipeline

        x = x.assign(planet=1.0)
        model = Pipeline(
            [
                (
                    "needs_planet",
                    ColumnTransformer(
                        [("keep", "passthrough", ["planet"])], remainder="passthrough"
                    ),
                ),
                ("model", LogisticRegression(max_iter=200)),
            ]
        )
        x = x.select_dtypes("number")
    model.fit(x, df["churned"])
    version, _ = register_model(stack, PROJECT, model, tags={"lakefs_commit": world["commit"]})
    return version


def promote_and_deploy(
    stack: Settings, world: dict, version: int, *, approved: bool = True
) -> tuple[str, str]:
    """Approve a version as an operator does (or, ``approved=False``, move @champion by hand
    in MLflow) and announce it; follow the deploy run the asset event starts.
    Returns (run id, final state)."""
    airflow: AirflowClient = world["airflow"]
    since = datetime.now(UTC).isoformat()
    if approved:
        approve_champion(stack, PROJECT, version)
    else:
        connect_mlflow(stack).set_registered_model_alias(PROJECT, "champion", str(version))
    airflow.emit_asset_event(f"{PROJECT}_champion", {"version": version})
    run_id = airflow.wait_for_asset_run(DEPLOY, since=since, timeout=180)
    return run_id, airflow.follow(DEPLOY, run_id, timeout=600)


def flush_interval(stack: Settings) -> float:
    return stack.prediction_log_flush_seconds


def endpoint(stack: Settings) -> str:
    return f"{stack.serving_base_url}/{PROJECT}"


def rows(world: dict, n: int, seed: int) -> list[dict]:
    df = demo_data.generate("clean", rows=n, seed=seed)[world["spec"].features]
    return json.loads(df.to_json(orient="records", date_format="iso"))


def predict(stack: Settings, world: dict, n: int = 3, seed: int = 502) -> dict:
    batch = {"instances": rows(world, n, seed)}
    resp = httpx.post(f"{endpoint(stack)}/predict", json=batch, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()


def served_runtime(stack: Settings, world: dict) -> str:
    """The runtime that answered a request on the stable endpoint (its response header)."""
    from mlops_lib.serving.package import RUNTIME_HEADER

    resp = httpx.post(
        f"{endpoint(stack)}/predict", json={"instances": rows(world, 2, 503)}, timeout=30
    )
    assert resp.status_code == 200, resp.text
    return resp.headers[RUNTIME_HEADER]


def serving_card(stack: Settings, version: int) -> tuple[str, str]:
    """The version's ``serving_runtime`` tag and its model card's serving line."""
    mv = connect_mlflow(stack).get_model_version(PROJECT, str(version))
    line = next(p for p in mv.description.split("\n\n") if p.startswith("**Serving runtime**"))
    return mv.tags["serving_runtime"], line


def deployments(stack: Settings) -> list[dict]:
    from mlops_lib.lineage import lineage_store

    return lineage_store(stack).deployments(PROJECT)


def active(stack: Settings) -> dict | None:
    return next((d for d in deployments(stack) if d["state"] == "active"), None)


def go_live(stack: Settings, world: dict, seed: int) -> tuple[int, str]:
    """Register, approve and deploy a new version; returns (version, deploy run id)."""
    version = register(stack, world, seed=seed)
    run_id, state = promote_and_deploy(stack, world, version)
    assert state == "success", world["airflow"].task_states(DEPLOY, run_id)
    return version, run_id


@pytest.fixture
def live(stack: Settings, world: dict) -> dict:
    """The project's active deployment, answering on the stable endpoint, whatever ran before:
    deployed now when nothing serves, restored by `stack up` when its process is gone."""
    current = active(stack)
    if current is None:
        go_live(stack, world, seed=11)
    elif not http_ok(current["url"] + "/readyz"):
        platform_stack.up(stack, log=print)
    current = active(stack)
    assert current is not None and http_ok(current["url"] + "/readyz"), current
    return current


def test_champion_goes_live_behind_the_stable_endpoint(stack: Settings, world: dict) -> None:
    v1, run_id = go_live(stack, world, seed=11)
    body = predict(stack, world)
    assert body["model_version"] == str(v1) and len(body["predictions"]) == 3
    live = [d for d in deployments(stack) if d["state"] == "active"]
    assert [d["model_version"] for d in live] == [v1]
    assert live[0]["bento_tag"].startswith("mlops-churn-deploy:")
    assert live[0]["dag_run_id"] == run_id
    status = json.loads(mlops_cli(stack, "stack", "status", "--json").stdout)["services"]
    row = next(r for r in status if r["service"] == f"serving/{PROJECT}")
    assert row["state"] == "healthy" and row["url"] == endpoint(stack)
    assert row["model_version"] == v1
    lineage = json.loads(mlops_cli(stack, "lineage", PROJECT, "--json").stdout)
    assert lineage["deployments"][0]["bento_tag"] == live[0]["bento_tag"]
    # It scores with the compiled graph, which matched the pipeline on the holdout rows.
    assert live[0]["runtime"] == "onnx" and live[0]["runtime_reason"] == ""
    assert row["runtime"] == "onnx"
    assert served_runtime(stack, world) == "onnx"
    assert serving_card(stack, v1) == ("onnx", "**Serving runtime**: onnx.")


def test_a_deployment_holds_its_own_lakefs_user_and_no_other_secret(
    stack: Settings, live: dict
) -> None:
    import psutil

    from mlops_lib.serving.deploy import process
    from mlops_lib.settings import secret_names
    from mlops_lib.stack.lakefs_users import serving_key

    own = serving_key(stack, PROJECT)
    root = psutil.Process(process(stack, live).read_pid())
    # The arbiter retitles itself (its environ reads empty); its workers keep theirs.
    environs = [e for p in [root, *root.children(recursive=True)] if (e := p.environ())]
    assert environs
    for env in environs:
        assert env["MLOPS_LAKEFS_ACCESS_KEY_ID"] == own["access_key_id"]
        assert env["MLOPS_LAKEFS_SECRET_ACCESS_KEY"] == own["secret_access_key"]
        values = "\0".join(env.values())
        held = {n for n in secret_names() if getattr(stack, n) and stack.secret(n) in values}
        assert held == set(), held
    assert env.get("MLOPS_PROBE_TOKEN")


def test_champion_moved_by_hand_is_refused_and_the_old_one_keeps_serving(
    stack: Settings, world: dict, live: dict
) -> None:
    rogue = register(stack, world, seed=14)
    run_id, state = promote_and_deploy(stack, world, rogue, approved=False)
    assert state == "failed"
    states = world["airflow"].task_states(DEPLOY, run_id)
    assert states["package"] == "failed" and states["start"] in ("upstream_failed", "none")
    log = world["airflow"].task_log_tail(DEPLOY, run_id, "package", 1, lines=80)
    assert f"{PROJECT} v{rogue} is @champion but neither the promotion gate" in log
    assert not [d for d in deployments(stack) if d["model_version"] == rogue]
    assert predict(stack, world)["model_version"] == str(live["model_version"])
    approve_champion(stack, PROJECT, live["model_version"])


def test_failed_smoke_test_keeps_the_old_deployment_serving(
    stack: Settings, world: dict, live: dict
) -> None:
    v2 = register(stack, world, seed=12, broken=True)
    run_id, state = promote_and_deploy(stack, world, v2)
    assert state == "failed"
    states = world["airflow"].task_states(DEPLOY, run_id)
    assert states["smoke_test"] == "failed" and states["switch"] in ("upstream_failed", "none")
    failed = next(d for d in deployments(stack) if d["model_version"] == v2)
    assert failed["state"] == "failed"
    assert "smoke test" in failed["reason"] and "500" in failed["reason"], failed["reason"]
    log = world["airflow"].task_log_tail(DEPLOY, run_id, "smoke_test", 1, lines=80)
    assert f"deployment {failed['id']} of {PROJECT}" in log
    # The candidate is stopped; the live version still answers on the stable endpoint.
    assert not http_ok(failed["url"] + "/readyz")
    assert predict(stack, world)["model_version"] == str(live["model_version"])


def test_new_champion_replaces_the_old_deployment(stack: Settings, world: dict, live: dict) -> None:
    from sklearn.semi_supervised import LabelSpreading

    # A model the ONNX converter cannot take: it serves with the scikit-learn pipeline.
    v3 = register(stack, world, seed=13, estimator=LabelSpreading(kernel="knn"))
    run_id, state = promote_and_deploy(stack, world, v3)
    assert state == "success", world["airflow"].task_states(DEPLOY, run_id)
    assert predict(stack, world)["model_version"] == str(v3)
    after = {d["id"]: d for d in deployments(stack)}
    assert after[live["id"]]["state"] == "retired"
    assert not http_ok(live["url"] + "/readyz")
    new = active(stack)
    assert new["runtime"] == "sklearn", new
    assert "cannot convert LabelSpreading" in new["runtime_reason"], new["runtime_reason"]
    assert served_runtime(stack, world) == "sklearn"
    runtime, line = serving_card(stack, v3)
    assert runtime == "sklearn" and "LabelSpreading" in line, line


def wrong_graph(world: dict) -> bytes:
    """A graph that loads and scores, but not as the registered model does (its labels are
    flipped)."""
    from sklearn.linear_model import LogisticRegression

    from mlops_lib.features import build_pipeline, model_input
    from mlops_lib.serving.compiled import compile_pipeline

    df = demo_data.generate("clean", rows=1000, seed=77)
    x = model_input(df, world["spec"])
    flipped = build_pipeline(world["spec"], LogisticRegression(max_iter=300))
    return compile_pipeline(flipped.fit(x, 1 - df["churned"]), x.head(50)).onnx


def damage_graph(stack: Settings, bento_tag: str, graph: bytes) -> None:
    """Overwrite the compiled graph a built Bento carries."""
    from mlops_lib.serving.package import use_store
    from mlops_lib.serving.runtime import compiled_graph

    use_store(stack)
    import bentoml

    path = compiled_graph(Path(bentoml.get(bento_tag).path_of("src")))
    assert path.is_file(), path
    path.write_bytes(graph)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [("unreadable", "did not become ready on onnx"), ("wrong", "parity on 200 served")],
)
def test_a_broken_graph_gives_way_to_the_pipeline_and_says_why(
    stack: Settings, world: dict, live: dict, damage: str, reason: str
) -> None:
    """The deploy's own steps, with the Bento's graph damaged after packaging: unreadable
    (the service cannot start on it) or scoring otherwise than the model (the smoke test
    finds it). Either way the candidate restarts on the pipeline, passes and goes live."""
    from mlops_lib.serving import deploy

    version = register(stack, world, seed=14 if damage == "wrong" else 15)
    approve_champion(stack, PROJECT, version)
    built = deploy.package(PROJECT, version, settings=stack)
    assert next(d for d in deployments(stack) if d["id"] == built["id"])["runtime"] == "onnx"
    graph = wrong_graph(world) if damage == "wrong" else b"not an ONNX graph"
    damage_graph(stack, built["bento_tag"], graph)
    deploy.start(built["id"], settings=stack)
    assert deploy.smoke_test(built["id"], settings=stack)["runtime"] == "sklearn"
    deploy.switch(built["id"], settings=stack)
    new = active(stack)
    assert new["id"] == built["id"] and new["runtime"] == "sklearn", new
    assert reason in new["runtime_reason"], new["runtime_reason"]
    assert served_runtime(stack, world) == "sklearn"
    assert predict(stack, world)["model_version"] == str(version)
    runtime, line = serving_card(stack, version)
    assert runtime == "sklearn" and reason in line, line


def test_rollback_serves_the_previous_deployment_again(
    stack: Settings, world: dict, live: dict
) -> None:
    # Something to roll back to: the live deployment replaced by a new one, unless it already
    # replaced one that served (then the live one is what rollback leaves).
    served_before = [
        d
        for d in deployments(stack)
        if d["state"] == "retired" and d["activated_at"] and d["id"] < live["id"]
    ]
    if served_before:
        live, new = served_before[0], live["model_version"]
    else:
        new, _ = go_live(stack, world, seed=13)
    old = live["model_version"]
    (current,) = [d["id"] for d in deployments(stack) if d["state"] == "active"]
    out = mlops_cli(stack, "deploy", "rollback", PROJECT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"model v{old}" in out.stdout
    assert predict(stack, world)["model_version"] == str(old)
    states = {d["id"]: d["state"] for d in deployments(stack)}
    assert states[live["id"]] == "active" and states[current] == "rolled_back", states
    assert [d for d, s in states.items() if s == "active"] == [live["id"]], states
    # A second rollback goes one deployment further back, or, when nothing earlier served,
    # is refused and changes nothing.
    earlier = [
        d
        for d in deployments(stack)
        if d["state"] == "retired" and d["activated_at"] and d["id"] < live["id"]
    ]
    again = mlops_cli(stack, "deploy", "rollback", PROJECT)
    if earlier:
        assert again.returncode == 0, again.stdout + again.stderr
        expected = earlier[0]["model_version"]
    else:
        assert again.returncode == 1 and "no earlier deployment" in again.stderr
        expected = old
    assert predict(stack, world)["model_version"] == str(expected) != str(new)


def test_killed_deployment_comes_back_with_stack_up(
    stack: Settings, world: dict, live: dict
) -> None:
    import psutil

    from mlops_lib.labels import wait_logged
    from mlops_lib.serving.deploy import process

    # A crash loses the rows not yet flushed (one flush interval): wait until the earlier
    # requests are in the prediction log before killing, whatever the machine's load.
    answered = {predict(stack, world, seed=s)["request_id"] for s in (504, 505)}
    assert wait_logged(PROJECT, answered, stack, timeout=120) == 0
    # The whole serving tree dies at once (BentoML's arbiter and its workers).
    root = psutil.Process(process(stack, live).read_pid())
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process(stack, live).is_running():
        time.sleep(0.5)
    resp = httpx.post(
        f"{endpoint(stack)}/predict", json={"instances": rows(world, 1, 9)}, timeout=30
    )
    assert resp.status_code == 503 and f"deployment {live['id']}" in resp.json()["detail"]
    platform_stack.up(stack, log=print)
    assert predict(stack, world)["model_version"] == str(live["model_version"])


def test_sigkill_under_traffic_loses_at_most_one_flush_interval(
    stack: Settings, world: dict, live: dict
) -> None:
    """Measured: requests answered until the deployment is SIGKILLed mid-traffic; after
    `stack up` restores it (and ships what was spooled), only rows answered within one
    flush interval before the kill may be missing."""
    import psutil

    from mlops_lib.labels import REQUEST_ID, read_predictions
    from mlops_lib.serving.deploy import process
    from mlops_lib.serving.prediction_log import spool_dir

    answered: list[tuple[str, float]] = []
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                try:
                    resp = client.post(
                        f"{endpoint(stack)}/predict", json={"instances": rows(world, 2, 77)}
                    )
                except httpx.HTTPError:
                    continue
                if resp.status_code == 200:
                    answered.append((resp.json()["request_id"], time.time()))

    sender = threading.Thread(target=traffic)
    sender.start()
    # Traffic over a few flush intervals, so some rows are shipped, some spooled, some
    # buffered when the kill comes.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (
        len(answered) < 30 or answered[-1][1] - answered[0][1] < 3 * flush_interval(stack)
    ):
        time.sleep(0.1)
    root = psutil.Process(process(stack, live).read_pid())
    killed_at = time.time()
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGKILL)
    while time.monotonic() < deadline and process(stack, live).is_running():
        time.sleep(0.1)
    stop.set()
    sender.join()
    platform_stack.up(stack, log=print)
    wanted = {rid for rid, _ in answered}
    deadline = time.monotonic() + 90
    while True:
        # Read before looking at the spool: once it is empty, what was read is all there is.
        logged = set(read_predictions(PROJECT, stack, columns=[REQUEST_ID])[REQUEST_ID])
        shipped = not any(spool_dir(stack, PROJECT).glob("*.parquet"))
        if wanted <= logged or time.monotonic() > deadline:
            break
        if shipped:
            logged = set(read_predictions(PROJECT, stack, columns=[REQUEST_ID])[REQUEST_ID])
            break
        time.sleep(1)
    lost = [(rid, t) for rid, t in answered if rid not in logged]
    oldest = max((killed_at - t for _, t in lost), default=0.0)
    figures = {
        "answered": len(answered),
        "lost": len(lost),
        "oldest_lost_seconds_before_kill": round(oldest, 2),
        "flush_interval_seconds": flush_interval(stack),
    }
    OUTPUT.mkdir(parents=True, exist_ok=True)
    (OUTPUT / "sigkill-loss.json").write_text(json.dumps(figures, indent=2))
    assert oldest <= flush_interval(stack) + 0.5, lost[:5]
    assert len(lost) < len(answered)


def test_prediction_log_reaches_lakefs(stack: Settings, world: dict, live: dict) -> None:
    """Every served row lands in the monitoring area, keyed by its request id (also one with
    a forged probe header)."""
    import io

    import pandas as pd

    from mlops_lib.layout import MONITORING_BRANCH, predictions_prefix
    from mlops_lib.serving.deploy import process

    # A probe header without the deployment's own token is production traffic like any other.
    forged = httpx.post(
        f"{endpoint(stack)}/predict",
        json={"instances": rows(world, 2, 503)},
        headers={"X-MLOps-Probe": "smoke-test"},
        timeout=30,
    )
    assert forged.status_code == 200, forged.text
    answered = [predict(stack, world, seed=s) for s in (506, 507)] + [forged.json()]
    # A clean stop flushes what the live deployment still buffers.
    assert process(stack, live).stop() == "stopped"
    wanted = {r["request_id"] for r in answered}
    deadline = time.monotonic() + 60
    found: set[str] = set()
    frames = []
    while time.monotonic() < deadline and not wanted <= found:
        paths = vc.list_paths(PROJECT, MONITORING_BRANCH, predictions_prefix(PROJECT), stack)
        frames = [
            pd.read_parquet(io.BytesIO(vc.read(PROJECT, MONITORING_BRANCH, p, stack)))
            for p in paths
        ]
        found = set(pd.concat(frames)["request_id"]) if frames else set()
        time.sleep(1)
    assert wanted <= found, f"missing request ids: {wanted - found}"
    log = pd.concat(frames)
    assert {"ts", "model_version", "prediction", "score", "tenure_months"} <= set(log.columns)
    assert "date=" in paths[0] and "/hour=" in paths[0]
    spool = stack.stack_dir / "serving" / PROJECT / "prediction-log"
    assert not list(spool.glob("*.parquet")), "spool not empty after a clean shutdown"
    platform_stack.up(stack, log=print)  # leave the project served for later tests


@contextlib.contextmanager
def replicas_in_spec(stack: Settings, replicas: int) -> Iterator[None]:
    """The project's spec with ``serving.replicas`` set while the block runs."""
    import yaml

    path = stack.projects_dir / f"{PROJECT}.yaml"
    before = path.read_text()
    spec = yaml.safe_load(before)
    spec["serving"] = dict(spec.get("serving") or {}, replicas=replicas)
    path.write_text(yaml.safe_dump(spec))
    try:
        yield
    finally:
        path.write_text(before)


def replica_rows(stack: Settings, deployment: int) -> dict[str, dict]:
    """The `stack status --json` rows of a deployment's replicas, by service."""
    status = json.loads(mlops_cli(stack, "stack", "status", "--json").stdout)["services"]
    return {r["service"]: r for r in status if r.get("deployment") == deployment}


def test_a_replica_killed_under_traffic_costs_no_request(
    stack: Settings, world: dict, live: dict
) -> None:
    """`serving.replicas: 2`: two processes behind the gateway, both healthy in `stack
    status`. Replica 1 SIGKILLed while a client sends requests through the gateway: the
    gateway takes it out and another replica answers (requests in flight on it included), so
    no request gets a 5xx; `stack up` brings it back."""
    import psutil

    from mlops_lib.serving import deploy

    version = register(stack, world, seed=16)
    approve_champion(stack, PROJECT, version)
    with replicas_in_spec(stack, 2):
        built = deploy.package(PROJECT, version, settings=stack)
        ports = deploy.start(built["id"], settings=stack)["ports"]
        deploy.smoke_test(built["id"], settings=stack)
        deploy.switch(built["id"], settings=stack)
    assert ports is not None and len(set(ports)) == 2
    replicas = replica_rows(stack, built["id"])
    assert sorted(replicas) == [f"serving/{PROJECT}", f"serving/{PROJECT}#1"]
    assert {r["state"] for r in replicas.values()} == {"healthy"}, replicas
    assert sorted(r["replica_url"] for r in replicas.values()) == sorted(
        f"http://127.0.0.1:{port}" for port in ports
    )

    codes: list[int] = []
    errors: list[str] = []
    stop = threading.Event()
    batch = {"instances": rows(world, 2, 78)}

    def traffic() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                try:
                    codes.append(client.post(f"{endpoint(stack)}/predict", json=batch).status_code)
                except httpx.HTTPError as exc:
                    errors.append(repr(exc))

    def wait_for_answers(n: int) -> None:
        deadline = time.monotonic() + 60
        while len(codes) < n and time.monotonic() < deadline:
            time.sleep(0.05)

    sender = threading.Thread(target=traffic)
    sender.start()
    try:
        wait_for_answers(50)
        killed = deploy.process(stack, active(stack), 1)
        root = psutil.Process(killed.read_pid())
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and killed.is_running():
            time.sleep(0.1)
        # Long enough for the gateway to try the dead replica again (it is out for 5 s).
        wait_for_answers(len(codes) + 200)
    finally:
        stop.set()
        sender.join()
    assert errors == [] and len(codes) >= 250
    assert [code for code in codes if code != 200] == []
    assert replica_rows(stack, built["id"])[f"serving/{PROJECT}#1"]["state"] == "stopped"
    platform_stack.up(stack, log=print)
    assert {r["state"] for r in replica_rows(stack, built["id"]).values()} == {"healthy"}
    assert predict(stack, world)["model_version"] == str(version)
    # The other tests kill replica 0 and expect the endpoint down: one replica serves again.
    out = mlops_cli(stack, "deploy", "rollback", PROJECT)
    assert out.returncode == 0, out.stdout + out.stderr
