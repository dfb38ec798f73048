"""Pure training logic: split, pipeline, gate policy, trainability checks."""

import pytest
import yaml

from mlops_lib import demo_data
from mlops_lib.datasets import TrainingError, check_trainable, split
from mlops_lib.features import build_pipeline, model_input
from mlops_lib.registry import AWAIT, PROMOTE, REJECT, decide, model_card, with_serving_runtime
from mlops_lib.spec import parse_spec

from .specs import churn_spec
from .test_spec import CHURN


@pytest.fixture(scope="module")
def spec():
    return churn_spec()


def with_policy(**promotion):
    data = yaml.safe_load(CHURN.read_text())
    data["promotion"].update(promotion)
    return parse_spec(data)


def test_time_split_is_fixed_and_puts_the_newest_rows_in_the_holdout(spec) -> None:
    df = demo_data.generate("clean", rows=4000)
    train, holdout = split(df, spec)
    _, again_holdout = split(df.sample(frac=1, random_state=3), spec)
    assert holdout["customer_id"].tolist() == again_holdout["customer_id"].tolist()
    assert train["event_time"].max() <= holdout["event_time"].min()
    assert len(holdout) == 800


def test_production_rows_are_split_on_their_own_so_training_learns_from_them(spec) -> None:
    import pandas as pd

    batch = demo_data.generate("clean", rows=1000)
    served = demo_data.generate("drifted", rows=200, seed=9)
    # Served after every batch's event time (no event time sent: the served time stands in).
    served["event_time"] = pd.Timestamp("2030-01-01", tz="UTC") + pd.to_timedelta(
        range(200), unit="s"
    )
    served["request_id"], served["row"] = "r1", range(200)
    train, holdout = split(pd.concat([batch, served], ignore_index=True), spec)
    trained, held = train[train["request_id"].notna()], holdout[holdout["request_id"].notna()]
    assert (len(trained), len(held)) == (160, 40)
    assert held["event_time"].min() > trained["event_time"].max()
    assert len(train) == 960 and len(holdout) == 240


def test_pipeline_derives_encodes_and_tolerates_unseen_categories(spec) -> None:
    from sklearn.linear_model import LogisticRegression

    df = demo_data.generate("clean", rows=3000)
    pipe = build_pipeline(spec, LogisticRegression(max_iter=500))
    pipe.fit(model_input(df, spec), df["churned"])
    names = list(pipe[:-1].get_feature_names_out())
    assert "charges_per_tenure" in names and "contract_two_year" in names
    odd = model_input(df.head(3), spec)
    odd.loc[0, "region"] = "mars"
    odd.loc[1, "monthly_charges"] = None
    assert pipe.predict_proba(odd).shape == (3, 2)


def test_gate_promotes_without_champion_and_on_enough_improvement() -> None:
    s = with_policy(min_improvement=0.01, guards={"accuracy": 0.01})
    decision, reason = decide(s, {"roc_auc": 0.8, "accuracy": 0.7}, None)
    assert decision == PROMOTE and reason.startswith("rule no_champion")
    decision, reason = decide(
        s, {"roc_auc": 0.82, "accuracy": 0.7}, {"roc_auc": 0.8, "accuracy": 0.7}
    )
    assert decision == PROMOTE and "guards hold" in reason
    assert reason.startswith("rule min_improvement on the holdout")


def test_gate_rejects_small_gain_and_guard_regressions_listing_both() -> None:
    s = with_policy(min_improvement=0.01, guards={"accuracy": 0.01})
    decision, reason = decide(
        s, {"roc_auc": 0.805, "accuracy": 0.65}, {"roc_auc": 0.8, "accuracy": 0.7}
    )
    assert decision == REJECT
    assert "is not above the required +0.0100" in reason
    assert "rule guard accuracy: regressed by 0.0500" in reason


@pytest.mark.parametrize("min_improvement", [0.0, 0.002])
def test_gate_does_not_promote_a_tie(min_improvement: float) -> None:
    s = with_policy(min_improvement=min_improvement)
    same = {"roc_auc": 0.8, "accuracy": 0.7}
    decision, reason = decide(s, dict(same), dict(same))
    assert decision == REJECT and "improvement +0.0000 is not above" in reason
    exactly = {"roc_auc": 0.8 + min_improvement, "accuracy": 0.7}
    assert decide(s, exactly, dict(same))[0] == REJECT


def test_gate_judges_on_the_production_slice_when_both_were_scored_on_it() -> None:
    s = with_policy(min_improvement=0.0)
    champion = {"roc_auc": 0.80, "accuracy": 0.7, "production_roc_auc": 0.60}
    # Better on production, a little worse on old data: it fixes what production sees.
    fixes = {"roc_auc": 0.79, "accuracy": 0.7, "production_roc_auc": 0.75}
    decision, reason = decide(s, fixes, champion)
    assert decision == PROMOTE and "on the production slice" in reason
    # Better on old data, not on production: it does not fix the drift.
    stale = {"roc_auc": 0.85, "accuracy": 0.7, "production_roc_auc": 0.60}
    decision, reason = decide(s, stale, champion)
    assert decision == REJECT and "rule min_improvement on the production slice" in reason
    # Without production metrics on both sides, the holdout decides.
    decision, reason = decide(s, {"roc_auc": 0.85, "accuracy": 0.7}, champion)
    assert decision == PROMOTE and "on the holdout" in reason


def regression_with_policy(**promotion):
    columns = {"size": {"type": "float"}, "price": {"type": "float"}}
    return parse_spec(
        {
            "name": "prices",
            "source": {"path": "data/x.csv"},
            "schema": {"columns": columns},
            "target": {"column": "price", "task": "regression"},
            "training": {"metric": "rmse"},
            "promotion": promotion,
        }
    )


def test_a_regression_challenger_with_lower_rmse_replaces_the_champion() -> None:
    s = regression_with_policy(min_improvement=0.5)
    champion = {"rmse": 10.0, "mae": 8.0, "r2": 0.70}
    decision, reason = decide(s, {"rmse": 9.0, "mae": 7.5, "r2": 0.75}, champion)
    assert decision == PROMOTE
    assert "rmse 9.0000 vs champion 10.0000 (improvement +1.0000 > +0.5000)" in reason
    # Lower, but by less than the required improvement: not enough.
    decision, reason = decide(s, {"rmse": 9.8, "mae": 7.9, "r2": 0.71}, champion)
    assert decision == REJECT and "improvement +0.2000 is not above the required +0.5000" in reason


def test_a_regression_challenger_with_higher_rmse_keeps_the_champion() -> None:
    s = regression_with_policy()
    champion = {"rmse": 10.0, "mae": 8.0, "r2": 0.70}
    decision, reason = decide(s, {"rmse": 12.0, "mae": 9.0, "r2": 0.60}, champion)
    assert decision == REJECT
    assert "rmse 12.0000 vs champion 10.0000: improvement -2.0000 is not above" in reason


def test_a_regression_challenger_with_lower_rmse_is_held_back_by_its_guards() -> None:
    s = regression_with_policy(guards={"r2": 0.02, "mae": 0.5})
    champion = {"rmse": 10.0, "mae": 8.0, "r2": 0.70}
    # r2 (higher is better) fell by 0.05, mae (lower is better) rose by 1.0: both guards trip.
    decision, reason = decide(s, {"rmse": 9.0, "mae": 9.0, "r2": 0.65}, champion)
    assert decision == REJECT and "rule min_improvement" not in reason
    assert "rule guard r2: regressed by 0.0500 (limit 0.0200)" in reason
    assert "rule guard mae: regressed by 1.0000 (limit 0.5000)" in reason
    # A lower mae and a higher r2 are improvements, not regressions.
    decision, reason = decide(s, {"rmse": 9.0, "mae": 6.0, "r2": 0.80}, champion)
    assert decision == PROMOTE and "guards hold" in reason


def test_manual_approval_holds_a_winner() -> None:
    s = with_policy(manual_approval=True)
    decision, reason = decide(s, {"roc_auc": 0.8, "accuracy": 0.7}, None)
    assert decision == AWAIT and "mlops model approve" in reason


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda df: df.head(10), "fewer than training.min_rows"),
        (lambda df: df.assign(churned=1), "single class [1]"),
        (lambda df: df.drop(columns=["churned"]), "target column 'churned' is missing"),
        (lambda df: df.drop(columns=["age"]), "feature columns ['age'] are missing"),
        (lambda df: df.iloc[0:0], "no accepted data"),
    ],
)
def test_untrainable_data(spec, mutate, message: str) -> None:
    df = mutate(demo_data.generate("clean", rows=2000))
    with pytest.raises(TrainingError) as err:
        check_trainable(df, spec, "abc123def4567890")
    assert message in str(err.value) and "abc123def456" in str(err.value)


def test_the_model_card_says_which_runtime_serves_and_a_new_deploy_replaces_the_line(
    spec,
) -> None:
    card = model_card(spec, 3, "c0ffee", {"roc_auc": 0.8}, PROMOTE, "no champion", None)
    onnx = with_serving_runtime(card, "onnx", "")
    assert onnx == card + "\n\n**Serving runtime**: onnx."
    reason = "parity: probabilities differ by up to 3.0e-04 (tolerance 1e-05) on 200 rows"
    sklearn = with_serving_runtime(onnx, "sklearn", reason)
    assert sklearn == card + f"\n\n**Serving runtime**: sklearn ({reason})."
    assert sklearn.count("**Serving runtime**") == 1
    assert with_serving_runtime(sklearn, "onnx", "") == onnx
    assert with_serving_runtime("", "onnx", "") == "**Serving runtime**: onnx."


def test_a_card_ending_in_a_newline_still_gets_one_serving_line() -> None:
    card = with_serving_runtime("## churn v3\n\nEdited in the MLflow UI.\n", "onnx", "")
    assert with_serving_runtime(card, "sklearn", "x").count("**Serving runtime**") == 1
