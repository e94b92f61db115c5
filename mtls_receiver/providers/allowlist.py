"""A sender that neither signs nor sends a credential (``provider = "allowlist"``).

Only the client address vouches for its requests, so the route loads only with the loudly named
``unsigned_allowlist_only = true`` and a non-empty ``allow_ips``, and ``check-config`` warns
about it. Treat every event as a hint: re-fetch it from the sender's API before acting on it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config.reader import Reader, Table
from ..config.schema import ProviderOptions, RouteConfig
from ..events import ClientIdentity, IncomingRequest, Verdict
from .base import Provider, RouteContext, SampleRequest
from .common import (
    STATIC_VERIFIED_BY,
    UNSIGNED_OPT_IN,
    check_unsigned_allowlist,
    options_of,
    request_fields,
    require_post,
    require_unsigned_opt_in,
    unsigned_warning,
)
from .generic import EventFields, new_event, read_event_fields, sample_body

__all__ = ["PROVIDER", "AllowlistOptions", "verify"]


@dataclass(frozen=True)
class AllowlistOptions(ProviderOptions):
    fields: EventFields = EventFields()

    def describe(self) -> str:
        return "UNSIGNED: client address only"

    def warnings(self) -> tuple[str, ...]:
        return (unsigned_warning(),)


def parse_options(reader: Reader, raw: Table, route: RouteContext) -> AllowlistOptions:
    require_unsigned_opt_in(reader, raw, route.key)
    return AllowlistOptions(fields=read_event_fields(reader, raw, route.key))


def verify(route: RouteConfig, request: IncomingRequest) -> Verdict:
    options = options_of(route, AllowlistOptions)
    require_post(request, "the sender")
    check_unsigned_allowlist(route, request)
    return new_event(route, options.fields, request_fields(request), request)


def verified_by(route: RouteConfig, client: ClientIdentity | None) -> str:
    return STATIC_VERIFIED_BY["none"]


def sample(route: RouteConfig, event: str | None, now: float) -> SampleRequest:
    return SampleRequest(path="", headers={"Content-Type": "application/json"}, body=sample_body(event, now))


PROVIDER = Provider(
    name="allowlist",
    modes=("allowlist",),
    keys=frozenset({UNSIGNED_OPT_IN, "dedup", "event"}),
    parse_options=parse_options,
    verify=verify,
    verified_by=verified_by,
    sample=sample,
)
