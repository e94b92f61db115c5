"""Any other sender that signs with a private key (``provider = "public-key"``): the route names the
algorithm, the header and its encoding, and where the sender's public key is (``keyed``).

The signed bytes are the raw body. Dedup and event type are read as ``provider = "hmac"`` reads them.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config.reader import Reader, Table
from ..config.schema import RouteConfig
from ..events import IncomingRequest, Verdict
from ..publickeys import ALGORITHMS, SIGNATURE_ENCODINGS
from ..signatures import encode_digest
from .base import Provider, RouteContext, SampleRequest
from .common import options_of
from .generic import EventFields, new_event, read_event_fields, sample_body
from .keyed import (
    KEY_ROUTE_KEYS,
    KeyDefaults,
    KeyedOptions,
    admit,
    dev_signature,
    key_signature_verified,
    read_keys,
    signature_bytes,
    verified_keyed_json,
)

__all__ = ["PROVIDER", "PublicKeyOptions", "verify"]

_SIGNATURE_KEYS = {"algorithm", "header", "encoding", "prefix"}


@dataclass(frozen=True)
class PublicKeyOptions(KeyedOptions):
    header: str = ""
    encoding: str = "base64"  # of the signature in the header: base64, base64url or hex
    prefix: str = ""  # before the encoded signature, e.g. "sig="
    fields: EventFields = EventFields()  # where the dedup key and the event type are read


def parse_options(reader: Reader, raw: Table, route: RouteContext) -> PublicKeyOptions:
    where = f"{route.key}.signature"
    table = reader.as_table(
        raw.get("signature"),
        where,
        'a [routes.signature] table is needed: algorithm = "rsa-pkcs1v15-sha256", header = "X-Signature"',
    )
    reader.only_keys(table, where, _SIGNATURE_KEYS)
    algorithm = reader.choice(table, where, "algorithm", ALGORITHMS)
    return PublicKeyOptions(
        **read_keys(reader, raw, route.key, KeyDefaults(algorithm)),
        header=reader.string(table, where, "header"),
        encoding=reader.choice(table, where, "encoding", SIGNATURE_ENCODINGS, default="base64"),
        prefix=reader.string(table, where, "prefix", default=""),
        fields=read_event_fields(reader, raw, route.key),
    )


def verify(route: RouteConfig, request: IncomingRequest) -> Verdict:
    options = options_of(route, PublicKeyOptions)
    admit(route, request, "the sender")
    signature = signature_bytes(request, options.header, options.encoding, options.prefix)
    body = verified_keyed_json(options, request, signature, (request.body,))
    return new_event(route, options.fields, body, request)


def sample(route: RouteConfig, event: str | None, now: float) -> SampleRequest:
    """A JSON body signed with the route's dev signing key, in the route's header and encoding."""
    options = options_of(route, PublicKeyOptions)
    body = sample_body(event, now)
    signature = dev_signature(route, options, body)
    return SampleRequest(
        path="",
        headers={
            "Content-Type": "application/json",
            options.header: options.prefix + encode_digest(signature, options.encoding),
        },
        body=body,
    )


PROVIDER = Provider(
    name="public-key",
    modes=("signature",),
    keys=frozenset({"signature", "dedup", "event"}) | KEY_ROUTE_KEYS,
    parse_options=parse_options,
    verify=verify,
    verified_by=key_signature_verified,
    sample=sample,
)
