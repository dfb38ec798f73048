"""Production windows: hour windows of the prediction log, profiled once, merged on demand.

Production profiles are made per hour window from the prediction log into
``monitoring/<project>/profiles/date=../hour=../profile-<files>.bin`` (see
:mod:`mlops_lib.layout`); a window is profiled after it has closed, and again when files of it
are shipped late. Profiles are mergeable: a monitor run
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
    log_paths: list[str], profiled: dict[datetime, int], now: datetime
) -> dict[datetime, list[str]]:
    """Closed hour windows with logged files their profile does not cover yet (none made, or
    files shipped late), each with every file of the window."""
    closed: dict[datetime, list[str]] = {}
    for path in log_paths:
        hour = window_of(path)
        if hour is not None and hour + timedelta(hours=1) <= now:
            closed.setdefault(hour, []).append(path)
    return {
        hour: paths for hour, paths in sorted(closed.items()) if len(paths) > profiled.get(hour, 0)
    }


def stored_profiles(spec: ProjectSpec, settings: Settings) -> dict[datetime, str]:
    """Each window's stored profile (the one covering the most files)."""
    prefix = layout.profiles_prefix(spec.name)
    stored = vc.list_paths(spec.name, MONITORING_BRANCH, prefix, settings)
    best: dict[datetime, str] = {}
    for path in stored:
        hour = window_of(path)
        if hour is not None and (
            hour not in best or layout.profiled_files(path) > layout.profiled_files(best[hour])
        ):
            best[hour] = path
    return best


def log_view(
    spec: ProjectSpec, paths: list[str], settings: Settings
) -> tuple[DatasetProfileView, int]:
    """Profile of prediction-log files (the monitored columns) and their row count."""
    frame = vc.read_parquet(spec.name, MONITORING_BRANCH, paths, settings)
    return profiles.profile(monitored_frame(spec, frame)), len(frame)


def profile_windows(
    spec: ProjectSpec, *, now: datetime | None = None, settings: Settings | None = None
) -> list[WindowProfile]:
    """Profile every closed hour window of the prediction log not profiled yet, and again
    every window whose files were shipped after its profile was made.

    Incremental: a window is profiled when its set of files grows; the profile it replaces is
    removed. Commits the monitoring branch (the shipped prediction log with the profiles).
    """
    settings = settings or get_settings()
    project = spec.name
    ensure_monitoring_branch(project, settings)
    now = now or datetime.now(UTC)
    logs = vc.list_paths(project, MONITORING_BRANCH, layout.predictions_prefix(project), settings)
    stored = stored_profiles(spec, settings)
    covered = {hour: layout.profiled_files(path) for hour, path in stored.items()}
    made: list[WindowProfile] = []
    for hour, paths in windows_to_profile(logs, covered, now).items():
        view, rows = log_view(spec, paths, settings)
        path = layout.window_profile_path(project, hour, len(paths))
        data = profiles.serialize(view)
        vc.upload(project, MONITORING_BRANCH, path, data, "application/octet-stream", settings)
        if hour in stored:
            vc.delete_prefix(project, MONITORING_BRANCH, stored[hour], settings)
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
    views: list[DatasetProfileView] = []
    windows: list[str] = []
    for hour, path in sorted(stored_profiles(spec, settings).items()):
        if hour.isoformat() > last:
            data = vc.read(spec.name, MONITORING_BRANCH, path, settings)
            views.append(profiles.deserialize(data))
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
