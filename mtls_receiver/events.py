"""Plain data passed between the transport, the verifiers and the store.

A verifier is a pure function ``(route, IncomingRequest) -> Verdict`` that
raises :class:`~mtls_receiver.errors.Refusal`; nothing here touches a socket.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .tls import ClientIdentity

__all__ = ["AuditRecord", "IncomingRequest", "NewEvent", "Peer", "StoredEvent", "Verdict"]


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


@dataclass(frozen=True)
class NewEvent:
    """One accepted notification item, not yet stored."""

    kind: str
    dedup_key: str
    payload: Any


@dataclass(frozen=True)
class Verdict:
    """An accepted request: the events to store and the answer to send once they are durable."""

    kind: str
    events: tuple[NewEvent, ...] = ()
    status: int = 200
    body: bytes = b"200"


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
