"""Plain data passed between the transport, the verifiers and the store.

A verifier is a pure function ``(route, IncomingRequest) -> Verdict`` that
raises :class:`~mtls_receiver.errors.Refusal`; nothing here touches a socket.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "AttemptOutcome",
    "AuditRecord",
    "Claim",
    "ClientIdentity",
    "DeliveryAttempt",
    "IncomingRequest",
    "NewEvent",
    "Peer",
    "Relay",
    "StoredAnswer",
    "StoredEvent",
    "Verdict",
]


@dataclass(frozen=True)
class ClientIdentity:
    """Who the verified client certificate says the sender is."""

    subject: str
    issuer: str
    fingerprint: str  # SHA-256 of the DER certificate, lowercase hex

    @property
    def short(self) -> str:
        return f"subject={self.subject!r} sha256={self.fingerprint}"


@dataclass(frozen=True)
class Peer:
    """What the transport knows about the sender."""

    address: str
    identity: ClientIdentity | None = None


@dataclass(frozen=True)
class IncomingRequest:
    method: str
    path: str
    query_string: str
    headers: dict[str, str]
    body: bytes
    peer: Peer
    now: float = field(default_factory=time.time)  # unix seconds, for timestamp checks
    raw_target: str = ""  # the request target exactly as sent (path and query, still percent-encoded)

    def header(self, name: str) -> str | None:
        """A header's value, whatever its case on the wire."""
        wanted = name.lower()
        return next((value for key, value in self.headers.items() if key.lower() == wanted), None)

    @property
    def path_qs(self) -> str:
        """Path and query as the sender wrote them (what some senders' signatures cover)."""
        if self.raw_target:
            return self.raw_target
        return f"{self.path}?{self.query_string}" if self.query_string else self.path


@dataclass(frozen=True)
class NewEvent:
    """One accepted notification item, not yet stored."""

    kind: str
    dedup_key: str
    payload: Any
    order_key: str = ""  # events sharing one are delivered in arrival order; default: the dedup key


@dataclass(frozen=True)
class Relay:
    """A synchronous request: the application answers it, the receiver signs that answer."""

    idempotency_key: str
    sign: Callable[[bytes, float], dict[str, str]] = field(repr=False)


@dataclass(frozen=True)
class Verdict:
    """An accepted request: the events to store and the answer to send once they are durable."""

    kind: str
    events: tuple[NewEvent, ...] = ()
    status: int = 200
    body: bytes = b"200"
    relay: Relay | None = None


@dataclass(frozen=True)
class AuditRecord:
    """One line of the audit trail: every request that completed a handshake gets one."""

    at: str
    listener: str
    route: str
    method: str
    path: str
    peer: str
    status: int
    reason: str
    client: ClientIdentity | None = None
    count: int = 1  # identical refusals this row stands for (repeats are coalesced: store/audit.py)
    last_at: str | None = None  # the last of them, when count > 1


@dataclass(frozen=True)
class StoredEvent:
    id: str
    provider: str
    route: str
    kind: str
    dedup_key: str
    payload: Any
    received_at: str
    peer: str
    client: ClientIdentity | None = field(default=None)
    verified_by: str = ""
    status: str = "stored"  # stored (not forwarded), pending, delivered, dead
    attempts: int = 0
    lease_token: int = 0  # set by claim_due: the fencing token its attempt's outcome must carry


@dataclass(frozen=True)
class DeliveryAttempt:
    """One try at handing an event to the merchant's application."""

    number: int
    at: str
    duration_ms: int
    status_code: int | None  # None: no HTTP answer (timeout, refused, handler exception)
    error: str = ""


@dataclass(frozen=True)
class AttemptOutcome:
    """An attempt and what it made of its event: ``status`` delivered, pending (retry at
    ``next_attempt_at``) or dead. ``lease_token`` is the claim's: an outcome counts only while its
    lease is still the event's, so an attempt outlived by its lease cannot overwrite a newer one."""

    event_id: str
    attempt: DeliveryAttempt
    status: str
    next_attempt_at: float
    lease_token: int


@dataclass(frozen=True)
class StoredAnswer:
    """The answer given to a synchronous request, kept so a repeat gets the same one."""

    status: int
    content_type: str
    body: bytes


@dataclass(frozen=True)
class Claim:
    """What the store knows of an idempotency key: ``new`` (now ours), ``in_progress`` or ``done``."""

    state: str
    answer: StoredAnswer | None = None
