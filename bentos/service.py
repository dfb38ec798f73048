"""BentoML service of one project's model.

    bentoml serve service:ModelService --working-dir bentos \
        --arg project=churn --arg model_tag=churn:<tag> --arg model_version=3

The request schema is generated from the project spec: a malformed request gets HTTP 400
naming each bad field. The model is the same fitted scikit-learn pipeline MLflow registered.
"""

from typing import Annotated

import bentoml
from pydantic import Field

from mlops_lib.ingest import project_spec
from mlops_lib.serving.predictor import Predictor
from mlops_lib.serving.schema import instance_model

ARGS = bentoml.use_arguments()
SPEC = project_spec(ARGS.project)
Instance = instance_model(SPEC)
MAX_ROWS = SPEC.serving.max_batch_size


@bentoml.service(name=f"mlops-{SPEC.name.replace('_', '-')}", traffic={"timeout": 30}, workers=1)
class ModelService:
    """Predictions of the project's deployed model version."""

    bento_model = bentoml.models.BentoModel(ARGS.model_tag)

    def __init__(self) -> None:
        import mlflow.sklearn

        model = mlflow.sklearn.load_model(self.bento_model.path_of("mlflow_model"))
        self.predictor = Predictor(SPEC, model, version=str(ARGS.model_version))

    @bentoml.api(route="/predict")
    def predict(
        self, instances: Annotated[list[Instance], Field(min_length=1, max_length=MAX_ROWS)]
    ) -> dict:
        """Predictions (same order as ``instances``), class probabilities and model version."""
        return self.predictor.predict([row.model_dump() for row in instances])
