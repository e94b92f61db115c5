"""Synchronous requests (a card authorisation, say): the merchant's application answers, we sign.

A building block for any provider whose sender waits for a decision: its verifier returns a
``Relay`` (idempotency key, how to sign an answer) and its route options a ``RelayConfig``.
Once per idempotency key: a repeat of a finished request gets the stored answer
(re-signed with a fresh timestamp), a repeat of one in progress gets 425. When the
application is late or down, the route's configured rejection is answered, signed,
so the sender never sees an unsigned answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import aiohttp

from .config import RelayConfig, RouteConfig
from .events import IncomingRequest, Relay, StoredAnswer
from .logs import log_fields
from .store import Store

__all__ = ["RelayAnswer", "Relayer"]

log = logging.getLogger("mtls_receiver")

STALE_MARGIN = 30.0  # seconds past the deadline after which an unfinished claim is taken over


@dataclass(frozen=True)
class RelayAnswer:
    status: int
    headers: dict[str, str]
    body: bytes
    reason: str


class Relayer:
    def __init__(self, store: Store, session: aiohttp.ClientSession) -> None:
        self.store, self.session = store, session

    async def answer(self, route: RouteConfig, request: IncomingRequest, relay: Relay) -> RelayAnswer:
        config = route.relay
        assert config is not None, "config validation gives every relaying route a relay"
        claim = await self.store.claim_request(
            route.path, relay.idempotency_key, time.time(), config.deadline + STALE_MARGIN
        )
        if claim.state == "in_progress":
            return _signed(
                relay, StoredAnswer(425, "text/plain", b"request still in progress\n"), "repeat in progress"
            )
        if claim.answer is not None:
            return _signed(relay, claim.answer, "repeat: stored answer")
        answer, reason = await self._ask_application(config, request, relay)
        await self.store.finish_request(route.path, relay.idempotency_key, answer, time.time())
        return _signed(relay, answer, reason)

    async def _ask_application(
        self, config: RelayConfig, request: IncomingRequest, relay: Relay
    ) -> tuple[StoredAnswer, str]:
        headers = {
            "Content-Type": request.header("Content-Type") or "application/json",
            "X-Idempotency-Key": relay.idempotency_key,
            "X-Endpoint": request.path_qs,
        }
        try:
            async with asyncio.timeout(config.deadline):
                async with self.session.post(config.url, data=request.body, headers=headers) as response:
                    body = await response.read()
                    if response.status < 500:
                        content_type = response.headers.get("Content-Type", "application/json")
                        return StoredAnswer(
                            response.status, content_type, body
                        ), f"application answered {response.status}"
                    problem = f"application answered {response.status}"
        except TimeoutError:
            problem = f"application did not answer within {config.deadline:g}s"
        except aiohttp.ClientError as exc:
            problem = f"application unreachable: {exc}"
        log_fields(
            log,
            logging.WARNING,
            "relay failed; answering the configured rejection",
            {"to": config.url, "reason": problem},
        )
        return StoredAnswer(config.timeout_status, "application/json", config.timeout_body.encode()), problem


def _signed(relay: Relay, answer: StoredAnswer, reason: str) -> RelayAnswer:
    headers = {"Content-Type": answer.content_type, **relay.sign(answer.body, time.time())}
    return RelayAnswer(answer.status, headers, answer.body, reason)
