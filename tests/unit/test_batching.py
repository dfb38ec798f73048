"""Micro-batching of concurrent scoring calls, and the choice of a deployment's runtime."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops_lib.serving.batching import MicroBatcher
from mlops_lib.serving.runtime import (
    BatchedScorer,
    InlineScorer,
    compiled_graph,
    scorer_for,
)
from mlops_lib.spec import load_spec

from .test_spec import CHURN

WAIT = 5.0  # seconds: a bound on every wait, so a broken batcher fails instead of hanging


class Scorer:
    """Scores ``x * 10``; records the rows of each call; can hold its first call until
    released and fail the calls whose frame holds a given value."""

    def __init__(self, hold_first: bool = False, fail_on: float | None = None) -> None:
        self.rows: list[int] = []
        self.started = threading.Event()
        self.release = threading.Event()
        if not hold_first:
            self.release.set()
        self.fail_on = fail_on

    def __call__(self, frame: pd.DataFrame) -> np.ndarray:
        self.rows.append(len(frame))
        self.started.set()
        if len(self.rows) == 1:
            assert self.release.wait(WAIT), "the first call was never released"
        if self.fail_on is not None and (frame["x"] == self.fail_on).any():
            raise ValueError("the model cannot score this")
        return frame["x"].to_numpy(dtype="float64") * 10


def frame(*xs: float) -> pd.DataFrame:
    return pd.DataFrame({"x": list(xs)})


async def while_first_call_runs(batcher: MicroBatcher, scorer: Scorer, first, *more):
    """Score ``first``; once its call runs, queue ``more``; then release the call.
    Returns every request's outcome (scores or exception), in submission order."""
    tasks = [asyncio.create_task(batcher.scores(first))]
    assert await asyncio.to_thread(scorer.started.wait, WAIT)
    tasks += [asyncio.create_task(batcher.scores(f)) for f in more]
    await asyncio.sleep(0)  # let every request join the queue
    scorer.release.set()
    async with asyncio.timeout(WAIT):
        return await asyncio.gather(*tasks, return_exceptions=True)


def test_a_lone_request_is_scored_at_once_in_one_call() -> None:
    scorer = Scorer()
    batcher = MicroBatcher(scorer, max_rows=100)
    got = asyncio.run(batcher.scores(frame(1, 2, 3)))
    assert got.tolist() == [10, 20, 30]
    assert scorer.rows == [3] and batcher.calls == 1


def test_requests_sent_one_after_another_are_each_scored_alone() -> None:
    scorer = Scorer()
    batcher = MicroBatcher(scorer, max_rows=100)

    async def run() -> list[list[float]]:
        return [(await batcher.scores(frame(i, i))).tolist() for i in range(3)]

    assert asyncio.run(run()) == [[0, 0], [10, 10], [20, 20]]
    assert scorer.rows == [2, 2, 2] and batcher.calls == 3


def test_requests_arriving_during_a_call_are_merged_into_the_next_one() -> None:
    scorer = Scorer(hold_first=True)
    batcher = MicroBatcher(scorer, max_rows=100)
    got = asyncio.run(
        while_first_call_runs(batcher, scorer, frame(1), frame(2, 3), frame(4), frame(5, 6, 7))
    )
    assert scorer.rows == [1, 6] and batcher.calls == 2
    # Each request gets its own slice of the merged call, in order.
    assert [g.tolist() for g in got] == [[10], [20, 30], [40], [50, 60, 70]]


def test_max_rows_caps_a_merged_call() -> None:
    scorer = Scorer(hold_first=True)
    batcher = MicroBatcher(scorer, max_rows=5)
    queued = [frame(2, 3, 4), frame(5, 6), frame(7), frame(8, 9, 10, 11, 12, 13, 14)]
    got = asyncio.run(while_first_call_runs(batcher, scorer, frame(1), *queued))
    # 3 + 2 rows fill a call; the next frame starts another; an oversized frame goes alone.
    assert scorer.rows == [1, 5, 1, 7]
    assert all(r <= 5 for r in scorer.rows[:-1])
    assert [g.tolist() for g in got] == [(f["x"] * 10).tolist() for f in [frame(1), *queued]]


def test_a_failing_call_fails_every_request_of_its_batch_and_batching_goes_on() -> None:
    scorer = Scorer(hold_first=True, fail_on=3)
    batcher = MicroBatcher(scorer, max_rows=100)

    async def run():
        got = await while_first_call_runs(batcher, scorer, frame(1), frame(2), frame(3))
        after = await batcher.scores(frame(4, 5))
        return got, after

    got, after = asyncio.run(run())
    assert got[0].tolist() == [10]
    assert all(isinstance(g, ValueError) and "cannot score" in str(g) for g in got[1:])
    assert got[1] is got[2]  # the same error reaches both waiting requests
    assert after.tolist() == [40, 50]
    assert scorer.rows == [1, 2, 2] and batcher.calls == 3


# runtime -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def churn():
    """The demo spec, a small fitted pipeline and model-input rows to score."""
    from mlops_lib import demo_data
    from mlops_lib.automl import make_estimator  # scikit-learn: imported for these tests only
    from mlops_lib.features import build_pipeline, model_input, model_target

    spec = load_spec(CHURN)
    df = demo_data.generate("clean", rows=400)
    pipeline = build_pipeline(spec, make_estimator("linear", {}, "classification", 0))
    pipeline.fit(model_input(df, spec), model_target(df, spec))
    sample = model_input(demo_data.generate("clean", rows=50, seed=5), spec)
    sample.loc[:4, "monthly_charges"] = np.nan  # gaps the graph must fill like the pipeline
    sample.loc[5:9, "region"] = None
    return spec, pipeline, sample


@pytest.fixture(scope="module")
def graph(churn) -> bytes:
    from mlops_lib.serving.compiled import compile_pipeline

    _, pipeline, sample = churn
    compiled = compile_pipeline(pipeline, sample)
    assert compiled.runtime == "onnx", compiled.reason
    return compiled.onnx


def columns_of(sample: pd.DataFrame) -> dict[str, list]:
    """The sample's rows as a service receives them: validated values by column, None for
    a gap."""
    return {
        name: [None if v is None or (isinstance(v, float) and np.isnan(v)) else v for v in values]
        for name, values in sample.astype(object).to_dict(orient="list").items()
    }


def with_graph(folder: Path, onnx: bytes) -> Path:
    path = compiled_graph(folder)
    path.parent.mkdir(parents=True)
    path.write_bytes(onnx)
    return folder


def test_without_a_compiled_graph_the_pipeline_serves_batched(churn, tmp_path: Path) -> None:
    spec, pipeline, sample = churn
    chosen = scorer_for(spec, pipeline, tmp_path, "auto")
    assert chosen.runtime == "sklearn"
    assert isinstance(chosen.scorer, BatchedScorer)
    assert chosen.scorer.batcher.max_rows == spec.serving.max_batch_size
    want = pipeline.predict_proba(sample)
    sent = columns_of(sample)
    np.testing.assert_array_equal(chosen.scorer.scores(sent), want)
    np.testing.assert_array_equal(asyncio.run(chosen.scorer.scores_async(sent)), want)


def test_asking_for_onnx_without_a_graph_is_an_error_naming_the_path(churn, tmp_path) -> None:
    spec, pipeline, _ = churn
    with pytest.raises(RuntimeError, match="serving_runtime is onnx") as err:
        scorer_for(spec, pipeline, tmp_path, "onnx")
    assert str(tmp_path / "compiled" / "model.onnx") in str(err.value)


@pytest.mark.parametrize("requested", ["auto", "onnx"])
def test_a_compiled_graph_serves_inline_and_scores_like_the_pipeline(
    churn, graph, tmp_path: Path, requested: str
) -> None:
    spec, pipeline, sample = churn
    chosen = scorer_for(spec, pipeline, with_graph(tmp_path, graph), requested)
    assert chosen.runtime == "onnx"
    assert isinstance(chosen.scorer, InlineScorer)
    assert chosen.scorer.scorer.takes_columns  # churn's derived features read numbers only
    want = pipeline.predict_proba(sample)
    sent = columns_of(sample)
    np.testing.assert_allclose(chosen.scorer.scores(sent), want, rtol=0, atol=1e-5)
    got = asyncio.run(chosen.scorer.scores_async(sent))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_asking_for_sklearn_serves_the_pipeline_even_with_a_graph(
    churn, graph, tmp_path: Path
) -> None:
    spec, pipeline, sample = churn
    chosen = scorer_for(spec, pipeline, with_graph(tmp_path, graph), "sklearn")
    assert chosen.runtime == "sklearn"
    assert isinstance(chosen.scorer, BatchedScorer)
    want = pipeline.predict_proba(sample)
    np.testing.assert_array_equal(chosen.scorer.scores(columns_of(sample)), want)
