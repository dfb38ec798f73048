"""Serving replicas benchmark: the stable endpoint's throughput with 1 and N replicas.

    .venv/bin/python -m benchmarks.replicas [--replicas 2] [--seconds 8]   # after `make demo`

Loads the gateway (nginx, least connections) with the deployed champion as it serves
(one replica), then deploys the same champion again with ``--replicas`` processes
(package, start, smoke test, switch: what the deploy DAG does), loads it the same way and
rolls back. Prints req/s and p50/p99 at concurrency 1, 8 and 32 and for a 1,000-row batch,
with the ratio N / 1. The load generator shares the machine's cores with the replicas: on
2 cores the bound is what two Python processes can add next to it, not N.
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import contextmanager
from pathlib import Path

import yaml

from benchmarks.serving import BATCH_ROWS, measure
from mlops_lib import demo_data


@contextmanager
def replicas_in_spec(path: Path, replicas: int):
    before = path.read_text()
    spec = yaml.safe_load(before)
    spec["serving"] = dict(spec.get("serving") or {}, replicas=replicas)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    try:
        yield
    finally:
        path.write_text(before)


def deploy_with(settings, project: str, version: int, replicas: int) -> int:
    from mlops_lib.serving import deploy

    with replicas_in_spec(settings.projects_dir / f"{project}.yaml", replicas):
        built = deploy.package(project, version, settings=settings)
        deploy.start(built["id"], settings=settings)
        deploy.smoke_test(built["id"], settings=settings)
        deploy.switch(built["id"], settings=settings)
    return built["id"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--project", default="churn")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()

    from mlops_lib.lineage import lineage_store
    from mlops_lib.serving import deploy
    from mlops_lib.spec import project_spec
    from mlops_lib.stack.manager import current_settings

    settings = current_settings()
    live = lineage_store(settings).deployments(args.project, "active")
    if not live:
        sys.exit(f"no deployment of {args.project!r}: run `make demo` first")
    spec = project_spec(args.project, settings)
    raw = demo_data.generate("clean", rows=BATCH_ROWS, seed=77)
    rows = json.loads(raw[spec.features].to_json(orient="records", date_format="iso"))
    bodies = [json.dumps({"instances": [r]}).encode() for r in rows[:200]]
    batches = {"batch": json.dumps({"instances": rows}).encode()}
    url = f"{settings.serving_base_url}/{args.project}/predict"

    one = measure(url, bodies, batches, args.seconds)
    replicas = len(deploy.replica_ports(live[0]))
    deployment = deploy_with(settings, args.project, live[0]["model_version"], args.replicas)
    try:
        many = measure(url, bodies, batches, args.seconds)
    finally:
        deploy.rollback(args.project, settings=settings)
    print(f"{args.project} v{live[0]['model_version']} ({live[0]['runtime']}) via {url}")
    print(
        f"deployment {live[0]['id']}: {replicas} replica(s); deployment {deployment}: "
        f"{args.replicas} replicas (rolled back after)"
    )
    print(
        f"{'load':>8} {'1: req/s':>10} {'p50 ms':>8} {'p99 ms':>8} "
        f"{f'{args.replicas}: req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'ratio':>7} {'errors':>7}"
    )
    for key in one:
        a, b = one[key], many[key]
        print(
            f"{key:>8} {a['rps']:>10.1f} {a['p50']:>8.2f} {a['p99']:>8.2f} "
            f"{b['rps']:>10.1f} {b['p50']:>8.2f} {b['p99']:>8.2f} "
            f"{b['rps'] / a['rps']:>6.2f}x {a['errors'] + b['errors']:>7}"
        )


if __name__ == "__main__":
    main()
