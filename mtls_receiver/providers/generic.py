"""Any other HMAC-SHA256 sender (``provider = "hmac"``), described by its route's ``[routes.signature]``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..config.reader import Reader, Table
from ..config.schema import ProviderOptions, RouteConfig
from ..errors import Refusal
from ..events import IncomingRequest, NewEvent, Verdict
from ..signatures import SIGNED_PARTS, SignatureScheme
from .base import Provider, RouteContext
from .common import content_digest, options_of, signing_secrets, verified_json

__all__ = ["PROVIDER", "HmacOptions", "resolve_field", "verify"]

_SIGNATURE_KEYS = {
    "header",
    "prefix",
    "encoding",
    "secret_encoding",
    "signed",
    "separator",
    "timestamp_header",
    "timestamp_required",
}


@dataclass(frozen=True)
class HmacOptions(ProviderOptions):
    signature: SignatureScheme  # how the sender signs
    secrets: tuple[str, ...] = field(default=(), repr=False)  # signing secrets (several: rotation)
    dedup: tuple[str, ...] = ()  # JSON pointers or "header:Name", joined into the dedup key
    event: str | None = None  # JSON pointer or "header:Name" naming the event type


def parse_options(reader: Reader, raw: Table, route: RouteContext) -> HmacOptions:
    scheme = _scheme(reader, raw, route)
    key = route.key
    dedup = reader.string_list(raw, key, "dedup")
    event = reader.optional_string(raw, key, "event")
    for i, field_ref in enumerate((*dedup, *([event] if event else []))):
        if not field_ref.startswith(("/", "header:")):
            reader.fail(
                f"{key}.{'dedup' if i < len(dedup) else 'event'}",
                f"{field_ref!r}: use a JSON pointer like '/data/id' or 'header:X-Event-Id'",
            )
    return HmacOptions(
        signature=scheme,
        secrets=signing_secrets(reader, raw, key, scheme.secret_encoding),
        dedup=dedup,
        event=event,
    )


def _scheme(reader: Reader, raw: Table, route: RouteContext) -> SignatureScheme:
    where = f"{route.key}.signature"
    table = reader.as_table(
        raw.get("signature"),
        where,
        "a [routes.signature] table is needed (header, prefix, encoding, signed, ...)",
    )
    reader.only_keys(table, where, _SIGNATURE_KEYS)
    signed = reader.string_list(table, where, "signed") or ("body",)
    for part in signed:
        if part not in SIGNED_PARTS:
            reader.fail(f"{where}.signed", f"unknown part {part!r} (have: {', '.join(SIGNED_PARTS)})")
    timestamp_header = reader.optional_string(table, where, "timestamp_header")
    if "timestamp" in signed and timestamp_header is None:
        reader.fail(f"{where}.timestamp_header", "needed when the timestamp is signed")
    return SignatureScheme(
        header=reader.string(table, where, "header"),
        prefix=reader.string(table, where, "prefix", default=""),
        encoding=reader.choice(table, where, "encoding", ("hex", "base64"), default="hex"),
        secret_encoding=reader.choice(table, where, "secret_encoding", ("utf-8", "base64"), default="utf-8"),
        signed=signed,
        separator=reader.string(table, where, "separator", default=""),
        timestamp_header=timestamp_header,
        timestamp_required=reader.boolean(
            table, where, "timestamp_required", default=timestamp_header is not None
        ),
        tolerance=route.tolerance or 300,
    )


def verify(route: RouteConfig, request: IncomingRequest) -> Verdict:
    options = options_of(route, HmacOptions)
    body = verified_json(route, request, "the sender", options.signature, options.secrets)
    if options.dedup:
        dedup = ":".join(str(resolve_field(ref, body, request)) for ref in options.dedup)
    else:
        dedup = f"sha256:{content_digest(request.body)}"
    kind = str(resolve_field(options.event, body, request)) if options.event else "event"
    return Verdict(kind=kind, events=(NewEvent(kind, dedup, body),), body=b"")


def resolve_field(ref: str, body: dict[str, Any], request: IncomingRequest) -> Any:
    """``header:Name`` or an RFC 6901 JSON pointer into the body; Refusal(400) when absent."""
    if ref.startswith("header:"):
        value = request.header(ref[len("header:") :])
    else:
        value = _pointer(body, ref)
    if value is None or isinstance(value, (dict, list)):
        raise Refusal(400, f"{ref} is missing or not a single value")
    return value


def _pointer(document: Any, pointer: str) -> Any:
    for token in pointer.split("/")[1:]:
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(document, dict):
            document = document.get(token)
        elif isinstance(document, list) and token.isdigit() and int(token) < len(document):
            document = document[int(token)]
        else:
            return None
    return document


PROVIDER = Provider(
    name="hmac",
    modes=("hmac",),
    keys=frozenset({"secrets", "signature", "dedup", "event"}),
    parse_options=parse_options,
    verify=verify,
)
