"""The merchant's application on loopback: what the receiver forwards or relays to, and the
``[forward]`` table that points a receiver at it."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from types import TracebackType
from typing import Self

from aiohttp import web

from .procfs import accept_queue

__all__ = ["OLD_SECRET", "SECRET", "App", "forward_table"]

SECRET = "whsec_" + base64.b64encode(b"forwarding-test-secret-32-bytes!").decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"the-previous-secret-also-32bytes").decode()


class App:
    """The merchant's application at ``url``: it records every request and answers as the test says.

    ``up`` False answers 503, and so does the first delivery of an event id in ``fail_first``;
    otherwise 204, or ``answer`` as JSON with 200 when set (an authorisation's answer). Each
    request waits ``delay`` seconds first. Use ``async with App() as app:`` (or the ``app`` fixture).
    """

    def __init__(self) -> None:
        self.up = True
        self.delay = 0.0
        self.answer: dict[str, str] | None = None
        self.fail_first: set[str] = set()  # event ids whose first delivery gets a 503
        self.calls: list[dict[str, str]] = []  # the headers of every request, as it arrived
        self.received: list[tuple[dict[str, str], bytes]] = []  # what was answered 2xx
        self.active = self.max_active = 0
        self.runner: web.AppRunner | None = None
        self.url = ""

    @property
    def attempts(self) -> list[str]:
        """The ``webhook-id`` of every delivery attempt, in the order they arrived."""
        return [headers.get("webhook-id", "") for headers in self.calls]

    def delivered_ids(self) -> list[str]:
        return [json.loads(body)["id"] for _, body in self.received]

    def idle(self) -> bool:
        """No request on its way in: none waiting to be accepted, no connection open (aiohttp drops a
        closed connection only once its handler has finished)."""
        assert self.runner is not None and self.runner.server is not None
        port = int(self.runner.addresses[0][1])
        return not self.runner.server.connections and accept_queue(os.getpid(), port) == 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = dict(request.headers)
        self.calls.append(headers)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.active -= 1
        event_id = headers.get("webhook-id", "")
        if not self.up or event_id in self.fail_first:
            self.fail_first.discard(event_id)
            return web.Response(status=503)
        self.received.append((headers, body))
        return web.Response(status=204) if self.answer is None else web.json_response(self.answer)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hooks", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/hooks"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.stop()


def forward_table(url: str, **policy: object) -> str:
    """A ``[forward]`` table to ``url`` signing with both secrets (from the environment, see the
    ``forward_secrets`` fixture), with short backoffs; ``policy`` overrides or adds keys."""
    settings = {"max_attempts": 20, "backoff_base": 0.05, "backoff_max": 0.2, "timeout": 2, **policy}
    lines = "".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items())
    secrets = '[{ env = "T_FORWARD_SECRET" }, { env = "T_FORWARD_OLD" }]'
    return f'\n[forward]\nurl = "{url}"\nsecrets = {secrets}\n{lines}'
