"""The prediction log: every served row, its prediction, request id and time, for monitoring.

The request path only appends to an in-memory buffer. A background thread writes the
buffer to Parquet files in a local spool folder (one file per hour window, written
atomically); another ships spooled files to the project's lakeFS repository, branch
``monitoring``, under ``monitoring/<project>/predictions/date=YYYY-MM-DD/hour=HH/``.
A file leaves the spool only after lakeFS accepted it, so a lakeFS outage (refusing or
hanging) delays the log but loses nothing, and never holds up the spooling;
``close()`` (the service's shutdown hook) flushes what is left.

A served row's columns are what the service scored: the request's values and, for a model
that takes store features, the ``<view>__<feature>`` values looked up for it (typed as the
feature store keeps them, ``column_types``, so a column without any value in a file is still
a number), so monitoring sees what the model saw.

The spool has a size cap: past ``alarm_ratio`` of it an alarm is raised (an error log line
and ``spool_alarm``) while nothing is lost yet; only beyond the cap are the oldest files
dropped, each drop logged and counted in ``dropped_rows``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlops_lib import versioning as vc
from mlops_lib.layout import MONITORING_BRANCH, prediction_log_path

log = logging.getLogger(__name__)

Ship = Callable[[str, bytes], None]
# A request's rows as sent: a list of rows, or the columnar form's values by column.
Rows = list[dict[str, Any]] | dict[str, list[Any]]


@dataclass
class _Entry:
    request_id: str
    ts: float
    rows: Rows
    predictions: list[Any]
    scores: list[float]

    def __len__(self) -> int:
        return len(self.predictions)


class PredictionLog:
    """Buffered, background-flushed log of served predictions."""

    def __init__(
        self,
        project: str,
        model_version: str,
        spool_dir: Path,
        ship: Ship | None,
        *,
        flush_seconds: float = 2.0,
        max_rows: int = 20_000,
        spool_max_bytes: int = 1 << 30,
        alarm_ratio: float = 0.8,
        column_types: dict[str, str] | None = None,
    ) -> None:
        self.project = project
        # Columns written with a fixed type ("int" or "float"), whatever their values.
        self.column_types = dict(column_types or {})
        self.model_version = str(model_version)
        self.spool_dir = Path(spool_dir)
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self.ship = ship
        self.flush_seconds = flush_seconds
        self.max_rows = max_rows
        self._buffer: list[_Entry] = []
        self._rows = 0
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._shipped = threading.Event()
        self._seq = itertools.count()
        self.shipped_files = 0
        self.spool_max_bytes = spool_max_bytes
        self.alarm_bytes = int(spool_max_bytes * alarm_ratio)
        self.spool_bytes = 0
        self.spool_alarm = False
        self.dropped_rows = 0

    # request path ------------------------------------------------------------------
    def record(
        self,
        request_id: str,
        rows: Rows,
        predictions: list[Any],
        scores: list[float],
    ) -> None:
        """Append one request's rows (or columns) and outputs (O(1); no I/O)."""
        entry = _Entry(request_id, time.time(), rows, predictions, scores)
        with self._lock:
            self._buffer.append(entry)
            self._rows += len(entry)
            full = self._rows >= self.max_rows
        if full:
            self._wake.set()

    # background --------------------------------------------------------------------
    def start(self) -> PredictionLog:
        """Start the flusher and the shipper (idempotent); spooled leftovers ship first."""
        if not self._threads:
            for name, target in (("flush", self._run_flusher), ("ship", self._run_shipper)):
                thread = threading.Thread(
                    target=target, name=f"prediction-log-{name}-{self.project}", daemon=True
                )
                thread.start()
                self._threads.append(thread)
        return self

    def _run_flusher(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # the log must never stop the service
                log.exception("prediction log flush failed; retrying on the next tick")
            finally:
                # Measured also when the flush failed (a full disk): the alarm matters most then.
                with contextlib.suppress(Exception):
                    self.check_spool()

    def _run_shipper(self) -> None:
        while not self._stop.is_set():
            try:
                self.ship_pending()
            except Exception:
                log.exception("prediction log shipping failed; retrying")
            self._stop.wait(self.flush_seconds)

    def close(self, timeout: float = 10.0) -> int:
        """Stop the threads, write what is buffered and ship it; returns files left spooled.

        Shipping runs in a thread of its own here too, so a hanging lakeFS cannot hold the
        shutdown for long (each wait is bounded by ``timeout``: the threads' ends, then the
        shipping): what is not shipped stays spooled for the next start."""
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout)
        self.flush()
        finisher = threading.Thread(target=self._ship_until_empty, args=(timeout,), daemon=True)
        finisher.start()
        finisher.join(timeout + 1)
        left = len(self.pending())
        if left:
            log.warning(
                "%d prediction log files stay in %s until lakeFS is back", left, self.spool_dir
            )
        return left

    def _ship_until_empty(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.pending() and time.monotonic() < deadline:
            if self.ship_pending() == 0:
                time.sleep(0.5)

    def check_spool(self) -> int:
        """Measure the spool; raise the alarm near the cap, drop the oldest files past it.
        Returns the spool's size in bytes."""
        files = []
        for path in self.pending():
            with contextlib.suppress(FileNotFoundError):  # shipped meanwhile
                stat = path.stat()
                files.append((stat.st_mtime_ns, path, stat.st_size))
        files.sort()  # oldest first
        size = sum(n for _, _, n in files)
        if size >= self.alarm_bytes and not self.spool_alarm:
            log.error(
                "ALARM prediction log spool %s holds %.1f MB of its %.1f MB cap: lakeFS has "
                "not taken the files; the oldest will be dropped at the cap",
                self.spool_dir,
                size / 1e6,
                self.spool_max_bytes / 1e6,
            )
        self.spool_alarm = size >= self.alarm_bytes
        for _, path, n in files:
            if size <= self.spool_max_bytes:
                break
            rows = _row_count(path)
            path.unlink(missing_ok=True)
            size -= n
            self.dropped_rows += rows
            log.error("prediction log spool over its cap: dropped %s (%d rows)", path.name, rows)
        self.spool_bytes = size
        return size

    # spool -------------------------------------------------------------------------
    def flush(self) -> list[Path]:
        """Write the buffered entries to spool files (one per hour window).

        Entries leave the buffer only once every file is written: on a write error (disk
        full, a failing folder) they go back to the front of the buffer and the error is
        raised, so the next tick writes them again and no answered request is dropped."""
        with self._flush_lock:
            with self._lock:
                entries, self._buffer, self._rows = self._buffer, [], 0
            if not entries:
                return []
            try:
                return self._write(entries)
            except Exception:
                with self._lock:
                    self._buffer[:0] = entries
                    self._rows += sum(len(e) for e in entries)
                raise

    def _write(self, entries: list[_Entry]) -> list[Path]:
        """Every hour window's part to a temporary file first, then all renamed into the
        spool, so a failure leaves no partial set of files behind."""
        staged: list[tuple[Path, Path]] = []
        try:
            for hour, part in _by_hour(entries):
                name = f"{hour:%Y%m%dT%H}-{os.getpid()}-{uuid.uuid4().hex[:8]}-{next(self._seq)}"
                final = self.spool_dir / f"{name}.parquet"
                tmp = final.with_suffix(".tmp")
                staged.append((tmp, final))
                _to_parquet(self.by_column(part), tmp, self.column_types)
        except Exception:
            for tmp, _ in staged:
                tmp.unlink(missing_ok=True)
            raise
        for tmp, final in staged:
            os.replace(tmp, final)
        return [final for _, final in staged]

    def by_column(self, entries: list[_Entry]) -> dict[str, list[Any]]:
        """Rows of the entries by column: ids, time (epoch seconds), version, features,
        outputs. Built by joining lists: a frame, or a record per row, would hold the
        serving process's interpreter for long at each flush."""
        counts = [len(e) for e in entries]
        columns: dict[str, list[Any]] = {
            "request_id": [
                e.request_id for e, n in zip(entries, counts, strict=True) for _ in range(n)
            ],
            "row": [i for n in counts for i in range(n)],
            "ts": [e.ts for e, n in zip(entries, counts, strict=True) for _ in range(n)],
            "model_version": [self.model_version] * sum(counts),
        }
        columns |= _features(entries)
        columns["prediction"] = [p for e in entries for p in e.predictions]
        columns["score"] = [float(v) for e in entries for v in e.scores]
        return columns

    def pending(self) -> list[Path]:
        """Spooled files not yet accepted by lakeFS, oldest first."""
        return sorted(self.spool_dir.glob("*.parquet"))

    def ship_pending(self) -> int:
        """Upload spooled files; each is removed once stored. Returns how many were shipped."""
        if self.ship is None:
            return 0
        shipped = 0
        for path in self.pending():
            hour = datetime.strptime(path.name[:11], "%Y%m%dT%H").replace(tzinfo=UTC)
            try:
                data = path.read_bytes()
            except FileNotFoundError:  # shipped by another worker meanwhile
                continue
            try:
                self.ship(prediction_log_path(self.project, hour, path.name), data)
            except Exception as exc:  # keep the file, try again later
                log.warning("prediction log: cannot ship %s yet: %s", path.name, exc)
                break
            path.unlink(missing_ok=True)
            shipped += 1
        self.shipped_files += shipped
        return shipped


def _by_hour(entries: list[_Entry]) -> list[tuple[datetime, list[_Entry]]]:
    """The entries per UTC hour window of their time, oldest first."""
    hours: dict[int, list[_Entry]] = {}
    for entry in entries:
        hours.setdefault(int(entry.ts // 3600), []).append(entry)
    return [(datetime.fromtimestamp(h * 3600, UTC), hours[h]) for h in sorted(hours)]


def _features(entries: list[_Entry]) -> dict[str, list[Any]]:
    """The sent values of the entries, in order, by column. A column an entry lacks is None
    there."""
    by_entry = [_columns(e) for e in entries]
    names = list(dict.fromkeys(name for cols in by_entry for name in cols))
    columns: dict[str, list[Any]] = {name: [] for name in names}
    for entry, cols in zip(entries, by_entry, strict=True):
        for name in names:
            values = cols.get(name)
            columns[name].extend(values if values is not None else [None] * len(entry))
    return columns


def _columns(entry: _Entry) -> dict[str, list[Any]]:
    if isinstance(entry.rows, dict):
        return entry.rows
    names = dict.fromkeys(name for row in entry.rows for name in row)
    return {name: [row.get(name) for row in entry.rows] for name in names}


def _to_parquet(
    columns: dict[str, list[Any]], path: Path, types: dict[str, str] | None = None
) -> None:
    """Write columns as Parquet with Arrow (the write itself releases the interpreter): the
    time as UTC timestamps, a column of ``types`` as its type (``int``: int64, ``float``:
    float64), every other column typed from its values; a column of mixed types that Arrow
    refuses is kept as text rather than failing the whole file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    fixed = {"int": pa.int64(), "float": pa.float64()}
    arrays = {}
    for name, values in columns.items():
        if name == "ts":
            nanos = [round(t * 1e9) for t in values]
            arrays[name] = pa.array(nanos, pa.int64()).cast(pa.timestamp("ns", tz="UTC"))
            continue
        try:
            arrays[name] = pa.array(values, fixed.get((types or {}).get(name, "")))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
            log.warning("prediction log: column %r of mixed types kept as text (%s)", name, exc)
            arrays[name] = pa.array([None if v is None else str(v) for v in values], pa.string())
    pq.write_table(pa.table(arrays), path)


def _row_count(path: Path) -> int:
    import pyarrow.parquet as pq  # kept out of the request path

    try:
        return int(pq.read_metadata(path).num_rows)
    except Exception:
        return 0


def lakefs_shipper(project: str, settings: Any = None) -> Ship:
    """Upload to the project's ``monitoring`` branch (created from main on first use)."""
    ready = False

    def ship(path: str, data: bytes) -> None:
        nonlocal ready
        if not ready:
            vc.ensure_branch(project, MONITORING_BRANCH, settings=settings)
            ready = True
        vc.upload(project, MONITORING_BRANCH, path, data, "application/octet-stream", settings)

    return ship


def spool_dir(settings: Any, project: str) -> Path:
    """Local spool folder of a project's prediction log."""
    return Path(settings.stack_dir) / "serving" / project / "prediction-log"
