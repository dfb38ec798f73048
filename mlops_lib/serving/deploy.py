"""Deployments: package the champion as a Bento, start it, smoke-test it, switch to it.

Each step is one function the ``<project>__deploy`` DAG calls with a deployment id:

* ``package``: import ``models:/<project>/<champion version>`` into the BentoML store,
  compile it to ONNX where it converts and matches the pipeline on holdout rows
  (:mod:`mlops_lib.serving.compiled`), ``bentoml build`` it, record a deployment (state
  ``built``) with the Bento tag and the runtime that will score (``onnx`` or ``sklearn``,
  with the reason when not onnx);
* ``start``: serve the Bento as the spec's ``serving.replicas`` processes, each on a free
  port of its own, until every one's ``/readyz`` answers (state ``starting``); a graph that
  keeps a replica from starting is replaced by the pipeline (every replica restarts with
  ``serving_runtime: sklearn`` and the deployment records why);
* ``smoke_test``: holdout rows of the model's training commit must get the MLflow model's
  predictions through HTTP from every replica (probabilities within 1e-5 from the ONNX
  graph, 1e-9 from the pipeline); a graph that misses or answers 5xx on any replica is
  replaced by the pipeline the same way, and the runtime goes into the model card;
* ``switch``: point the project's stable endpoint (the gateway, balancing between the
  replicas) at it (state ``active``), stop and retire the previous deployment.

Replicas: replica 0 is the process ``deployment-<project>-<id>`` (the one process a
deployment had before replicas), replica ``i`` is ``deployment-<project>-<id>-r<i>``
(:func:`replica_name`). The deployment records their ports, replica 0 first (``ports``;
``port`` and ``url`` are replica 0's). They start, fall back, pass or fail and stop together.

A failed ``start`` or ``smoke_test`` stops the candidate and marks it ``failed`` with the
reason; the route is untouched, so the previous deployment keeps serving. ``rollback``
returns to the last deployment that served before the current one (with as many replicas as
it had), ``restore`` starts the replicas of the active deployments whose process is gone,
after a stop or crash (`mlops stack up`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import time
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from mlops_lib.datasets import holdout
from mlops_lib.lineage import DeploymentRow, lineage_store
from mlops_lib.quality import as_written
from mlops_lib.registry import (
    champion_version,
    model_version_tags,
    note_serving_runtime,
    unapproved_reason,
)
from mlops_lib.serving.compiled import (
    PARITY_TOLERANCE,
    Compiled,
    compile_pipeline,
    parity_problem,
)
from mlops_lib.serving.package import (
    PROBE_HEADER,
    RUNTIME_HEADER,
    bento_model_path,
    build_bento,
    import_model,
    probe_token,
    serve_bento_command,
    serve_env,
    use_store,
)
from mlops_lib.settings import Settings, get_settings
from mlops_lib.spec import ProjectSpec, project_spec
from mlops_lib.stack.gateway import apply_routes, read_routes, route_ports, write_route
from mlops_lib.stack.manager import ServiceStatus
from mlops_lib.stack.procs import (
    ManagedProcess,
    StackError,
    file_lock,
    free_port,
    http_ok,
    port_in_use,
)
from mlops_lib.tracking import connect as connect_mlflow

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)
Log = Callable[[str], None]

BUILT, STARTING, ACTIVE, RETIRED, FAILED, ROLLED_BACK = (
    "built",
    "starting",
    "active",
    "retired",
    "failed",
    "rolled_back",
)


# Holdout rows the compiled graph must match before it may serve.
COMPILE_ROWS = 5000
# How far served probabilities (or regression values) may be from the pipeline's, by runtime.
TOLERANCE = {"onnx": PARITY_TOLERANCE, "sklearn": 1e-9}


class DeploymentError(RuntimeError):
    """A deployment could not go live; the message names project, deployment and cause."""


class DeploymentRef(TypedDict):
    """What a deploy task passes on: ids and tags, no data."""

    id: int
    project: str
    bento_tag: str
    model_version: int
    model_uri: str
    port: int | None
    ports: list[int] | None
    url: str
    state: str


class Activated(DeploymentRef):
    """A deployment that now serves the project's stable endpoint."""

    previous: list[int]
    endpoint: str


class SmokeResult(TypedDict):
    id: int
    rows: int
    max_abs_diff: float
    runtime: str
    # Store features: the share of sampled entities whose online value differs from the
    # offline store's as of now, per feature; empty without store features.
    feature_skew: dict[str, float]


def replica_name(deployment: DeploymentRow, replica: int = 0) -> str:
    """The process name of a replica: ``deployment-<project>-<id>`` for replica 0 (its log and
    pid file keep the names they had before replicas), ``...-r<i>`` for replica ``i``."""
    name = f"deployment-{deployment['project']}-{deployment['id']}"
    return name if replica == 0 else f"{name}-r{replica}"


def process(settings: Settings, deployment: DeploymentRow, replica: int = 0) -> ManagedProcess:
    """The supervised ``bentoml serve`` process of one replica of a deployment."""
    name = replica_name(deployment, replica)
    return ManagedProcess(name, settings.stack_dir / "run", settings.stack_dir / "logs")


def replica_ports(deployment: DeploymentRow) -> list[int | None]:
    """Each replica's port, replica 0 first: the recorded ``ports``, or the one ``port`` of a
    row from before replicas (None before it was started)."""
    return list(deployment.get("ports") or [deployment["port"]])


def replicas(settings: Settings, deployment: DeploymentRow) -> list[ManagedProcess]:
    """Each replica's process, replica 0 first."""
    return [process(settings, deployment, i) for i in range(len(replica_ports(deployment)))]


def replica_url(settings: Settings, deployment: DeploymentRow, port: int | None) -> str:
    """Where the replica on ``port`` answers (replica 0's recorded URL when no port is)."""
    return f"http://{settings.host}:{port}" if port else deployment["url"]


def _replica_urls(settings: Settings, deployment: DeploymentRow) -> list[str]:
    return [replica_url(settings, deployment, port) for port in replica_ports(deployment)]


def endpoint(settings: Settings, project: str) -> str:
    """The project's stable URL (prefix of /predict, /readyz, /metrics, ...)."""
    return f"{settings.serving_base_url}/{project}"


def _describe(dep: DeploymentRow) -> str:
    return (
        f"deployment {dep['id']} of {dep['project']} (v{dep['model_version']}, {dep['bento_tag']})"
    )


def _get(deployment_id: int, settings: Settings) -> DeploymentRow:
    dep = lineage_store(settings).deployment(int(deployment_id))
    if dep is None:
        raise DeploymentError(f"no deployment {deployment_id}")
    return dep


def _stop(dep: DeploymentRow, settings: Settings) -> list[str]:
    """Stop every replica of a deployment, all at once; what happened to each."""
    procs = replicas(settings, dep)
    with ThreadPoolExecutor(max_workers=len(procs)) as pool:
        return list(pool.map(lambda proc: proc.stop(), procs))


def _free_ports(n: int, settings: Settings, avoid: Collection[int | None] = ()) -> list[int]:
    """``n`` distinct ports that are free right now, none of ``avoid``."""
    ports: list[int] = []
    for _ in range(50 * n):
        if len(ports) == n:
            break
        port = free_port(settings.host)
        if port not in ports and port not in avoid:
            ports.append(port)
    if len(ports) < n:
        raise StackError(f"no {n} distinct free ports found")
    return ports


def _place(
    dep: DeploymentRow, ports: list[int], settings: Settings, **values: Any
) -> DeploymentRow:
    """Record the ports of a deployment's replicas (replica 0's as ``port`` and ``url`` too)
    and any other ``values``."""
    return lineage_store(settings).update_deployment(
        dep["id"], ports=ports, port=ports[0], url=replica_url(settings, dep, ports[0]), **values
    )


def _fail(dep: DeploymentRow, reason: str, settings: Settings) -> DeploymentError:
    """Stop a candidate, mark it failed; the route (old deployment) is left alone."""
    _stop(dep, settings)
    lineage_store(settings).update_deployment(dep["id"], state=FAILED, reason=reason)
    log.error("%s failed: %s", _describe(dep), reason)
    return DeploymentError(f"{_describe(dep)} failed: {reason}")


def package(
    project: str,
    version: int | None = None,
    *,
    dag_run_id: str = "",
    settings: Settings | None = None,
) -> DeploymentRef:
    """Import the champion (or ``version``) into the Bento store and build its Bento."""
    settings = settings or get_settings()
    spec = project_spec(project, settings)
    if version is None:
        version = champion_version(project, settings)
        if version is None:
            raise DeploymentError(f"model {project!r} has no champion to deploy")
    refused = unapproved_reason(project, int(version), settings)
    if refused:
        raise DeploymentError(refused)
    store = lineage_store(settings)
    # A candidate left behind by an interrupted deploy run never went live: retire it.
    for stale in store.deployments(project):
        if stale["state"] in (BUILT, STARTING):
            _fail(stale, "superseded by a newer deployment before it went live", settings)
    model_uri = f"models:/{project}/{version}"
    model_tag = import_model(project, model_uri, version, settings)
    if settings.serving_runtime == "sklearn":
        compiled = Compiled("sklearn", "serving_runtime is sklearn", None, None, 0)
    else:
        compiled = compile_model(spec, model_tag, int(version), settings)
    bento_tag = build_bento(spec, model_tag, version, settings, graph=compiled.onnx)
    row = {"bento_tag": bento_tag, "model_tag": model_tag, "model_uri": model_uri, "url": ""}
    row |= {"runtime": compiled.runtime, "runtime_reason": compiled.reason}
    retried = _earlier_try(store.deployments(project), dag_run_id, int(version))
    if retried is not None:  # a retry of this task: its row again, not a second one
        dep = store.update_deployment(retried["id"], state=BUILT, reason="", **row)
    else:
        dep = store.record_deployment(
            project=project,
            model_version=int(version),
            state=BUILT,
            reason="",
            dag_run_id=dag_run_id,
            **row,
        )
    log.info(
        "%s: built bento %s from %s (model %s), runtime %s%s",
        project,
        bento_tag,
        model_uri,
        model_tag,
        compiled.runtime,
        f" ({compiled.reason})" if compiled.reason else "",
    )
    return _ref(dep)


def compile_model(spec: ProjectSpec, model_tag: str, version: int, settings: Settings) -> Compiled:
    """The model imported into the Bento store as an ONNX graph, checked on holdout rows
    taken as requests are (JSON rows through the serving input path, plus a copy of a row
    with each nullable feature null), or the reason the pipeline itself will score."""
    import mlflow.sklearn  # heavy: kept out of DAG parsing

    from mlops_lib.serving.predictor import Predictor  # imports scikit-learn via features

    try:
        rows = _as_requests(
            spec, holdout_sample(spec, version, COMPILE_ROWS, settings), stored=True
        )
    except Exception as exc:
        return Compiled("sklearn", f"no holdout rows to check a graph on: {exc}", None, None, 0)
    rows += [rows[0] | {name: None} for name in spec.features if spec.schema.columns[name].nullable]
    model = mlflow.sklearn.load_model(bento_model_path(model_tag, settings))
    frame = Predictor(spec, model, str(version)).frame_from_rows(rows)
    requests = {name: [row[name] for row in rows] for name in spec.model_inputs}
    return compile_pipeline(model, frame, requests=requests)


def _earlier_try(deps: list[DeploymentRow], dag_run_id: str, version: int) -> DeploymentRow | None:
    """The row an earlier try of the same package task left (never one that went live)."""
    if not dag_run_id:
        return None
    return next(
        (
            d
            for d in deps
            if d["dag_run_id"] == dag_run_id
            and d["model_version"] == version
            and d["state"] in (BUILT, STARTING, FAILED)
        ),
        None,
    )


def _ref(dep: DeploymentRow) -> DeploymentRef:
    """What a DAG passes on: ids and tags, no data."""
    keys = (
        "id",
        "project",
        "bento_tag",
        "model_version",
        "model_uri",
        "port",
        "ports",
        "url",
        "state",
    )
    return {k: dep[k] for k in keys}


def _serve(dep: DeploymentRow, port: int, settings: Settings, replica: int = 0) -> None:
    """Start one replica of the Bento on a port and wait for its /readyz (raises StackError);
    it scores with the runtime the deployment records."""
    use_store(settings)
    proc = process(settings, dep, replica)
    token = probe_token(settings, dep["project"], dep["id"])
    logged = proc.log_file.stat().st_size if proc.log_file.exists() else 0
    proc.start(
        serve_bento_command(dep["bento_tag"], port, settings.host),
        env=serve_env(settings, dep["project"], token, runtime=dep["runtime"]),
        cwd=settings.stack_dir,
    )
    url = f"http://{settings.host}:{port}"
    proc.wait_healthy(_ready(url, proc.log_file, logged), settings.serving_start_timeout)


def _serve_replicas(
    dep: DeploymentRow, ports: dict[int, int], settings: Settings
) -> dict[int, BaseException]:
    """Start the given replicas (replica -> port) at once and wait until each is ready; the
    errors of those that did not come up, by replica."""
    with ThreadPoolExecutor(max_workers=len(ports)) as pool:
        started = {i: pool.submit(_serve, dep, port, settings, i) for i, port in ports.items()}
    return {i: error for i, job in started.items() if (error := job.exception()) is not None}


def _serve_all(dep: DeploymentRow, settings: Settings) -> None:
    """Every replica of a deployment on its recorded port, each one waited for; raises the
    error of the first that did not come up (the others are left running)."""
    ports = {i: port for i, port in enumerate(replica_ports(dep)) if port}
    errors = _serve_replicas(dep, ports, settings)
    if errors:
        raise errors[min(errors)]


# What uvicorn logs when the service's own start-up raised; BentoML then starts the service
# again and again (its process lives on), so waiting for /readyz would wait out the timeout.
STARTUP_FAILED = "Application startup failed"


def _ready(url: str, log_file: Path, offset: int) -> Callable[[], bool]:
    """A readiness check that raises StackError as soon as the service's start-up failed,
    naming the error it logged (``offset``: where this start's log lines begin)."""

    def check() -> bool:
        if http_ok(f"{url}/readyz"):
            return True
        with contextlib.suppress(OSError), log_file.open(errors="replace") as fh:
            fh.seek(offset)
            lines = fh.read().splitlines()
            if any(STARTUP_FAILED in line for line in lines):
                raise StackError(
                    f"the service failed to start: {_logged_error(lines)}; last lines of "
                    f"{log_file}:\n" + "\n".join(lines[-15:])
                )
        return False

    return check


def _logged_error(lines: list[str]) -> str:
    """The last exception line of a log (``module.Error: message``)."""
    errors = [
        line.strip()
        for line in lines
        if line
        and not line[0].isspace()
        and not line[0].isdigit()
        and ": " in line
        and not line.startswith(("Traceback", "---"))
    ]
    return errors[-1][:300] if errors else "see the log"


def start(deployment_id: int, settings: Settings | None = None) -> DeploymentRef:
    """Serve a built deployment as the spec's ``serving.replicas`` processes, each on a free
    port of its own; ready when every replica's /readyz answers."""
    settings = settings or get_settings()
    dep = _get(deployment_id, settings)
    try:
        count = project_spec(dep["project"], settings).serving.replicas
    except Exception as exc:  # the spec was changed since `package` and no longer loads
        raise _fail(dep, f"the project's spec does not load: {exc}", settings) from exc
    dep = _place(dep, _free_ports(count, settings), settings, state=STARTING)
    try:
        _serve_all(dep, settings)
    except StackError as exc:
        if dep["runtime"] != "onnx":
            raise _fail(dep, f"did not become ready: {exc}", settings) from exc
        dep = _fall_back(dep, f"did not become ready on onnx: {_cause_of(exc)}", settings)
    except Exception as exc:  # a missing setting, no process: no runtime would do better
        raise _fail(dep, f"did not become ready: {exc}", settings) from exc
    log.info(
        "%s: serving on %s (log %s)",
        _describe(dep),
        ", ".join(_replica_urls(settings, dep)),
        process(settings, dep).log_file,
    )
    return _ref(dep)


def _cause_of(exc: StackError) -> str:
    """What stopped the process, in one line: the first line of the error and the last line
    of the log tail it carries (the service's own last words)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    head, last = lines[0][:200], lines[-1][:300]
    return head if len(lines) == 1 else f"{head} ... {last}"


def holdout_sample(spec: ProjectSpec, version: int, n: int, settings: Settings) -> pd.DataFrame:
    """The first ``n`` holdout rows of the commit the version was trained on (with the
    store features of its training set, for a project that has them)."""
    commit = model_version_tags(spec.name, version, settings).get("lakefs_commit")
    if not commit:
        raise DeploymentError(f"{spec.name} v{version} has no lakefs_commit tag (no holdout)")
    return holdout(spec, commit, settings).rows.head(n).reset_index(drop=True)


def smoke_rows(spec: ProjectSpec, version: int, n: int, settings: Settings) -> list[dict[str, Any]]:
    """Holdout rows as a client sends them (see :func:`_as_requests`)."""
    return _as_requests(spec, holdout_sample(spec, version, n, settings))


def _as_requests(spec: ProjectSpec, sample: pd.DataFrame, stored: bool = False) -> list[dict]:
    """Rows as a client sends them: the feature columns, and the join keys the service looks
    store features up by (``stored``: with the training set's store features as well)."""
    from mlops_lib.feature_store.online import model_join_keys  # no I/O: key names

    keys = (
        [k for k in model_join_keys(spec) if k not in spec.features] if spec.store_features else []
    )
    rows = sample[[*spec.features, *keys, *(spec.store_features if stored else [])]].copy()
    for name in spec.features:
        col = spec.schema.columns[name]
        if col.type == "datetime":  # sent as a client writes it
            rows[name] = as_written(rows[name], col)
    return json.loads(rows.to_json(orient="records", date_format="iso"))


def smoke_test(deployment_id: int, settings: Settings | None = None) -> SmokeResult:
    """Every replica of the candidate must answer holdout rows as the MLflow model does: the
    same classes (or values) and probabilities within the runtime's tolerance. A compiled
    graph that misses, or answers 5xx, on any replica gives way to the pipeline (every
    replica restarts, reason recorded) before the candidate fails."""
    settings = settings or get_settings()
    dep = _get(deployment_id, settings)
    spec = project_spec(dep["project"], settings)
    try:
        sample = holdout_sample(spec, dep["model_version"], settings.smoke_rows, settings)
    except Exception as exc:
        raise _fail(dep, f"smoke test has no holdout rows: {exc}", settings) from exc
    try:  # looked up first: a feature store that cannot answer is named as the cause
        sample, online = _with_online_features(spec, sample, settings)
    except Exception as exc:
        raise _fail(dep, f"smoke test: the feature store cannot answer: {exc}", settings) from exc
    rows = _as_requests(spec, sample)
    served, broken = _first_answers(spec, dep, rows, settings)
    try:
        expected = _expected_answers(spec, dep, rows, online, settings)
    except Exception as exc:
        raise _fail(dep, f"smoke test: the MLflow model itself fails: {exc}", settings) from exc
    skew = _skew(spec, sample, online, settings)
    if served is not None:
        miss, max_diff = _parity_of_replicas(served, expected)
        if miss and _runtime_of(served) == "onnx":
            broken = f"parity on {len(rows)} served holdout rows: {miss}"
    if broken:  # the graph misses or breaks: the pipeline gets its chance
        dep = _fall_back(dep, broken, settings)
        served = _answers_or_fail(spec, dep, rows, settings)
        miss, max_diff = _parity_of_replicas(served, expected)
    if miss:
        raise _fail(dep, f"smoke test on {len(rows)} holdout rows: {miss}", settings)
    runtime = _runtime_of(served)
    if dep["runtime"] and runtime != dep["runtime"]:
        raise _fail(dep, f"smoke test: served by {runtime}, recorded {dep['runtime']}", settings)
    _note_runtime(dep, runtime, settings)
    log.info(
        "%s: smoke test passed on %d holdout rows by %d replica(s) (runtime %s, max |diff| %.3g)",
        _describe(dep),
        len(rows),
        len(served),
        runtime,
        max_diff,
    )
    if skew:
        log.info("%s: online vs training-set store features differ on %s", _describe(dep), skew)
    return {
        "id": dep["id"],
        "rows": len(rows),
        "max_abs_diff": max_diff,
        "runtime": runtime,
        "feature_skew": skew,
    }


def _with_online_features(
    spec: ProjectSpec, sample: pd.DataFrame, settings: Settings
) -> tuple[pd.DataFrame, dict[str, list]]:
    """The sample rows the service can answer and the store features it will look up for
    them (as the online store holds them now). Under ``unknown_entity: reject`` only rows
    whose entity the store knows are kept: the others would be answered 422 by design."""
    if not spec.store_features:
        return sample, {}
    from mlops_lib.feature_store.online import OnlineFeatureClient, model_join_keys  # HTTP

    client = OnlineFeatureClient(spec, settings, reject_unknown=False)
    try:
        found = client.fetch_sync({k: sample[k].tolist() for k in model_join_keys(spec)})
    finally:
        client.close()
    keep = [True] * len(sample)
    if spec.feature_store and spec.feature_store.unknown_entity == "reject":
        keep = found.found
    if not any(keep):
        raise DeploymentError("no holdout entity has online features: run the features DAG")
    online = {
        name: [v for v, k in zip(col, keep, strict=True) if k]
        for name, col in found.columns.items()
    }
    return sample[keep].reset_index(drop=True), online


def _skew(
    spec: ProjectSpec, sample: pd.DataFrame, online: dict[str, list], settings: Settings
) -> dict[str, float]:
    """Online against offline store features for the sampled entities (see
    :func:`~mlops_lib.feature_store.store.online_skew`); empty without store features."""
    if not spec.store_features:
        return {}
    from mlops_lib.feature_store.online import model_join_keys  # no I/O: key names
    from mlops_lib.feature_store.store import online_skew  # reads the published tables

    keys = sample[model_join_keys(spec)[0]].tolist()
    try:
        return online_skew(spec, keys, online, settings)
    except Exception as exc:  # a report, not a gate: the deploy goes on
        log.warning("%s: skew not measured: %s", spec.name, exc)
        return {}


def _first_answers(
    spec: ProjectSpec, dep: DeploymentRow, rows: list[dict[str, Any]], settings: Settings
) -> tuple[list[_Served] | None, str]:
    """The answers of every replica of the candidate; or, when its compiled graph broke on
    them (5xx, no connection), none and why: the pipeline then gets its chance."""
    try:
        return _every_replica(spec, dep, rows, settings), ""
    except _Unanswered as exc:
        if dep["runtime"] != "onnx" or not exc.server_error:
            raise _fail(dep, str(exc), settings) from exc
        return None, str(exc)


def _answers_or_fail(
    spec: ProjectSpec, dep: DeploymentRow, rows: list[dict[str, Any]], settings: Settings
) -> list[_Served]:
    try:
        return _every_replica(spec, dep, rows, settings)
    except _Unanswered as exc:
        raise _fail(dep, str(exc), settings) from exc


def _every_replica(
    spec: ProjectSpec, dep: DeploymentRow, rows: list[dict[str, Any]], settings: Settings
) -> list[_Served]:
    """Each replica's answers to the same rows, replica 0 first; when one does not answer,
    the reason names it (if there are several)."""
    urls = _replica_urls(settings, dep)
    answers = []
    for i, url in enumerate(urls):
        try:
            answers.append(_served_answers(spec, dep, rows, settings, url))
        except _Unanswered as exc:
            if len(urls) == 1:
                raise
            raise _Unanswered(f"replica {i} ({url}): {exc}", exc.server_error) from exc
    return answers


class _Unanswered(Exception):
    """The candidate did not answer the smoke rows (``server_error``: it answered 5xx or
    the connection failed, as a runtime that breaks on them would)."""

    def __init__(self, reason: str, server_error: bool) -> None:
        super().__init__(reason)
        self.server_error = server_error


@dataclass
class _Served:
    """A candidate's answers to the smoke rows and the runtime that gave them."""

    runtime: str = ""
    predictions: list = field(default_factory=list)
    probabilities: list = field(default_factory=list)


def _served_answers(
    spec: ProjectSpec,
    dep: DeploymentRow,
    rows: list[dict[str, Any]],
    settings: Settings,
    url: str,
) -> _Served:
    """One replica's predictions and probabilities for the rows, over HTTP in batches."""
    import httpx  # kept out of DAG parsing

    served = _Served()
    step = spec.serving.max_batch_size
    with httpx.Client(base_url=url, timeout=60, trust_env=False) as http:
        for i in range(0, len(rows), step):
            try:
                resp = http.post(
                    "/predict",
                    json={"instances": rows[i : i + step]},
                    # Not production traffic: kept out of the prediction log.
                    headers={PROBE_HEADER: probe_token(settings, dep["project"], dep["id"])},
                )
            except httpx.HTTPError as exc:
                raise _Unanswered(f"smoke test request failed: {exc}", True) from exc
            if resp.status_code != 200:
                raise _Unanswered(
                    f"smoke test: /predict answered {resp.status_code} on holdout rows "
                    f"{i}-{i + step - 1}: {resp.text[:500]}",
                    resp.status_code >= 500,
                )
            body = resp.json()
            if body.get("model_version") != str(dep["model_version"]):
                raise _Unanswered(
                    f"smoke test: served model version {body.get('model_version')!r}, "
                    f"expected {dep['model_version']}",
                    False,
                )
            served.runtime = resp.headers.get(RUNTIME_HEADER, "")
            served.predictions.extend(body.get("predictions") or [])
            served.probabilities.extend(body.get("probabilities") or [])
    return served


def _expected_answers(
    spec: ProjectSpec,
    dep: DeploymentRow,
    rows: list[dict[str, Any]],
    online: dict[str, list],
    settings: Settings,
) -> dict[str, Any]:
    """What the MLflow model itself answers for the rows, with the store features the
    service looked up."""
    import mlflow  # heavy: kept out of DAG parsing
    import mlflow.sklearn
    import pandas as pd

    from mlops_lib.features import model_input  # imports scikit-learn
    from mlops_lib.serving.predictor import Predictor  # imports scikit-learn via features

    connect_mlflow(settings)
    model = mlflow.sklearn.load_model(dep["model_uri"])
    predictor = Predictor(spec, model, version=str(dep["model_version"]))
    frame = pd.DataFrame(rows).assign(**online)
    return predictor.response(predictor.scores(model_input(frame, spec)))


def _parity(served: _Served, expected: dict[str, Any]) -> tuple[str, float]:
    """What differs between served and expected answers (empty when nothing), and the
    largest difference; the tolerance is the serving runtime's."""
    import numpy as np  # heavy: kept out of DAG parsing

    classify = bool(expected.get("probabilities"))
    if classify:  # the classes follow from the probabilities (their argmax)
        names = list(expected["probabilities"][0])
        got = np.array([[p.get(c, np.nan) for c in names] for p in served.probabilities])
        want = np.array([[p[c] for c in names] for p in expected["probabilities"]])
    else:
        got = np.asarray(served.predictions, dtype="float64")
        want = np.asarray(expected["predictions"], dtype="float64")
    if got.shape != want.shape:
        return f"{len(got)} answers for {len(want)} rows", float("inf")
    tolerance = TOLERANCE.get(served.runtime, TOLERANCE["sklearn"])
    problem = parity_problem(got, want, classify, tolerance)
    return problem, float(np.abs(got - want).max(initial=0.0))


def _parity_of_replicas(served: list[_Served], expected: dict[str, Any]) -> tuple[str, float]:
    """What differs between any replica's answers and the expected ones (the first replica
    that misses, named when there are several; empty when none), and the largest difference
    over all replicas."""
    found = [_parity(answers, expected) for answers in served]
    misses = [(i, miss) for i, (miss, _) in enumerate(found) if miss]
    max_diff = max(diff for _, diff in found)
    if not misses:
        return "", max_diff
    i, miss = misses[0]
    return (miss if len(served) == 1 else f"replica {i}: {miss}"), max_diff


def _runtime_of(served: list[_Served]) -> str:
    """The runtime the replicas answered with (several, joined, when they differ)."""
    return "+".join(sorted({answers.runtime for answers in served}))


def _note_runtime(dep: DeploymentRow, runtime: str, settings: Settings) -> None:
    """The serving runtime on the model card; informational, so a failure only warns."""
    try:
        note_serving_runtime(
            dep["project"], dep["model_version"], runtime, dep["runtime_reason"], settings
        )
    except Exception as exc:
        log.warning("%s: the model card keeps no serving line: %s", _describe(dep), exc)


def _fall_back(dep: DeploymentRow, reason: str, settings: Settings) -> DeploymentRow:
    """Restart every replica of the candidate, on fresh ports, with the scikit-learn
    pipeline."""
    log.warning("%s: %s; falling back to the scikit-learn pipeline", _describe(dep), reason)
    _stop(dep, settings)
    ports = _free_ports(len(replica_ports(dep)), settings)
    dep = _place(dep, ports, settings, runtime="sklearn", runtime_reason=reason)
    try:
        _serve_all(dep, settings)
    except (StackError, RuntimeError) as exc:
        raise _fail(dep, f"did not become ready on the fallback runtime: {exc}", settings) from exc
    return dep


def _route_to(dep: DeploymentRow, settings: Settings, ports: list[int] | None = None) -> None:
    """Point the project's stable endpoint (the gateway's route) at a deployment: at its
    replicas on ``ports`` (default: every one)."""
    ports = ports or [port for port in replica_ports(dep) if port]
    route = {"port": ports[0], "ports": ports, "deployment": dep["id"]}
    route |= {k: dep[k] for k in ("model_version", "bento_tag")}
    before = read_routes(settings.stack_dir).get(dep["project"])
    write_route(settings.stack_dir, dep["project"], route)
    try:
        # New connections reach the deployment once this returns (the gateway reloaded).
        apply_routes(settings)
    except Exception:
        write_route(settings.stack_dir, dep["project"], before)  # the old route stays
        raise


def _activate(dep: DeploymentRow, settings: Settings, retire_as: str, reason: str) -> Activated:
    """Route the project to ``dep`` and stop whatever served before."""
    store = lineage_store(settings)
    # One activation of a project at a time (a switch and a rollback racing), so its route
    # and its active deployment in the lineage store always agree.
    with file_lock(settings.stack_dir / "serving" / dep["project"] / "activate.lock"):
        previous = [d for d in store.deployments(dep["project"], ACTIVE) if d["id"] != dep["id"]]
        _route_to(dep, settings)
        now = datetime.now(UTC)
        active = store.update_deployment(dep["id"], state=ACTIVE, activated_at=now, reason=reason)
        for old in previous:
            _stop(old, settings)
            store.update_deployment(
                old["id"], state=retire_as, reason=f"replaced by deployment {dep['id']}"
            )
    log.info(
        "%s: %s now serves %s (replaced %s)",
        dep["project"],
        _describe(dep),
        endpoint(settings, dep["project"]),
        [d["id"] for d in previous] or "nothing",
    )
    out = _ref(active)
    out["previous"] = [d["id"] for d in previous]
    out["endpoint"] = endpoint(settings, dep["project"])
    return out


def switch(deployment_id: int, settings: Settings | None = None) -> Activated:
    """Make a smoke-tested deployment the project's stable endpoint; stop the old one."""
    settings = settings or get_settings()
    dep = _get(deployment_id, settings)
    running = all(proc.is_running() for proc in replicas(settings, dep))
    if dep["state"] != STARTING or not running:
        raise DeploymentError(f"{_describe(dep)} is {dep['state']}, not a running candidate")
    return _activate(dep, settings, RETIRED, "")


def rollback(project: str, settings: Settings | None = None) -> Activated:
    """Serve the last deployment that was live before the current one again."""
    settings = settings or get_settings()
    store = lineage_store(settings)
    current = store.deployments(project, ACTIVE)
    if not current:
        raise DeploymentError(f"{project} has no active deployment to roll back from")
    candidates = [
        d
        for d in store.deployments(project, RETIRED)
        if d["activated_at"] and d["id"] < current[0]["id"]
    ]
    if not candidates:
        raise DeploymentError(
            f"{project} has no earlier deployment that served (current: {_describe(current[0])})"
        )
    target = candidates[0]  # with as many replicas as it had
    target = _place(target, _free_ports(len(replica_ports(target)), settings), settings)
    try:
        _serve_all(target, settings)
    except RuntimeError as exc:  # StackError, or a setting it needs is missing
        _stop(target, settings)
        raise DeploymentError(
            f"rollback of {project}: {_describe(target)} did not start: {exc}; "
            f"{_describe(current[0])} keeps serving"
        ) from exc
    return _activate(target, settings, ROLLED_BACK, f"rollback from deployment {current[0]['id']}")


def restore(settings: Settings | None = None, *, log_line: Log = print) -> list[DeploymentRef]:
    """Start every replica of an active deployment whose process is gone (after `stack down`
    or a crash) and route the project to the replicas that serve."""
    settings = settings or get_settings()
    restored = []
    for dep in lineage_store(settings).deployments(state=ACTIVE):
        gone = [i for i, proc in enumerate(replicas(settings, dep)) if not proc.is_running()]
        if gone and (back := _restore_replicas(dep, gone, settings, log_line)) is not None:
            restored.append(_ref(back))
    return restored


def _restore_replicas(
    dep: DeploymentRow, gone: list[int], settings: Settings, log_line: Log
) -> DeploymentRow | None:
    """Start the replicas ``gone`` again and route to those that serve (None when none does;
    the route is then left alone)."""
    ports = _reclaimed_ports(dep, gone, settings)
    if ports != replica_ports(dep):
        dep = _place(dep, ports, settings)
    where = ", ".join(f"{i} on port {ports[i]}" for i in gone)
    log_line(f"serving/{dep['project']}: restoring {_describe(dep)}: replica {where}")
    errors = _serve_replicas(dep, {i: ports[i] for i in gone}, settings)
    for i, exc in sorted(errors.items()):
        process(settings, dep, i).stop()
        log_line(f"serving/{dep['project']}: could not restore replica {i}: {exc}")
    serving = [port for i, port in enumerate(ports) if i not in errors]
    if not serving:
        return None
    _route_to(dep, settings, serving)
    return dep


def _reclaimed_ports(dep: DeploymentRow, gone: list[int], settings: Settings) -> list[int]:
    """Each replica's port: the recorded one, but for a replica that is gone a fresh one when
    its own is taken (or was never recorded), none of the others' ports."""
    ports = replica_ports(dep)
    taken = [i for i in gone if not ports[i] or port_in_use(settings.host, ports[i])]
    fresh = iter(_free_ports(len(taken), settings, avoid=ports))
    return [next(fresh) if i in taken else int(port) for i, port in enumerate(ports)]


def stop_all(settings: Settings, *, log_line: Log = print) -> None:
    """Stop every deployment process, every replica's (their states stay; `stack up`
    restores them)."""
    for pid_file in sorted((settings.stack_dir / "run").glob("deployment-*.pid")):
        proc = ManagedProcess(
            pid_file.stem, settings.stack_dir / "run", settings.stack_dir / "logs"
        )
        log_line(f"{pid_file.stem}: {proc.stop()}")


def status(settings: Settings) -> list[ServiceStatus]:
    """One row per replica of each active deployment: ``serving/<project>`` for replica 0,
    ``serving/<project>#<i>`` for replica ``i``, each with the project's endpoint (``url``),
    its own address (``replica_url``), pid and health (its own /readyz, its port routed)."""
    routes = read_routes(settings.stack_dir)
    rows: list[ServiceStatus] = []
    for dep in lineage_store(settings).deployments(state=ACTIVE):
        route = routes.get(dep["project"], {})
        routed = route_ports(route) if route.get("deployment") == dep["id"] else []
        for replica, port in enumerate(replica_ports(dep)):
            rows.append(_replica_status(settings, dep, replica, port, routed))
    return rows


def _replica_status(
    settings: Settings, dep: DeploymentRow, replica: int, port: int | None, routed: list[int]
) -> ServiceStatus:
    """The ``stack status`` row of one replica (``routed``: the ports the gateway sends the
    project's requests to, when they go to this deployment)."""
    proc = process(settings, dep, replica)
    pid = proc.read_pid()
    url = replica_url(settings, dep, port)
    healthy = pid is not None and http_ok(f"{url}/readyz")
    return {
        "service": f"serving/{dep['project']}" + (f"#{replica}" if replica else ""),
        "state": "healthy"
        if healthy and port in routed
        else ("stopped" if pid is None else "unhealthy"),
        "url": endpoint(settings, dep["project"]),
        "pid": pid,
        "log": str(proc.log_file),
        "model_version": dep["model_version"],
        "bento_tag": dep["bento_tag"],
        "deployment": dep["id"],
        "runtime": dep["runtime"] or "sklearn",
        "replica": replica,
        "replica_url": url,
    }


def serve_active(
    project: str,
    *,
    host: str,
    port: int,
    settings: Settings | None = None,
    poll: float = 10.0,
    log_line: Log = print,
) -> int:
    """Serve the project's active deployment in the foreground and follow switches.

    For a host of its own (the docker-compose ``serving`` container): waits for a first
    deployment, serves its Bento on ``host:port`` and, when the deploy DAG or a rollback
    activates another one, starts that in its place. Returns the exit code of a Bento that
    died (the container's restart policy takes over).

    One process, whatever ``serving.replicas`` says: replicas there are containers
    (``docker compose up --scale serving=N``, with a balancer in front instead of the one
    published port).
    """
    settings = settings or get_settings()
    use_store(settings)
    store = lineage_store(settings)
    current: DeploymentRow | None = None
    proc: subprocess.Popen | None = None
    try:
        while True:
            live = store.deployments(project, ACTIVE)
            if live and (current is None or live[0]["id"] != current["id"]):
                if proc is not None:
                    log_line(f"{project}: deployment {live[0]['id']} replaces {current['id']}")
                    proc.terminate()
                    proc.wait(60)
                current = live[0]
                log_line(f"{project}: serving {_describe(current)} on {host}:{port}")
                cmd = serve_bento_command(current["bento_tag"], port, host)
                env = serve_env(settings, project, runtime=current["runtime"])
                proc = subprocess.Popen(cmd, env=env)
            elif not live and current is None:
                log_line(f"{project}: no active deployment yet; waiting for the deploy DAG")
            if proc is not None and proc.poll() is not None:
                log_line(f"{project}: the Bento exited with code {proc.returncode}")
                return proc.returncode or 1
            time.sleep(poll)
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(60)
