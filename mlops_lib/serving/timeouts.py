"""The request timeout of a deployment's BentoML server, with its timer released on time.

BentoML 1.4's ``TimeoutMiddleware`` (the service's ``traffic.timeout``) arms a timer for
every request and never cancels it: each request's timer, and through it the request's
context and trace span, stays alive for the whole timeout. Under load that is tens of
thousands of live objects which every full garbage collection walks (stalls of 100-250 ms
at ~900 requests/s with a 30 s timeout, growing with the rate). :func:`release_timers` makes
the server build the same middleware with the timer cancelled once the request is done;
the timeout itself (a 504 after ``timeout`` seconds) is unchanged.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bentoml._internal.server.http import traffic
from starlette.responses import JSONResponse

Scope = dict[str, Any]


class ReleasingTimeout(traffic.TimeoutMiddleware):
    """BentoML's timeout middleware whose timer is cancelled when the request is done."""

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        timer = loop.call_later(self.timeout, self._set_timer_out, waiter)

        async def started(message: Any) -> None:
            if not waiter.done():
                waiter.set_result(None)
            await send(message)

        answer = asyncio.ensure_future(self.app(scope, receive, started))
        try:
            await waiter
        except TimeoutError:
            if answer.cancel():
                body = {"error": f"Not able to process the request in {self.timeout} seconds"}
                await JSONResponse(body, status_code=504)(scope, receive, send)
        else:
            await answer
        finally:
            timer.cancel()


def release_timers() -> None:
    """Have BentoML's server build :class:`ReleasingTimeout` (it imports the middleware by
    name when it builds the app, after the service module is loaded)."""
    traffic.TimeoutMiddleware = ReleasingTimeout  # type: ignore[misc]
