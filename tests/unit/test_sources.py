from pathlib import Path

import pytest
import yaml

from mlops_lib import demo_data
from mlops_lib.sources import SourceError, read_source
from mlops_lib.spec import parse_spec

from .test_spec import CHURN


def spec_with(source: dict):
    data = yaml.safe_load(CHURN.read_text())
    data["source"] = source
    return parse_spec(data)


@pytest.fixture
def batch():
    return demo_data.generate("clean", rows=200)


def test_csv_parquet_glob_and_folder(tmp_path: Path, batch) -> None:
    demo_data.write(batch, tmp_path / "b1.csv")
    demo_data.write(batch, tmp_path / "b2.parquet")
    spec = spec_with({"path": "*.parquet"})
    df, origin = read_source(spec, base_dir=tmp_path)
    assert len(df) == 200 and origin.endswith("b2.parquet")
    df, _ = read_source(spec, override=str(tmp_path / "b1.csv"))
    assert len(df) == 200
    df, _ = read_source(spec, override=str(tmp_path))
    assert len(df) == 400


def test_csv_keeps_na_strings_visible(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("a,b\n1,N/A\n2,\n")
    df, _ = read_source(spec_with({"path": "x.csv"}), base_dir=tmp_path)
    assert df["b"].tolist()[0] == "N/A"
    assert df["b"].isna().tolist() == [False, True]


def test_unknown_path_empty_and_unreadable_files(tmp_path: Path) -> None:
    spec = spec_with({"path": "nothing/*.csv"})
    with pytest.raises(SourceError, match="matched no files"):
        read_source(spec, base_dir=tmp_path)
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(SourceError, match="is empty"):
        read_source(spec, override=str(tmp_path / "empty.csv"))
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(SourceError, match=r"cannot read .*junk\.parquet as parquet"):
        read_source(spec, override=str(tmp_path / "junk.parquet"))


def test_sql_source(tmp_path: Path, batch) -> None:
    import sqlalchemy

    url = f"sqlite:///{tmp_path / 'src.db'}"
    batch.to_sql("customers", sqlalchemy.create_engine(url), index=False)
    spec = spec_with({"sql": {"url": url, "query": "SELECT * FROM customers LIMIT 50"}})
    df, origin = read_source(spec)
    assert len(df) == 50 and origin.startswith("sql:")
    bad = spec_with({"sql": {"url": url, "query": "SELECT * FROM missing_table"}})
    with pytest.raises(SourceError, match=r"SQL source .* failed"):
        read_source(bad)


@pytest.fixture
def roots(tmp_path: Path, batch) -> list[Path]:
    data = tmp_path / "data"
    data.mkdir()
    demo_data.write(batch, data / "b1.parquet")
    (tmp_path / "outside").mkdir()
    demo_data.write(batch, tmp_path / "outside" / "secret.parquet")
    return [data]


@pytest.mark.parametrize(
    "pattern",
    [
        "/etc/passwd",
        "/**",
        "/etc/*.conf",
        "../outside/secret.parquet",
        "../outside/*.parquet",
        "link-out.parquet",
    ],
)
def test_sources_outside_the_data_roots_are_refused(tmp_path: Path, roots, pattern) -> None:
    (roots[0] / "link-out.parquet").symlink_to(tmp_path / "outside" / "secret.parquet")
    with pytest.raises(SourceError, match="outside the data roots"):
        read_source(spec_with({"path": "*.csv"}), override=pattern, base_dir=roots[0], roots=roots)


def test_sources_inside_the_data_roots_are_read(roots) -> None:
    spec = spec_with({"path": "*.parquet"})
    df, origin = read_source(spec, base_dir=roots[0], roots=roots)
    assert len(df) == 200 and origin.endswith("b1.parquet")


def test_the_platform_allows_data_and_demo_data_and_the_configured_roots(tmp_path: Path) -> None:
    from mlops_lib.settings import load_settings

    settings = load_settings(stack_dir=tmp_path / "stack", data_roots=f"/srv/a:{tmp_path}/b")
    assert settings.allowed_data_roots == [
        settings.repo_root / "data",
        tmp_path / "stack" / "demo-data",
        Path("/srv/a"),
        tmp_path / "b",
    ]


def test_sql_credentials_never_come_from_the_spec() -> None:
    from mlops_lib.spec import SpecError

    with pytest.raises(SpecError, match="credentials do not belong in a spec"):
        spec_with({"sql": {"url": "postgresql://etl:hunter2@db/sales", "query": "select 1"}})
    with pytest.raises(SpecError, match="exactly one of 'url' or 'conn_id'"):
        spec_with({"sql": {"query": "select 1"}})
    ok = spec_with(
        {
            "sql": {
                "url": "postgresql://etl@db/sales",
                "password_env": "SALES_PW",
                "query": "select 1",
            }
        }
    )
    assert ok.source.sql.timeout_seconds == 300


def test_sql_password_from_the_environment_and_connection_from_airflow(
    tmp_path: Path, batch, monkeypatch
) -> None:
    import sqlalchemy

    from mlops_lib.settings import load_settings

    url = f"sqlite:///{tmp_path / 'src.db'}"
    batch.to_sql("customers", sqlalchemy.create_engine(url), index=False)
    settings = load_settings(stack_dir=tmp_path)
    by_conn = spec_with({"sql": {"conn_id": "sales_db", "query": "SELECT * FROM customers"}})
    with pytest.raises(SourceError, match="connection 'sales_db' is not defined"):
        read_source(by_conn, settings=settings)
    monkeypatch.setenv("AIRFLOW_CONN_SALES_DB", url)
    df, origin = read_source(by_conn, settings=settings)
    assert len(df) == 200 and origin == "sql:connection sales_db"
    missing_pw = spec_with(
        {"sql": {"url": url, "password_env": "SALES_PW", "query": "SELECT 1 AS x"}}
    )
    with pytest.raises(SourceError, match="SALES_PW"):
        read_source(missing_pw, settings=settings)


def test_sql_statement_past_its_timeout_is_stopped(tmp_path: Path) -> None:
    import time

    from mlops_lib.settings import load_settings

    url = f"sqlite:///{tmp_path / 'slow.db'}"
    endless = (
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "
        "SELECT count(*) AS c FROM n"
    )
    spec = spec_with({"sql": {"url": url, "query": endless, "timeout_seconds": 0.5}})
    started = time.monotonic()
    with pytest.raises(SourceError, match=r"statement timeout 0\.5s"):
        read_source(spec, settings=load_settings(stack_dir=tmp_path))
    assert time.monotonic() - started < 10
