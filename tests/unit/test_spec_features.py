"""The ``features:`` section of a spec: feature views are configuration, checked like any key."""

from __future__ import annotations

import copy

import pytest
import yaml

from mlops_lib.feature_store import repo
from mlops_lib.spec import SpecError, parse_spec

from .specs import CHURN_FILE


def churn_with(edit) -> dict:
    data = yaml.safe_load(CHURN_FILE.read_text())
    data = copy.deepcopy(data)
    edit(data["features"])
    return data


def problems(edit) -> str:
    with pytest.raises(SpecError) as err:
        parse_spec(churn_with(edit))
    return str(err.value)


def test_the_demo_spec_gives_the_model_its_views_features_by_full_name() -> None:
    spec = parse_spec(churn_with(lambda f: None))
    assert spec.store_features[0] == "customer_activity__tickets_30d"
    assert spec.model_inputs == [*spec.features, *spec.store_features]
    assert spec.input_column("customer_activity__tickets_30d").type == "int"
    assert spec.input_column("customer_activity__payment_mean_90d").type == "float"


def test_a_view_without_ttl_fails_validation_naming_the_key() -> None:
    text = problems(lambda f: f["views"]["customer_activity"].pop("ttl_days"))
    assert "features.views.customer_activity.ttl_days: required key is missing" in text


def test_unknown_columns_and_wrong_types_are_each_named() -> None:
    def edit(f: dict) -> None:
        feats = f["views"]["customer_activity"]["features"]
        feats["tickets_30d"]["where"] = {"channel": "phone"}
        feats["payment_mean_90d"]["column"] = "amount_due"
        feats["last_payment"]["column"] = "kind"

    text = problems(edit)
    assert "tickets_30d.where: 'channel' is not a column of 'customer_events'" in text
    assert "payment_mean_90d.column: 'amount_due' is not a column" in text
    assert "last_payment: last needs a numeric column; 'kind' is category" in text


def test_a_window_is_required_for_aggregates_and_refused_for_last() -> None:
    def edit(f: dict) -> None:
        feats = f["views"]["customer_activity"]["features"]
        feats["tickets_30d"].pop("days")
        feats["last_payment"]["days"] = 7

    text = problems(edit)
    assert "aggregate 'count' needs a window: 'days'" in text
    assert "'last' takes the latest value: it has no window" in text


def test_references_between_entities_sources_views_and_the_model_are_checked() -> None:
    def edit(f: dict) -> None:
        f["entities"]["customer"]["join_key"] = "account_id"
        f["model"] = ["customer_activity", "web_sessions"]

    text = problems(edit)
    assert "'web_sessions' is not one of the views" in text
    assert "source 'customer_events' has no join key column 'account_id'" in text


def test_a_join_key_must_be_a_column_of_the_labelled_rows() -> None:
    data = churn_with(lambda f: None)
    data["schema"]["columns"].pop("customer_id")
    data["schema"]["key"] = None
    data["rules"] = [r for r in data["rules"] if r["rule"] != "unique_key"]
    with pytest.raises(SpecError) as err:
        parse_spec(data)
    assert "join_key: 'customer_id' is not in schema.columns" in str(err.value)


def test_a_where_value_outside_the_allowed_ones_is_refused() -> None:
    def edit(f: dict) -> None:
        f["views"]["customer_activity"]["features"]["tickets_30d"]["where"] = {"kind": "refund"}

    assert "where.kind: 'refund' is not one of" in problems(edit)


def test_generated_definitions_hold_spec_text_only_as_literals() -> None:
    hostile = "x'); import os; os.system('touch /tmp/pwned'); ('"

    def edit(f: dict) -> None:
        f["views"]["customer_activity"]["description"] = hostile
        f["entities"]["customer"]["description"] = hostile

    spec = parse_spec(churn_with(edit))
    text = repo.definitions_text(spec, "c0ffee")
    compile(text, "definitions.py", "exec")  # still one valid module
    assert f"description={hostile!r}" in text
    assert "\nimport os" not in text and "; import os" not in text.replace(repr(hostile), "")
