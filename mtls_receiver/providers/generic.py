"""Any other HMAC sender (``provider = "hmac"``), described by its route's ``[routes.signature]``.

The table describes the scheme as data (:class:`~mtls_receiver.signatures.SignatureScheme`):
where the signature travels (``header``, ``query``, or a multi-field header with
``signature_field``/``timestamp_field``), how it is written (``encoding``, ``prefix``), which
HMAC (``algorithm``) and which bytes it covers (``signed``, a template of parts). The event's
dedup key and type come from JSON pointers or ``header:Name``; :func:`read_event_fields` and
:func:`new_event` serve the other generic providers (``token``, ``allowlist``) too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..config.reader import Reader, Table
from ..config.schema import ProviderOptions, RouteConfig
from ..errors import Refusal
from ..events import IncomingRequest, NewEvent, Verdict
from ..signatures import ALGORITHMS, ENCODINGS, SignatureScheme, decode_secret, part_problem, sign_request
from .base import Provider, RouteContext, SampleRequest
from .common import content_digest, options_of, request_fields, signing_secrets, verified_request

__all__ = [
    "PROVIDER",
    "EventFields",
    "HmacOptions",
    "new_event",
    "read_event_fields",
    "resolve_field",
    "sample_body",
    "verify",
]

_SIGNATURE_KEYS = {
    "header",
    "query",
    "prefix",
    "encoding",
    "secret_encoding",
    "algorithm",
    "signed",
    "separator",
    "timestamp_header",
    "timestamp_required",
    "signature_field",
    "timestamp_field",
    "field_separator",
}


@dataclass(frozen=True)
class EventFields:
    """Where a generic route finds its events' dedup key and type."""

    dedup: tuple[str, ...] = ()  # JSON pointers or "header:Name", joined into the dedup key
    event: str | None = None  # JSON pointer or "header:Name" naming the event type


@dataclass(frozen=True)
class HmacOptions(ProviderOptions):
    signature: SignatureScheme  # how the sender signs
    secrets: tuple[str, ...] = field(default=(), repr=False)  # signing secrets (several: rotation)
    dedup: tuple[str, ...] = ()  # JSON pointers or "header:Name", joined into the dedup key
    event: str | None = None  # JSON pointer or "header:Name" naming the event type

    def describe(self) -> str:
        carrier = {"query": "query parameter ", "fields": "fields of "}.get(self.signature.carrier, "")
        return f"HMAC-{self.signature.algorithm.upper()} in {carrier}{self.signature.header}"

    def warnings(self) -> tuple[str, ...]:
        """A dedup or event header the signature does not cover: a replay may change it at will."""
        signed = {part.removeprefix("lower:").lower() for part in self.signature.signed}
        return tuple(
            f"{ref} (dedup/event) is not signed: anyone re-sending a captured request can change it;"
            " take it from the body or add it to signature.signed"
            for ref in (*self.dedup, *([self.event] if self.event else []))
            if ref.startswith("header:") and ref.lower() not in signed
        )


def read_event_fields(reader: Reader, raw: Table, key: str) -> EventFields:
    dedup = reader.string_list(raw, key, "dedup")
    event = reader.optional_string(raw, key, "event")
    for i, field_ref in enumerate((*dedup, *([event] if event else []))):
        if not field_ref.startswith(("/", "header:")):
            reader.fail(
                f"{key}.{'dedup' if i < len(dedup) else 'event'}",
                f"{field_ref!r}: use a JSON pointer like '/data/id' or 'header:X-Event-Id'",
            )
    return EventFields(dedup=dedup, event=event)


def parse_options(reader: Reader, raw: Table, route: RouteContext) -> HmacOptions:
    scheme = _scheme(reader, raw, route)
    fields = read_event_fields(reader, raw, route.key)
    return HmacOptions(
        signature=scheme,
        secrets=signing_secrets(reader, raw, route.key, scheme.secret_encoding),
        dedup=fields.dedup,
        event=fields.event,
    )


def _scheme(reader: Reader, raw: Table, route: RouteContext) -> SignatureScheme:
    where = f"{route.key}.signature"
    table = reader.as_table(
        raw.get("signature"),
        where,
        "a [routes.signature] table is needed (header, prefix, encoding, signed, ...)",
    )
    reader.only_keys(table, where, _SIGNATURE_KEYS)
    carrier, name = _carrier(reader, table, where)
    signed = reader.string_list(table, where, "signed") or ("body",)
    for part in signed:
        problem = part_problem(part)
        if problem is not None:
            reader.fail(f"{where}.signed", problem)
    timestamp_header = reader.optional_string(table, where, "timestamp_header")
    timestamp_field = reader.optional_string(table, where, "timestamp_field")
    if timestamp_field is not None and carrier != "fields":
        reader.fail(f"{where}.timestamp_field", "only with signature_field (a multi-field header)")
    has_timestamp = timestamp_header is not None or timestamp_field is not None
    if "timestamp" in {part.removeprefix("lower:") for part in signed} and not has_timestamp:
        reader.fail(f"{where}.timestamp_header", "needed when the timestamp is signed (or timestamp_field)")
    return SignatureScheme(
        header=name,
        prefix=reader.string(table, where, "prefix", default=""),
        encoding=reader.choice(table, where, "encoding", ENCODINGS, default="hex"),
        secret_encoding=reader.choice(table, where, "secret_encoding", ("utf-8", "base64"), default="utf-8"),
        signed=signed,
        separator=reader.string(table, where, "separator", default=""),
        timestamp_header=timestamp_header,
        timestamp_required=reader.boolean(table, where, "timestamp_required", default=has_timestamp),
        tolerance=route.tolerance or 300,
        algorithm=reader.choice(table, where, "algorithm", ALGORITHMS, default="sha256"),
        carrier=carrier,
        signature_field=reader.string(table, where, "signature_field", default="v1"),
        timestamp_field=timestamp_field,
        field_separator=reader.string(table, where, "field_separator", default=","),
    )


def _carrier(reader: Reader, table: Table, where: str) -> tuple[str, str]:
    """("header" | "fields" | "query", the header or parameter name): exactly one of header, query."""
    if ("header" in table) == ("query" in table):
        reader.fail(f"{where}.header", "give the signature's header, or `query` for a query parameter")
    if "query" in table:
        if "signature_field" in table:
            reader.fail(f"{where}.signature_field", "only with header (a multi-field header)")
        return "query", reader.string(table, where, "query")
    return ("fields" if "signature_field" in table else "header"), reader.string(table, where, "header")


def verify(route: RouteConfig, request: IncomingRequest) -> Verdict:
    options = options_of(route, HmacOptions)
    verified_request(route, request, "the sender", options.signature, options.secrets)
    return new_event(route, EventFields(options.dedup, options.event), request_fields(request), request)


def new_event(
    route: RouteConfig, fields: EventFields, body: dict[str, Any], request: IncomingRequest
) -> Verdict:
    """The one event of a generic route's request: its dedup key from ``fields.dedup`` (a digest
    of the body when none is configured) and its type from ``fields.event``.

    The key starts with the route's path: the store deduplicates per provider, and two unrelated
    senders on two generic routes may well both send ``{"id": "1"}``."""
    if fields.dedup:
        dedup = ":".join(str(resolve_field(ref, body, request)) for ref in fields.dedup)
    else:
        dedup = f"sha256:{content_digest(request.body)}"
    dedup = f"{route.path}|{dedup}"
    kind = str(resolve_field(fields.event, body, request)) if fields.event else "event"
    return Verdict(kind=kind, events=(NewEvent(kind, dedup, body),), body=b"")


def resolve_field(ref: str, body: dict[str, Any], request: IncomingRequest) -> Any:
    """``header:Name`` or an RFC 6901 JSON pointer into the body; Refusal(400) when absent."""
    if ref.startswith("header:"):
        value = request.header(ref[len("header:") :])
    else:
        value = _pointer(body, ref)
    if value is None or isinstance(value, (dict, list)):
        raise Refusal(400, f"{ref[:80]!r} is missing or not a single value")
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


def sample_body(event: str | None, now: float) -> bytes:
    """A JSON body for a generic route's ``send-test``: a test event with a fresh id."""
    return f'{{"id":"evt_test_{int(now)}","type":"{event or "test"}"}}'.encode()


def sample(route: RouteConfig, event: str | None, now: float) -> SampleRequest:
    options = options_of(route, HmacOptions)
    scheme = options.signature
    key = decode_secret(options.secrets[0], scheme.secret_encoding)
    headers = {"Content-Type": "application/json"}
    path, signed = sign_request(scheme, key, route.path, headers, sample_body(event, now), now)
    return SampleRequest(path=path[len(route.path) :], headers=signed, body=sample_body(event, now))


PROVIDER = Provider(
    name="hmac",
    modes=("hmac",),
    keys=frozenset({"secrets", "signature", "dedup", "event"}),
    parse_options=parse_options,
    verify=verify,
    sample=sample,
)
