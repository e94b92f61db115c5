"""Efí's notifications: which one a request is, who sent it, and whether its body is valid.

Efí appends ``/pix`` (``/rec``, ``/cobr``) to the registered URL *string*, so
the suffix lands in the path (``P/pix``) or at the end of a query value
(``P?ignorar=/pix``, ``P?hmac=S/pix``). The registration test notification hits
``P`` itself. Mode ``mtls`` trusts the verified client certificate; mode
``skip-mtls`` (no certificate required) needs the sender's IP in the allowlist
and the secret ``hmac`` query value Efí was registered with.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote

from ...config.schema import RouteConfig
from ...errors import Refusal
from ...events import IncomingRequest, NewEvent, Verdict
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
    "target",
    "verified_by",
    "verify",
]

#: suffix Efí appends -> (kind, body list key)
KINDS: dict[str, str] = {"pix": "pix", "rec": "recs", "cobr": "cobsr"}
_VALOR = re.compile(r"\d{1,10}\.\d{2}")
_SUFFIX_CARRIERS = ("ignorar", "hmac")  # query values Efí's suffix can land on


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
    _check_pix_keys(options_of(route, EfiOptions).pix_keys, events)
    return Verdict(kind=where.kind, events=events)


def verified_by(route: RouteConfig, client: ClientIdentity | None) -> str:
    """The certificate in mode ``mtls``; the address, the URL's secret (and any certificate) otherwise."""
    if route.mode == "mtls":
        return "mtls-client-certificate"
    return "ip-allowlist+url-hmac" + ("+client-certificate" if client else "")


def target(route_path: str, path: str, query_string: str) -> Target:
    """``test`` for the base path, else the suffix's kind; Refusal(404) for anything else."""
    base = "" if route_path == "/" else route_path
    if path != base and not path.startswith(base + "/"):
        raise Refusal(404, "not found")
    query_kind, secret = _parse_query(query_string)
    tail = path[len(base) :].strip("/")
    if tail and tail not in KINDS:
        raise Refusal(404, f"unknown suffix /{tail} (Efí sends /pix, /rec, /cobr)")
    return Target(kind=tail or query_kind or "test", hmac=secret)


def _parse_query(query_string: str) -> tuple[str | None, str | None]:
    """The kind appended to a query value (``ignorar=/pix``, ``hmac=S/pix``) and the hmac secret."""
    kind = secret = None
    if not query_string:
        return kind, secret
    for name, value in parse_qsl(query_string, keep_blank_values=True):
        if name not in _SUFFIX_CARRIERS:
            continue
        suffix = next((s for s in KINDS if value.endswith("/" + s)), None)
        if suffix is not None:
            kind = kind or suffix
            value = value[: -len(suffix) - 1]
        if name == "hmac" and secret is None:
            secret = value
    return kind, secret


def check_sender(route: RouteConfig, request: IncomingRequest, presented_hmac: str | None) -> None:
    """Is this Efí? Each failed check names itself in the refusal; secrets are never echoed."""
    check_allowlist(route, request)
    if route.mode == "mtls" and request.peer.identity is None:
        raise Refusal(403, "certificate: a verified client certificate is required on this route")
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
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Refusal(400, "body is not valid JSON") from None
    list_key = KINDS[kind]
    if kind == "pix" and isinstance(document, list):
        document = {"pix": document}  # one bank is reported to post a bare array
    if not isinstance(document, dict):
        raise Refusal(400, f"body must be a JSON object with a {list_key!r} list")
    items = document.get(list_key)
    if not isinstance(items, list) or not items:
        raise Refusal(400, f"body must have a non-empty {list_key!r} list")
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise Refusal(400, f"{list_key}[{index}] must be an object")
    if kind == "pix":
        return tuple(
            NewEvent("pix", _pix_dedup_key(item, index), item, order_key=item["endToEndId"])
            for index, item in enumerate(items)
        )
    return tuple(NewEvent(kind, f"{kind}:{_content_hash(item)}", item) for item in items)


def _pix_dedup_key(item: dict[str, Any], index: int) -> str:
    """``endToEndId``, plus each refund's id and status: a refund is re-sent as it progresses."""
    where = f"pix[{index}]"
    e2e = item.get("endToEndId")
    if not isinstance(e2e, str) or not e2e.strip() or len(e2e) > 64:
        raise Refusal(400, f"{where}.endToEndId must be a non-empty string")
    valor = item.get("valor")
    if not isinstance(valor, str) or not _VALOR.fullmatch(valor):
        raise Refusal(400, f"{where}.valor must be a decimal string like '10.00'")
    horario = item.get("horario", ...)
    sent_not_realised = horario is None and item.get("tipo") == "SOLICITACAO"
    if not (isinstance(horario, str) and horario) and not sent_not_realised:
        raise Refusal(400, f"{where}.horario must be an RFC 3339 timestamp")
    refunds = item.get("devolucoes")
    if refunds is None:
        return e2e
    if not isinstance(refunds, list):
        raise Refusal(400, f"{where}.devolucoes must be a list")
    parts = [e2e]
    for n, refund in enumerate(refunds):
        if not isinstance(refund, dict) or not all(isinstance(refund.get(k), str) for k in ("id", "status")):
            raise Refusal(400, f"{where}.devolucoes[{n}] must be an object with string id and status")
        parts.append(f"{refund['id']}:{refund['status']}")
    return "|".join(parts)


def _content_hash(item: dict[str, Any]) -> str:
    """Pix Automático items have no documented identity: dedup exact repeats by content."""
    canonical = json.dumps(item, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _check_pix_keys(pix_keys: tuple[str, ...], events: tuple[NewEvent, ...]) -> None:
    """Any Efí customer can point a webhook at this URL: accept only the route's own keys."""
    if not pix_keys or events[0].kind != "pix":
        return
    foreign = sorted({str(e.payload.get("chave")) for e in events if e.payload.get("chave") not in pix_keys})
    if foreign:
        raise Refusal(403, f"pix key not accepted on this route: {', '.join(foreign)}")


def registration_url(base_url: str, secret: str) -> str:
    """The URL to register for skip-mTLS: Efí appends ``/pix`` after ``ignorar=``, leaving hmac intact."""
    separator = "&" if "?" in base_url else "?"
    return f"{base_url}{separator}hmac={quote(secret, safe='')}&ignorar="
