"""The prediction service's side of the feature store: a request's store features, looked up
online by its join keys before scoring, and the answer to a lookup that failed.

A model that takes store features (``spec.store_features``) gets them from the project's
feature server (:class:`~mlops_lib.feature_store.online.OnlineFeatureClient`) for the join
keys each request sends (required by the request schema). They join the request's columns:
the scorer takes them like any model input and the prediction log records them beside the
sent values, so monitoring sees what the model saw. A lookup that fails is answered, never
a 500: 422 naming the key field and its unknown values (``unknown_entity: reject``), 503
naming the feature store when its server cannot answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mlops_lib.feature_store.online import (
    FeatureStoreUnavailable,
    OnlineFeatureClient,
    UnknownEntities,
    model_join_keys,
)
from mlops_lib.settings import Settings
from mlops_lib.spec import ProjectSpec

UNKNOWN_ENTITY_STATUS = 422
UNAVAILABLE_STATUS = 503
LOOKUP_ERRORS = (UnknownEntities, FeatureStoreUnavailable)


class StoreFeatures:
    """Adds the store features of a request's rows to its validated columns."""

    def __init__(self, spec: ProjectSpec, client: OnlineFeatureClient) -> None:
        self.spec = spec
        self.client = client
        self.join_keys = model_join_keys(spec)

    @classmethod
    def of(cls, spec: ProjectSpec, settings: Settings) -> StoreFeatures | None:
        """The lookup of a project whose model takes store features, else None."""
        if not spec.store_features:
            return None
        return cls(spec, OnlineFeatureClient(spec, settings))

    async def add(self, sent: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
        """The request's columns and its rows' store features (``<view>__<feature>``, None
        where the store has no value). Raises ``UnknownEntities`` or
        ``FeatureStoreUnavailable`` (see :func:`lookup_failure`)."""
        keys: Any = (
            sent[self.join_keys[0]]
            if len(self.join_keys) == 1
            else {k: sent[k] for k in self.join_keys}
        )
        online = await self.client.fetch(keys)
        return {**sent, **online.columns}

    async def aclose(self) -> None:
        await self.client.aclose()


def lookup_failure(exc: Exception, *, columnar: bool) -> tuple[int, dict[str, Any]]:
    """The status and body answering a failed lookup, in the form of the service's other
    request errors (``{"detail": [{"loc", "msg", "type"}, ...]}``): 422 with one entry per
    row whose key is unknown (``loc`` names the row and the key field, ``input`` the value),
    503 naming the feature store and its server."""
    if isinstance(exc, UnknownEntities):
        where = "data" if columnar else "instances"
        msg = f"no online features for this {exc.key} in the feature store of {exc.project!r}"
        detail = [
            {
                "loc": [where, row, exc.key],
                "msg": msg,
                "type": "unknown_entity",
                "input": value,
            }
            for row, value in exc.rows.items()
        ]
        return UNKNOWN_ENTITY_STATUS, {"detail": detail, "unknown": {exc.key: exc.values}}
    if isinstance(exc, FeatureStoreUnavailable):
        entry = {"loc": ["feature_store"], "msg": str(exc), "type": "feature_store_unavailable"}
        return UNAVAILABLE_STATUS, {"detail": [entry]}
    raise TypeError(f"not a lookup failure: {exc!r}") from exc
