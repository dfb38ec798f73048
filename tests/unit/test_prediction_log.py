"""The prediction log: buffered, spooled per hour window, shipped, never lost on a clean close."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from mlops_lib.layout import prediction_log_path
from mlops_lib.serving.prediction_log import PredictionLog


class Sink:
    """Collects shipped objects; can be told to fail (lakeFS down)."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.down = False

    def __call__(self, path: str, data: bytes) -> None:
        if self.down:
            raise ConnectionError("lakeFS is down")
        self.objects[path] = data

    def frame(self) -> pd.DataFrame:
        return pd.concat(pd.read_parquet(io.BytesIO(b)) for b in self.objects.values())


def make(tmp_path: Path, sink: Sink | None, **kw) -> PredictionLog:
    return PredictionLog("churn", "3", tmp_path / "spool", sink, flush_seconds=60, **kw)


def record(log: PredictionLog, request_id: str, n: int = 2) -> None:
    rows = [{"age": 30 + i, "contract": "one_year"} for i in range(n)]
    log.record(request_id, rows, [i % 2 for i in range(n)], [0.1 * i for i in range(n)])


def test_flush_writes_rows_with_ids_time_version_and_outputs(tmp_path: Path) -> None:
    sink = Sink()
    log = make(tmp_path, sink)
    record(log, "r1", 3)
    record(log, "r2", 1)
    assert log.flush() and log.ship_pending() == 1
    df = sink.frame()
    assert list(df["request_id"]) == ["r1", "r1", "r1", "r2"]
    assert list(df["row"]) == [0, 1, 2, 0]
    assert set(df["model_version"]) == {"3"}
    assert {"ts", "age", "contract", "prediction", "score"} <= set(df.columns)
    assert str(df["ts"].dtype).startswith("datetime64") and df["ts"].dt.tz is not None
    (path,) = sink.objects
    assert path.startswith("monitoring/churn/predictions/date=") and "/hour=" in path
    assert not log.pending()


def test_rows_are_split_by_hour_window(tmp_path: Path) -> None:
    log = make(tmp_path, Sink())
    record(log, "a")
    record(log, "b")
    log._buffer[0].ts = pd.Timestamp("2026-11-27T09:59:59Z").timestamp()
    log._buffer[1].ts = pd.Timestamp("2026-11-27T10:00:01Z").timestamp()
    files = log.flush()
    assert len(files) == 2
    assert prediction_log_path("churn", pd.Timestamp("2026-11-27T10:00Z"), "x").endswith(
        "date=2026-11-27/hour=10/x"
    )


def test_lakefs_outage_keeps_files_until_it_is_back(tmp_path: Path) -> None:
    sink = Sink()
    sink.down = True
    log = make(tmp_path, sink)
    record(log, "r1")
    log.flush()
    assert log.ship_pending() == 0 and len(log.pending()) == 1
    sink.down = False
    assert log.ship_pending() == 1 and not log.pending()
    assert set(sink.frame()["request_id"]) == {"r1"}


def test_close_flushes_and_ships_everything(tmp_path: Path) -> None:
    sink = Sink()
    log = make(tmp_path, sink).start()
    for i in range(50):
        record(log, f"r{i}")
    assert log.close(timeout=5) == 0
    assert set(sink.frame()["request_id"]) == {f"r{i}" for i in range(50)}


def test_close_with_lakefs_down_leaves_spooled_files_for_the_next_start(tmp_path: Path) -> None:
    sink = Sink()
    sink.down = True
    log = make(tmp_path, sink).start()
    record(log, "kept")
    assert log.close(timeout=1) == 1
    sink.down = False
    again = make(tmp_path, sink)
    assert again.ship_pending() == 1
    assert set(sink.frame()["request_id"]) == {"kept"}


def test_a_full_buffer_wakes_the_flusher(tmp_path: Path) -> None:
    import time

    sink = Sink()
    log = make(tmp_path, sink, max_rows=10).start()
    record(log, "big", 10)
    deadline = time.monotonic() + 5
    while not sink.objects and time.monotonic() < deadline:
        time.sleep(0.05)
    log.close(timeout=2)
    assert sink.objects, "a full buffer should be flushed before the interval"


def test_flush_of_an_empty_buffer_writes_nothing(tmp_path: Path) -> None:
    assert make(tmp_path, Sink()).flush() == []


def test_a_failed_write_keeps_every_row_for_the_next_flush(tmp_path: Path, monkeypatch) -> None:
    """Disk full while spooling: nothing answered is dropped, nothing is written twice."""
    import errno

    import pytest

    sink = Sink()
    log = make(tmp_path, sink)
    record(log, "early", 2)
    log._buffer[0].ts = pd.Timestamp("2026-11-27T09:30Z").timestamp()
    record(log, "late", 3)
    import pyarrow.parquet as pq

    real = pq.write_table
    calls = {"n": 0}

    def second_write_fails(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(pq, "write_table", second_write_fails)
    with pytest.raises(OSError, match="No space left"):
        log.flush()
    assert not log.pending() and not list((tmp_path / "spool").glob("*.tmp"))
    assert [e.request_id for e in log._buffer] == ["early", "late"] and log._rows == 5
    record(log, "after", 1)
    assert len(log.flush()) == 2 and log.ship_pending() == 2
    df = sink.frame()
    assert sorted(df["request_id"]) == ["after", "early", "early", "late", "late", "late"]


def test_columns_of_mixed_types_are_kept_as_text(tmp_path: Path) -> None:
    sink = Sink()
    log = make(tmp_path, sink)
    log.record("a", [{"code": 7}], [1], [0.9])
    log.record("b", [{"code": "x7"}], [0], [0.1])
    assert log.flush() and log.ship_pending() == 1
    assert sorted(sink.frame()["code"].astype(str)) == ["7", "x7"]


def test_spool_near_its_cap_raises_the_alarm_before_anything_is_dropped(
    tmp_path: Path, caplog
) -> None:
    sink = Sink()
    sink.down = True
    log = make(tmp_path, sink, spool_max_bytes=10_000_000)
    record(log, "first", n=50)
    log.flush()
    one_file = log.check_spool()
    log.spool_max_bytes, log.alarm_bytes = int(one_file * 2.5), int(one_file * 2)
    record(log, "second", n=50)
    log.flush()
    with caplog.at_level("ERROR"):
        log.check_spool()
    assert log.spool_alarm and log.dropped_rows == 0
    assert "ALARM prediction log spool" in caplog.text
    record(log, "third", n=50)
    log.flush()
    log.check_spool()
    # Over the cap: the oldest file goes, counted; the newer ones stay for lakeFS.
    assert log.dropped_rows == 50 and len(log.pending()) == 2
    sink.down = False
    assert log.ship_pending() == 2
    assert set(sink.frame()["request_id"]) == {"second", "third"}


def test_a_hanging_lakefs_neither_blocks_spooling_nor_the_shutdown(tmp_path: Path) -> None:
    """lakeFS accepts connections but never answers: uploads time out, rows stay spooled,
    new rows keep being spooled, and close() returns within its deadline."""
    import socket
    import time

    from mlops_lib.serving.prediction_log import lakefs_shipper
    from mlops_lib.settings import load_settings

    hanging = socket.socket()
    hanging.bind(("127.0.0.1", 0))
    hanging.listen(16)
    settings = load_settings(
        stack_dir=tmp_path / "stack",
        lakefs_endpoint=f"http://127.0.0.1:{hanging.getsockname()[1]}",
        lakefs_access_key_id="AKIAHANG",
        lakefs_secret_access_key="never-answered",
        lakefs_request_timeout=1.0,
    )
    log = PredictionLog(
        "churn", "3", tmp_path / "spool", lakefs_shipper("churn", settings), flush_seconds=0.2
    ).start()
    try:
        record(log, "before")
        deadline = time.monotonic() + 10
        while len(log.pending()) < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        record(log, "meanwhile")
        while len(log.pending()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(log.pending()) == 2  # spooling went on while shipping hung
        started = time.monotonic()
        assert log.close(timeout=2) == 2
        assert time.monotonic() - started < 6
    finally:
        hanging.close()
    ids = set(pd.concat(pd.read_parquet(p) for p in log.pending())["request_id"])
    assert ids == {"before", "meanwhile"}


def test_every_lakefs_call_has_a_deadline(tmp_path: Path) -> None:
    import socket
    import time

    import pytest

    from mlops_lib import versioning as vc
    from mlops_lib.settings import load_settings

    hanging = socket.socket()
    hanging.bind(("127.0.0.1", 0))
    hanging.listen(16)
    settings = load_settings(
        stack_dir=tmp_path,
        lakefs_endpoint=f"http://127.0.0.1:{hanging.getsockname()[1]}",
        lakefs_access_key_id="AKIADEADLINE",
        lakefs_secret_access_key="never-answered",
        lakefs_request_timeout=1.0,
    )
    started = time.monotonic()
    try:
        with pytest.raises(Exception):  # noqa: B017 (the SDK wraps the timeout variously)
            vc.head("churn", settings=settings)
    finally:
        hanging.close()
    # A deadline, not a speed: 1 s per try (the SDK tries 4 times), far from hanging forever.
    assert time.monotonic() - started < 20


# the columnar form -------------------------------------------------------------------------


def test_row_form_and_columnar_entries_flush_to_one_frame_in_entry_order(tmp_path: Path) -> None:
    log = make(tmp_path, None)
    log.record(
        "r1",
        [{"age": 30, "contract": "one_year"}, {"age": 31, "contract": "two_year"}],
        [0, 1],
        [0.1, 0.6],
    )
    log.record(
        "c1",
        {"age": [40, 41, 42], "contract": ["one_year", None, "two_year"]},
        [1, 0, 1],
        [0.9, 0.2, 0.8],
    )
    log.record("r2", [{"age": 50, "contract": "one_year"}], [0], [0.3])
    log.record(
        "r3",
        [{"age": 60, "contract": "two_year"}, {"age": 61, "contract": None}],
        [1, 1],
        [0.7, 0.75],
    )
    log.record("c2", {"age": [70], "contract": ["one_year"], "customer_id": ["C-70"]}, [0], [0.05])
    for entry in log._buffer:  # one hour window, so one file
        entry.ts = pd.Timestamp("2026-11-27T09:30Z").timestamp()
    assert log._rows == 9
    (path,) = log.flush()
    df = pd.read_parquet(path)
    assert list(df["request_id"]) == ["r1", "r1", "c1", "c1", "c1", "r2", "r3", "r3", "c2"]
    assert list(df["row"]) == [0, 1, 0, 1, 2, 0, 0, 1, 0]
    assert list(df["age"]) == [30, 31, 40, 41, 42, 50, 60, 61, 70]
    assert list(df["prediction"]) == [0, 1, 1, 0, 1, 0, 1, 1, 0]
    assert list(df["score"]) == [0.1, 0.6, 0.9, 0.2, 0.8, 0.3, 0.7, 0.75, 0.05]
    assert df["contract"].isna().tolist() == [False] * 3 + [True] + [False] * 3 + [True, False]
    # A column only one entry sent is kept for its rows, empty for the others.
    assert df["customer_id"].tolist()[-1] == "C-70" and df["customer_id"][:-1].isna().all()
    assert set(df["model_version"]) == {"3"}


def test_a_columnar_entry_alone_is_logged_like_its_rows(tmp_path: Path) -> None:
    sink = Sink()
    log = make(tmp_path, sink)
    log.record("c", {"age": [30, 31], "contract": ["one_year", "two_year"]}, [0, 1], [0.1, 0.6])
    assert log.flush() and log.ship_pending() == 1
    df = sink.frame()
    assert list(df["request_id"]) == ["c", "c"] and list(df["row"]) == [0, 1]
    assert list(df["contract"]) == ["one_year", "two_year"]
    assert list(df["prediction"]) == [0, 1] and list(df["score"]) == [0.1, 0.6]


def test_a_columnar_entry_counts_its_rows_towards_the_buffer_limit(tmp_path: Path) -> None:
    log = make(tmp_path, Sink(), max_rows=4)
    log.record("c", {"age": [1, 2, 3]}, [0, 0, 0], [0.0, 0.0, 0.0])
    assert log._rows == 3 and not log._wake.is_set()
    log.record("d", {"age": [4]}, [0], [0.0])
    assert log._rows == 4 and log._wake.is_set()
