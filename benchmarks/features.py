"""Feature store benchmark: online lookups and point-in-time joins against their floors.

    .venv/bin/python -m benchmarks.features [--entities 5000] [--labels 1000000] [--seconds 5]

No stack needed: everything is built in a temporary folder from the platform's own code.
``--entities`` demo snapshot rows of the churn project (``mlops_lib.demo_data``) and their
events give the model's feature view (``customer_activity``, checked and computed by
``mlops_lib.feature_store.views``); the Feast repo generated for it
(``mlops_lib.feature_store.repo``) is applied and materialized into its SQLite online store
through the platform's runner (Feast runs in ``feature_store/.venv``), then measured:

* online lookups, requests of 1 and of 100 entities (keys drawn from the entities, all
  known): the Feast feature server the platform starts (``feast serve``,
  ``POST /get-online-features``, loaded through one keep-alive httpx client at concurrency 1
  and 8 for ``--seconds`` each) and the platform's own client
  (``OnlineFeatureClient.fetch``, the same server behind it), against the floor: Feast
  reading the same online store in-process (``FeatureStore.get_online_features(...)
  .to_dict()`` in a loop, timed inside a process of Feast's environment). Ratios are p50
  latency and req/s against the floor of the same request size (concurrency 1);
* historical retrieval: ``--labels`` label rows (the snapshot rows' keys and times,
  repeated with times shifted back over 120 days when more rows are asked for, so some fall
  before any event and get nulls) joined point-in-time through the runner's ``historical``
  command (what a training set costs: the entity file written, Feast's process, the join,
  the output read back), against the floor: pandas ``merge_asof`` on the same view table
  (by key, backward, tolerance = the view's TTL), sort and reorder included, in-process.
  The two answers are compared on a sample of rows (mismatches counted and printed).

Published anchor (Feast's docs and blog): the tuned Python feature server answers a
one-row lookup under 5 ms p99, the Go feature server in about 3.9 ms p99. On a 2-core
machine the load generator, the server and SQLite share the cores, so c=8 measures
contention as much as the server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.serving import run, summary
from mlops_lib import demo_data
from mlops_lib.feature_store import paths, repo, runner, server, views
from mlops_lib.feature_store.store import HISTORY_START
from mlops_lib.feature_store.views import EVENT_TIMESTAMP
from mlops_lib.settings import Settings, load_settings
from mlops_lib.spec import STORE_FEATURE_SEPARATOR, ProjectSpec, load_spec

SEED = 11
COMMIT = "benchmark"
SIZES = (1, 100)
LEVELS = (1, 8)
REQUESTS_PER_SIZE = 200
LABEL_SHIFT_DAYS = 120
SAMPLE_ROWS = 10_000
LOOKUP = "/get-online-features"
# gunicorn's line when a worker is recycled (`feast serve --max-requests`, 1000 by default).
WORKER_RECYCLED = "Maximum request limit"

FLOOR_SCRIPT = r"""
import json, sys, time
from mlops_feature_store.runner import _without_runtime_type_checks
_without_runtime_type_checks()
from feast import FeatureStore

args = json.loads(sys.stdin.read())
store = FeatureStore(repo_path=args["repo"])
out = {}
for size, requests in args["requests"].items():
    rows = [[{args["key"]: k} for k in keys] for keys in requests]
    def read(i):
        store.get_online_features(
            features=args["features"], entity_rows=rows[i % len(rows)],
            full_feature_names=True,
        ).to_dict()
    for i in range(20):
        read(i)
    lat, i = [], 0
    started = time.perf_counter()
    while time.perf_counter() < started + args["seconds"]:
        t0 = time.perf_counter()
        read(i)
        lat.append(time.perf_counter() - t0)
        i += 1
    out[size] = {"latencies": lat, "wall": time.perf_counter() - started}
print(json.dumps(out))
"""


# The store: view table, Feast repo applied and materialized -----------------------------
def model_view(spec: ProjectSpec) -> tuple[str, str, str]:
    """(view, its source, its join key) of the model's first view."""
    assert spec.feature_store is not None, "the churn spec has a features section"
    view = spec.feature_store.model[0]
    return view, views.feature_view(spec, view).source, views.join_key(spec, view)


def build_store(spec: ProjectSpec, settings: Settings, entities: int) -> dict:
    """Snapshot rows, the view table and the applied, materialized repo (``current``)."""
    view_name, source, _ = model_view(spec)
    batch = demo_data.generate("clean", rows=entities, seed=SEED)
    t0 = time.perf_counter()
    events = views.check_source(demo_data.generate_events(batch, seed=SEED), spec, source)
    view = views.compute_view(events, spec, view_name)
    times = {"events + view": time.perf_counter() - t0}
    definitions = repo.definitions_text(spec, COMMIT)
    target = paths.commit_repo(settings, spec.name, COMMIT, repo.registry_hash(definitions))
    (target / repo.DATA_DIR).mkdir(parents=True)
    view.to_parquet(target / repo.view_file(view_name), index=False)
    online = paths.online_store(settings, spec.name)
    (target / repo.CONFIG_FILE).write_text(repo.config_text(spec, online))
    (target / repo.DEFINITIONS_FILE).write_text(definitions)
    times["apply"] = timed_call(runner.run, settings, "apply", {"repo": str(target)})
    end = view[EVENT_TIMESTAMP].max() + pd.Timedelta(days=1)
    window = {"start_date": HISTORY_START.isoformat(), "end_date": end.isoformat()}
    times["materialize"] = timed_call(
        runner.run, settings, "materialize", {"repo": str(target), **window}
    )
    paths.current_repo(settings, spec.name).symlink_to(target, target_is_directory=True)
    return {"batch": batch, "events": len(events), "view": view, "repo": target, "times": times}


def timed_call(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


# Historical retrieval -------------------------------------------------------------------
def label_rows(batch: pd.DataFrame, spec: ProjectSpec, key: str, count: int) -> pd.DataFrame:
    """``count`` label rows: the snapshot rows' keys and times, repeated as needed with the
    times shifted back by k / repeats of LABEL_SHIFT_DAYS on the k-th repeat."""
    reps = -(-count // len(batch))
    stamps = pd.to_datetime(batch[spec.schema.event_time], utc=True).dt.tz_convert(None)
    shifts = pd.to_timedelta(np.arange(reps) * LABEL_SHIFT_DAYS / reps, unit="D")
    times = np.tile(stamps.to_numpy("datetime64[ns]"), reps) - np.repeat(
        shifts.to_numpy("timedelta64[ns]"), len(batch)
    )
    labels = pd.DataFrame(
        {
            key: np.tile(batch[key].to_numpy(), reps)[:count],
            EVENT_TIMESTAMP: pd.DatetimeIndex(times[:count]).tz_localize("UTC"),
        }
    )
    return labels


def feast_historical(spec: ProjectSpec, settings: Settings, store: dict, labels, folder: Path):
    """The runner's point-in-time join (entity file out, Feast's process, answer read back)."""
    entities, answer = folder / "entities.parquet", folder / "answer.parquet"
    t0 = time.perf_counter()
    labels.to_parquet(entities, index=False)
    args = {
        "repo": str(store["repo"]),
        "entity_df": str(entities),
        "features": repo.feature_refs(spec),
        "output": str(answer),
        "full_feature_names": True,
    }
    runner.run(settings, "historical", args)
    joined = pd.read_parquet(answer)
    return joined, time.perf_counter() - t0


def asof_floor(spec: ProjectSpec, view: pd.DataFrame, labels: pd.DataFrame, key: str):
    """pandas ``merge_asof`` on the view table: latest row at or before, within the TTL."""
    view_name = model_view(spec)[0]
    ttl = pd.Timedelta(days=views.feature_view(spec, view_name).ttl_days)
    names = {
        f: f"{view_name}{STORE_FEATURE_SEPARATOR}{f}" for f in views.view_columns(spec, view_name)
    }
    t0 = time.perf_counter()
    right = view.rename(columns=names).rename(columns={EVENT_TIMESTAMP: "_feature_time"})
    right["_feature_time"] = right["_feature_time"].astype("datetime64[ns, UTC]")
    right[key] = right[key].astype(labels[key].dtype)  # the view keeps keys as objects
    left = labels.assign(_row=np.arange(len(labels))).sort_values(EVENT_TIMESTAMP)
    joined = pd.merge_asof(
        left,
        right.sort_values("_feature_time"),
        left_on=EVENT_TIMESTAMP,
        right_on="_feature_time",
        by=key,
        direction="backward",
        tolerance=ttl,
    )
    joined = joined.sort_values("_row").reset_index(drop=True)
    return joined, time.perf_counter() - t0


def mismatches(a: pd.DataFrame, b: pd.DataFrame, columns: list[str]) -> tuple[int, int]:
    """(rows compared, rows where any feature differs) on a seeded sample of rows."""
    if len(a) != len(b):
        return 0, abs(len(a) - len(b))
    rows = np.random.default_rng(SEED).permutation(len(a))[:SAMPLE_ROWS]
    bad = np.zeros(len(rows), dtype=bool)
    for c in columns:
        x = a[c].iloc[rows].astype("Float64").to_numpy("float64", na_value=np.nan)
        y = b[c].iloc[rows].astype("Float64").to_numpy("float64", na_value=np.nan)
        bad |= ~np.isclose(x, y, equal_nan=True)
    return len(rows), int(bad.sum())


def bench_historical(spec, settings, store: dict, count: int, folder: Path) -> dict:
    key = model_view(spec)[2]
    labels = label_rows(store["batch"], spec, key, count)
    floor, floor_s = asof_floor(spec, store["view"], labels, key)
    feast, feast_s = feast_historical(spec, settings, store, labels, folder)
    compared, bad = mismatches(feast, floor, spec.store_features)
    nulls = int(floor[spec.store_features[0]].isna().sum())
    startup = timed_call(runner.run, settings, "list", {"repo": str(store["repo"])})
    return {
        "labels": len(labels),
        "floor": floor_s,
        "feast": feast_s,
        "startup": startup,
        "compared": compared,
        "mismatches": bad,
        "null rows": nulls,
    }


# Online lookups ---------------------------------------------------------------------------
def request_keys(batch: pd.DataFrame, key: str) -> dict[int, list[list[str]]]:
    """Per request size, REQUESTS_PER_SIZE seeded draws of distinct known keys."""
    rng = np.random.default_rng(SEED)
    ids = batch[key].to_numpy()
    return {
        size: [rng.choice(ids, size, replace=False).tolist() for _ in range(REQUESTS_PER_SIZE)]
        for size in SIZES
    }


def in_process_floor(spec, settings, store: dict, keys: dict, seconds: float) -> dict:
    """Feast's own online read, timed inside a process of Feast's environment."""
    args = {
        "repo": str(store["repo"]),
        "key": model_view(spec)[2],
        "features": repo.feature_refs(spec),
        "requests": {str(size): reqs for size, reqs in keys.items()},
        "seconds": seconds,
    }
    done = subprocess.run(
        [str(runner.feast_python(settings)), "-c", FLOOR_SCRIPT],
        input=json.dumps(args),
        capture_output=True,
        text=True,
        env=runner.feast_env(),
        timeout=600,
        check=True,
    )
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return {int(size): summary(r["latencies"], r["wall"]) for size, r in out.items()}


async def closed_loop(call, items: list, concurrency: int, seconds: float) -> dict:
    """``concurrency`` callers each awaiting ``call(item)`` in turn for ``seconds``."""
    latencies: list[float] = []
    errors, first_error = 0, ""
    stop_at = time.perf_counter() + seconds

    async def caller(k: int) -> None:
        nonlocal errors, first_error
        i = k
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            try:
                ok = await call(items[i % len(items)])
            except Exception as exc:
                ok, first_error = False, first_error or f"{type(exc).__name__}: {exc}"
            latencies.append(time.perf_counter() - t0)
            errors += not ok
            i += concurrency

    started = time.perf_counter()
    await asyncio.gather(*(caller(k) for k in range(concurrency)))
    result = summary(latencies, time.perf_counter() - started, errors)
    return {**result, "first error": first_error} if first_error else result


async def http_load(url: str, bodies: list[bytes], concurrency: int, seconds: float) -> dict:
    """The feature server through one keep-alive httpx client (a connection per caller)."""
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(trust_env=False, limits=limits, timeout=30) as client:

        async def post(body: bytes) -> bool:
            response = await client.post(url + LOOKUP, content=body, headers=headers)
            return response.status_code == 200

        await closed_loop(post, bodies, concurrency, min(1.0, seconds))  # warm-up
        return await closed_loop(post, bodies, concurrency, seconds)


async def client_load(client, requests: list, concurrency: int, seconds: float) -> dict:
    """The platform's client (``OnlineFeatureClient.fetch``) in this event loop."""

    async def fetch(keys: list[str]) -> bool:
        return all((await client.fetch(keys)).found)

    try:
        await closed_loop(fetch, requests, concurrency, min(1.0, seconds))  # warm-up
        return await closed_loop(fetch, requests, concurrency, seconds)
    finally:
        await client.aclose()


def bodies_of(spec: ProjectSpec, key: str, requests: list[list[str]]) -> list[bytes]:
    refs = repo.feature_refs(spec)
    return [
        json.dumps({"features": refs, "entities": {key: keys}, "full_feature_names": True}).encode()
        for keys in requests
    ]


def online_check(url: str, spec: ProjectSpec, store: dict, keys: list[str]) -> int:
    """Keys whose served values differ from the view table's latest row (0 expected)."""
    import httpx

    key = model_view(spec)[2]
    body = json.loads(bodies_of(spec, key, [keys])[0])
    payload = httpx.post(url + LOOKUP, json=body, timeout=30).json()
    served = dict(zip(payload["metadata"]["feature_names"], payload["results"], strict=True))
    latest = store["view"].sort_values(EVENT_TIMESTAMP).drop_duplicates(key, keep="last")
    latest = latest.set_index(key).loc[keys]
    view_name = model_view(spec)[0]
    bad = np.zeros(len(keys), dtype=bool)
    for feature in views.view_columns(spec, view_name):
        got = served[f"{view_name}{STORE_FEATURE_SEPARATOR}{feature}"]["values"]
        x = np.array([np.nan if v is None else v for v in got], dtype="float64")
        y = latest[feature].astype("Float64").to_numpy("float64", na_value=np.nan)
        bad |= ~np.isclose(x, y, equal_nan=True)
    return int(bad.sum())


def server_rows(url: str, spec: ProjectSpec, keys: dict, seconds: float) -> list[dict]:
    key = model_view(spec)[2]
    rows = []
    for size, requests in keys.items():
        bodies = bodies_of(spec, key, requests)
        for c in LEVELS:
            result = run(http_load(url, bodies, c, seconds))
            rows.append({"target": "feature server (HTTP)", "size": size, "c": c, **result})
    return rows


def client_rows(spec, settings, keys: dict, seconds: float) -> tuple[list[dict], str]:
    """The platform's client, when its module is there and a first fetch works."""
    try:
        from mlops_lib.feature_store.online import OnlineFeatureClient

        probe = OnlineFeatureClient(spec, settings)
        probe.fetch_sync(keys[SIZES[0]][0])
        probe.close()
    except Exception as exc:
        return [], f"OnlineFeatureClient row skipped: {type(exc).__name__}: {exc}"
    rows = []
    for size, requests in keys.items():
        for c in LEVELS:
            client = OnlineFeatureClient(spec, settings)
            result = run(client_load(client, requests, c, seconds))
            rows.append({"target": "OnlineFeatureClient.fetch", "size": size, "c": c, **result})
    return rows, ""


def bench_online(spec, settings, store: dict, seconds: float) -> dict:
    keys = request_keys(store["batch"], model_view(spec)[2])
    floor = in_process_floor(spec, settings, store, keys, seconds)
    url = server.start(spec.name, settings)
    try:
        checked = keys[max(SIZES)][0]
        wrong = f"{online_check(url, spec, store, checked)} of {len(checked)}"
        rows = server_rows(url, spec, keys, seconds)
        more, note = client_rows(spec, settings, keys, seconds)
    finally:
        server.stop(settings, spec.name)
    log = server.process(settings, spec.name).log_file
    restarts = log.read_text(errors="replace").count(WORKER_RECYCLED) if log.is_file() else 0
    return {
        "floor": floor,
        "rows": rows + more,
        "note": note,
        "check": wrong,
        "restarts": restarts,
    }


# Report -------------------------------------------------------------------------------------
def print_online(online: dict, seconds: float) -> None:
    floor = online["floor"]
    print(f"\nonline lookups ({seconds:g} s per row; ratios against the floor of the same size)")
    cols = ("entities", "conc", "requests", "req/s", "rows/s", "p50 ms", "p99 ms", "errors")
    header = f"{'target':28} " + " ".join(f"{c:>9}" for c in cols) + "  p50 x floor  req/s / floor"
    print(header)
    print("-" * len(header))
    floor_rows = [
        {"target": "in-process Feast (floor)", "size": s, "c": 1, **r} for s, r in floor.items()
    ]
    for r in floor_rows + online["rows"]:
        base = floor[r["size"]]
        print(
            f"{r['target']:28} {r['size']:>9} {r['c']:>9} {r['requests']:>9} {r['rps']:>9.1f} "
            f"{r['rps'] * r['size']:>9,.0f} {r['p50']:>9.2f} {r['p99']:>9.2f} {r['errors']:>9}"
            f"  {r['p50'] / base['p50']:>10.2f}x  {r['rps'] / base['rps']:>12.2f}x"
        )
    for r in online["rows"]:
        if "first error" in r:
            print(
                f"{r['target']}, {r['size']} entities, c={r['c']}: first error {r['first error']}"
            )
    print(f"served values vs the view table's latest rows: {online['check']} keys differ")
    print(
        f"feature server worker recycled {online['restarts']} times during the run "
        "(gunicorn --max-requests, Feast's default 1000 + jitter; in-flight requests fail)"
    )
    if online["note"]:
        print(online["note"])
    print(
        "anchor (published): Feast Python feature server < 5 ms p99, Go server ~3.9 ms p99, 1 row"
    )


def print_historical(h: dict) -> None:
    print(f"\nhistorical retrieval: {h['labels']:,} label rows, point-in-time")
    header = f"{'target':40} {'seconds':>9} {'rows/s':>12} {'x floor':>9}"
    print(header)
    print("-" * len(header))
    for name, seconds in (
        ("pandas merge_asof, in-process (floor)", h["floor"]),
        ("runner historical (Feast, file store)", h["feast"]),
        ("  of which: runner start (`list` command)", h["startup"]),
    ):
        rate = "" if name.startswith(" ") else f"{h['labels'] / seconds:,.0f}"
        print(f"{name:40} {seconds:>9.2f} {rate:>12} {seconds / h['floor']:>8.1f}x")
    print(
        f"agreement: {h['mismatches']} mismatched of {h['compared']:,} sampled rows "
        f"({h['null rows']:,} label rows without a value in the TTL, per the floor)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entities", type=int, default=5000, help="Snapshot rows (customers).")
    parser.add_argument("--labels", type=int, default=1_000_000, help="Label rows to join.")
    parser.add_argument("--seconds", type=float, default=5.0, help="Per online row.")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mlops-features-bench-") as tmp:
        settings = load_settings(stack_dir=Path(tmp) / "stack")
        spec = load_spec(settings.projects_dir / "churn.yaml")
        store = build_store(spec, settings, args.entities)
        setup = ", ".join(f"{k} {v:.1f} s" for k, v in store["times"].items())
        print(
            f"{args.entities:,} entities, {store['events']:,} events, "
            f"{len(store['view']):,} view rows; {setup}"
        )
        historical = bench_historical(spec, settings, store, args.labels, Path(tmp))
        online = bench_online(spec, settings, store, args.seconds)
    print_online(online, args.seconds)
    print_historical(historical)
    print(f"\nwall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
