"""The prediction request schema generated from the demo spec, without its feature store
(a model that takes store features: tests/unit/test_online_features.py)."""

import pytest
from pydantic import ValidationError

from mlops_lib import demo_data
from mlops_lib.serving.schema import request_model

from .specs import churn_spec
from .test_spec import CHURN


@pytest.fixture(scope="module")
def model():
    return request_model(churn_spec())


def row() -> dict:
    df = demo_data.generate("clean", rows=1)
    spec = churn_spec()
    out = df[spec.features].iloc[0].to_dict()
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in out.items()}


def errors(model, body) -> set[tuple]:
    with pytest.raises(ValidationError) as err:
        model.model_validate(body)
    return {(tuple(e["loc"]), e["type"]) for e in err.value.errors()}


def test_valid_rows_pass(model) -> None:
    parsed = model.model_validate({"instances": [row(), row()]})
    assert len(parsed.instances) == 2


def test_each_bad_field_is_named(model) -> None:
    bad = row() | {"age": "old", "contract": "three_year", "support_calls": -1, "planet": "mars"}
    del bad["region"]
    found = errors(model, {"instances": [row(), bad]})
    locs = {loc for loc, _ in found}
    assert ("instances", 1, "age") in locs
    assert ("instances", 1, "contract") in locs
    assert ("instances", 1, "support_calls") in locs
    assert ("instances", 1, "planet") in locs  # unknown field
    assert (("instances", 1, "region"), "missing") in found


def test_nullable_features_accept_null_but_must_be_present(model) -> None:
    assert model.model_validate({"instances": [row() | {"monthly_charges": None}]})
    found = errors(model, {"instances": [row() | {"contract": None}]})
    assert ("instances", 0, "contract") in {loc for loc, _ in found}


def test_empty_and_oversized_batches_are_refused(model) -> None:
    assert (("instances",), "too_short") in errors(model, {"instances": []})
    assert (("instances",), "too_long") in errors(model, {"instances": [row()] * 1001})


def test_bento_requirements_are_pinned_to_the_environment() -> None:
    from importlib.metadata import version

    from mlops_lib.serving.package import requirements

    reqs = requirements()
    assert f"bentoml=={version('bentoml')}" in reqs
    assert f"scikit-learn=={version('scikit-learn')}" in reqs
    assert all("==" in r for r in reqs)


def unbounded_model():
    """The demo spec with a float, an int and a string feature that have no declared limits."""
    import yaml

    from mlops_lib.spec import parse_spec

    data = yaml.safe_load(CHURN.read_text())
    data.pop("features", None)
    columns = data["schema"]["columns"]
    columns["monthly_charges"] = {"type": "float"}
    columns["support_calls"] = {"type": "int"}
    columns["note"] = {"type": "string"}
    return request_model(parse_spec(data))


@pytest.mark.parametrize(
    ("field", "value", "kind"),
    [
        ("monthly_charges", float("nan"), "finite_number"),
        ("monthly_charges", float("inf"), "finite_number"),
        ("monthly_charges", float("-inf"), "finite_number"),
        ("support_calls", 2**70, "less_than_equal"),
        ("support_calls", -(2**70), "greater_than_equal"),
        ("note", "x" * 1001, "string_too_long"),
    ],
)
def test_non_finite_overflowing_and_overlong_values_are_refused_naming_the_field(
    field: str, value, kind: str
) -> None:
    model = unbounded_model()
    good = row() | {"note": "ok"}
    found = errors(model, {"instances": [good, good | {field: value}]})
    assert found == {(("instances", 1, field), kind)}


def test_nan_in_a_bounded_float_is_refused_too(model) -> None:
    found = errors(model, {"instances": [row() | {"monthly_charges": float("nan")}]})
    assert ("instances", 0, "monthly_charges") in {loc for loc, _ in found}


def test_a_bad_value_in_json_text_is_refused_like_in_python() -> None:
    model = unbounded_model()
    import json

    body = json.dumps({"instances": [row() | {"note": "ok", "monthly_charges": float("inf")}]})
    with pytest.raises(ValidationError) as err:
        model.model_validate_json(body)
    assert err.value.errors()[0]["loc"] == ("instances", 0, "monthly_charges")


def test_an_instance_may_carry_its_key_and_event_time_typed_like_the_spec(model) -> None:
    body = {"instances": [row() | {"customer_id": "C-9", "event_time": "2026-11-01T08:00:00Z"}]}
    instance = model.model_validate(body).instances[0].model_dump()
    assert instance["customer_id"] == "C-9"
    assert instance["event_time"].isoformat() == "2026-11-01T08:00:00+00:00"
    # Optional: an instance without them is valid, and they are never model inputs.
    assert model.model_validate({"instances": [row()]}).instances[0].customer_id is None
    wrong = {"instances": [row() | {"customer_id": 9, "event_time": "yesterday"}]}
    locs = {loc for loc, _ in errors(model, wrong)}
    assert {("instances", 0, "customer_id"), ("instances", 0, "event_time")} <= locs


def test_the_row_type_the_service_validates_with_refuses_what_the_model_refuses() -> None:
    """The service validates rows as plain dicts (no model per row): same rules, same
    errors, same values."""
    from pydantic import TypeAdapter

    from mlops_lib.serving.schema import instance_model, instance_row

    spec = churn_spec()
    as_model, as_dict = (
        TypeAdapter(list[instance_model(spec)]),
        TypeAdapter(list[instance_row(spec)]),
    )
    good = row()
    bad = [
        good | {"age": "old", "planet": "mars", "monthly_charges": float("nan")},
        {k: v for k, v in good.items() if k != "region"},
        good | {"contract": "three_year", "support_calls": -1, "tenure_months": 5.5},
        good | {"contract": None, "customer_id": 9, "event_time": "yesterday"},
    ]
    for body in bad:
        found = []
        for adapter in (as_model, as_dict):
            with pytest.raises(ValidationError) as err:
                adapter.validate_python([good, body])
            found.append(sorted((e["loc"], e["type"]) for e in err.value.errors()))
        assert found[0] == found[1] and found[0], body
    sent = good | {"customer_id": "C-9", "event_time": "2026-11-01T08:00:00Z"}
    (dumped,) = [r.model_dump() for r in as_model.validate_python([sent])]
    (plain,) = as_dict.validate_python([sent])
    assert plain == dumped
    (without,) = as_dict.validate_python([good])
    assert without["customer_id"] is None and without["age"] == good["age"]
