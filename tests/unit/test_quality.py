from datetime import UTC, datetime, timedelta

import pytest

from mlops_lib import demo_data
from mlops_lib.quality import RULE_CHECKERS, DataQualityError, check_batch, coerce
from mlops_lib.spec import RULE_KINDS

from .specs import churn_spec


@pytest.fixture(scope="module")
def spec():
    return churn_spec()


def rules_hit(report) -> set[tuple[str, str | None]]:
    return {(v.rule, v.column) for v in report.blocking}


def test_clean_batch_passes(spec) -> None:
    report = check_batch(demo_data.generate("clean", rows=5000), spec)
    assert report.passed, [v.line() for v in report.violations]
    assert report.rows == 5000
    assert "unique_key" in report.checked_rules


@pytest.mark.parametrize(
    ("scenario", "expected"),
    [
        ("missing_column", ("required_columns", "support_calls")),
        ("wrong_type", ("types", "total_charges")),
        ("nulls", ("max_null_fraction", "monthly_charges")),
        ("out_of_range", ("ranges", "age")),
        ("duplicate_keys", ("unique_key", "customer_id")),
        ("unknown_category", ("allowed_values", "contract")),
        ("empty", ("min_rows", None)),
    ],
)
def test_each_fault_is_caught(spec, scenario: str, expected: tuple) -> None:
    report = check_batch(demo_data.generate(scenario, rows=5000), spec)
    assert not report.passed
    assert expected in rules_hit(report)


def test_corrupted_batch_lists_every_violation_at_once(spec) -> None:
    report = check_batch(demo_data.generate("corrupted", rows=5000), spec)
    hit = rules_hit(report)
    for expected in [
        ("required_columns", "support_calls"),
        ("types", "total_charges"),
        ("ranges", "tenure_months"),
        ("ranges", "age"),
        ("allowed_values", "contract"),
        ("max_null_fraction", "monthly_charges"),
        ("unique_key", "customer_id"),
    ]:
        assert expected in hit
    err = DataQualityError("churn", report.blocking, where="lakefs://churn/b/r.json")
    text = str(err)
    assert f"{len(report.blocking)} blocking violations" in text
    assert "lakefs://churn/b/r.json" in text
    assert "examples: [150" in text  # a few example values
    assert text.count("\n  - BLOCKING") == len(report.blocking)


def test_renamed_column_is_reported_as_unexpected(spec) -> None:
    report = check_batch(demo_data.generate("missing_column", rows=2000), spec)
    warnings = [v for v in report.warnings if v.rule == "required_columns"]
    assert warnings and "n_support_calls" in warnings[0].message


def test_event_time_in_the_future_is_rejected(spec) -> None:
    df = demo_data.generate("clean", rows=2000)
    df.loc[:9, "event_time"] = datetime.now(UTC) + timedelta(days=2)
    report = check_batch(df, spec)
    v = [v for v in report.blocking if v.rule == "event_time_not_in_future"]
    assert v and v[0].count == 10


def test_not_null_on_a_non_nullable_column(spec) -> None:
    df = demo_data.generate("clean", rows=2000)
    df.loc[:2, "contract"] = None
    assert ("not_null", "contract") in rules_hit(check_batch(df, spec))


def test_distribution_against_previous_profile(spec) -> None:
    from mlops_lib.profiles import profile

    previous = profile(demo_data.generate("clean", rows=20000, seed=1)[spec.features])
    same = check_batch(
        demo_data.generate("clean", rows=20000, seed=2), spec, previous_profile=previous
    )
    assert not [v for v in same.violations if v.rule == "distribution"]
    drifted = check_batch(
        demo_data.generate("drifted", rows=20000, seed=3), spec, previous_profile=previous
    )
    dist = [v for v in drifted.violations if v.rule == "distribution"]
    assert dist and dist[0].severity == "warning"  # the demo spec only warns
    assert any(e.startswith("monthly_charges") for e in dist[0].examples)
    assert drifted.passed


def test_coerce_gives_declared_types(spec) -> None:
    df = demo_data.generate("clean", rows=100)
    df["event_time"] = df["event_time"].astype(str)
    out = coerce(df, spec)
    assert str(out["event_time"].dtype).startswith("datetime64")
    assert str(out["contract"].dtype) == "string"


def test_every_rule_kind_has_a_checker() -> None:
    missing = sorted(RULE_KINDS - RULE_CHECKERS.keys())
    assert not missing, f"rule kinds without a checker in quality.RULE_CHECKERS: {missing}"


def test_every_checker_belongs_to_a_rule_kind() -> None:
    assert not sorted(RULE_CHECKERS.keys() - RULE_KINDS)


def test_infinite_numbers_are_refused_naming_the_column(spec) -> None:
    import numpy as np

    batch = demo_data.generate("clean", rows=2000)
    batch.loc[:2, "monthly_charges"] = [np.inf, -np.inf, float("1e400")]
    report = check_batch(batch, spec)
    assert not report.passed
    (finite,) = [v for v in report.blocking if v.rule == "finite"]
    assert finite.column == "monthly_charges" and finite.count == 3
