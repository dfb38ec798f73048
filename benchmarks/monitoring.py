"""Monitoring benchmark: profiling a prediction log against pandas' describe, same run;
and (``--loop``) the closed loop from the first drifted request to the new champion serving.

    .venv/bin/python -m benchmarks.monitoring [--rows 1000000]
    .venv/bin/python -m benchmarks.monitoring --loop

Builds a prediction log of the demo project (the spec's features, prediction and score, as
the service logs them) and measures, on the same frame: the platform's window profile
(whylogs, the lean schema the monitor uses, with datetimes as epoch) and
`pandas.DataFrame.describe(include="all")`. Prints rows/s of each and the ratio, then the
time to score drift of one merged profile against a reference. No services needed.

``--loop`` starts a throw-away stack (own folder, free ports), plays the demo scenario on it
through the real scheduler and prints the time of each stage from the first drifted request
to the new champion serving, against the peer measured in the same run: the first
champion's path from ingesting its batch to serving it. Then what the retraining bought: the
old champion's live metric on the labelled drifted traffic (the fired drift report) against
the new champion's on fresh drifted traffic served through the same endpoint and labelled
the same way.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from mlops_lib import demo_data, profiles
from mlops_lib.monitoring.drift import drift_scores
from mlops_lib.monitoring.reference import monitored_frame
from mlops_lib.settings import get_settings
from mlops_lib.spec import load_spec


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


LOOP_STAGES = (
    "serve drifted traffic",
    "labels of the drifted traffic arrive",
    "monitor detects drift",
    "continuous training (drift-triggered)",
    "deploy the new champion (asset-triggered)",
)
FIRST_CHAMPION = (
    "ingest clean batch",
    "train on it (asset-triggered)",
    "deploy the champion (asset-triggered)",
)


def loop() -> None:
    """The closed loop on a throw-away stack, by stage."""
    import shutil
    import tempfile
    from pathlib import Path

    from rich.console import Console

    from mlops_lib import platform_stack
    from mlops_lib.demo import run_demo
    from mlops_lib.settings import load_settings
    from mlops_lib.stack.manager import free_ports

    folder = Path(tempfile.mkdtemp(prefix="mlops-loop-"))
    settings = load_settings(stack_dir=folder / "stack", **free_ports())
    console = Console()
    try:
        result = run_demo(settings, console=console)
        if result.ok:
            retraining_effect(settings)
    finally:
        platform_stack.down(settings, log=lambda *_: None)
        shutil.rmtree(folder, ignore_errors=True)
    times = {o.stage: o.seconds for o in result.outcomes}
    if not result.ok or result.drift_to_champion_seconds is None:
        raise SystemExit(f"the loop did not complete: {[o for o in result.outcomes if not o.ok]}")
    total = result.drift_to_champion_seconds
    print("\nfrom the first drifted request to the new champion serving, by stage:")
    for stage in LOOP_STAGES:
        print(f"  {stage:<45} {times[stage]:7.1f} s  {100 * times[stage] / total:5.1f} %")
    print(f"  {'total (wall)':<45} {total:7.1f} s")
    first = sum(times[s] for s in FIRST_CHAMPION)
    print(f"peer: first champion, ingest to serving       {first:7.1f} s")
    print(f"ratio drift-to-new-champion / first champion: {total / first:.2f}x")


def retraining_effect(settings) -> None:
    """The champion's live metric before the drift episode and the new champion's after."""
    from mlops_lib.demo import DEMO_PROJECT
    from mlops_lib.labels import REQUEST_ID, ROW, read_predictions, wait_logged
    from mlops_lib.lineage import lineage_store
    from mlops_lib.metrics import live_metric
    from mlops_lib.settings import reload_settings
    from mlops_lib.spec import project_spec
    from mlops_lib.traffic import send

    settings = reload_settings(settings)  # with the credentials the stack generated
    spec = project_spec(DEMO_PROJECT, settings)
    fired = [
        r
        for r in lineage_store(settings).drift_reports(DEMO_PROJECT)
        if r["fired"] and r["live_metric"] is not None
    ]
    frame = demo_data.generate("drifted", rows=4000, seed=99)
    url = f"{settings.serving_base_url}/{DEMO_PROJECT}/predict"
    out = send(url, frame, spec.features + spec.identity, spec.target.column)
    missing = wait_logged(DEMO_PROJECT, set(out.labels[REQUEST_ID]), settings, timeout=120)
    if missing:
        raise SystemExit(f"{missing} answered requests never reached the prediction log")
    served = read_predictions(DEMO_PROJECT, settings).drop(
        columns=[spec.target.column], errors="ignore"
    )
    after = live_metric(spec, served.merge(out.labels, on=[REQUEST_ID, ROW]))
    before = fired[-1]
    metric = after["metric"]
    print("\nwhat the retraining bought (live metric on labelled drifted traffic):")
    print(
        f"  champion v{before['model_version']} before: {metric} {before['live_metric']:.4f}"
        f" ({before['labelled_rows']} rows, drift report #{before['id']})"
    )
    value = f"{after['value']:.4f}" if after["value"] is not None else after.get("note")
    print(
        f"  new champion v{', v'.join(sorted(out.versions))} after: {metric} {value} "
        f"({after['rows']} fresh rows)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--loop", action="store_true", help="Time the closed loop instead.")
    args = parser.parse_args()
    if args.loop:
        loop()
        return

    spec = load_spec(get_settings().projects_dir / "churn.yaml")
    chunk = demo_data.generate("clean", rows=min(args.rows, 200_000), seed=11)
    frame = chunk.sample(n=args.rows, replace=args.rows > len(chunk), random_state=0)
    frame = frame.reset_index(drop=True)
    rng = np.random.default_rng(0)
    frame["score"] = rng.random(len(frame))
    frame["prediction"] = (frame["score"] > 0.5).astype("int64")
    log = monitored_frame(spec, frame)
    print(f"prediction log: {len(log):,} rows x {log.shape[1]} columns")

    ours = best_of(lambda: profiles.profile(log))
    peer = best_of(lambda: log.describe(include="all"))
    print(f"whylogs window profile : {ours:6.2f} s  {len(log) / ours:12,.0f} rows/s")
    print(f"pandas describe (peer) : {peer:6.2f} s  {len(log) / peer:12,.0f} rows/s")
    print(f"ratio profile/describe time: {ours / peer:.2f}x")

    reference = profiles.profile(log.sample(n=min(len(log), 50_000), random_state=1))
    target = profiles.profile(log)
    categorical = {c for c, col in spec.schema_.columns.items() if col.type == "category"}
    score = best_of(lambda: drift_scores(target, reference, categorical=categorical))
    print(f"drift scoring of {log.shape[1]} columns (merged profile vs reference): {score:.2f} s")


if __name__ == "__main__":
    main()
