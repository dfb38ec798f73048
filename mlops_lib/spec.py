"""Project specs: one YAML file per ML use case, validated into a typed model.

Owns the spec's schema, its validation errors and where a project's spec is found
(:func:`project_spec`).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mlops_lib.expressions import ExpressionError, parse
from mlops_lib.layout import LOGGED_COLUMNS
from mlops_lib.settings import Settings, get_settings

ColumnType = Literal["int", "float", "string", "category", "bool", "datetime"]
Severity = Literal["blocking", "warning"]
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{1,40}$")
# The metrics a target's task can be trained, gated and monitored on. ``f1`` is the positive
# class's F1 on a binary target and macro F1 on a multiclass one; ``roc_auc`` is one-vs-rest
# macro ROC AUC on a multiclass target.
METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("roc_auc", "accuracy", "balanced_accuracy", "f1", "f1_macro", "log_loss"),
    "regression": ("rmse", "mae", "r2"),
}
DEFAULT_METRIC = {"classification": "roc_auc", "regression": "rmse"}
# Model inputs a datetime feature can give (``parts`` of a datetime column).
DatetimePart = Literal["year", "month", "day", "day_of_year", "weekday", "hour"]
# Datetime formats besides strptime patterns: seconds or milliseconds since the epoch.
EPOCH_FORMATS = ("epoch_s", "epoch_ms")


class SpecError(ValueError):
    """A project spec is invalid; the message names the file, each key and what was expected."""

    def __init__(self, path: Path | str, problems: list[str]):
        self.path = str(path)
        self.problems = problems
        super().__init__(
            f"{path}: invalid project spec:\n" + "\n".join(f"  - {p}" for p in problems)
        )


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SqlSource(_Strict):
    """A SQL query as a batch. Credentials never live in the spec: they come from an Airflow
    connection (``conn_id``) or, for ``url``, from an environment variable (``password_env``).
    """

    url: str | None = Field(default=None, description="SQLAlchemy URL, without a password.")
    conn_id: str | None = Field(default=None, description="Airflow connection of the database.")
    password_env: str | None = Field(
        default=None, description="Environment variable holding the password for ``url``."
    )
    query: str
    timeout_seconds: float = Field(default=300.0, gt=0, description="Statement timeout.")

    @model_validator(mode="after")
    def _credentials_elsewhere(self) -> SqlSource:
        if (self.url is None) == (self.conn_id is None):
            raise ValueError("give exactly one of 'url' or 'conn_id'")
        if self.url is not None and urlsplit(self.url).password:
            raise ValueError(
                "the url holds a password: credentials do not belong in a spec; use an Airflow "
                "connection ('conn_id') or an environment variable ('password_env')"
            )
        if self.conn_id is not None and self.password_env is not None:
            raise ValueError("'password_env' goes with 'url'; a connection holds its password")
        return self


class Source(_Strict):
    """Where a batch comes from: a CSV/Parquet path or glob, or a SQL query."""

    path: str | None = Field(default=None, description="CSV or Parquet file, folder or glob.")
    sql: SqlSource | None = None
    format: Literal["auto", "csv", "parquet"] = "auto"

    @model_validator(mode="after")
    def _one_kind(self) -> Source:
        if (self.path is None) == (self.sql is None):
            raise ValueError("give exactly one of 'path' or 'sql'")
        return self


class Column(_Strict):
    type: ColumnType
    nullable: bool = True
    min: float | None = None
    max: float | None = None
    allowed: list[str | int | bool] | None = None
    description: str = ""
    format: str | None = Field(
        default=None,
        description=(
            "datetime only: how the values are written, a strptime pattern such as "
            "'%Y/%m/%d' or '%d.%m.%Y', or 'epoch_s' / 'epoch_ms'; default: ISO 8601 and "
            "other unambiguous forms"
        ),
    )
    parts: list[DatetimePart] = Field(
        default_factory=list,
        description="datetime features only: the model inputs taken from it (e.g. weekday).",
    )

    @model_validator(mode="after")
    def _coherent(self) -> Column:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        if (self.min is not None or self.max is not None) and self.type not in ("int", "float"):
            raise ValueError(f"min/max need a numeric type, not {self.type}")
        if (self.format is not None or self.parts) and self.type != "datetime":
            raise ValueError(f"format and parts need type datetime, not {self.type}")
        if self.format is not None and self.format not in EPOCH_FORMATS and "%" not in self.format:
            raise ValueError(
                f"format {self.format!r} is neither a strptime pattern (e.g. '%d.%m.%Y') nor "
                f"one of {list(EPOCH_FORMATS)}"
            )
        return self


class Schema(_Strict):
    columns: dict[str, Column]
    key: str | None = None
    event_time: str | None = None

    @model_validator(mode="after")
    def _refs(self) -> Schema:
        if not self.columns:
            raise ValueError("declare at least one column")
        reserved = [c for c in LOGGED_COLUMNS if c in self.columns]
        if reserved:
            raise ValueError(
                f"column names {reserved} are reserved: the prediction log keeps the request "
                f"id, row, time, model version, prediction and score of each served row in "
                f"{', '.join(LOGGED_COLUMNS)}"
            )
        for field in ("key", "event_time"):
            name = getattr(self, field)
            if name is not None and name not in self.columns:
                raise ValueError(f"{field} {name!r} is not one of the columns")
        if self.event_time and self.columns[self.event_time].type != "datetime":
            raise ValueError(f"event_time column {self.event_time!r} must have type datetime")
        return self


class Target(_Strict):
    column: str
    task: Literal["classification", "regression"]
    positive_class: str | int | bool | None = None


class _Rule(_Strict):
    severity: Severity = "blocking"


class MinRowsRule(_Rule):
    rule: Literal["min_rows"]
    value: int = Field(ge=0)


class MaxNullFractionRule(_Rule):
    rule: Literal["max_null_fraction"]
    value: float = Field(ge=0, le=1)
    columns: list[str] | None = Field(default=None, description="Default: every column.")


class UniqueKeyRule(_Rule):
    rule: Literal["unique_key"]


class EventTimeNotInFutureRule(_Rule):
    rule: Literal["event_time_not_in_future"]
    tolerance_seconds: int = 300


class DistributionRule(_Rule):
    rule: Literal["distribution"]
    columns: list[str] | None = Field(
        default=None, description="Default: numeric and categorical features."
    )
    max_drift_fraction: float = Field(
        default=0.5, ge=0, le=1, description="Largest fraction of checked columns allowed to drift."
    )
    p_value: float = Field(default=0.01, gt=0, lt=1)
    severity: Severity = "warning"


RULE_TYPES = (
    MinRowsRule,
    MaxNullFractionRule,
    UniqueKeyRule,
    EventTimeNotInFutureRule,
    DistributionRule,
)
Rule = Annotated[Union[RULE_TYPES], Field(discriminator="rule")]  # noqa: UP007
# The `rule:` tags; pydantic puts the tag into error locations after the list index.
RULE_KINDS = frozenset(get_args(t.model_fields["rule"].annotation)[0] for t in RULE_TYPES)


class Budget(_Strict):
    trials: int = Field(default=20, ge=1)
    seconds: int = Field(default=300, ge=10)


class Training(_Strict):
    metric: str = Field(
        default="",
        description="One of METRICS[target.task]; default roc_auc (classification), rmse.",
    )
    budget: Budget = Budget()
    cv_folds: int = Field(default=3, ge=2, le=10)
    holdout_fraction: float = Field(default=0.2, gt=0, lt=0.9)
    seed: int = 42
    families: list[Literal["linear", "random_forest", "extra_trees", "hist_gradient_boosting"]] = [
        "linear",
        "random_forest",
        "hist_gradient_boosting",
    ]
    min_rows: int = Field(default=1000, ge=10)
    parallel: int = Field(
        default=1,
        ge=1,
        le=16,
        description="Trial tasks that search at once, sharing one study and the budget "
        "(mapped tasks; with Celery they spread across workers).",
    )
    encoding: Literal["onehot", "ordinal"] = "onehot"
    derived: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Derived features: name -> arithmetic expression over the feature columns and the "
            "derived features before it (numbers, + - * / // % **, comparisons, & | ~, "
            "abs log log1p exp sqrt floor ceil clip where minimum maximum); never Python code."
        ),
    )
    max_train_rows: int | None = Field(
        default=None, ge=1000, description="Cap on training rows (most recent kept)."
    )


class Promotion(_Strict):
    min_improvement: float = 0.0
    guards: dict[str, float] = Field(
        default_factory=dict, description="Guard metric -> largest allowed regression."
    )
    manual_approval: bool = False


class Serving(_Strict):
    max_batch_size: int = Field(default=1000, ge=1)
    max_latency_ms: int = Field(default=50, ge=1)
    port: int | None = None
    replicas: int = Field(
        default=1,
        ge=1,
        le=8,
        description="Serving processes of a deployment, each on its own port, behind the "
        "gateway (least connections; a replica that stops answering is taken out).",
    )


class Monitoring(_Strict):
    schedule: str = "@hourly"
    window: str = "1h"
    method: Literal["ks", "chi2", "hellinger", "auto"] = "auto"
    drift_threshold: float = Field(default=0.05, gt=0, lt=1)
    min_drifted_features: int = Field(default=2, ge=1)
    prediction_drift_limit: float | None = 0.1
    metric_floor: float | None = None
    cooldown_minutes: int = Field(default=60, ge=0)


class AirflowOptions(_Strict):
    owner: str = "ml-platform"
    tags: list[str] = []
    retries: int = Field(default=2, ge=0)
    retry_delay_seconds: int = Field(default=10, ge=1)
    max_retry_delay_seconds: int = Field(default=300, ge=1)
    ingest_schedule: str | None = None


# Feature store ---------------------------------------------------------------------
# What a feature view's feature computes from its source's rows per entity: the latest
# value (``last``) or an aggregate over the rows of the last ``days`` days.
Aggregate = Literal["last", "count", "sum", "mean", "min", "max"]
# The model input a feature becomes: ``<view>__<feature>`` (Feast's full feature name).
STORE_FEATURE_SEPARATOR = "__"


class FeatureEntity(_Strict):
    """What features are about (Feast's entity): its join key is a column of the dataset
    (the labelled rows) and of each source that feeds a view of it."""

    join_key: str
    description: str = ""


class FeatureSource(_Strict):
    """An event table (CSV/Parquet files or a glob, like ``source.path``): typed columns, one
    of them the time each row happened. The features DAG lands it in lakeFS."""

    path: str = Field(description="CSV or Parquet file, folder or glob.")
    format: Literal["auto", "csv", "parquet"] = "auto"
    timestamp: str = Field(description="The datetime column: when each row happened.")
    columns: dict[str, Column]

    @model_validator(mode="after")
    def _timestamp(self) -> FeatureSource:
        col = self.columns.get(self.timestamp)
        if col is None:
            raise ValueError(f"timestamp {self.timestamp!r} is not one of the columns")
        if col.type != "datetime":
            raise ValueError(f"timestamp column {self.timestamp!r} must have type datetime")
        return self


class ViewFeature(_Strict):
    """One feature of a view: ``aggregate`` of ``column`` over the entity's source rows of the
    last ``days`` days (``count`` needs no column; ``last`` takes the latest value, no window),
    optionally only rows whose columns equal ``where``'s values."""

    aggregate: Aggregate = "last"
    column: str | None = None
    days: int | None = Field(default=None, ge=1, le=3650)
    where: dict[str, str | int | bool] = Field(default_factory=dict)
    description: str = ""

    @model_validator(mode="after")
    def _shape(self) -> ViewFeature:
        if self.aggregate != "count" and self.column is None:
            raise ValueError(f"aggregate {self.aggregate!r} needs a column")
        if self.aggregate == "last" and self.days is not None:
            raise ValueError("'last' takes the latest value: it has no window ('days')")
        if self.aggregate not in ("last",) and self.days is None:
            raise ValueError(f"aggregate {self.aggregate!r} needs a window: 'days'")
        return self

    @property
    def dtype(self) -> Literal["int", "float"]:
        """What Feast stores: counts are integers, everything else a float."""
        return "int" if self.aggregate == "count" else "float"


class FeatureView(_Strict):
    """A Feast feature view the platform computes from one source per entity."""

    entity: str
    source: str
    ttl_days: float = Field(
        gt=0, description="How long a value stays valid after its time (Feast's ttl)."
    )
    features: dict[str, ViewFeature]
    online: bool = True
    description: str = ""

    @field_validator("features")
    @classmethod
    def _some(cls, v: dict[str, ViewFeature]) -> dict[str, ViewFeature]:
        if not v:
            raise ValueError("declare at least one feature")
        bad = [name for name in v if not NAME_RE.match(name)]
        if bad:
            raise ValueError(f"feature names {bad} must be lowercase letters, digits and '_'")
        return v


class FeatureStoreSpec(_Strict):
    """``features:`` of a spec: entities, event sources and feature views, which views the
    model takes, and what serving does for an entity the online store does not know."""

    entities: dict[str, FeatureEntity]
    sources: dict[str, FeatureSource]
    views: dict[str, FeatureView]
    model: list[str] = Field(description="The feature views whose features the model takes.")
    unknown_entity: Literal["reject", "default"] = Field(
        default="reject",
        description="reject: a request for an entity without online values gets 422 naming "
        "the key; default: its features are missing (null) and the model imputes them.",
    )

    @model_validator(mode="after")
    def _refs(self) -> FeatureStoreSpec:
        problems = [
            f"{kind} name {name!r} must be 2-41 lowercase letters, digits and '_'"
            for kind, names in (
                ("entity", self.entities),
                ("source", self.sources),
                ("view", self.views),
            )
            for name in names
            if not NAME_RE.match(name) or STORE_FEATURE_SEPARATOR in name
        ]
        for name, view in self.views.items():
            problems += _view_problems(name, view, self)
        problems += [
            f"model: {v!r} is not one of the views" for v in self.model if v not in self.views
        ]
        if not self.model:
            problems.append("model: name at least one view")
        entities = {self.views[v].entity for v in self.model if v in self.views}
        if len(entities) > 1:
            problems.append(f"model: the views must be of one entity (they are of {entities})")
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _fits(value: str | int | bool, kind: str) -> bool:
    """Whether a ``where`` value has the type of its column."""
    if kind == "bool":
        return isinstance(value, bool)
    if kind in ("int", "float"):
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, str)


def _view_problems(name: str, view: FeatureView, store: FeatureStoreSpec) -> list[str]:
    where = f"views.{name}"
    if view.entity not in store.entities:
        return [f"{where}.entity: {view.entity!r} is not one of the entities"]
    if view.source not in store.sources:
        return [f"{where}.source: {view.source!r} is not one of the sources"]
    source = store.sources[view.source]
    key = store.entities[view.entity].join_key
    problems = []
    if key not in source.columns:
        problems.append(f"{where}: source {view.source!r} has no join key column {key!r}")
    longest = max((f.days or 0 for f in view.features.values()), default=0)
    if view.ttl_days < longest:
        problems.append(
            f"{where}.ttl_days: {view.ttl_days:g} is shorter than its longest window "
            f"({longest} days): the window's values would expire before it closes"
        )
    if round(view.ttl_days * 86400) < 1:
        problems.append(f"{where}.ttl_days: {view.ttl_days!r} is shorter than a second")
    if name in store.model and not view.online:
        problems.append(f"{where}.online: the model takes this view, so serving needs it online")
    for fname, feature in view.features.items():
        at = f"{where}.features.{fname}"
        col = source.columns.get(feature.column) if feature.column else None
        if feature.column is not None and col is None:
            problems.append(f"{at}.column: {feature.column!r} is not a column of {view.source!r}")
        elif (
            col is not None
            and feature.aggregate != "count"
            and col.type not in ("int", "float", "bool")
        ):
            problems.append(
                f"{at}: {feature.aggregate} needs a numeric column; {feature.column!r} is "
                f"{col.type}"
            )
        for column, value in feature.where.items():
            if column not in source.columns:
                problems.append(f"{at}.where: {column!r} is not a column of {view.source!r}")
            elif not _fits(value, source.columns[column].type):
                problems.append(
                    f"{at}.where.{column}: {value!r} can never equal a "
                    f"{source.columns[column].type} value"
                )
            elif source.columns[column].allowed and value not in source.columns[column].allowed:
                problems.append(
                    f"{at}.where.{column}: {value!r} is not one of {source.columns[column].allowed}"
                )
    return problems


def _key_type_problems(store: FeatureStoreSpec, cols: dict[str, Column]) -> list[str]:
    """A view's source must write its join key as the labelled rows do (else nothing joins)."""
    kind = {"category": "string"}
    problems = []
    for name, view in store.views.items():
        key = store.entities[view.entity].join_key
        source = store.sources[view.source].columns.get(key)
        if key in cols and source is not None:
            ours, theirs = cols[key].type, source.type
            if kind.get(ours, ours) != kind.get(theirs, theirs):
                problems.append(
                    f"features.sources.{view.source}.columns.{key}: {theirs}, but the labelled "
                    f"rows' {key!r} is {ours}: view {name!r} would join nothing"
                )
    return problems


class ProjectSpec(_Strict):
    """A validated project spec."""

    name: str
    description: str = ""
    source: Source
    schema_: Schema = Field(alias="schema")
    target: Target
    rules: list[Rule] = []
    training: Training = Training()
    promotion: Promotion = Promotion()
    serving: Serving = Serving()
    monitoring: Monitoring = Monitoring()
    airflow: AirflowOptions = AirflowOptions()
    feature_store: FeatureStoreSpec | None = Field(default=None, alias="features")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(
                "must be 2-41 characters: lowercase letters, digits and '_', starting with a letter"
            )
        return v

    @model_validator(mode="after")
    def _cross_refs(self) -> ProjectSpec:
        cols = self.schema_.columns
        if self.target.column not in cols:
            raise ValueError(f"target column {self.target.column!r} is not in schema.columns")
        self._check_task(cols[self.target.column])
        for rule in self.rules:
            names = getattr(rule, "columns", None) or []
            unknown = [c for c in names if c not in cols]
            if unknown:
                raise ValueError(f"rule {rule.rule} names unknown columns {unknown}")
            if rule.rule == "unique_key" and not self.schema_.key:
                raise ValueError("rule unique_key needs schema.key")
            if rule.rule == "event_time_not_in_future" and not self.schema_.event_time:
                raise ValueError("rule event_time_not_in_future needs schema.event_time")
        if self.feature_store is not None:
            self._check_feature_store(self.feature_store)
        return self

    def _check_feature_store(self, store: FeatureStoreSpec) -> None:
        cols = self.schema_.columns
        problems = []
        if not self.schema_.event_time:
            problems.append(
                "features: point-in-time training sets need schema.event_time (when each "
                "labelled row happened)"
            )
        for name, entity in store.entities.items():
            if entity.join_key not in cols:
                problems.append(
                    f"features.entities.{name}.join_key: {entity.join_key!r} is not in "
                    "schema.columns"
                )
            elif cols[entity.join_key].type not in ("string", "category", "int"):
                problems.append(
                    f"features.entities.{name}.join_key: {entity.join_key!r} is "
                    f"{cols[entity.join_key].type}; a join key is a string, category or int"
                )
        problems += _key_type_problems(store, cols)
        taken = set(cols) | set(self.training.derived)
        clash = [c for c in self.store_features if c in taken]
        if clash:
            problems.append(f"features: model inputs {clash} are already columns or derived")
        if problems:
            raise ValueError("; ".join(problems))

    def _check_task(self, target: Column) -> None:
        task = self.target.task
        if not self.training.metric:  # frozen model: the task's default is filled in once
            training = self.training.model_copy(update={"metric": DEFAULT_METRIC[task]})
            object.__setattr__(self, "training", training)
        if self.training.metric not in METRICS[task]:
            raise ValueError(
                f"training.metric {self.training.metric!r} does not fit a {task} target; "
                f"choose one of {list(METRICS[task])}"
            )
        if task == "regression" and target.type not in ("int", "float"):
            raise ValueError(
                f"a regression target must be numeric (int or float), not {target.type}"
            )
        if task == "classification" and target.type in ("float", "datetime"):
            raise ValueError(
                f"a classification target holds labels (int, bool, string or category), "
                f"not {target.type}"
            )
        if task == "regression" and self.target.positive_class is not None:
            raise ValueError("target.positive_class is for classification targets")
        allowed = target.allowed
        positive = self.target.positive_class
        if positive is not None and allowed and positive not in allowed:
            raise ValueError(f"target.positive_class {positive!r} is not one of {allowed}")

    @property
    def schema(self) -> Schema:  # type: ignore[override]
        """The data schema (``schema`` in YAML)."""
        return self.schema_

    @property
    def features(self) -> list[str]:
        """Input columns of the model: everything but target, key and event time."""
        skip = {self.target.column, self.schema_.key, self.schema_.event_time}
        return [c for c in self.schema_.columns if c not in skip]

    @property
    def store_features(self) -> list[str]:
        """Model inputs the feature store gives (``<view>__<feature>`` of the model's views)."""
        store = self.feature_store
        if store is None:
            return []
        return [
            f"{view}{STORE_FEATURE_SEPARATOR}{feature}"
            for view in store.model
            if view in store.views
            for feature in store.views[view].features
        ]

    @property
    def model_inputs(self) -> list[str]:
        """Every raw input of the model pipeline: the feature columns a request sends, then
        the feature store's."""
        return [*self.features, *self.store_features]

    def input_column(self, name: str) -> Column:
        """The column type of a model input (a store feature is a nullable number)."""
        if name in self.schema_.columns:
            return self.schema_.columns[name]
        view, _, feature = name.partition(STORE_FEATURE_SEPARATOR)
        assert self.feature_store is not None, name
        return Column(type=self.feature_store.views[view].features[feature].dtype)

    @property
    def identity(self) -> list[str]:
        """The instance's key and event time: not model inputs; a prediction request may
        send them so that served rows keep their identity in the prediction log."""
        return [c for c in (self.schema_.key, self.schema_.event_time) if c]

    def spec_hash(self) -> str:
        """Stable hash of the validated spec (recorded with data and models)."""
        # A spec without feature views hashes as it did before they existed.
        skip = {"feature_store"} if self.feature_store is None else set()
        data = self.model_dump(mode="json", by_alias=True, exclude=skip)
        payload = json.dumps(data, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def features_hash(self) -> str:
        """Hash of the ``features:`` section: what the feature view tables were computed
        under (empty without feature views)."""
        if self.feature_store is None:
            return ""
        payload = json.dumps(self.feature_store.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def schema_hash(self) -> str:
        """Hash of the declared columns and types."""
        payload = json.dumps({k: v.type for k, v in self.schema_.columns.items()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _loc(loc: tuple[Any, ...]) -> str:
    parts = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            item = "schema" if item == "schema_" else item
            # Discriminated-union tags show up as path elements; they are not keys.
            if item in RULE_KINDS and parts and parts[-1].startswith("["):
                continue
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(top level)"


def _problems(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        where = _loc(err["loc"])
        kind = err["type"]
        if kind == "extra_forbidden":
            out.append(f"{where}: unknown key")
        elif kind == "missing":
            out.append(f"{where}: required key is missing")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            got = err.get("input")
            shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
            out.append(f"{where}: {msg}{shown}")
    return out


def derived_problems(spec: ProjectSpec) -> list[str]:
    """Derived-feature expressions outside the allowed language, each naming its key and the
    offending part (an expression may use the features and the derived features before it)."""
    known = set(spec.features)
    problems = []
    for name, expression in spec.training.derived.items():
        if name in known:
            problems.append(f"training.derived.{name}: the name is already a feature column")
        try:
            parse(expression, frozenset(known))
        except ExpressionError as exc:
            problems.append(f"training.derived.{name}: {exc} (in {expression!r})")
        known.add(name)
    return problems


def part_column(column: str, part: str) -> str:
    """The model input a datetime feature's part becomes, e.g. ``signup_weekday``."""
    return f"{column}_{part}"


def part_problems(spec: ProjectSpec) -> list[str]:
    """Datetime parts whose model-input name is already a column or a derived feature."""
    taken = set(spec.schema.columns) | set(spec.training.derived)
    problems = []
    for name in spec.features:
        for part in spec.schema.columns[name].parts:
            if part_column(name, part) in taken:
                problems.append(
                    f"schema.columns.{name}.parts: {part!r} would add the model input "
                    f"{part_column(name, part)!r}, which is already a column or derived feature"
                )
    return problems


def parse_spec(data: Any, path: Path | str = "<spec>") -> ProjectSpec:
    """Validate a loaded YAML document into a ProjectSpec, or raise SpecError."""
    if not isinstance(data, dict):
        raise SpecError(path, [f"(top level): expected a mapping, got {type(data).__name__}"])
    try:
        spec = ProjectSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(path, _problems(exc)) from None
    derived = derived_problems(spec) + part_problems(spec)
    if derived:
        raise SpecError(path, derived)
    stem = Path(str(path)).stem
    if str(path) != "<spec>" and spec.name != stem:
        raise SpecError(path, [f"name: must match the file name {stem!r} (got {spec.name!r})"])
    return spec


def load_spec(path: Path | str) -> ProjectSpec:
    """Read and validate one project spec file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(path, [f"cannot read the file: {exc.strerror}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(path, [f"not valid YAML: {exc}"]) from None
    return parse_spec(data, path)


def project_spec(project: str, settings: Settings | None = None) -> ProjectSpec:
    """The validated spec of a project from the projects folder.

    Entry points (DAG tasks, the CLI, sensors) call this once with the project name and
    hand the spec object down, so one task never sees two versions of an edited spec.
    """
    settings = settings or get_settings()
    for suffix in (".yaml", ".yml"):
        path = settings.projects_dir / f"{project}{suffix}"
        if path.exists():
            return load_spec(path)
    raise FileNotFoundError(f"no spec for project {project!r} in {settings.projects_dir}")


def spec_files(projects_dir: Path) -> list[Path]:
    """Spec files in a projects folder, sorted."""
    if not projects_dir.is_dir():
        return []
    return sorted([*projects_dir.glob("*.yaml"), *projects_dir.glob("*.yml")])


def discover(projects_dir: Path) -> tuple[dict[str, ProjectSpec], dict[str, SpecError]]:
    """Every spec in the folder: valid ones by name, errors by file path."""
    specs: dict[str, ProjectSpec] = {}
    errors: dict[str, SpecError] = {}
    for path in spec_files(projects_dir):
        try:
            spec = load_spec(path)
        except SpecError as exc:
            errors[str(path)] = exc
            continue
        specs[spec.name] = spec
    return specs, errors
