"""Any PSP that delivers per BACEN's API Pix (``provider = "pix"``): Itaú, Bradesco, Banco do Brasil,
Santander, Sicredi, Sicoob, Inter, Pagstar, ...

The PSP proves itself with a client certificate under its CA (the listener's ``client_ca``); there is
no body signature (the spec's callbacks have ``security: []`` and rely on mTLS). It appends ``/pix`` to
the registered URL string; the registration test hits the base path. Some PSPs do not append the
suffix: a Pix-shaped body on the base path is therefore taken as a notification, never dropped as a
test. The body may be ``{"pix": [...]}`` (spec), a bare array (Inter) or ``{"pix": {...}}`` (Pagstar).
``efi`` is the same sender with Efí's extras (``/rec``, ``/cobr``, skip-mTLS, its commands).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config.reader import Reader, Table
from ..config.schema import ProviderOptions, RouteConfig
from ..events import ClientIdentity, IncomingRequest, Verdict
from .bacen_pix import (
    BODY_SHAPES,
    check_pix_keys,
    locate,
    looks_like_pix,
    parse_items,
    pix_events,
    require_certificate_listener,
    require_client_certificate,
    sample_request,
)
from .base import Provider, RouteContext, SampleRequest
from .common import check_allowlist, options_of, require_json, require_post

__all__ = ["PROVIDER", "PixOptions", "sample", "verify"]

_SENDER = "the PSP"


@dataclass(frozen=True)
class PixOptions(ProviderOptions):
    pix_keys: tuple[str, ...] = ()  # the only chaves accepted in Pix notifications; empty: any

    def describe(self) -> str:
        return f"pix_keys: {', '.join(self.pix_keys)}" if self.pix_keys else ""

    def warnings(self) -> tuple[str, ...]:
        if self.pix_keys:
            return ()
        return (
            "no pix_keys: any customer of the same PSP can register this URL and have their Pix stored"
            " (bacen/pix-api#239); list your keys, and pin the PSP's certificate (client_subjects, ...)",
        )


def parse_options(reader: Reader, raw: Table, route: RouteContext) -> PixOptions:
    require_certificate_listener(reader, route, "pix")
    return PixOptions(pix_keys=reader.string_list(raw, route.key, "pix_keys"))


def verify(route: RouteConfig, request: IncomingRequest) -> Verdict:
    """Accept or refuse one request to a Pix route: certificate, address, then the body."""
    located = locate(route.path, request.path, request.query_string, ("pix",), None, _SENDER)
    require_post(request, _SENDER)
    check_allowlist(route, request)
    require_client_certificate(request)
    if located.kind == "test" and not looks_like_pix(request.body):
        return Verdict(kind="test")
    require_json(request)
    events = pix_events(parse_items(request.body, "pix", BODY_SHAPES))
    check_pix_keys(options_of(route, PixOptions).pix_keys, events)
    return Verdict(kind="pix", events=events)


def verified_by(route: RouteConfig, client: ClientIdentity | None) -> str:
    return "mtls-client-certificate"


def sample(route: RouteConfig, event: str | None, now: float) -> SampleRequest:
    """A Pix notification to ``P/pix`` with the route's first Pix key, sent with a client certificate."""
    pix_keys = options_of(route, PixOptions).pix_keys
    return sample_request(event, now, pix_keys[0] if pix_keys else None)


PROVIDER = Provider(
    name="pix",
    modes=("mtls",),
    keys=frozenset({"pix_keys"}),
    parse_options=parse_options,
    verify=verify,
    verified_by=verified_by,
    sample=sample,
)
