"""Which runtime scores in a deployment: the compiled ONNX graph or the scikit-learn pipeline.

A Bento carries ``compiled/model.onnx`` when its model converted and passed the parity check
at packaging (:mod:`mlops_lib.serving.compiled`). The deployment scores with it unless the
settings ask for the scikit-learn pipeline (``serving_runtime: sklearn``, which the deploy
sets when the smoke test found the graph's answers differ). The graph scores inline (a call
costs well under a millisecond); the pipeline's calls are batched across concurrent requests
in a worker thread (:mod:`mlops_lib.serving.batching`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mlops_lib.serving.batching import MicroBatcher
from mlops_lib.serving.compiled import ONNX_FILE, OnnxScorer
from mlops_lib.serving.predictor import PipelineScorer
from mlops_lib.spec import ProjectSpec

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

Runtime = Literal["onnx", "sklearn"]
COMPILED_DIR = "compiled"


class InlineScorer:
    """The compiled graph, scored on the event loop."""

    def __init__(self, scorer: Any) -> None:
        self.scorer = scorer

    def scores(self, frame: pd.DataFrame) -> np.ndarray:
        return self.scorer.scores(frame)

    async def scores_async(self, frame: pd.DataFrame) -> np.ndarray:
        return self.scorer.scores(frame)


class BatchedScorer:
    """The scikit-learn pipeline, its calls merged across concurrent requests."""

    def __init__(self, scorer: Any, max_rows: int) -> None:
        self.scorer = scorer
        self.batcher = MicroBatcher(scorer.scores, max_rows)

    def scores(self, frame: pd.DataFrame) -> np.ndarray:
        return self.scorer.scores(frame)

    async def scores_async(self, frame: pd.DataFrame) -> np.ndarray:
        return await self.batcher.scores(frame)


@dataclass(frozen=True)
class Chosen:
    runtime: Runtime
    scorer: InlineScorer | BatchedScorer


def compiled_graph(folder: Path) -> Path:
    """Where a Bento keeps its compiled graph (relative to its service code)."""
    return Path(folder) / COMPILED_DIR / ONNX_FILE


def scorer_for(spec: ProjectSpec, model: Any, folder: Path, requested: str) -> Chosen:
    """The deployment's scorer: the graph in ``folder`` unless ``requested`` is sklearn."""
    graph = compiled_graph(folder)
    if requested != "sklearn" and graph.is_file():
        return Chosen("onnx", InlineScorer(OnnxScorer(graph.read_bytes(), model)))
    if requested == "onnx":
        raise RuntimeError(f"serving_runtime is onnx but {graph} does not exist")
    pipeline = PipelineScorer(model, spec.target.task == "classification")
    return Chosen("sklearn", BatchedScorer(pipeline, spec.serving.max_batch_size))
