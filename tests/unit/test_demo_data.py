from pathlib import Path

import pytest

from mlops_lib import demo_data


def test_batches_are_deterministic_and_large_enough() -> None:
    a = demo_data.generate("clean", seed=3)
    b = demo_data.generate("clean", seed=3)
    assert len(a) >= 50_000
    assert a.equals(b)
    assert not a.equals(demo_data.generate("clean", seed=4))


def test_target_depends_on_features_with_noise() -> None:
    df = demo_data.generate("clean", rows=20_000)
    rate = df.groupby("contract")["churned"].mean()
    assert rate["month_to_month"] > rate["two_year"] + 0.1
    assert 0.1 < df["churned"].mean() < 0.5


def test_drifted_batch_shifts_some_features_only() -> None:
    clean = demo_data.generate("clean", rows=20_000, seed=1)
    drifted = demo_data.generate("drifted", rows=20_000, seed=1)
    assert drifted["monthly_charges"].mean() > clean["monthly_charges"].mean() + 15
    assert drifted["support_calls"].mean() > clean["support_calls"].mean() + 1
    assert abs(drifted["age"].mean() - clean["age"].mean()) < 1


def test_unknown_scenario_names_the_choices() -> None:
    with pytest.raises(ValueError, match="choose one of clean, drifted, corrupted"):
        demo_data.generate("weird")


def test_write_csv_and_parquet(tmp_path: Path) -> None:
    df = demo_data.generate("clean", rows=10)
    assert demo_data.write(df, tmp_path / "a.csv").stat().st_size > 0
    assert demo_data.write(df, tmp_path / "a.parquet").stat().st_size > 0
    with pytest.raises(ValueError, match=r"use a \.csv or \.parquet"):
        demo_data.write(df, tmp_path / "a.txt")
