"""Distributed AutoML benchmark: one search's wall time with 1 and 2 trial processes.

    .venv/bin/python -m benchmarks.automl [--rows 20000] [--trials 16] [--processes 1,2]

What a Celery worker does for a ``search`` task, without Airflow around it: each process
opens the shared study (an Optuna journal file, as the LocalExecutor stack keeps it; the
Celery stack uses PostgreSQL), reads the same training split and runs trials until the
trial budget, counted across all processes, is spent. The same seeded study is searched
with each process count in turn; the table gives wall time, trials per process, the
speed-up over one process and the bound this machine puts on it (its CPU count: trials are
CPU-bound, one core each). The best cross-validated score shows the searches are alike.
No services needed.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from mlops_lib import demo_data
from mlops_lib.automl import create_search, run_trials, search_result
from mlops_lib.datasets import split
from mlops_lib.features import model_input, model_target
from mlops_lib.settings import get_settings
from mlops_lib.spec import ProjectSpec, load_spec

STUDY = "benchmark"


def storage(path: Path):
    import optuna
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def benchmark_spec(trials: int) -> ProjectSpec:
    spec = load_spec(get_settings().projects_dir / "churn.yaml")
    budget = spec.training.budget.model_copy(update={"trials": trials, "seconds": 3600})
    return spec.model_copy(update={"training": spec.training.model_copy(update={"budget": budget})})


def _trial_process(journal: str, shard: int, trials: int, rows: int, threads: int) -> int:
    """One trial task: read the data, run trials of the shared study with ``threads``
    OpenMP threads (HistGradientBoosting's; one worker per core keeps them from competing);
    returns how many it ran."""
    from threadpoolctl import threadpool_limits

    spec = benchmark_spec(trials)
    train, _ = split(demo_data.generate("clean", rows=rows, seed=1), spec)
    X, y = model_input(train, spec), model_target(train, spec)
    with threadpool_limits(limits=threads):
        return len(run_trials(spec, storage(Path(journal)), STUDY, X, y, shard=shard))


def measure(processes: int, trials: int, rows: int, folder: Path, threads: int) -> dict:
    journal = folder / f"study-{processes}.log"
    spec = benchmark_spec(trials)
    create_search(spec, storage(journal), STUDY)
    started = time.perf_counter()
    context = multiprocessing.get_context("spawn")  # a fresh interpreter, as a worker's task
    with ProcessPoolExecutor(processes, mp_context=context) as pool:
        shards = list(
            pool.map(
                _trial_process,
                [str(journal)] * processes,
                range(processes),
                [trials] * processes,
                [rows] * processes,
                [threads] * processes,
            )
        )
    wall = time.perf_counter() - started
    result = search_result(spec, storage(journal), STUDY)
    return {"wall": wall, "shards": shards, "best": result.best.cv_score, "trials": result.trials}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--processes", default="1,2")
    parser.add_argument(
        "--threads", type=int, default=0, help="OpenMP threads per process (0: CPUs / processes)"
    )
    args = parser.parse_args()
    counts = [int(n) for n in args.processes.split(",")]
    cpus = os.cpu_count() or 1
    metric = benchmark_spec(args.trials).training.metric
    print(f"churn demo data: {args.rows:,} rows; budget {args.trials} trials; {cpus} CPUs")
    print(
        f"{'processes':>9} {'wall s':>8} {'trials each':>14} {'speed-up':>9} "
        f"{'CPU bound':>9} {'best cv ' + metric:>16} {'trial s (sum)':>13}"
    )
    first = None
    with tempfile.TemporaryDirectory(prefix="mlops-automl-bench-") as tmp:
        for n in counts:
            threads = args.threads or max(1, cpus // n)
            out = measure(n, args.trials, args.rows, Path(tmp), threads)
            first = first or out["wall"] * counts[0]
            busy = sum(t.seconds for t in out["trials"])
            print(
                f"{n:>9} {out['wall']:>8.1f} {'/'.join(map(str, out['shards'])):>14} "
                f"{first / out['wall']:>8.2f}x {min(n, cpus):>8}x {out['best']:>16.4f} "
                f"{busy:>13.1f}  ({threads} thread(s) each)"
            )


if __name__ == "__main__":
    main()
