"""Reading a batch from a project's source: CSV or Parquet files (path or glob), or SQL."""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

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


def read_sql(sql: SqlSource) -> pd.DataFrame:
    import pandas as pd
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(sql.url)
        with engine.connect() as conn:
            return pd.read_sql(sqlalchemy.text(sql.query), conn)
    except Exception as exc:
        safe = sqlalchemy.engine.make_url(sql.url).render_as_string(hide_password=True)
        raise SourceError(f"SQL source {safe} failed: {type(exc).__name__}: {exc}") from exc


def read_source(
    spec: ProjectSpec,
    *,
    override: str | None = None,
    base_dir: Path | None = None,
    roots: Sequence[Path] | None = None,
) -> tuple[pd.DataFrame, str]:
    """Read a batch; ``override`` (a path or glob) replaces the spec's source.

    ``roots``: the folders files may come from (see :func:`resolve_paths`).
    Returns the frame and a description of where it came from.
    """
    import pandas as pd

    base_dir = base_dir or Path.cwd()
    if override is None and spec.source.sql is not None:
        safe = spec.source.sql.url.split("@")[-1]
        return read_sql(spec.source.sql), f"sql:{safe}"
    pattern = override or spec.source.path
    assert pattern is not None
    files = resolve_paths(pattern, base_dir, roots)
    frames = [read_file(p, spec.source.format) for p in files]
    df = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    return df, ",".join(str(p) for p in files)
