"""Senders that send credentials you registered with them, and sign nothing (Celcoin, BS2).

``mode`` is how: ``basic`` (``Authorization: Basic``, the secret ``user:password``), ``bearer``
(``Authorization: Bearer <token>``) or, where the sender allows it, ``none`` (accepted on the
client address alone, with the loud ``unsigned_allowlist_only = true`` and ``allow_ips``). Their
bodies' event ids are not pinned down by public docs, so the dedup key and event type are the
route's ``dedup``/``event`` when given, else the sender's :class:`EventGuess`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..config.reader import Reader, Table
from ..config.schema import ProviderOptions, RouteConfig
from ..events import ClientIdentity, IncomingRequest, Verdict
from .base import Provider, RouteContext, SampleRequest
from .common import (
    STATIC_VERIFIED_BY,
    UNSIGNED_OPT_IN,
    check_allowlist,
    check_static_auth,
    check_unsigned_allowlist,
    content_digest,
    one_event,
    options_of,
    request_fields,
    require_post,
    require_unsigned_opt_in,
    static_auth_headers,
    static_secrets,
    unsigned_warning,
)
from .generic import EventFields, new_event, read_event_fields

__all__ = ["CredentialOptions", "EventGuess", "credential_provider"]

#: (body) -> (event type, dedup key or None for a digest of the body)
EventGuess = Callable[[dict[str, Any]], tuple[str, str | None]]


@dataclass(frozen=True)
class CredentialOptions(ProviderOptions):
    secrets: tuple[str, ...] = field(default=(), repr=False)  # tokens or user:password (rotation)
    fields: EventFields = EventFields()
    unsigned: bool = False

    def describe(self) -> str:
        return "UNSIGNED: client address only" if self.unsigned else ""

    def warnings(self) -> tuple[str, ...]:
        return (unsigned_warning(),) if self.unsigned else ()


def parse_options(reader: Reader, raw: Table, route: RouteContext) -> CredentialOptions:
    if route.mode == "none":
        require_unsigned_opt_in(reader, raw, route.key)
        if "secrets" in raw:
            reader.fail(f"{route.key}.secrets", 'mode "none" sends no credentials')
        return CredentialOptions(fields=read_event_fields(reader, raw, route.key), unsigned=True)
    if UNSIGNED_OPT_IN in raw:
        reader.fail(f"{route.key}.{UNSIGNED_OPT_IN}", 'only with mode = "none"')
    return CredentialOptions(
        secrets=static_secrets(reader, raw, route.key, route.mode),
        fields=read_event_fields(reader, raw, route.key),
    )


def credential_provider(name: str, sender: str, modes: tuple[str, ...], guess: EventGuess) -> Provider:
    """The Provider of a credential-sending sender: ``modes`` a subset of basic, bearer, none."""

    def verify(route: RouteConfig, request: IncomingRequest) -> Verdict:
        options = options_of(route, CredentialOptions)
        require_post(request, sender)
        if route.mode == "none":
            check_unsigned_allowlist(route, request)
        else:
            check_allowlist(route, request)
            check_static_auth(route.mode, request, "Authorization", options.secrets)
        body = request_fields(request)
        if options.fields.dedup or options.fields.event:
            return new_event(route, options.fields, body, request)
        kind, dedup = guess(body)
        return one_event(kind, dedup or f"sha256:{content_digest(request.body)}", body)

    def verified_by(route: RouteConfig, client: ClientIdentity | None) -> str:
        return STATIC_VERIFIED_BY[route.mode]

    def sample(route: RouteConfig, event: str | None, now: float) -> SampleRequest:
        options = options_of(route, CredentialOptions)
        headers = {"Content-Type": "application/json"}
        if options.secrets:
            headers |= static_auth_headers(route.mode, "Authorization", options.secrets[0])
        body = json.dumps({"id": f"test-{int(now)}", "event": event or "test", "status": "test"}).encode()
        return SampleRequest(path="", headers=headers, body=body)

    return Provider(
        name=name,
        modes=modes,
        keys=frozenset({"secrets", "dedup", "event"} | ({UNSIGNED_OPT_IN} if "none" in modes else set())),
        parse_options=parse_options,
        verify=verify,
        verified_by=verified_by,
        sample=sample,
    )
