"""BentoML services of one project's model.

    bentoml serve service:ModelService --working-dir bentos \
        --arg project=churn --arg model_tag=churn:<tag> --arg model_version=3

(``mlops_lib.serving.package.build_bento`` packages the same service as a Bento whose
arguments also carry the project spec, so a Bento serves exactly what it was built with.)

``ModelService`` validates requests against the schema generated from the project spec
(a malformed request gets HTTP 400 naming each bad field), in rows (``instances``) or
columns (``columns`` + ``data``), and scores them in the same process: with the compiled
ONNX graph the Bento carries (``compiled/model.onnx``, parity-checked when it was packaged)
or, as the fallback, with the fitted scikit-learn pipeline, whose calls are batched across
concurrent requests. A model that takes features from the feature store gets them from the
project's feature server for the join keys each request sends (required then): an unknown
key is answered 422 naming the key field and values (``unknown_entity: reject``), a feature
server that cannot answer 503 naming the feature store
(:mod:`mlops_lib.serving.store_features`). Every served row goes to the prediction log
(buffered, flushed in the background to lakeFS), with the store features the model took.
The ``X-MLOps-Runtime`` response header says which runtime answered.
"""

import gc
import json
import uuid
from pathlib import Path
from typing import Annotated, Any

import bentoml
from pydantic import Field

from mlops_lib.serving.package import PROBE_HEADER, RUNTIME_HEADER, is_probe
from mlops_lib.serving.predictor import Predictor
from mlops_lib.serving.schema import (
    ColumnarError,
    column_adapters,
    instance_row,
    validate_columns,
)
from mlops_lib.serving.store_features import LOOKUP_ERRORS, StoreFeatures, lookup_failure
from mlops_lib.serving.timeouts import release_timers
from mlops_lib.spec import ProjectSpec

ARGS = bentoml.use_arguments()
release_timers()  # each request's timeout timer ends with the request (see the module)
HERE = Path(__file__).resolve().parent


def _spec() -> ProjectSpec:
    embedded = getattr(ARGS, "spec", None)
    if embedded:
        return ProjectSpec.model_validate(json.loads(embedded))
    from mlops_lib.spec import project_spec

    return project_spec(ARGS.project)


SPEC = _spec()
Instance = instance_row(SPEC)
ADAPTERS = column_adapters(SPEC)
MAX_ROWS = SPEC.serving.max_batch_size
NAME = SPEC.name.replace("_", "-")
SPOOL_BYTES = bentoml.metrics.Gauge(
    name="mlops_prediction_log_spool_bytes",
    documentation="Bytes of served predictions spooled locally, not yet in lakeFS.",
)
SPOOL_ALARM = bentoml.metrics.Gauge(
    name="mlops_prediction_log_spool_alarm",
    documentation="1 when the prediction log spool is near its cap (lakeFS not taking files).",
)
DROPPED_ROWS = bentoml.metrics.Counter(
    name="mlops_prediction_log_dropped_rows",
    documentation="Served rows dropped from a spool over its cap.",
)
ONE_FORM = [
    {
        "loc": ["instances"],
        "msg": "send either instances (rows) or columns and data (the columnar form)",
        "type": "missing",
    }
]


@bentoml.service(
    name=f"mlops-{NAME}",
    traffic={"timeout": 30},
    workers=1,
    logging={"access": {"skip_paths": ["/livez", "/readyz", "/metrics"]}},
)
class ModelService:
    """Predictions of the project's deployed model version."""

    bento_model = bentoml.models.BentoModel(ARGS.model_tag)

    def __init__(self) -> None:
        import mlflow.sklearn

        from mlops_lib.serving.runtime import scorer_for
        from mlops_lib.settings import get_settings

        settings = get_settings()
        self.settings = settings
        model = mlflow.sklearn.load_model(self.bento_model.path_of("mlflow_model"))
        chosen = scorer_for(SPEC, model, HERE, settings.serving_runtime)
        self.runtime, self.scorer = chosen.runtime, chosen.scorer
        self.predictor = Predictor(SPEC, model, str(ARGS.model_version))
        self.store_features = StoreFeatures.of(SPEC, settings)  # None: no store features
        self.prediction_log = self._prediction_log(settings)
        self._dropped_exported = 0
        # What is loaded now lives as long as the process: out of the collector's sight, a
        # full collection does not walk the libraries and the model on a request's time.
        gc.freeze()

    @staticmethod
    def _prediction_log(settings):
        from mlops_lib.serving.prediction_log import PredictionLog, lakefs_shipper, spool_dir

        return PredictionLog(
            SPEC.name,
            str(ARGS.model_version),
            spool_dir(settings, SPEC.name),
            lakefs_shipper(SPEC.name, settings),
            flush_seconds=settings.prediction_log_flush_seconds,
            max_rows=settings.prediction_log_max_rows,
            spool_max_bytes=int(settings.prediction_log_spool_max_mb * 1e6),
            column_types={name: SPEC.input_column(name).type for name in SPEC.store_features},
        ).start()

    @bentoml.api(route="/predict")
    async def predict(
        self,
        ctx: bentoml.Context,
        instances: Annotated[list[Instance], Field(min_length=1, max_length=MAX_ROWS)]
        | None = None,
        columns: Annotated[list[str], Field(min_length=1, max_length=len(ADAPTERS))] | None = None,
        data: Annotated[list[list[Any]], Field(min_length=1, max_length=MAX_ROWS)] | None = None,
    ) -> dict:
        """Predictions (same order as the rows), class probabilities, model version and the
        request id under which the rows are kept in the prediction log.

        Rows come as ``instances`` (``[{column: value}, ...]``, answered with a
        ``{class: p}`` per row) or in the columnar form, ``columns`` and ``data``
        (answered with ``probabilities: {"columns": [...], "data": [[...], ...]}``).
        A model that takes store features needs each row's join key (its entity's key,
        e.g. ``customer_id``); the features are looked up by it, never sent.
        Requests with this deployment's token in ``X-MLOps-Probe`` (the deploy DAG's smoke
        test) are answered but not logged: they are not production traffic. Without the
        token the header changes nothing."""
        ctx.response.headers[RUNTIME_HEADER] = self.runtime
        columnar = (columns is not None, data is not None)
        if (instances is not None) == any(columnar) or any(columnar) != all(columnar):
            ctx.response.status_code = 400
            return {"detail": ONE_FORM}
        if instances is not None:
            sent: Any = {name: [row.get(name) for row in instances] for name in ADAPTERS}
        else:
            try:
                sent = validate_columns(SPEC, ADAPTERS, columns, data)
            except ColumnarError as exc:
                ctx.response.status_code = 400
                return {"detail": exc.errors}
        if self.store_features is not None:
            try:
                sent = await self.store_features.add(sent)
            except LOOKUP_ERRORS as exc:
                ctx.response.status_code, body = lookup_failure(exc, columnar=instances is None)
                return body
        scores = await self.scorer.scores_async(sent)
        answer = (
            self.predictor.response if instances is not None else self.predictor.columnar_response
        )
        out = answer(scores)
        out["request_id"] = uuid.uuid4().hex
        if not is_probe(self.settings, ctx.request.headers.get(PROBE_HEADER)):
            self.prediction_log.record(
                out["request_id"], sent, out["predictions"], self.predictor.log_scores(scores)
            )
        self._export_spool_metrics()
        return out

    def _export_spool_metrics(self) -> None:
        """The prediction log's spool on /metrics: size, alarm, rows dropped."""
        plog = self.prediction_log
        SPOOL_BYTES.set(plog.spool_bytes)
        SPOOL_ALARM.set(1 if plog.spool_alarm else 0)
        if plog.dropped_rows > self._dropped_exported:
            DROPPED_ROWS.inc(plog.dropped_rows - self._dropped_exported)
            self._dropped_exported = plog.dropped_rows

    @bentoml.on_shutdown
    def close_prediction_log(self) -> None:
        """Flush and ship what the prediction log still holds."""
        self.prediction_log.close()

    @bentoml.on_shutdown
    async def close_store_features(self) -> None:
        """Close the keep-alive connections to the feature server."""
        if self.store_features is not None:
            await self.store_features.aclose()


# The answer is always JSON. Said once here, BentoML need not derive the media type from the
# answer's JSON schema on every response.
ModelService.apis["predict"].output_spec.media_type = "application/json"
