"""Signed HTTP POSTs to the merchant's application: delivered on a 2xx answer."""

from __future__ import annotations

import aiohttp

from .. import __version__
from .base import Message, Outcome, Sink

__all__ = ["HttpSink"]


class HttpSink(Sink):
    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url, self.session = url, session  # the receiver's session: closed by the receiver

    async def deliver(self, message: Message) -> Outcome:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"mtls-receiver/{__version__}",
            **message.headers,
        }
        async with self.session.post(self.url, data=message.body, headers=headers) as response:
            await response.read()
            if 200 <= response.status < 300:
                return Outcome(response.status)
            return Outcome(response.status, f"HTTP {response.status}")
