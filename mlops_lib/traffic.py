"""Traffic for a served project: rows sent to its endpoint, answers kept as labels-to-be.

Used by the demo and the benchmarks to play production: each request carries a slice of a
frame's rows (features, and the instance's key and event time); the answer's ``request_id``
with the instance's row number is what a labels batch refers to later.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


class TrafficError(RuntimeError):
    """The endpoint refused or failed requests a healthy deployment answers."""


@dataclass
class TrafficResult:
    rows: int
    requests: int
    seconds: float
    labels: pd.DataFrame  # request_id, row, <target>
    versions: set[str]


def send(
    url: str,
    frame: pd.DataFrame,
    columns: list[str],
    target: str,
    *,
    rows_per_request: int = 50,
    concurrency: int = 4,
    on_progress: Callable[[int], None] | None = None,
    timeout: float = 60.0,
) -> TrafficResult:
    """POST ``frame``'s rows (``columns``: the features, and the key and event time that
    identify each instance) to ``url`` in slices; raises on any non-200 answer.

    ``on_progress(rows)`` is called after each answered request with its row count.
    """
    import httpx
    import pandas as pd

    records = json.loads(frame[columns].to_json(orient="records", date_format="iso"))
    slices = [
        (i, records[i : i + rows_per_request]) for i in range(0, len(records), rows_per_request)
    ]
    started = time.monotonic()

    with httpx.Client(timeout=timeout) as client:

        def one(item: tuple[int, list[dict]]) -> tuple[int, int, str, str]:
            start, rows = item
            resp = client.post(url, json={"instances": rows})
            if resp.status_code != 200:
                raise TrafficError(f"{url} answered {resp.status_code}: {resp.text[:300]}")
            body = resp.json()
            if on_progress:
                on_progress(len(rows))
            return start, len(rows), body["request_id"], str(body["model_version"])

        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            answers = list(pool.map(one, slices))
    labels = pd.concat(
        [
            pd.DataFrame(
                {
                    "request_id": request_id,
                    "row": range(n),
                    target: frame[target].iloc[start : start + n].to_numpy(),
                }
            )
            for start, n, request_id, _ in answers
        ],
        ignore_index=True,
    )
    return TrafficResult(
        rows=len(records),
        requests=len(slices),
        seconds=time.monotonic() - started,
        labels=labels,
        versions={v for *_, v in answers},
    )
