"""Any sender that authenticates with a static shared credential (``provider = "token"``).

``mode`` says where it travels: ``header`` (a token in the header named by ``header``),
``basic`` (``Authorization: Basic``, the secret being ``user:password``) or ``bearer``
(``Authorization: Bearer <token>``). Nothing is signed: the token proves only that the sender
knows it, not that the body is intact, and a captured request can be replayed; prefer a signing
sender where one exists. Compared in constant time against every configured secret.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config.reader import Reader, Table
from ..config.schema import ProviderOptions, RouteConfig
from ..events import ClientIdentity, IncomingRequest, Verdict
from .base import Provider, RouteContext, SampleRequest
from .common import (
    STATIC_VERIFIED_BY,
    check_allowlist,
    check_static_auth,
    options_of,
    request_fields,
    require_post,
    static_auth_headers,
    static_secrets,
)
from .generic import EventFields, new_event, read_event_fields, sample_body

__all__ = ["PROVIDER", "TokenOptions", "verify"]

MODES = ("header", "basic", "bearer")


@dataclass(frozen=True)
class TokenOptions(ProviderOptions):
    header: str = "Authorization"  # mode "header": the header holding the token
    secrets: tuple[str, ...] = field(default=(), repr=False)  # tokens or user:password (several: rotation)
    fields: EventFields = EventFields()

    def describe(self) -> str:
        return f"static token in {self.header}"


def parse_options(reader: Reader, raw: Table, route: RouteContext) -> TokenOptions:
    header = reader.optional_string(raw, route.key, "header")
    if route.mode == "header" and not header:
        reader.fail(f"{route.key}.header", 'mode "header" needs the header name, e.g. "X-Webhook-Token"')
    if route.mode != "header" and header is not None:
        reader.fail(f"{route.key}.header", f'only with mode = "header" ({route.mode!r} uses Authorization)')
    return TokenOptions(
        header=header or "Authorization",
        secrets=static_secrets(reader, raw, route.key, route.mode),
        fields=read_event_fields(reader, raw, route.key),
    )


def verify(route: RouteConfig, request: IncomingRequest) -> Verdict:
    options = options_of(route, TokenOptions)
    require_post(request, "the sender")
    check_allowlist(route, request)
    check_static_auth(route.mode, request, options.header, options.secrets)
    return new_event(route, options.fields, request_fields(request), request)


def verified_by(route: RouteConfig, client: ClientIdentity | None) -> str:
    return STATIC_VERIFIED_BY[route.mode]


def sample(route: RouteConfig, event: str | None, now: float) -> SampleRequest:
    options = options_of(route, TokenOptions)
    headers = {"Content-Type": "application/json"}
    headers |= static_auth_headers(route.mode, options.header, options.secrets[0])
    return SampleRequest(path="", headers=headers, body=sample_body(event, now))


PROVIDER = Provider(
    name="token",
    modes=MODES,
    keys=frozenset({"secrets", "header", "dedup", "event"}),
    parse_options=parse_options,
    verify=verify,
    verified_by=verified_by,
    sample=sample,
)
