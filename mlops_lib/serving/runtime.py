"""Which runtime scores in a deployment: the compiled ONNX graph or the scikit-learn pipeline.

A Bento carries ``compiled/model.onnx`` when its model converted and passed the parity check
at packaging (:mod:`mlops_lib.serving.compiled`). The deployment scores with it unless the
settings ask for the scikit-learn pipeline (``serving_runtime: sklearn``, which the deploy
sets when the smoke test found the graph's answers differ). Both scorers take validated
request columns. The graph scores inline, and reads the columns directly when its only
step before the graph is derived features (no frame is built: the graph itself costs well
under a millisecond, a frame more); the pipeline's calls take the model-input frame and are
batched across concurrent requests in a worker thread (:mod:`mlops_lib.serving.batching`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mlops_lib.features import input_frame
from mlops_lib.serving.batching import MicroBatcher
from mlops_lib.serving.compiled import ONNX_FILE, OnnxScorer
from mlops_lib.serving.predictor import PipelineScorer
from mlops_lib.spec import ProjectSpec

if TYPE_CHECKING:
    import numpy as np

Runtime = Literal["onnx", "sklearn"]
# Validated request columns: feature -> values in row order (None for a gap).
Columns = Mapping[str, Sequence[Any]]
COMPILED_DIR = "compiled"


class InlineScorer:
    """The compiled graph, scored on the event loop: request columns go straight to the
    graph where it takes them (:attr:`OnnxScorer.takes_columns`), else through the
    model-input frame."""

    def __init__(self, scorer: OnnxScorer, spec: ProjectSpec) -> None:
        self.scorer = scorer
        self.spec = spec

    def scores(self, columns: Columns) -> np.ndarray:
        if self.scorer.takes_columns:
            return self.scorer.scores_columns(columns)
        return self.scorer.scores(input_frame(columns, self.spec))

    async def scores_async(self, columns: Columns) -> np.ndarray:
        return self.scores(columns)


class BatchedScorer:
    """The scikit-learn pipeline on model-input frames, its calls merged across concurrent
    requests."""

    def __init__(self, scorer: PipelineScorer, spec: ProjectSpec) -> None:
        self.scorer = scorer
        self.spec = spec
        self.batcher = MicroBatcher(scorer.scores, spec.serving.max_batch_size)

    def scores(self, columns: Columns) -> np.ndarray:
        return self.scorer.scores(input_frame(columns, self.spec))

    async def scores_async(self, columns: Columns) -> np.ndarray:
        return await self.batcher.scores(input_frame(columns, self.spec))


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
        return Chosen("onnx", InlineScorer(OnnxScorer(graph.read_bytes(), model), spec))
    if requested == "onnx":
        raise RuntimeError(f"serving_runtime is onnx but {graph} does not exist")
    pipeline = PipelineScorer(model, spec.target.task == "classification")
    return Chosen("sklearn", BatchedScorer(pipeline, spec))
