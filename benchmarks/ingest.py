"""Ingestion benchmark: the real pipeline against the bare floor, in one run.

    .venv/bin/python -m benchmarks.ingest [--rows 1000000]

Starts the local stack when needed (``mlops stack up``), then on a throw-away project
(a copy of the demo spec) measures:

* pipeline: branch from main, read the Parquet source, every quality rule, coerce,
  write Parquet + report + whylogs profile to lakeFS, commit, merge into main;
* floor: the same DataFrame to Parquet plus one lakeFS upload and one commit.

Prints rows/s of each, the pipeline's stage times and the overhead ratio (goal <= 1.5).
"""

from __future__ import annotations

import argparse
import io
import shutil
import tempfile
import time
from pathlib import Path

import yaml

from mlops_lib import demo_data, ingest, platform_stack
from mlops_lib import versioning as vc
from mlops_lib.stack import manager

BENCH_PROJECT = "bench_ingest"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=2, help="Runs of each; the best is kept.")
    args = parser.parse_args()

    settings = manager.current_settings()
    platform_stack.up(settings, log=lambda _m: None)
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    projects = work / "projects"
    projects.mkdir()
    spec = yaml.safe_load((settings.projects_dir / "churn.yaml").read_text())
    spec["name"] = BENCH_PROJECT
    spec["rules"] = [r for r in spec["rules"] if r["rule"] != "distribution"] + [
        {"rule": "distribution", "severity": "warning"}
    ]
    (projects / f"{BENCH_PROJECT}.yaml").write_text(yaml.safe_dump(spec))
    settings = manager.current_settings(projects_dir=projects)

    print(f"generating {args.rows:,} rows ...", flush=True)
    df = demo_data.generate("clean", rows=args.rows, seed=1)
    src = demo_data.write(df, work / "batch.parquet")

    # Warm-up: the repository exists and main holds a previous accepted batch (so the
    # distribution rule runs against its profile, as in production).
    ingest.ingest_now(BENCH_PROJECT, source=str(src), day="2026-01-01", settings=settings)

    pipeline, floor = [], []
    stages: dict[str, float] = {}
    for i in range(args.repeat):
        t0 = time.perf_counter()
        opened = ingest.open_branch(BENCH_PROJECT, f"bench-{i}-{time.time_ns()}", settings)
        result = ingest.ingest_batch(
            BENCH_PROJECT,
            opened["branch"],
            day="2026-01-02",
            run_id=f"bench-{i}",
            dag_id="bench",
            source=str(src),
            settings=settings,
        )
        ingest.publish(BENCH_PROJECT, result, settings)
        pipeline.append(time.perf_counter() - t0)
        if pipeline[-1] == min(pipeline):
            stages = result["seconds"]

        branch = f"floor-{i}-{time.time_ns()}"
        vc.fresh_branch(BENCH_PROJECT, branch, settings=settings)
        t0 = time.perf_counter()
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        vc.upload(BENCH_PROJECT, branch, "floor/data.parquet", buf.getvalue(), settings=settings)
        vc.commit(BENCH_PROJECT, branch, "floor", {"rows": len(df)}, settings)
        floor.append(time.perf_counter() - t0)
        vc.delete_branch(BENCH_PROJECT, branch, settings)

    best_p, best_f = min(pipeline), min(floor)
    print()
    print(f"{'':<34}{'seconds':>10}{'rows/s':>14}")
    print(f"{'pipeline (branch..merge)':<34}{best_p:>10.2f}{args.rows / best_p:>14,.0f}")
    print(f"{'floor (to_parquet+upload+commit)':<34}{best_f:>10.2f}{args.rows / best_f:>14,.0f}")
    print(f"overhead ratio pipeline/floor: {best_p / best_f:.2f}  (goal <= 1.5)")
    print("pipeline stages (s): " + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
