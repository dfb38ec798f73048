"""Serving benchmark: our deployment against `mlflow models serve`, same model, same run.

    make demo                                   # a stack with a churn champion
    .venv/bin/python -m benchmarks.serving [--seconds 8]

For the demo project's champion it starts (a) the champion's Bento as deployed (`bentoml
serve`, scoring with the runtime its deployment records, prediction log on), (b) `mlflow
models serve` of the same model version (`--env-manager local`, its default single worker),
and also measures (c) the project's stable endpoint (the gateway in front of the live
deployment), (d) the in-process floors: the scikit-learn pipeline's `predict_proba` and
the compiled ONNX graph, on model-input frames, and the graph on request columns as the
service feeds it, and (e) a bare HTTP server (uvicorn answering `{}`), what one round trip
costs before any work. Single-row requests run at concurrency 1, 8 and 32 for a fixed time
each, then 1,000-row requests (the row form, and for ours also the columnar form). Each
server gets its native request format: the spec's raw columns for ours (validated by the
spec-generated schema), the model-input frame for MLflow.

The load generator is a minimal keep-alive HTTP/1.1 client (asyncio streams, on uvloop
where installed), so that its own cost per request stays well below a server's. Where the
machine has two cores or more, it is pinned to the last core and the server under test to
the others, so the client does not starve the server. The hop table then breaks a request
into its steps, each timed in-process.

Goals: p99 < 50 ms at c=8; c=1 throughput >= MLflow's; c=32 >= 2x MLflow's; 1,000-row
rows/s >= MLflow's; c=1 within 3x of the in-process floor (the serving runtime scoring a
model-input frame). The graph's column path and the bare HTTP round trip are printed as
references beside that goal.
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
from urllib.parse import urlsplit

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


class Connection:
    """One keep-alive HTTP/1.1 connection that posts JSON bodies and reads whole answers.

    Deliberately small (asyncio streams, no parsing beyond the status line and the framing
    headers): the load generator's own cost per request stays far below the server's, so the
    latency measured is the server's, not the client's."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.head = (
            f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            "Content-Type: application/json\r\nContent-Length: "
        ).encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, body: bytes) -> int:
        """The response status, once the whole body is read."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(b"%s%d\r\n\r\n%s" % (self.head, len(body), body))
        status = int((await self.reader.readline()).split()[1])
        length, chunked, close = 0, False, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value
            elif name == b"connection":
                close = value == b"close"
        await (self._chunks() if chunked else self.reader.readexactly(length))
        if close:
            self.close()
        return status

    async def _chunks(self) -> None:
        assert self.reader is not None
        while size := int((await self.reader.readline()).split(b";")[0], 16):
            await self.reader.readexactly(size + 2)
        await self.reader.readline()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def load(url: str, bodies: list[bytes], concurrency: int, seconds: float) -> dict:
    """Closed-loop load: ``concurrency`` clients post for ``seconds``; latency per request."""
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def client_loop(k: int) -> None:
        nonlocal errors
        conn, i = Connection(url), k
        try:
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                status = await conn.post(bodies[i % len(bodies)])
                latencies.append(time.perf_counter() - t0)
                errors += status != 200
                i += concurrency
        finally:
            conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(client_loop(k) for k in range(concurrency)))
    wall = time.perf_counter() - started
    return summary(latencies, wall, errors)


def run(coro):
    """Run the load on uvloop where it is installed (a cheaper event loop for the client)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def measure(url: str, bodies: list[bytes], batches: dict[str, bytes], seconds: float) -> dict:
    out = {}
    run(load(url, bodies, 8, 2.0))  # warm-up
    for c in LEVELS:
        out[f"c={c}"] = run(load(url, bodies, c, seconds))
    for name, body in batches.items():
        out[name] = run(load(url, [body], 1, seconds))
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


def floors(scorers: dict[str, tuple], seconds: float) -> dict:
    """In-process scoring, one row at a time and the batch: ``name -> (score, single-row
    inputs, batch input)``."""
    return {
        f"in-process {name}": {
            "c=1": timed(score, singles, seconds),
            "batch rows": timed(score, [batch], seconds),
        }
        for name, (score, singles, batch) in scorers.items()
    }


BARE_HTTP = """
import sys, uvicorn

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b"{}"})

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def bare_http(port: int) -> list[str]:
    """An ASGI app on uvicorn that reads the body and answers ``{}``: what one HTTP round
    trip costs with this client and server stack, before any work."""
    return [sys.executable, "-c", BARE_HTTP, str(port)]


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
        steps["score onnx (frame)"] = lambda _: onnx.scores(frame)
        if onnx.takes_columns:
            values = {f: [row[f] for row in dumped] for f in spec.features}
            steps["score onnx (request columns)"] = lambda _: onnx.scores_columns(values)
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
    """The issue's goals; the c=1 floor is the serving runtime's in-process scoring of a
    model-input frame (the model's own input, as the sklearn floor scores it). The
    graph's column path and a bare HTTP round trip follow as references."""
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
    for ref in ("in-process onnx (request columns)", "bare HTTP (uvicorn, answers {})"):
        if ref in results:
            ratio = results[ref]["c=1"]["rps"] / ours["c=1"]["rps"]
            print(f"reference: c=1 is {ratio:.2f}x below the {ref}")
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
    scorers: dict[str, tuple] = {"sklearn": (model.predict_proba, frames, mi)}
    if compiled.onnx:
        graph = OnnxScorer(compiled.onnx, model)
        scorers["onnx"] = (graph.scores, frames, mi)
        if graph.takes_columns:
            singles = [{f: [r[f]] for f in spec.features} for r in raw_rows[:200]]
            batch = {f: [r[f] for r in raw_rows] for f in spec.features}
            scorers["onnx (request columns)"] = (graph.scores_columns, singles, batch)

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
        served.stop()
        http_port = free_port()
        bare = start(
            "bench-bare-http",
            bare_http(http_port),
            dict(os.environ),
            folder,
            f"http://127.0.0.1:{http_port}/",
        )
        procs.append(bare)
        results["bare HTTP (uvicorn, answers {})"] = bench_server(
            bare, f"http://127.0.0.1:{http_port}/", ours, {}, args.seconds, split
        )
    finally:
        for proc in procs:
            proc.stop()
    results |= floors(scorers, args.seconds)
    hops = hop_costs(spec, model, compiled.onnx, raw_rows, args.seconds)
    print_results(results, hops, args.seconds, split)
    print_goals(results, f"in-process {dep['runtime'] or 'sklearn'}")


if __name__ == "__main__":
    main()
