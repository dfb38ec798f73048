"""Serving benchmark: our deployment against `mlflow models serve`, same model, same run.

    make demo                                   # a stack with a churn champion
    .venv/bin/python -m benchmarks.serving [--seconds 8]

For the demo project's champion it starts (a) the champion's Bento as deployed (`bentoml
serve`, scoring with the runtime its deployment records, prediction log on), (b) `mlflow
models serve` of the same model version (`--env-manager local`, its default single worker),
and also measures (c) the project's stable endpoint (the gateway in front of the live
deployment) and (d) the in-process floors: the scikit-learn pipeline's `predict_proba` and
the compiled ONNX graph, on model-input frames. Single-row requests run at concurrency 1, 8
and 32 for a fixed time each, then 1,000-row requests (the row form, and for ours also the
columnar form). Each server gets its native request format: the spec's raw columns for ours
(validated by the spec-generated schema), the model-input frame for MLflow.

Where the machine has two cores or more, the load generator is pinned to the last core and
the server under test to the others, so the client does not starve the server. The hop
table then breaks a request into its steps, each timed in-process.

Goals: p99 < 50 ms at c=8; c=1 throughput >= MLflow's; c=32 >= 2x MLflow's; 1,000-row
rows/s >= MLflow's; c=1 within 3x of the in-process floor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

from mlops_lib import demo_data
from mlops_lib.stack.procs import ManagedProcess, free_port, http_ok

LEVELS = (1, 8, 32)
BATCH_ROWS = 1000


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summary(latencies: list[float], wall: float, errors: int = 0) -> dict:
    return {
        "requests": len(latencies),
        "rps": len(latencies) / wall,
        "p50": percentile(latencies, 50) * 1000,
        "p99": percentile(latencies, 99) * 1000,
        "errors": errors,
    }


async def load(url: str, bodies: list[bytes], concurrency: int, seconds: float) -> dict:
    """Closed-loop load: ``concurrency`` clients post for ``seconds``; latency per request."""
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds
    headers = {"content-type": "application/json"}

    async def client_loop(client: httpx.AsyncClient, k: int) -> None:
        nonlocal errors
        i = k
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            resp = await client.post(url, content=bodies[i % len(bodies)], headers=headers)
            latencies.append(time.perf_counter() - t0)
            errors += resp.status_code != 200
            i += concurrency

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits, trust_env=False) as client:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(client, k) for k in range(concurrency)))
        wall = time.perf_counter() - started
    return summary(latencies, wall, errors)


def measure(url: str, bodies: list[bytes], batches: dict[str, bytes], seconds: float) -> dict:
    out = {}
    asyncio.run(load(url, bodies, 8, 2.0))  # warm-up
    for c in LEVELS:
        out[f"c={c}"] = asyncio.run(load(url, bodies, c, seconds))
    for name, body in batches.items():
        out[name] = asyncio.run(load(url, [body], 1, seconds))
    return out


def timed(fn, inputs: list, seconds: float) -> dict:
    """Call ``fn`` on the inputs in turn for ``seconds``; latency per call."""
    lat, i = [], 0
    started = time.perf_counter()
    stop_at = started + seconds
    while time.perf_counter() < stop_at:
        t0 = time.perf_counter()
        fn(inputs[i % len(inputs)])
        lat.append(time.perf_counter() - t0)
        i += 1
    return summary(lat, time.perf_counter() - started)


def floors(scorers: dict, frames: list, batch_frame, seconds: float) -> dict:
    """In-process scoring of model-input frames: one row at a time, and the batch."""
    return {
        f"in-process {name}": {
            "c=1": timed(score, frames, seconds),
            "batch rows": timed(score, [batch_frame], seconds),
        }
        for name, score in scorers.items()
    }


def pin(pids: list[int], cores: set[int]) -> None:
    """Keep processes (and their children) on the given cores, where the OS allows."""
    import psutil

    for pid in pids:
        try:
            proc = psutil.Process(pid)
            for p in [proc, *proc.children(recursive=True)]:
                p.cpu_affinity(sorted(cores))
        except (psutil.Error, AttributeError):
            pass


def cores_split() -> tuple[set[int], set[int]] | None:
    """(server cores, load generator core), or None on a one-core machine."""
    try:
        cores = sorted(os.sched_getaffinity(0))
    except AttributeError:
        return None
    return (set(cores[:-1]), {cores[-1]}) if len(cores) >= 2 else None


def start(name: str, cmd: list[str], env: dict, folder: Path, ready: str) -> ManagedProcess:
    proc = ManagedProcess(name, folder / "run", folder / "logs")
    proc.start(cmd, env=env, cwd=folder)
    try:
        proc.wait_healthy(lambda: http_ok(ready), timeout=180)
    except BaseException:
        proc.stop()
        raise
    return proc


def bench_server(proc: ManagedProcess, url: str, bodies, batches, seconds, split) -> dict:
    """Measure one server alone, pinned away from the load generator."""
    if split:
        pin([proc.read_pid() or 0], split[0])
    return measure(url, bodies, batches, seconds)


def hop_costs(spec, model, graph, raw_rows: list[dict], seconds: float) -> dict:
    """Each step of one request, timed in-process (p50 ms), for 1 row and for the batch."""
    return {
        label: {
            name: timed(fn, [None], min(seconds, 2.0))["p50"]
            for name, fn in request_steps(spec, model, graph, rows).items()
        }
        for label, rows in (("1 row", raw_rows[:1]), (f"{len(raw_rows)} rows", raw_rows))
    }


def request_steps(spec, model, graph, rows: list[dict]) -> dict:
    """The steps a request goes through in the service, each as a call on ready inputs."""
    from pydantic import TypeAdapter

    from mlops_lib.serving.compiled import OnnxScorer
    from mlops_lib.serving.prediction_log import PredictionLog
    from mlops_lib.serving.predictor import PipelineScorer, Predictor
    from mlops_lib.serving.schema import column_adapters, instance_row, validate_columns

    predictor = Predictor(spec, model, "0")
    request, adapters = TypeAdapter(list[instance_row(spec)]), column_adapters(spec)
    sklearn = PipelineScorer(model, spec.target.task == "classification")
    log = PredictionLog(spec.name, "0", Path(tempfile.mkdtemp()), None)
    body = json.dumps({"instances": rows}).encode()
    names = list(rows[0])
    data = [[r[c] for c in names] for r in rows]
    dumped = request.validate_json(json.dumps(rows))
    frame = predictor.frame_from_rows(dumped)
    scores = sklearn.scores(frame)
    predictions = predictor.predictions(scores)
    steps = {
        "JSON decode": lambda _: json.loads(body),
        "validate rows (pydantic)": lambda _: request.validate_python(rows),
        "validate columns": lambda _: validate_columns(spec, adapters, names, data),
        "model-input frame": lambda _: predictor.frame_from_rows(dumped),
        "score sklearn": lambda _: sklearn.scores(frame),
        "response + JSON encode": lambda _: json.dumps(predictor.response(scores)),
        "columnar response + JSON": lambda _: json.dumps(predictor.columnar_response(scores)),
        "prediction log record": lambda _: log.record(
            "r", dumped, predictions, predictor.log_scores(scores)
        ),
    }
    if graph:
        onnx = OnnxScorer(graph, model)
        steps["score onnx"] = lambda _: onnx.scores(frame)
    return steps


def print_results(results: dict, hops: dict, seconds: float, split) -> None:
    pinned = f"load generator on core {sorted(split[1])}" if split else "not pinned"
    print(
        f"\n{os.cpu_count()} cores ({pinned}); {seconds:.0f} s per level; single-row requests "
        f"unless 'batch' ({BATCH_ROWS} rows per request)"
    )
    cols = ("load", "requests", "req/s", "rows/s", "p50 ms", "p99 ms", "errors")
    header = f"{'target':28} " + " ".join(f"{c:>10}" for c in cols)
    print(header)
    print("-" * len(header))
    for name, levels in results.items():
        for key, r in levels.items():
            rows = r["rps"] * (BATCH_ROWS if "batch" in key else 1)
            print(
                f"{name:28} {key:>10} {r['requests']:>10} {r['rps']:>10.1f} {rows:>10,.0f} "
                f"{r['p50']:>10.2f} {r['p99']:>10.2f} {r['errors']:>10}"
            )
    print("\ncost of each step of a request, in-process (p50 ms)")
    for label, steps in hops.items():
        print(f"  {label}: " + ", ".join(f"{k} {v:.3f}" for k, v in steps.items()))


def print_goals(results: dict, floor_key: str) -> None:
    ours, theirs = results["bentoml (ours)"], results["mlflow models serve"]
    floor = results[floor_key]["c=1"]["rps"]
    checks = [
        ("p99 < 50 ms at c=8", f"{ours['c=8']['p99']:.1f} ms", ours["c=8"]["p99"] < 50),
        (
            "c=1 req/s >= mlflow's",
            f"{ours['c=1']['rps']:.1f} vs {theirs['c=1']['rps']:.1f}",
            ours["c=1"]["rps"] >= theirs["c=1"]["rps"],
        ),
        (
            "c=32 req/s >= 2x mlflow's",
            f"{ours['c=32']['rps'] / theirs['c=32']['rps']:.2f}x",
            ours["c=32"]["rps"] >= 2 * theirs["c=32"]["rps"],
        ),
        (
            "1,000-row rows/s >= mlflow's",
            f"{ours['batch']['rps'] * BATCH_ROWS:,.0f} vs "
            f"{theirs['batch']['rps'] * BATCH_ROWS:,.0f}",
            ours["batch"]["rps"] >= theirs["batch"]["rps"],
        ),
        (
            f"c=1 within 3x of the {floor_key} floor",
            f"{floor / ours['c=1']['rps']:.2f}x",
            ours["c=1"]["rps"] * 3 >= floor,
        ),
    ]
    print()
    for goal, figure, met in checks:
        print(f"goal {goal}: {figure} -> {'met' if met else 'NOT met'}")
    errors = sum(r["errors"] for levels in results.values() for r in levels.values())
    if errors:
        print(f"{errors} requests failed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--project", default="churn")
    parser.add_argument("--seconds", type=float, default=8.0, help="Per concurrency level.")
    args = parser.parse_args()

    import mlflow
    import mlflow.sklearn

    from mlops_lib.features import model_input
    from mlops_lib.lineage import lineage_store
    from mlops_lib.registry import champion_version
    from mlops_lib.serving.compiled import OnnxScorer, compile_pipeline
    from mlops_lib.serving.package import serve_bento_command, serve_env, use_store
    from mlops_lib.spec import project_spec
    from mlops_lib.stack.manager import base_env, current_settings
    from mlops_lib.tracking import client_env, connect

    settings = current_settings()
    version = champion_version(args.project, settings)
    live = lineage_store(settings).deployments(args.project, "active")
    if version is None or not live:
        sys.exit(f"no deployed champion of {args.project!r}: run `make demo` first")
    dep = live[0]
    spec = project_spec(args.project, settings)
    model_uri = dep["model_uri"]
    connect(settings)
    model = mlflow.sklearn.load_model(model_uri)

    raw = demo_data.generate("clean", rows=BATCH_ROWS, seed=77)
    raw_rows = json.loads(raw[spec.features].to_json(orient="records", date_format="iso"))
    mi = model_input(raw, spec)
    mi_rows = json.loads(mi.to_json(orient="records", date_format="iso"))
    ours = [json.dumps({"instances": [r]}).encode() for r in raw_rows[:200]]
    theirs = [json.dumps({"dataframe_records": [r]}).encode() for r in mi_rows[:200]]
    columns = list(spec.features)
    ours_batches = {
        "batch": json.dumps({"instances": raw_rows}).encode(),
        "batch columnar": json.dumps(
            {"columns": columns, "data": [[r[c] for c in columns] for r in raw_rows]}
        ).encode(),
    }
    theirs_batches = {
        "batch": json.dumps({"dataframe_split": json.loads(mi.to_json(orient="split"))}).encode()
    }
    frames = [mi.iloc[[i]] for i in range(200)]
    compiled = compile_pipeline(model, mi.head(200))
    scorers = {"sklearn": model.predict_proba}
    if compiled.onnx:
        scorers["onnx"] = OnnxScorer(compiled.onnx, model).scores

    folder = Path(tempfile.mkdtemp(prefix="mlops-bench-serving-"))
    use_store(settings)
    split = cores_split()
    bento_port, mlflow_port = free_port(), free_port()
    print(
        f"model {model_uri} (champion v{version}), bento {dep['bento_tag']}, "
        f"runtime {dep['runtime'] or 'sklearn'} (compiled here: {compiled.runtime}"
        f"{', ' + compiled.reason if compiled.reason else ''})"
    )
    print("starting the Bento and `mlflow models serve` ...", flush=True)
    if split:
        os.sched_setaffinity(0, split[1])
    results: dict[str, dict] = {}
    procs = []
    try:
        bento = start(
            "bench-bento",
            serve_bento_command(dep["bento_tag"], bento_port),
            serve_env(settings, args.project, runtime=dep["runtime"]),
            folder,
            f"http://127.0.0.1:{bento_port}/readyz",
        )
        procs.append(bento)
        results["bentoml (ours)"] = bench_server(
            bento,
            f"http://127.0.0.1:{bento_port}/predict",
            ours,
            ours_batches,
            args.seconds,
            split,
        )
        bento.stop()
        results["ours via the gateway"] = measure(
            f"{settings.serving_base_url}/{args.project}/predict",
            ours,
            {"batch": ours_batches["batch"]},
            args.seconds,
        )
        mlflow_bin = str(Path(sys.executable).parent / "mlflow")
        served = start(
            "bench-mlflow",
            [
                mlflow_bin,
                "models",
                "serve",
                "-m",
                model_uri,
                "--env-manager",
                "local",
                "--host",
                "127.0.0.1",
                "-p",
                str(mlflow_port),
            ],
            base_env(settings)
            | client_env(settings)
            | {
                "MLFLOW_TRACKING_URI": settings.mlflow_url,
                # `mlflow models serve` execs `uvicorn` from PATH.
                "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
            },
            folder,
            f"http://127.0.0.1:{mlflow_port}/ping",
        )
        procs.append(served)
        results["mlflow models serve"] = bench_server(
            served,
            f"http://127.0.0.1:{mlflow_port}/invocations",
            theirs,
            theirs_batches,
            args.seconds,
            split,
        )
    finally:
        for proc in procs:
            proc.stop()
    results |= floors(scorers, frames, mi, args.seconds)
    hops = hop_costs(spec, model, compiled.onnx, raw_rows, args.seconds)
    print_results(results, hops, args.seconds, split)
    print_goals(results, f"in-process {dep['runtime'] or 'sklearn'}")


if __name__ == "__main__":
    main()
