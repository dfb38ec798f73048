"""Serving benchmark: our BentoML service against `mlflow models serve`, same model, same run.

    make demo                                   # a stack with a churn champion
    .venv/bin/python -m benchmarks.serving [--seconds 8]

For the demo project's champion it starts (a) the champion's Bento (the deployment's
`bentoml serve`, with its adaptive batching and prediction log, as deployed), (b)
`mlflow models serve` of the same model version (`--env-manager local`, its default single
worker), and measures (c) the in-process `predict_proba` floor. Single-row requests run at
concurrency 1, 8 and 32 for a fixed time each, then 1,000-row batch requests. Each server
gets its native request format: the spec's raw columns for ours (validated by the
spec-generated schema), the model-input frame (`dataframe_records`) for MLflow.
Goals: at concurrency 32 at least 2x the throughput of `mlflow models serve`; p99 under
50 ms at concurrency 8.
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
    return {
        "requests": len(latencies),
        "rps": len(latencies) / wall,
        "p50": percentile(latencies, 50) * 1000,
        "p99": percentile(latencies, 99) * 1000,
        "errors": errors,
    }


def measure(url: str, bodies: list[bytes], batch_body: bytes, seconds: float) -> dict:
    out = {}
    asyncio.run(load(url, bodies, 8, 2.0))  # warm-up
    for c in LEVELS:
        out[c] = asyncio.run(load(url, bodies, c, seconds))
    out["batch"] = asyncio.run(load(url, [batch_body], 1, seconds))
    return out


def in_process(model, frames: list, batch_frame, seconds: float) -> dict:
    """The floor: predict_proba on one row at a time, and on the batch, in this process."""
    out = {}
    for key, inputs in ((1, frames), ("batch", [batch_frame])):
        lat = []
        stop_at = time.perf_counter() + seconds
        i = 0
        started = time.perf_counter()
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            model.predict_proba(inputs[i % len(inputs)])
            lat.append(time.perf_counter() - t0)
            i += 1
        wall = time.perf_counter() - started
        out[key] = {
            "requests": len(lat),
            "rps": len(lat) / wall,
            "p50": percentile(lat, 50) * 1000,
            "p99": percentile(lat, 99) * 1000,
            "errors": 0,
        }
    return out


def start(name: str, cmd: list[str], env: dict, folder: Path, ready: str) -> ManagedProcess:
    proc = ManagedProcess(name, folder / "run", folder / "logs")
    proc.start(cmd, env=env, cwd=folder)
    proc.wait_healthy(lambda: http_ok(ready), timeout=180)
    return proc


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
    ours_batch = json.dumps({"instances": raw_rows}).encode()
    theirs_batch = json.dumps({"dataframe_split": json.loads(mi.to_json(orient="split"))})
    frames = [mi.iloc[[i]] for i in range(200)]

    folder = Path(tempfile.mkdtemp(prefix="mlops-bench-serving-"))
    use_store(settings)
    bento_port, mlflow_port = free_port(), free_port()
    print(f"model {model_uri} (champion v{version}), bento {dep['bento_tag']}")
    print("starting the Bento and `mlflow models serve` ...", flush=True)
    procs = []
    try:
        procs.append(
            start(
                "bench-bento",
                serve_bento_command(dep["bento_tag"], bento_port),
                serve_env(settings, args.project),
                folder,
                f"http://127.0.0.1:{bento_port}/readyz",
            )
        )
        mlflow_bin = str(Path(sys.executable).parent / "mlflow")
        procs.append(
            start(
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
        )
        results = {
            "bentoml (ours)": measure(
                f"http://127.0.0.1:{bento_port}/predict", ours, ours_batch, args.seconds
            ),
            "mlflow models serve": measure(
                f"http://127.0.0.1:{mlflow_port}/invocations",
                theirs,
                theirs_batch.encode(),
                args.seconds,
            ),
        }
    finally:
        for proc in procs:
            proc.stop()
    batch_frame = mi
    results["in-process floor"] = in_process(model, frames, batch_frame, args.seconds)

    print(
        f"\n{os.cpu_count()} cores; {args.seconds:.0f} s per level; single-row requests "
        f"unless 'batch' ({BATCH_ROWS} rows per request)"
    )
    cols = ("load", "requests", "req/s", "p50 ms", "p99 ms", "errors")
    header = f"{'target':22} " + " ".join(f"{c:>9}" for c in cols)
    print(header)
    print("-" * len(header))
    for name, levels in results.items():
        for key, r in levels.items():
            load_name = f"c={key}" if key != "batch" else "batch"
            print(
                f"{name:22} {load_name:>9} {r['requests']:>9} {r['rps']:>9.1f} "
                f"{r['p50']:>9.2f} {r['p99']:>9.2f} {r['errors']:>9}"
            )
    ours_r, theirs_r = results["bentoml (ours)"], results["mlflow models serve"]
    ratio32 = ours_r[32]["rps"] / theirs_r[32]["rps"]
    print()
    for c in LEVELS:
        print(
            f"throughput ratio ours/mlflow at c={c}: {ours_r[c]['rps'] / theirs_r[c]['rps']:.2f}x"
        )
    print(
        f"batch rows/s: ours {ours_r['batch']['rps'] * BATCH_ROWS:,.0f}, mlflow "
        f"{theirs_r['batch']['rps'] * BATCH_ROWS:,.0f}, in-process "
        f"{results['in-process floor']['batch']['rps'] * BATCH_ROWS:,.0f}"
    )
    p99 = ours_r[8]["p99"]
    print(f"goal 1: >= 2x mlflow at c=32: {ratio32:.2f}x -> {'met' if ratio32 >= 2 else 'NOT met'}")
    print(f"goal 2: p99 < 50 ms at c=8: {p99:.1f} ms -> {'met' if p99 < 50 else 'NOT met'}")
    errors = sum(r["errors"] for levels in results.values() for r in levels.values())
    if errors:
        print(f"{errors} requests failed (see {folder}/logs)")


if __name__ == "__main__":
    main()
