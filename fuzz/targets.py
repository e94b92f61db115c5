"""One fuzz target per parser: each takes bytes and must return normally or raise the parser's
own refusal (Refusal, ProxyProtocolError, ConfigError). Anything else is a bug.

Run one with atheris (``pip install atheris``), e.g.::

    python fuzz/run.py efi_body -max_total_time=60
"""

from __future__ import annotations

import base64
import json
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mtls_receiver.addresses import CLIENT_ADDRESS_HEADERS, client_address, parse_networks
from mtls_receiver.config import ClientPin, Limits, RouteConfig, parse_config
from mtls_receiver.errors import ConfigError, Refusal
from mtls_receiver.events import ClientIdentity, IncomingRequest, Peer
from mtls_receiver.http11 import RequestHead, RequestParser
from mtls_receiver.keysource import KeySource
from mtls_receiver.pinning import check_client_pin
from mtls_receiver.providers import efi, firebanking, generic, infi, pix, pomelo, starkbank, woovi
from mtls_receiver.providers.kiwify import banking
from mtls_receiver.providers.pagarme import core_api
from mtls_receiver.proxy_protocol import ProxyProtocolError, bytes_needed, parse_header
from mtls_receiver.publickeys import KEY_FORMATS, KeyDocumentError, parse_key_document
from mtls_receiver.signatures import SignatureScheme

EXPECTED = (Refusal, ProxyProtocolError, ConfigError, KeyDocumentError)
PROXIES = parse_networks(["10.0.0.0/8"])
EFI = RouteConfig(
    path="/webhook",
    listener="m",
    provider="efi",
    mode="skip-mtls",
    options=efi.EfiOptions(hmac_secrets=("a-secret-of-sixteen+",), pix_keys=("k",)),
)
PIX = RouteConfig(
    path="/bank", listener="m", provider="pix", mode="mtls", options=pix.PixOptions(pix_keys=("k",))
)
PIN = ClientPin(subjects=("CN=a,O=b",), cn_patterns=("*.psp.example", "x*y.*.b"), fingerprints=("ab" * 32,))
SECRET = base64.b64encode(b"0123456789abcdef").decode()
ROUTES = {
    "infi": RouteConfig(
        path="/h", listener="m", provider="infi", mode="hmac", options=infi.InfiOptions(secrets=("s",))
    ),
    "firebanking": RouteConfig(
        path="/h",
        listener="m",
        provider="firebanking",
        mode="hmac",
        options=firebanking.FireBankingOptions(secrets=("s",)),
    ),
    "pomelo": RouteConfig(
        path="/h",
        listener="m",
        provider="pomelo",
        mode="notifications",
        options=pomelo.PomeloOptions(api_keys=(("k", SECRET),)),
    ),
    "hmac": RouteConfig(
        path="/h",
        listener="m",
        provider="hmac",
        mode="hmac",
        options=generic.HmacOptions(
            secrets=("s",),
            dedup=("/a/b", "header:X-Id"),
            signature=SignatureScheme(
                header="X-Sig",
                prefix="v1=",
                signed=("timestamp", "body"),
                separator=".",
                timestamp_header="X-Ts",
            ),
        ),
    ),
}
HTTP_LIMITS = Limits(max_headers=16, max_header_size=200, max_body=4096)
VERIFIERS = {
    "infi": infi.verify,
    "firebanking": firebanking.verify,
    "pomelo": pomelo.verify,
    "hmac": generic.verify,
}


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def efi_body(data: bytes) -> None:
    for kind in efi.KINDS:
        try:
            efi.parse_notification(kind, data)
        except Refusal:
            pass


def efi_target(data: bytes) -> None:
    text = _text(data)
    path, _, query = text.partition("?")
    efi.target("/webhook", "/" + path, query)


def efi_request(data: bytes) -> None:
    text = _text(data)
    head, _, body = text.partition("\n")
    path, _, query = head.partition("?")
    request = IncomingRequest(
        "POST",
        "/webhook" + path,
        query,
        {"Content-Type": "application/json"},
        body.encode(),
        Peer("34.193.116.226"),
    )
    efi.verify(EFI, request)


def pix_request(data: bytes) -> None:
    """First line: path suffix and query; the rest: the body, to a ``pix`` route."""
    text = _text(data)
    head, _, body = text.partition("\n")
    path, _, query = head.partition("?")
    identity = ClientIdentity("CN=webhook.psp.example", "CN=ca", "ab" * 32)
    request = IncomingRequest(
        "POST", "/bank" + path, query, {}, body.encode(), Peer("198.51.100.7", identity)
    )
    pix.verify(PIX, request)


def client_pin(data: bytes) -> None:
    """A presented subject (as rendered from any certificate) against a route's pins."""
    check_client_pin(PIN, ClientIdentity(_text(data), "CN=ca", "ab" * 32))


def forwarded(data: bytes) -> None:
    text = _text(data)
    lines = [(name, value) for name in CLIENT_ADDRESS_HEADERS for value in text.split("\n")]
    for header in CLIENT_ADDRESS_HEADERS:  # each line of the input is one header line
        try:
            client_address("10.0.0.1", lines, PROXIES, header)
        except Refusal:
            continue


def proxy_header(data: bytes) -> None:
    bytes_needed(data)
    parse_header(data)


def _keyed(provider: str, options: type[Any], algorithm: str, mode: str = "signature") -> RouteConfig:
    """A route of an asymmetric sender trusting Woovi's published key and a fixed Ed25519 key."""
    keys = (*woovi.BUILT_IN_KEYS["production"], *parse_key_document(_ED25519_PEM, "pem", "fuzz"))
    source = KeySource(algorithm, keys=keys)
    return RouteConfig(
        path="/h",
        listener="m",
        provider=provider,
        mode=mode,
        options=options(algorithm=algorithm, keys=source),
    )


_ED25519_PEM = (  # the Svix test key's public half (vector V5)
    b"-----BEGIN PUBLIC KEY-----\n"
    b"MCowBQYDK2VwAyEA1SiA4o9hyqTCpIqC5V9HUakiiaeACeqfZTInDBbOir4=\n"
    b"-----END PUBLIC KEY-----\n"
)
KEYED = {
    starkbank.verify: _keyed("starkbank", starkbank.StarkBankOptions, "ecdsa-secp256k1-sha256"),
    woovi.verify: _keyed("woovi", woovi.WooviOptions, "rsa-pkcs1v15-sha256"),
    core_api.verify: _keyed("pagarme", core_api.PagarmeV5Options, "rsa-pkcs1v15-sha256", "v5"),
    banking.verify: _keyed("kiwify", banking.KiwifyBankingOptions, "ed25519-sha256", "banking"),
}


def key_document(data: bytes) -> None:
    """The first byte picks the format (pem, list, jwks); the rest is a key document as fetched."""
    if data:
        parse_key_document(data[1:], KEY_FORMATS[data[0] % len(KEY_FORMATS)], "fuzz")


def keyed_request(data: bytes) -> None:
    """Headers as JSON (first line), then the body, against every sender that signs with a private key."""
    head, _, body = data.partition(b"\n")
    headers = _headers(head)
    for verify, route in KEYED.items():
        try:
            verify(route, IncomingRequest("POST", "/h", "", headers, body, Peer("127.0.0.1"), now=1.7e9))
        except Refusal:
            pass


def _headers(head: bytes) -> dict[str, str]:
    try:
        headers = json.loads(head)
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in headers.items()} if isinstance(headers, dict) else {}


def signed_request(data: bytes) -> None:
    """Headers as JSON (first line), then the body, against every HMAC provider."""
    head, _, body = data.partition(b"\n")
    try:
        headers = json.loads(head)
    except ValueError:
        headers = {}
    if not isinstance(headers, dict):
        headers = {}
    headers = {str(k): str(v) for k, v in headers.items()}
    for name, verify in VERIFIERS.items():
        try:
            verify(
                ROUTES[name], IncomingRequest("POST", "/h", "", headers, body, Peer("127.0.0.1"), now=1.7e9)
            )
        except Refusal:
            pass


Verdict = tuple[RequestHead | None, bytes, int]  # head, body, refusal status (0: none)


def parse_stream(data: bytes, piece: int, limits: Limits = HTTP_LIMITS) -> list[Verdict]:
    """(head, body, refusal status or 0) of each request handed over, fed ``piece`` bytes at a time."""
    parser = RequestParser(limits)
    for at in range(0, len(data), piece):
        parser.feed(data[at : at + piece])
    found: list[Verdict] = []
    while (parsed := parser.next()) is not None:
        found.append((parsed.head, parsed.body, parsed.refusal.status if parsed.refusal else 0))
    return found


def http_request(data: bytes) -> None:
    """A byte stream: requests whose framing is consistent, at most one refusal and that one last, with a
    4xx; and the same verdicts however the bytes are cut into reads."""
    whole = parse_stream(data, max(1, len(data)))
    assert all(status == 0 for *_, status in whole[:-1])
    for head, body, status in whole:
        assert status == 0 or 400 <= status < 500
        if head is not None and status == 0:
            assert (head.content_length is None) == head.chunked
            assert head.chunked or len(body) == head.content_length
            assert head.path.startswith("/") or not head.target.startswith("/")
        assert len(body) <= HTTP_LIMITS.max_body
    for piece in (1, 7):
        cut = parse_stream(data, piece)
        if 431 not in [status for *_, status in whole + cut]:  # a line still arriving is bounded per read
            assert [status for *_, status in cut] == [status for *_, status in whole]
            assert [body for _, body, _ in cut] == [body for _, body, _ in whole]


def config_toml(data: bytes) -> None:
    try:
        document = tomllib.loads(_text(data))
    except tomllib.TOMLDecodeError:
        return
    parse_config(document, Path("/nonexistent/config.toml"))


TARGETS: dict[str, Callable[[bytes], None]] = {
    "efi_body": efi_body,
    "efi_target": efi_target,
    "efi_request": efi_request,
    "pix_request": pix_request,
    "client_pin": client_pin,
    "forwarded": forwarded,
    "proxy_header": proxy_header,
    "signed_request": signed_request,
    "config_toml": config_toml,
    "http_request": http_request,
    "key_document": key_document,
    "keyed_request": keyed_request,
}


def check(target: Callable[[bytes], None], data: bytes) -> None:
    """Run one input: the parser's own refusals are fine, anything else propagates."""
    try:
        target(data)
    except EXPECTED:
        pass
