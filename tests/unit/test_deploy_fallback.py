"""A deployment whose compiled (ONNX) graph breaks gives way to the scikit-learn pipeline,
in `start` (the service does not come up) and in `smoke_test` (5xx or a parity miss);
everything else, and a pipeline that breaks too, fails the candidate. With several
replicas, one that breaks is enough, and all of them restart or fail together. Nothing is
served: the lineage store, the processes, the ports, the HTTP answers and the MLflow model's
own answers are fakes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mlops_lib.serving import deploy
from mlops_lib.settings import Settings, load_settings
from mlops_lib.stack.procs import StackError

STARTED_PORT = 40999  # where `start` left the candidate
FIRST_PORT = 41000  # the first port free_port hands out in a test
DEPLOYMENT_ID = 7
ROWS = [{"tenure": 1}, {"tenure": 2}, {"tenure": 3}]
EXPECTED = {
    "predictions": ["0", "1", "1"],
    "probabilities": [
        {"0": 0.9, "1": 0.1},
        {"0": 0.2, "1": 0.8},
        {"0": 0.4, "1": 0.6},
    ],
}
LOG_TAIL_LAST = "onnxruntime.capi.InvalidGraph: [ONNXRuntimeError] : Unsupported op TreeEnsemble"
NOT_READY = (
    "deployment-churn-7 exited with code 1 during start-up; last lines of /x/deployment.log:\n"
    "  INFO loading the model\n"
    f"  {LOG_TAIL_LAST}  \n"
)


# No MLOPS_* variable nor .env file of the caller reaches the settings.
pytestmark = pytest.mark.usefixtures("isolated_environment")


class FakeStore:
    """The lineage store's deployment rows, in memory."""

    def __init__(self, row: dict[str, Any]) -> None:
        self.rows = {row["id"]: dict(row)}
        self.updates: list[dict[str, Any]] = []

    def deployment(self, deployment_id: int) -> dict[str, Any] | None:
        row = self.rows.get(deployment_id)
        return dict(row) if row is not None else None

    def update_deployment(self, deployment_id: int, **values: Any) -> dict[str, Any]:
        self.updates.append(values)
        self.rows[deployment_id] |= values
        return dict(self.rows[deployment_id])


@dataclass
class World:
    """The fakes of one test and what they saw."""

    settings: Settings
    store: FakeStore
    replicas: int = 1  # the spec's serving.replicas
    # What `_serve` raises, by the runtime the deployment records, or by (runtime, replica)
    # for one replica (absent: it comes up).
    serve_errors: dict[Any, Exception] = field(default_factory=dict)
    # What the candidate answers over HTTP, by runtime, or by (runtime, replica URL) for one
    # replica: a _Served or an _Unanswered.
    answers: dict[Any, Any] = field(default_factory=dict)
    served: list[tuple[str, int]] = field(default_factory=list)  # (runtime, port)
    stopped: list[str] = field(default_factory=list)  # runtime at each process stop
    noted: list[str] = field(default_factory=list)  # runtimes written to the model card

    @property
    def row(self) -> dict[str, Any]:
        return self.store.rows[DEPLOYMENT_ID]


def _row(runtime: str) -> dict[str, Any]:
    return {
        "id": DEPLOYMENT_ID,
        "project": "churn",
        "bento_tag": "mlops-churn:abc",
        "model_tag": "churn:abc",
        "model_version": 3,
        "model_uri": "models:/churn/3",
        "port": None,
        "ports": None,
        "url": "",
        "state": deploy.BUILT,
        "reason": "",
        "dag_run_id": "run-1",
        "runtime": runtime,
        "runtime_reason": "" if runtime == "onnx" else "serving_runtime is sklearn",
        "created_at": "2024-01-01T00:00:00",
        "activated_at": None,
        "updated_at": "2024-01-01T00:00:00",
    }


def _world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runtime: str) -> World:
    world = World(load_settings(stack_dir=tmp_path / "stack"), FakeStore(_row(runtime)))
    ports = iter(range(FIRST_PORT, FIRST_PORT + 100))

    class FakeProcess:
        def __init__(self, dep: dict[str, Any], replica: int) -> None:
            self.dep = dep
            self.log_file = tmp_path / f"{deploy.replica_name(dep, replica)}.log"

        def stop(self) -> str:
            world.stopped.append(self.dep["runtime"])
            return "stopped"

    def serve(dep: dict[str, Any], port: int, settings: Settings, replica: int = 0) -> None:
        world.served.append((dep["runtime"], port))
        errors = world.serve_errors
        error = errors.get((dep["runtime"], replica), errors.get(dep["runtime"]))
        if error is not None:
            raise error

    def served_answers(
        spec: Any, dep: dict[str, Any], rows: list, settings: Settings, url: str
    ) -> Any:
        answer = world.answers.get((dep["runtime"], url), world.answers.get(dep["runtime"]))
        if isinstance(answer, Exception):
            raise answer
        return answer

    def spec(project: str, settings: Settings) -> Any:
        return SimpleNamespace(serving=SimpleNamespace(replicas=world.replicas), store_features=[])

    monkeypatch.setattr(deploy, "lineage_store", lambda settings: world.store)
    monkeypatch.setattr(
        deploy, "process", lambda settings, dep, replica=0: FakeProcess(dep, replica)
    )
    monkeypatch.setattr(deploy, "free_port", lambda host: next(ports))
    monkeypatch.setattr(deploy, "_serve", serve)
    monkeypatch.setattr(deploy, "project_spec", spec)
    monkeypatch.setattr(deploy, "holdout_sample", lambda spec, version, n, settings: None)
    monkeypatch.setattr(deploy, "_as_requests", lambda spec, sample, stored=False: list(ROWS))
    monkeypatch.setattr(deploy, "_served_answers", served_answers)
    monkeypatch.setattr(deploy, "_expected_answers", lambda spec, dep, rows, online, s: EXPECTED)
    monkeypatch.setattr(
        deploy, "_note_runtime", lambda dep, runtime, settings: world.noted.append(runtime)
    )
    return world


def _right(runtime: str) -> deploy._Served:
    return deploy._Served(runtime, list(EXPECTED["predictions"]), list(EXPECTED["probabilities"]))


def _off(runtime: str, by: float = 1e-3) -> deploy._Served:
    """Answers whose probabilities are ``by`` away from the MLflow model's."""
    probabilities = [{"0": p["0"] + by, "1": p["1"] - by} for p in EXPECTED["probabilities"]]
    return deploy._Served(runtime, list(EXPECTED["predictions"]), probabilities)


def _unanswered(reason: str) -> deploy._Unanswered:
    """What a replica that breaks on the rows (5xx, no connection) gives."""
    return deploy._Unanswered(reason, True)


def _started(world: World, replicas: int = 1) -> None:
    """The candidate as `start` leaves it: serving on the first port (its replicas on the
    ports below it)."""
    world.replicas = replicas
    world.store.rows[DEPLOYMENT_ID] |= {
        "state": deploy.STARTING,
        "port": STARTED_PORT,
        "ports": _started_ports(replicas),
        "url": f"http://127.0.0.1:{STARTED_PORT}",
    }


def _started_ports(replicas: int) -> list[int]:
    return [STARTED_PORT - i for i in range(replicas)]


def _url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


SERVER_ERROR = "smoke test: /predict answered 500 on holdout rows 0-99: onnxruntime failed"


# 1. start ------------------------------------------------------------------------------


def test_an_onnx_service_that_does_not_come_up_restarts_on_the_pipeline_with_its_last_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = _world(tmp_path, monkeypatch, "onnx")
    world.serve_errors["onnx"] = StackError(NOT_READY)

    ref = deploy.start(DEPLOYMENT_ID, settings=world.settings)

    assert world.served == [("onnx", FIRST_PORT), ("sklearn", FIRST_PORT + 1)]
    assert world.stopped == ["onnx"]  # the broken graph's process, before the restart
    reason = world.row["runtime_reason"]
    assert reason.startswith("did not become ready on onnx:")
    assert LOG_TAIL_LAST in reason
    assert "\n" not in reason
    assert world.row["runtime"] == "sklearn"
    assert world.row["state"] == deploy.STARTING  # a candidate still, not failed
    assert ref["state"] == deploy.STARTING
    assert (ref["port"], ref["url"]) == (FIRST_PORT + 1, f"http://127.0.0.1:{FIRST_PORT + 1}")


def test_a_pipeline_service_that_does_not_come_up_fails_without_a_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = _world(tmp_path, monkeypatch, "sklearn")
    world.serve_errors["sklearn"] = StackError(NOT_READY)

    with pytest.raises(deploy.DeploymentError, match="did not become ready") as err:
        deploy.start(DEPLOYMENT_ID, settings=world.settings)

    assert isinstance(err.value.__cause__, StackError)
    assert world.served == [("sklearn", FIRST_PORT)]  # no second start
    assert world.stopped == ["sklearn"]
    assert world.row["state"] == deploy.FAILED
    assert world.row["reason"].startswith("did not become ready: ")
    assert LOG_TAIL_LAST in world.row["reason"]
    assert world.row["runtime_reason"] == "serving_runtime is sklearn"


def test_a_missing_setting_fails_the_start_without_a_fallback_even_on_onnx(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = _world(tmp_path, monkeypatch, "onnx")
    world.serve_errors["onnx"] = RuntimeError("serving_probe_key is not set")

    with pytest.raises(deploy.DeploymentError, match="serving_probe_key is not set"):
        deploy.start(DEPLOYMENT_ID, settings=world.settings)

    assert world.served == [("onnx", FIRST_PORT)]
    assert world.row["state"] == deploy.FAILED
    assert world.row["reason"] == "did not become ready: serving_probe_key is not set"
    assert world.row["runtime"] == "onnx"  # never switched to the pipeline


def test_a_fallback_that_does_not_come_up_either_fails_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = _world(tmp_path, monkeypatch, "onnx")
    world.serve_errors |= {"onnx": StackError(NOT_READY), "sklearn": StackError("gone too")}

    with pytest.raises(deploy.DeploymentError, match="fallback runtime: gone too"):
        deploy.start(DEPLOYMENT_ID, settings=world.settings)

    assert [runtime for runtime, _ in world.served] == ["onnx", "sklearn"]
    assert world.row["state"] == deploy.FAILED
    assert world.stopped == ["onnx", "sklearn"]


# 2. smoke_test -------------------------------------------------------------------------


def test_an_onnx_candidate_answering_5xx_falls_back_and_passes_on_the_pipeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = _world(tmp_path, monkeypatch, "onnx")
    _started(world)
    world.answers |= {
        "onnx": deploy._Unanswered(SERVER_ERROR, True),
        "sklearn": _right("sklearn"),
    }

    result = deploy.smoke_test(DEPLOYMENT_ID, settings=world.settings)

    assert result == {
        "id": DEPLOYMENT_ID,
        "rows": 3,
        "max_abs_diff": 0.0,
        "runtime": "sklearn",
        "feature_skew": {},
    }
    assert world.served == [("sklearn", FIRST_PORT)]  # restarted on a fresh port
    assert world.row["url"] == f"http://127.0.0.1:{FIRST_PORT}"
    assert world.stopped == ["onnx"]
    assert world.row["runtime"] == "sklearn"
    assert world.row["runtime_reason"] == SERVER_ERROR
    assert world.row["state"] == deploy.STARTING
    assert world.noted == ["sklearn"]


@pytest.mark.parametrize(
    "refusal",
    [
        "smoke test: /predict answered 422 on holdout rows 0-99: tenure: not a number",
        "smoke test: served model version '2', expected 3",
    ],
    ids=["4xx", "wrong-model-version"],
)
def test_an_onnx_candidate_refusing_the_rows_or_serving_another_version_fails_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refusal: str
) -> None:
    world = _world(tmp_path, monkeypatch, "onnx")
    _started(world)
    world.answers |= {"onnx": deploy._Unanswered(refusal, False), "sklearn": _right("sklearn")}

    with pytest.raises(deploy.DeploymentError, match="failed: smoke test"):
        deploy.smoke_test(DEPLOYMENT_ID, settings=world.settings)

    assert world.served == []  # the pipeline got no chance: it would not do better
    assert world.row["state"] == deploy.FAILED
    assert world.row["reason"] == refusal
    assert world.row["runtime"] == "onnx"
    assert world.noted == []


def test_an_onnx_parity_miss_falls_back_and_passes_on_the_pipeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = _world(tmp_path, monkeypatch, "onnx")
    _started(world)
    world.answers |= {"onnx": _off("onnx"), "sklearn": _right("sklearn")}

    result = deploy.smoke_test(DEPLOYMENT_ID, settings=world.settings)

    assert result["runtime"] == "sklearn"
    assert result["max_abs_diff"] == 0.0
    assert world.row["runtime"] == "sklearn"
    reason = world.row["runtime_reason"]
    assert reason.startswith(f"parity on {len(ROWS)} served holdout rows: ")
    assert "probabilities differ" in reason
    assert world.stopped == ["onnx"]
    assert world.row["state"] == deploy.STARTING
    assert world.noted == ["sklearn"]


def test_an_onnx_candidate_within_its_tolerance_passes_without_a_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = _world(tmp_path, monkeypatch, "onnx")
    _started(world)
    world.answers["onnx"] = _off("onnx", by=1e-7)

    result = deploy.smoke_test(DEPLOYMENT_ID, settings=world.settings)

    assert result["runtime"] == "onnx"
    assert 0 < result["max_abs_diff"] < deploy.TOLERANCE["onnx"]
    assert world.served == [] and world.stopped == []
    assert world.row["runtime"] == "onnx"
    assert world.noted == ["onnx"]


def test_a_pipeline_candidate_with_a_parity_miss_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = _world(tmp_path, monkeypatch, "sklearn")
    _started(world)
    world.answers["sklearn"] = _off("sklearn", by=1e-7)  # within onnx's tolerance, not its own

    with pytest.raises(deploy.DeploymentError, match="smoke test on 3 holdout rows"):
        deploy.smoke_test(DEPLOYMENT_ID, settings=world.settings)

    assert world.served == []
    assert world.row["state"] == deploy.FAILED
    assert "probabilities differ" in world.row["reason"]
    assert world.noted == []


def test_a_pipeline_candidate_answering_5xx_fails_without_a_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = _world(tmp_path, monkeypatch, "sklearn")
    _started(world)
    world.answers["sklearn"] = deploy._Unanswered(SERVER_ERROR, True)

    with pytest.raises(deploy.DeploymentError, match="answered 500"):
        deploy.smoke_test(DEPLOYMENT_ID, settings=world.settings)

    assert world.served == []
    assert world.row["state"] == deploy.FAILED
    assert world.row["reason"] == SERVER_ERROR


def test_after_a_fallback_a_pipeline_that_does_not_answer_either_fails_the_deployment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = _world(tmp_path, monkeypatch, "onnx")
    _started(world)
    pipeline_error = "smoke test request failed: connection refused"
    world.answers |= {
        "onnx": deploy._Unanswered(SERVER_ERROR, True),
        "sklearn": deploy._Unanswered(pipeline_error, True),
    }

    with pytest.raises(deploy.DeploymentError, match="connection refused"):
        deploy.smoke_test(DEPLOYMENT_ID, settings=world.settings)

    assert world.served == [("sklearn", FIRST_PORT)]  # it did get its chance
    assert world.row["state"] == deploy.FAILED
    assert world.row["reason"] == pipeline_error
    assert world.row["runtime"] == "sklearn"
    assert world.row["runtime_reason"] == SERVER_ERROR  # why the graph gave way
    assert world.stopped == ["onnx", "sklearn"]
    assert world.noted == []


def test_after_a_fallback_a_pipeline_that_misses_too_fails_the_deployment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = _world(tmp_path, monkeypatch, "onnx")
    _started(world)
    world.answers |= {"onnx": _off("onnx"), "sklearn": _off("sklearn")}

    with pytest.raises(deploy.DeploymentError, match="smoke test on 3 holdout rows"):
        deploy.smoke_test(DEPLOYMENT_ID, settings=world.settings)

    assert world.row["state"] == deploy.FAILED
    assert world.row["runtime"] == "sklearn"
    assert world.row["runtime_reason"].startswith("parity on 3 served holdout rows")


def test_a_fallback_that_does_not_come_up_fails_the_smoke_test(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = _world(tmp_path, monkeypatch, "onnx")
    _started(world)
    world.answers["onnx"] = deploy._Unanswered(SERVER_ERROR, True)
    world.serve_errors["sklearn"] = StackError("the pipeline was not healthy within 60s")

    with pytest.raises(deploy.DeploymentError, match="did not become ready on the fallback"):
        deploy.smoke_test(DEPLOYMENT_ID, settings=world.settings)

    assert world.row["state"] == deploy.FAILED
    assert world.noted == []


def test_an_answer_from_another_runtime_than_recorded_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = _world(tmp_path, monkeypatch, "onnx")
    _started(world)
    world.answers["onnx"] = _right("sklearn")  # the service scored with the pipeline

    with pytest.raises(deploy.DeploymentError, match="served by sklearn, recorded onnx"):
        deploy.smoke_test(DEPLOYMENT_ID, settings=world.settings)

    assert world.row["state"] == deploy.FAILED


# 3. _cause_of --------------------------------------------------------------------------


def test_the_cause_of_a_one_line_error_is_that_line() -> None:
    assert deploy._cause_of(StackError("  x was not healthy within 60s \n")) == (
        "x was not healthy within 60s"
    )


def test_the_cause_of_a_multi_line_error_is_its_first_and_the_log_tails_last_line() -> None:
    head = "deployment-churn-7 exited with code 1 during start-up; last lines of /x/deployment.log:"
    assert deploy._cause_of(StackError(NOT_READY)) == f"{head} ... {LOG_TAIL_LAST}"


def test_the_cause_of_an_empty_error_is_its_type_and_long_lines_are_cut() -> None:
    assert deploy._cause_of(StackError("")) == "StackError"
    cause = deploy._cause_of(StackError("h" * 500 + "\n\n" + "t" * 500))
    assert cause == "h" * 200 + " ... " + "t" * 300


# A service whose start-up failed is told at once, not after the start timeout ---------------

CRASH_LOOP = """\
2026-11-29T07:48:29+0000 [INFO] [cli] Starting production HTTP BentoServer
2026-11-29T07:48:37+0000 [ERROR] [entry_service:svc:1] Initializing service error
Traceback (most recent call last):
  File "service.py", line 90, in __init__
onnxruntime.capi.onnxruntime_pybind11_state.InvalidProtobuf: [ONNXRuntimeError] : 7 : INVALID
2026-11-29T07:48:37+0000 [ERROR] [entry_service:svc:1] Application startup failed. Exiting.
"""


def test_a_service_whose_start_up_failed_is_reported_with_its_error(tmp_path) -> None:
    log_file = tmp_path / "deployment.log"
    log_file.write_text("an earlier start: Application startup failed. Exiting.\n")
    offset = log_file.stat().st_size
    check = deploy._ready("http://127.0.0.1:9", log_file, offset)
    assert check() is False  # this start has logged nothing yet: keep waiting
    log_file.write_text(log_file.read_text() + CRASH_LOOP)
    with pytest.raises(StackError, match="the service failed to start: onnxruntime") as err:
        check()
    assert "InvalidProtobuf" in deploy._cause_of(err.value)


def test_an_earlier_starts_failure_in_the_same_log_is_not_this_ones(tmp_path) -> None:
    log_file = tmp_path / "deployment.log"
    log_file.write_text(CRASH_LOOP)
    assert deploy._ready("http://127.0.0.1:9", log_file, log_file.stat().st_size)() is False


# Replicas start, fall back and fail together ------------------------------------------------


def test_every_replica_starts_on_a_port_of_its_own_recorded_replica_zero_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = _world(tmp_path, monkeypatch, "onnx")
    world.replicas = 3

    ref = deploy.start(DEPLOYMENT_ID, settings=world.settings)

    ports = [FIRST_PORT, FIRST_PORT + 1, FIRST_PORT + 2]
    assert sorted(world.served) == [("onnx", port) for port in ports]
    assert world.row["ports"] == ports
    assert (world.row["port"], world.row["url"]) == (FIRST_PORT, _url(FIRST_PORT))
    assert ref["ports"] == ports and ref["state"] == deploy.STARTING
    assert world.stopped == []


def test_one_replica_that_does_not_come_up_on_onnx_restarts_every_replica_on_the_pipeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = _world(tmp_path, monkeypatch, "onnx")
    world.replicas = 2
    world.serve_errors[("onnx", 1)] = StackError(NOT_READY)

    deploy.start(DEPLOYMENT_ID, settings=world.settings)

    assert world.stopped == ["onnx", "onnx"]  # replica 0 came up, yet it restarts too
    fresh = [FIRST_PORT + 2, FIRST_PORT + 3]
    assert sorted(world.served)[-2:] == [("sklearn", port) for port in fresh]
    assert world.row["ports"] == fresh and world.row["port"] == fresh[0]
    assert world.row["runtime"] == "sklearn"
    assert world.row["runtime_reason"].startswith("did not become ready on onnx:")
    assert world.row["state"] == deploy.STARTING


def test_a_replica_that_does_not_come_up_on_the_pipeline_fails_and_stops_them_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = _world(tmp_path, monkeypatch, "sklearn")
    world.replicas = 3
    world.serve_errors[("sklearn", 2)] = StackError("deployment-churn-7-r2 was not healthy")

    with pytest.raises(deploy.DeploymentError, match="deployment-churn-7-r2 was not healthy"):
        deploy.start(DEPLOYMENT_ID, settings=world.settings)

    assert len(world.served) == 3  # every replica got its start
    assert world.stopped == ["sklearn"] * 3
    assert world.row["state"] == deploy.FAILED


def test_an_onnx_parity_miss_on_one_replica_restarts_every_replica_on_the_pipeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = _world(tmp_path, monkeypatch, "onnx")
    _started(world, replicas=2)
    first, second = (_url(port) for port in _started_ports(2))
    world.answers |= {
        ("onnx", first): _right("onnx"),
        ("onnx", second): _off("onnx"),
        "sklearn": _right("sklearn"),
    }

    result = deploy.smoke_test(DEPLOYMENT_ID, settings=world.settings)

    assert result["runtime"] == "sklearn"
    reason = world.row["runtime_reason"]
    assert reason.startswith(f"parity on {len(ROWS)} served holdout rows: replica 1: ")
    assert world.stopped == ["onnx", "onnx"]
    assert sorted(world.served) == [("sklearn", FIRST_PORT), ("sklearn", FIRST_PORT + 1)]
    assert world.row["ports"] == [FIRST_PORT, FIRST_PORT + 1]
    assert world.noted == ["sklearn"]


def test_a_pipeline_replica_that_does_not_answer_fails_the_deployment_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = _world(tmp_path, monkeypatch, "sklearn")
    _started(world, replicas=3)
    third = _url(_started_ports(3)[2])
    refused = "smoke test request failed: connection refused"
    world.answers |= {"sklearn": _right("sklearn"), ("sklearn", third): _unanswered(refused)}

    with pytest.raises(deploy.DeploymentError, match="connection refused"):
        deploy.smoke_test(DEPLOYMENT_ID, settings=world.settings)

    assert world.row["reason"] == f"replica 2 ({third}): {refused}"
    assert world.row["state"] == deploy.FAILED
    assert world.stopped == ["sklearn"] * 3
    assert world.served == [] and world.noted == []


def test_replicas_that_all_answer_right_pass_with_the_largest_difference_of_any(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = _world(tmp_path, monkeypatch, "onnx")
    _started(world, replicas=2)
    first, second = (_url(port) for port in _started_ports(2))
    world.answers |= {("onnx", first): _right("onnx"), ("onnx", second): _off("onnx", by=1e-7)}

    result = deploy.smoke_test(DEPLOYMENT_ID, settings=world.settings)

    assert result["runtime"] == "onnx"
    assert 0 < result["max_abs_diff"] < deploy.TOLERANCE["onnx"]
    assert world.served == [] and world.stopped == []
