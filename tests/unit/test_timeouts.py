"""The deployment's request timeout: a 504 after the timeout, and no timer left armed once
a request is answered (BentoML's own middleware keeps each one for the whole timeout)."""

from __future__ import annotations

import asyncio

import pytest
from bentoml._internal.server.http import traffic

from mlops_lib.serving.timeouts import ReleasingTimeout, release_timers


def app(delay: float):
    async def answer(scope, receive, send) -> None:
        await asyncio.sleep(delay)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    return answer


def call(middleware, requests: int = 1) -> tuple[list[int], int]:
    """Status of each request, and the timers still armed on the loop afterwards."""

    async def run():
        sent: list[dict] = []

        async def send(message: dict) -> None:
            sent.append(message)

        async def receive() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}

        for _ in range(requests):
            await middleware({"type": "http"}, receive, send)
        await asyncio.sleep(0)  # a cancelled app's own timers go on its next step
        loop = asyncio.get_running_loop()
        armed = sum(not h.cancelled() for h in loop._scheduled)  # type: ignore[attr-defined]
        statuses = [m["status"] for m in sent if m["type"] == "http.response.start"]
        return statuses, armed

    return asyncio.run(run())


def test_answered_requests_leave_no_timer_armed() -> None:
    statuses, armed = call(ReleasingTimeout(app(0), timeout=30), requests=50)
    assert statuses == [200] * 50 and armed == 0


def test_bentomls_own_middleware_keeps_every_timer_armed_for_the_whole_timeout() -> None:
    """Why the platform replaces it: each answered request leaves its timer behind."""
    statuses, armed = call(traffic.TimeoutMiddleware(app(0), timeout=30), requests=50)
    assert statuses == [200] * 50 and armed == 50


def test_a_request_over_the_timeout_gets_504() -> None:
    statuses, armed = call(ReleasingTimeout(app(1.0), timeout=0.05))
    assert statuses == [504] and armed == 0


def test_release_timers_makes_bentoml_build_the_releasing_middleware(monkeypatch) -> None:
    monkeypatch.setattr(traffic, "TimeoutMiddleware", traffic.TimeoutMiddleware)
    release_timers()
    from bentoml._internal.server.http.traffic import TimeoutMiddleware  # as BentoML does

    assert TimeoutMiddleware is ReleasingTimeout


@pytest.mark.parametrize("scope_type", ["lifespan"])
def test_other_scopes_pass_straight_through(scope_type: str) -> None:
    seen = []

    async def inner(scope, receive, send) -> None:
        seen.append(scope["type"])

    asyncio.run(ReleasingTimeout(inner, timeout=30)({"type": scope_type}, None, None))
    assert seen == [scope_type]
