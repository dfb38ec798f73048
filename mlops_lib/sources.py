"""Reading a batch from a project's source: CSV or Parquet files (path or glob), or SQL."""

from __future__ import annotations

import glob
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_lib.settings import Settings, get_settings
from mlops_lib.spec import ProjectSpec, SqlSource

if TYPE_CHECKING:
    import pandas as pd


class SourceError(RuntimeError):
    """The source cannot be read; the message names the path or URL and the cause."""


def local_path(path: str | Path, settings: Settings | None = None) -> Path:
    """A path as the platform resolves it (relative to the repository root)."""
    settings = settings or get_settings()
    p = Path(path)
    return p if p.is_absolute() else settings.repo_root / p


_WILDCARDS = "*?["


def confine(path: Path, roots: Sequence[Path]) -> Path:
    """``path`` with links and ``..`` resolved, if it lies inside one of the roots; else
    SourceError naming it and the roots (nothing is read)."""
    real = path.resolve()
    if any(real.is_relative_to(root.resolve()) for root in roots):
        return real
    allowed = ", ".join(str(r) for r in roots)
    raise SourceError(
        f"source {path} is outside the data roots ({allowed}); put the data there or add its "
        f"folder to MLOPS_DATA_ROOTS"
    )


def _fixed_prefix(full: Path) -> Path:
    """The folder part of a pattern before its first wildcard (what a glob would walk)."""
    parts = []
    for part in full.parts:
        if any(ch in part for ch in _WILDCARDS):
            break
        parts.append(part)
    return Path(*parts)


def resolve_paths(pattern: str, base_dir: Path, roots: Sequence[Path] | None = None) -> list[Path]:
    """Files matched by a path, folder or glob (relative to base_dir).

    With ``roots``, the pattern and every file it matches (after following links) must lie
    inside one of them: ``/etc/...``, ``..`` out of them, ``/**`` or a link out is refused.
    """
    raw = Path(pattern).expanduser()
    full = raw if raw.is_absolute() else base_dir / raw
    if roots is not None:
        confine(_fixed_prefix(full), roots)
    if full.is_dir():
        files = sorted(p for p in full.iterdir() if p.suffix in (".csv", ".parquet", ".pq"))
    elif any(ch in str(full) for ch in "*?["):
        files = sorted(Path(p) for p in glob.glob(str(full), recursive=True))
    else:
        files = [full] if full.exists() else []
    if not files:
        raise SourceError(f"source {pattern!r} matched no files (looked in {full})")
    if roots is not None:
        files = [confine(f, roots) for f in files]
    return files


def read_file(path: Path, fmt: str = "auto") -> pd.DataFrame:
    """One CSV or Parquet file (by suffix unless `fmt` says); SourceError naming the file."""
    import pandas as pd

    kind = fmt if fmt != "auto" else ("csv" if path.suffix == ".csv" else "parquet")
    if path.stat().st_size == 0:
        raise SourceError(f"source file {path} is empty (0 bytes)")
    try:
        if kind == "csv":
            # Only empty cells are missing: 'N/A' and friends stay visible to the type checks.
            return pd.read_csv(path, keep_default_na=False, na_values=[""])
        return pd.read_parquet(path)
    except SourceError:
        raise
    except Exception as exc:
        raise SourceError(f"cannot read {path} as {kind}: {type(exc).__name__}: {exc}") from exc


def sql_url(sql: SqlSource, settings: Settings) -> Any:
    """The database URL with its credentials, from the connection or the environment."""
    import sqlalchemy

    if sql.conn_id is not None:
        var = f"AIRFLOW_CONN_{sql.conn_id.upper()}"
        uri = settings.environment_value(var)
        if uri is None:
            raise SourceError(
                f"Airflow connection {sql.conn_id!r} is not defined "
                f"(neither in Airflow nor as {var})"
            )
        scheme, sep, rest = uri.partition("://")
        # Airflow writes PostgreSQL connections as postgres://, SQLAlchemy wants postgresql://.
        return sqlalchemy.engine.make_url(
            ("postgresql" if scheme == "postgres" else scheme) + sep + rest
        )
    url = sqlalchemy.engine.make_url(sql.url)
    if sql.password_env is not None:
        password = settings.environment_value(sql.password_env)
        if password is None:
            raise SourceError(f"environment variable {sql.password_env} (the password) is not set")
        url = url.set(password=password)
    return url


def _engine(url: Any, timeout: float) -> Any:
    """An engine whose statements end after ``timeout`` seconds (PostgreSQL, MySQL, SQLite)."""
    import sqlalchemy

    backend = url.get_backend_name()
    if backend == "postgresql":
        options = f"-c statement_timeout={int(timeout * 1000)}"
        return sqlalchemy.create_engine(
            url, connect_args={"options": options, "connect_timeout": 10}
        )
    if backend in ("mysql", "mariadb"):
        return sqlalchemy.create_engine(url, connect_args={"read_timeout": int(timeout)})
    engine = sqlalchemy.create_engine(url)
    if backend == "sqlite":
        _sqlite_deadline(engine, timeout)
    return engine


def _sqlite_deadline(engine: Any, timeout: float) -> None:
    """SQLite has no statement timeout: a progress handler interrupts a statement that has
    run past its deadline (each statement's clock starts when it is executed)."""
    import sqlalchemy

    started = {"at": time.monotonic()}

    @sqlalchemy.event.listens_for(engine, "before_cursor_execute")
    def _start(*_args: Any) -> None:
        started["at"] = time.monotonic()

    @sqlalchemy.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        def past_deadline() -> int:
            return 1 if time.monotonic() - started["at"] > timeout else 0

        dbapi_conn.set_progress_handler(past_deadline, 10_000)


def _without(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


def read_sql(sql: SqlSource, settings: Settings) -> pd.DataFrame:
    import pandas as pd
    import sqlalchemy

    url = sql_url(sql, settings)
    safe = url.render_as_string(hide_password=True)
    try:
        with _engine(url, sql.timeout_seconds).connect() as conn:
            return pd.read_sql(sqlalchemy.text(sql.query), conn)
    except Exception as exc:
        raise SourceError(
            f"SQL source {safe} failed (statement timeout {sql.timeout_seconds:g}s): "
            f"{type(exc).__name__}: {_without(str(exc), url.password)}"
        ) from exc


def read_source(
    spec: ProjectSpec,
    *,
    override: str | None = None,
    base_dir: Path | None = None,
    roots: Sequence[Path] | None = None,
    settings: Settings | None = None,
) -> tuple[pd.DataFrame, str]:
    """Read a batch; ``override`` (a path or glob) replaces the spec's source.

    ``roots``: the folders files may come from (see :func:`resolve_paths`).
    Returns the frame and a description of where it came from.
    """
    import pandas as pd

    base_dir = base_dir or Path.cwd()
    if override is None and spec.source.sql is not None:
        sql = spec.source.sql
        where = sql.url.split("@")[-1] if sql.url else f"connection {sql.conn_id}"
        return read_sql(sql, settings or get_settings()), f"sql:{where}"
    pattern = override or spec.source.path
    assert pattern is not None
    files = resolve_paths(pattern, base_dir, roots)
    frames = [read_file(p, spec.source.format) for p in files]
    df = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    return df, ",".join(str(p) for p in files)
