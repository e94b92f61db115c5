"""Efí's notifications: which one a request is, who sent it, and whether its body is valid.

Efí appends ``/pix`` (``/rec``, ``/cobr``) to the registered URL *string*, so
the suffix lands in the path (``P/pix``) or at the end of a query value
(``P?ignorar=/pix``, ``P?hmac=S/pix``). The registration test notification hits
``P`` itself. Mode ``mtls`` trusts the verified client certificate; mode
``skip-mtls`` (no certificate required) needs the sender's IP in the allowlist
and the secret ``hmac`` query value Efí was registered with.
"""

from __future__ import annotations

import dataclasses
import hmac
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote

from ...config.schema import RouteConfig
from ...errors import Refusal
from ...events import IncomingRequest, NewEvent, Verdict
from ..bacen_pix import (
    PIX_LIST,
    ROOT_ARRAY,
    check_pix_keys,
    content_events,
    locate,
    parse_items,
    pix_events,
    require_client_certificate,
    sample_request,
)
from ..base import SampleRequest
from ..common import check_allowlist, options_of, require_json
from .options import EfiOptions

if TYPE_CHECKING:
    from ...events import ClientIdentity

__all__ = [
    "KINDS",
    "Target",
    "check_sender",
    "parse_notification",
    "registration_url",
    "sample",
    "target",
    "verified_by",
    "verify",
]

#: suffix Efí appends -> (kind, body list key)
KINDS: dict[str, str] = {"pix": "pix", "rec": "recs", "cobr": "cobsr"}
_SUFFIX_CARRIERS = ("ignorar", "hmac")  # query values Efí's suffix can land on
_PIX_SHAPES = (PIX_LIST, ROOT_ARRAY)  # one bank is reported to post a bare array


@dataclass(frozen=True)
class Target:
    """What a request URL means: the notification kind, and the ``hmac`` value without the suffix."""

    kind: str
    hmac: str | None = None


def verify(route: RouteConfig, request: IncomingRequest) -> Verdict:
    """Accept or refuse one request to an Efí route."""
    where = target(route.path, request.path, request.query_string)
    if request.method != "POST":
        raise Refusal(405, f"method {request.method} not allowed; Efí sends POST")
    check_sender(route, request, where.hmac)
    if where.kind == "test":
        return Verdict(kind="test")
    require_json(request)
    events = parse_notification(where.kind, request.body)
    check_pix_keys(options_of(route, EfiOptions).pix_keys, events)
    return Verdict(kind=where.kind, events=events)


def verified_by(route: RouteConfig, client: ClientIdentity | None) -> str:
    """The certificate in mode ``mtls``; the address, the URL's secret (and any certificate) otherwise."""
    if route.mode == "mtls":
        return "mtls-client-certificate"
    return "ip-allowlist+url-hmac" + ("+client-certificate" if client else "")


def target(route_path: str, path: str, query_string: str) -> Target:
    """``test`` for the base path, else the suffix's kind; Refusal(404) for anything else."""
    located = locate(route_path, path, query_string, KINDS, _SUFFIX_CARRIERS, "Efí")
    return Target(kind=located.kind, hmac=located.values.get("hmac"))


def check_sender(route: RouteConfig, request: IncomingRequest, presented_hmac: str | None) -> None:
    """Is this Efí? Each failed check names itself in the refusal; secrets are never echoed."""
    check_allowlist(route, request)
    if route.mode == "mtls":
        require_client_certificate(request)
    secrets = options_of(route, EfiOptions).hmac_secrets
    if secrets:
        if not presented_hmac:
            raise Refusal(401, "hmac: the URL has no hmac query value")
        if not _matches_any(presented_hmac, secrets):
            raise Refusal(401, "hmac: the URL's hmac value does not match")


def _matches_any(presented: str, secrets: tuple[str, ...]) -> bool:
    """Constant-time against every configured secret (rotation), without stopping at a match."""
    matched = False
    for secret in secrets:
        matched |= hmac.compare_digest(presented.encode(), secret.encode())
    return matched


def parse_notification(kind: str, body: bytes) -> tuple[NewEvent, ...]:
    """Validate a notification body; one event per item. Refusal(400) names the first problem."""
    if kind == "pix":
        return pix_events(parse_items(body, KINDS[kind], _PIX_SHAPES))
    return content_events(kind, parse_items(body, KINDS[kind], (PIX_LIST,)))


def registration_url(base_url: str, secret: str) -> str:
    """The URL to register for skip-mTLS: Efí appends ``/pix`` after ``ignorar=``, leaving hmac intact."""
    separator = "&" if "?" in base_url else "?"
    return f"{base_url}{separator}hmac={quote(secret, safe='')}&ignorar="


def sample(route: RouteConfig, event: str | None, now: float) -> SampleRequest:
    """A Pix as Efí sends it: mode ``mtls`` to ``P/pix`` with a certificate; ``skip-mtls`` (or an mtls route
    with ``hmac_secrets``) to the registered ``P?hmac=S&ignorar=`` + ``/pix``, a certificate only in mtls."""
    options = options_of(route, EfiOptions)
    query = registration_url("", options.hmac_secrets[0]) if options.hmac_secrets else ""
    request = sample_request(event, now, options.pix_keys[0] if options.pix_keys else None, query)
    return dataclasses.replace(request, client_certificate=route.mode == "mtls")
