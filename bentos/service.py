"""BentoML services of one project's model.

    bentoml serve service:ModelService --working-dir bentos \
        --arg project=churn --arg model_tag=churn:<tag> --arg model_version=3

``ModelService`` validates requests against the schema generated from the project spec
(a malformed request gets HTTP 400 naming each bad field) and hands one DataFrame per
request to ``Inference``, whose batchable API lets BentoML's adaptive batching merge
concurrent requests into one vectorised call of the fitted scikit-learn pipeline.
"""

from typing import Annotated

import bentoml
import numpy as np
from pydantic import Field

from mlops_lib.ingest import project_spec
from mlops_lib.serving.predictor import Predictor
from mlops_lib.serving.schema import instance_model

ARGS = bentoml.use_arguments()
SPEC = project_spec(ARGS.project)
Instance = instance_model(SPEC)
MAX_ROWS = SPEC.serving.max_batch_size
NAME = SPEC.name.replace("_", "-")


@bentoml.service(name=f"mlops-{NAME}-inference", workers=1)
class Inference:
    """The fitted pipeline behind a batchable, vectorised API."""

    bento_model = bentoml.models.BentoModel(ARGS.model_tag)

    def __init__(self) -> None:
        import mlflow.sklearn

        model = mlflow.sklearn.load_model(self.bento_model.path_of("mlflow_model"))
        self.predictor = Predictor(SPEC, model, version=str(ARGS.model_version))

    @bentoml.api(
        batchable=True,
        max_batch_size=SPEC.serving.max_batch_size,
        max_latency_ms=SPEC.serving.max_latency_ms * 10,
    )
    def scores(self, rows: np.ndarray) -> np.ndarray:
        """Class probabilities (classification) or predictions (regression), row by row.

        ``rows`` is an object array in the spec's feature order (batched along axis 0).
        """
        return self.predictor.scores(self.predictor.from_array(rows))


@bentoml.service(name=f"mlops-{NAME}", traffic={"timeout": 30}, workers=1)
class ModelService:
    """Predictions of the project's deployed model version."""

    inference = bentoml.depends(Inference)

    def __init__(self) -> None:
        self.predictor = Predictor(SPEC, None, version=str(ARGS.model_version))

    @bentoml.api(route="/predict")
    async def predict(
        self, instances: Annotated[list[Instance], Field(min_length=1, max_length=MAX_ROWS)]
    ) -> dict:
        """Predictions (same order as ``instances``), class probabilities and model version."""
        frame = self.predictor.frame([row.model_dump() for row in instances])
        scores = await self.inference.to_async.scores(frame.to_numpy(dtype=object))
        return self.predictor.response(np.asarray(scores))
