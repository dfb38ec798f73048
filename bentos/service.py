"""BentoML services of one project's model.

    bentoml serve service:ModelService --working-dir bentos \
        --arg project=churn --arg model_tag=churn:<tag> --arg model_version=3

(``mlops_lib.serving.package.build_bento`` packages the same service as a Bento whose
arguments also carry the project spec, so a Bento serves exactly what it was built with.)

``ModelService`` validates requests against the schema generated from the project spec
(a malformed request gets HTTP 400 naming each bad field) and hands one object array per
request to ``Inference``, whose batchable API lets BentoML's adaptive batching merge
concurrent requests into one vectorised call of the fitted scikit-learn pipeline. Every
served row goes to the prediction log (buffered, flushed in the background to lakeFS).
"""

import asyncio
import json
import uuid
from typing import Annotated

import aiohttp
import bentoml
import numpy as np
from bentoml.exceptions import ServiceUnavailable
from pydantic import Field

from mlops_lib.serving.package import PROBE_HEADER, is_probe
from mlops_lib.serving.predictor import Predictor
from mlops_lib.serving.schema import instance_model
from mlops_lib.spec import ProjectSpec

ARGS = bentoml.use_arguments()


def _spec() -> ProjectSpec:
    embedded = getattr(ARGS, "spec", None)
    if embedded:
        return ProjectSpec.model_validate(json.loads(embedded))
    from mlops_lib.spec import project_spec

    return project_spec(ARGS.project)


SPEC = _spec()
Instance = instance_model(SPEC)
MAX_ROWS = SPEC.serving.max_batch_size
NAME = SPEC.name.replace("_", "-")
# One scoring call to the inference service (a 1,000-row batch takes ~0.1 s); three
# attempts fit in the API's 30 s request timeout.
ATTEMPT_TIMEOUT_S = 8.0
SHED_AFTER_MS = max(10_000, SPEC.serving.max_latency_ms * 10)
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


@bentoml.service(
    name=f"mlops-{NAME}-inference",
    workers=1,
    # Internal calls only; the API service logs each request.
    logging={"access": {"enabled": False}},
)
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
        # BentoML sheds (503) requests it expects to exceed this; queue instead under bursts.
        max_latency_ms=SHED_AFTER_MS,
    )
    def scores(self, rows: np.ndarray) -> np.ndarray:
        """Class probabilities (classification) or predictions (regression), row by row.

        ``rows`` is an object array in the spec's feature order (batched along axis 0).
        """
        return self.predictor.scores(self.predictor.from_array(rows))


@bentoml.service(
    name=f"mlops-{NAME}",
    traffic={"timeout": 30},
    workers=1,
    logging={"access": {"skip_paths": ["/livez", "/readyz", "/metrics"]}},
)
class ModelService:
    """Predictions of the project's deployed model version."""

    inference = bentoml.depends(Inference)

    def __init__(self) -> None:
        from mlops_lib.serving.prediction_log import PredictionLog, lakefs_shipper, spool_dir
        from mlops_lib.settings import get_settings

        settings = get_settings()
        self.settings = settings
        self.predictor = Predictor(SPEC, None, version=str(ARGS.model_version))
        self.prediction_log = PredictionLog(
            SPEC.name,
            str(ARGS.model_version),
            spool_dir(settings, SPEC.name),
            lakefs_shipper(SPEC.name, settings),
            flush_seconds=settings.prediction_log_flush_seconds,
            max_rows=settings.prediction_log_max_rows,
            spool_max_bytes=int(settings.prediction_log_spool_max_mb * 1e6),
        ).start()
        self._dropped_exported = 0

    @bentoml.api(route="/predict")
    async def predict(
        self,
        instances: Annotated[list[Instance], Field(min_length=1, max_length=MAX_ROWS)],
        ctx: bentoml.Context,
    ) -> dict:
        """Predictions (same order as ``instances``), class probabilities, model version and
        the request id under which the rows are kept in the prediction log.

        Requests with this deployment's token in ``X-MLOps-Probe`` (the deploy DAG's smoke
        test) are answered but not logged: they are not production traffic. Without the
        token the header changes nothing."""
        rows = [row.model_dump() for row in instances]
        batch = self.predictor.array(rows)
        scores = await self._scores(batch)
        scores = np.asarray(scores)
        out = self.predictor.response(scores)
        out["request_id"] = uuid.uuid4().hex
        if not is_probe(self.settings, ctx.request.headers.get(PROBE_HEADER)):
            self.prediction_log.record(
                out["request_id"], rows, out["predictions"], self.predictor.log_scores(scores)
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

    async def _scores(self, batch: np.ndarray, attempts: int = 3):
        """Scores from ``Inference``, retried on transport errors.

        BentoML's internal client may reuse a keep-alive connection the dependency just
        closed (bentoml/BentoML#4971: "Can not write request body", "Connection closed.",
        or a call that never returns) and its batcher sheds bursts with 503; scoring is
        idempotent, so it is retried, each attempt bounded by ``ATTEMPT_TIMEOUT_S``.
        """
        retryable = (aiohttp.ClientError, ServiceUnavailable, RuntimeError, TimeoutError)
        for attempt in range(1, attempts):
            try:
                return await self._score_once(batch)
            except retryable:
                await asyncio.sleep(0.05 * attempt)
        return await self._score_once(batch)

    async def _score_once(self, batch: np.ndarray):
        return await asyncio.wait_for(
            self.inference.to_async.scores(batch), timeout=ATTEMPT_TIMEOUT_S
        )

    @bentoml.on_shutdown
    def close_prediction_log(self) -> None:
        """Flush and ship what the prediction log still holds."""
        self.prediction_log.close()
