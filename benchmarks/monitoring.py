"""Monitoring benchmark: profiling a prediction log against pandas' describe, same run.

    .venv/bin/python -m benchmarks.monitoring [--rows 1000000]

Builds a prediction log of the demo project (the spec's features, prediction and score, as
the service logs them) and measures, on the same frame: the platform's window profile
(whylogs, the lean schema the monitor uses, with datetimes as epoch) and
`pandas.DataFrame.describe(include="all")`. Prints rows/s of each and the ratio, then the
time to score drift of one merged profile against a reference. No services needed.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from mlops_lib import demo_data, profiles
from mlops_lib.monitoring import drift_scores, monitored_frame
from mlops_lib.settings import get_settings
from mlops_lib.spec import load_spec


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()

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
