"""Batching in the serving process: concurrent requests merged into one scoring call.

A request's frame waits only while a scoring call is running: the next call takes every
frame queued meanwhile (up to ``max_rows``), concatenated, in one worker thread, and each
request gets its own slice of the scores back. Nothing waits for a batch to fill, so a lone
request is scored at once; under load the batch grows with the queue. This is what keeps a
slow scorer (the scikit-learn pipeline, ~10 ms a call whatever the rows) efficient under
concurrency, without a second process or a network hop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

Score = Callable[["pd.DataFrame"], "np.ndarray"]


@dataclass
class _Waiting:
    frame: pd.DataFrame
    done: asyncio.Future = field(repr=False)


class MicroBatcher:
    """Score frames through ``score``, merging those that arrive while a call runs."""

    def __init__(self, score: Score, max_rows: int) -> None:
        self.score = score
        self.max_rows = max_rows
        self._queue: list[_Waiting] = []
        self._running = False
        self._task: asyncio.Task | None = None  # the draining task, kept while it runs
        self.calls = 0  # scoring calls made (batches), for tests and metrics

    async def scores(self, frame: pd.DataFrame) -> np.ndarray:
        """The scores of ``frame``'s rows, in order."""
        waiting = _Waiting(frame, asyncio.get_running_loop().create_future())
        self._queue.append(waiting)
        if not self._running:
            self._running = True
            self._task = asyncio.get_running_loop().create_task(self._drain())
        return await waiting.done

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch = self._take()
                await self._score(batch)
        finally:
            self._running = False

    def _take(self) -> list[_Waiting]:
        """The queued frames, oldest first, up to ``max_rows`` rows (at least one frame)."""
        batch = [self._queue.pop(0)]
        rows = len(batch[0].frame)
        while self._queue and rows + len(self._queue[0].frame) <= self.max_rows:
            rows += len(self._queue[0].frame)
            batch.append(self._queue.pop(0))
        return batch

    async def _score(self, batch: list[_Waiting]) -> None:
        import pandas as pd

        frames = [w.frame for w in batch]
        self.calls += 1
        try:
            merged = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
            scores = await asyncio.to_thread(self.score, merged)
        except Exception as exc:  # every request of the batch gets the error
            for w in batch:
                if not w.done.done():
                    w.done.set_exception(exc)
            return
        start = 0
        for w in batch:
            n = len(w.frame)
            if not w.done.done():
                w.done.set_result(scores[start : start + n])
            start += n
