"""Training benchmark: AutoML against a default HistGradientBoosting baseline, same run.

    .venv/bin/python -m benchmarks.train [--rows 50000]

Both see the same time-ordered train/holdout split of the demo churn data and the same
feature pipeline; AutoML runs with the demo spec's budget. Prints the holdout metric and
wall time of each and the deltas. Goal: AutoML beats the baseline within the budget.
No services needed: this measures the modelling, not the tracking.
"""

from __future__ import annotations

import argparse
import time

from mlops_lib import demo_data
from mlops_lib.automl import make_estimator, search
from mlops_lib.datasets import split
from mlops_lib.features import build_pipeline, model_input
from mlops_lib.metrics import LOWER_IS_BETTER, holdout_metrics
from mlops_lib.settings import get_settings
from mlops_lib.spec import load_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    spec = load_spec(get_settings().projects_dir / "churn.yaml")
    metric = spec.training.metric
    df = demo_data.generate("clean", rows=args.rows, seed=args.seed)
    train_df, holdout = split(df, spec)
    target = spec.target.column
    X, y = model_input(train_df, spec), train_df[target]
    Xh, yh = model_input(holdout, spec), holdout[target]

    t0 = time.perf_counter()
    baseline = build_pipeline(
        spec, make_estimator("hist_gradient_boosting", {}, spec.target.task, spec.training.seed)
    ).fit(X, y)
    base_secs = time.perf_counter() - t0
    base = holdout_metrics(baseline, Xh, yh, spec)

    t0 = time.perf_counter()
    result = search(spec, X, y)
    best = result.best
    model = build_pipeline(
        spec, make_estimator(best.family, best.params, spec.target.task, spec.training.seed)
    ).fit(X, y)
    auto_secs = time.perf_counter() - t0
    auto = holdout_metrics(model, Xh, yh, spec)

    sign = -1 if metric in LOWER_IS_BETTER else 1
    delta = sign * (auto[metric] - base[metric])
    budget = spec.training.budget
    print(f"data: {len(X):,} train rows, {len(Xh):,} holdout rows (time-ordered split)")
    print(
        f"AutoML budget: {budget.trials} trials / {budget.seconds}s; ran {len(result.trials)} "
        f"trials; best {best.family} {best.params}"
    )
    print()
    print(f"{'':<28}{'holdout ' + metric:>18}{'seconds':>10}")
    print(f"{'baseline HGB (defaults)':<28}{base[metric]:>18.4f}{base_secs:>10.1f}")
    print(f"{'AutoML':<28}{auto[metric]:>18.4f}{auto_secs:>10.1f}")
    print(
        f"delta {metric}: {delta:+.4f} ({'better' if delta > 0 else 'not better'} than baseline);"
        f" time ratio {auto_secs / base_secs:.1f}x"
    )
    other = {k: round(auto[k] - base[k], 4) for k in auto if k != metric}
    print(f"other holdout deltas (AutoML - baseline): {other}")


if __name__ == "__main__":
    main()
