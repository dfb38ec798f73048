"""Production windows: hour windows of the prediction log, profiled once, merged on demand.

Production profiles are made per hour window from the prediction log into
``monitoring/<project>/profiles/date=../hour=../profile.bin`` (see :mod:`mlops_lib.layout`);
a window is profiled once, after it has closed. Profiles are mergeable: a monitor run
merges the windows it covers.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, TypedDict

from mlops_lib import layout, profiles
from mlops_lib import versioning as vc
from mlops_lib.layout import MONITORING_BRANCH, window_of
from mlops_lib.monitoring.reference import ensure_monitoring_branch, monitored_frame
from mlops_lib.settings import Settings, get_settings
from mlops_lib.spec import ProjectSpec

if TYPE_CHECKING:
    from whylogs.core import DatasetProfileView


class WindowProfile(TypedDict):
    """One hour window profiled by :func:`profile_windows`."""

    window: str
    rows: int
    path: str


def windows_to_profile(
    log_paths: list[str], profiled: set[datetime], now: datetime
) -> dict[datetime, list[str]]:
    """Closed hour windows with logged predictions and no profile yet, with their files."""
    todo: dict[datetime, list[str]] = {}
    for path in log_paths:
        hour = window_of(path)
        if hour is None or hour in profiled or hour + timedelta(hours=1) > now:
            continue
        todo.setdefault(hour, []).append(path)
    return dict(sorted(todo.items()))


def log_view(
    spec: ProjectSpec, paths: list[str], settings: Settings
) -> tuple[DatasetProfileView, int]:
    """Profile of prediction-log files (the monitored columns) and their row count."""
    frame = vc.read_parquet(spec.name, MONITORING_BRANCH, paths, settings)
    return profiles.profile(monitored_frame(spec, frame)), len(frame)


def profile_windows(
    spec: ProjectSpec, *, now: datetime | None = None, settings: Settings | None = None
) -> list[WindowProfile]:
    """Profile every closed, not yet profiled hour window of the prediction log.

    Incremental: a window's profile is written once; later runs skip it. Commits the
    monitoring branch (the shipped prediction log with the new profiles).
    """
    settings = settings or get_settings()
    project = spec.name
    ensure_monitoring_branch(project, settings)
    now = now or datetime.now(UTC)
    logs = vc.list_paths(project, MONITORING_BRANCH, layout.predictions_prefix(project), settings)
    stored = vc.list_paths(project, MONITORING_BRANCH, layout.profiles_prefix(project), settings)
    done = {w for p in stored if (w := window_of(p)) is not None}
    made: list[WindowProfile] = []
    for hour, paths in windows_to_profile(logs, done, now).items():
        view, rows = log_view(spec, paths, settings)
        path = layout.window_profile_path(project, hour)
        data = profiles.serialize(view)
        vc.upload(project, MONITORING_BRANCH, path, data, "application/octet-stream", settings)
        made.append({"window": hour.isoformat(), "rows": rows, "path": path})
    if made:
        vc.commit(
            project,
            MONITORING_BRANCH,
            f"profiles of {len(made)} prediction-log windows",
            {"windows": ",".join(m["window"] for m in made)},
            settings,
        )
    return made


def windows_after(
    spec: ProjectSpec, last: str, settings: Settings
) -> tuple[list[DatasetProfileView], list[str]]:
    """The stored window profiles after the window ``last`` (ISO), with their windows."""
    project = spec.name
    views: list[DatasetProfileView] = []
    windows: list[str] = []
    stored = vc.list_paths(project, MONITORING_BRANCH, layout.profiles_prefix(project), settings)
    for path in sorted(stored):
        hour = window_of(path)
        if hour is not None and hour.isoformat() > last:
            views.append(profiles.deserialize(vc.read(project, MONITORING_BRANCH, path, settings)))
            windows.append(hour.isoformat())
    return views, windows


def open_window(
    spec: ProjectSpec, now: datetime, settings: Settings
) -> tuple[DatasetProfileView, str] | None:
    """The current, still open hour profiled on the fly (not stored), if it has traffic."""
    current = now.replace(minute=0, second=0, microsecond=0)
    logs = [
        p
        for p in vc.list_paths(
            spec.name, MONITORING_BRANCH, layout.predictions_prefix(spec.name), settings
        )
        if window_of(p) == current
    ]
    if not logs:
        return None
    return log_view(spec, logs, settings)[0], current.isoformat()


def merge(views: list[DatasetProfileView]) -> DatasetProfileView | None:
    """One profile of several windows (None when there are none)."""
    merged = None
    for view in views:
        merged = view if merged is None else merged.merge(view)
    return merged
