"""What senders that sign with a private key share: their keys' route settings, the signature check,
and the local dev signing key that lets ``send-test`` sign as they would.

Route keys read here (every asymmetric sender has them; presets give defaults):

- ``public_key_file``: the sender's public key(s), read at config load (a PEM, a key list or a JWKS,
  as ``key_format`` says); or
- ``public_key_url``: where the sender publishes them, fetched at start and re-fetched after a
  failed signature at most once per ``refetch_interval`` seconds (``keysource``), with
  ``key_fetch_timeout`` and optional ``key_fetch_headers`` (secrets: ``{ env = "..." }``);
- ``dev_signing_key``: a LOCAL private key (``dev-certs`` writes them) whose public half the route
  also trusts, and that ``send-test`` signs with. Never a sender's key; check-config warns.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config.reader import Reader, Table
from ..config.schema import ProviderOptions, RefreshableKeys, RouteConfig, redact_userinfo
from ..errors import ReceiverError, Refusal, StaleKeys
from ..events import ClientIdentity, IncomingRequest
from ..keysource import KeySource, loopback_url
from ..publickeys import (
    KEY_FORMATS,
    KeyDocumentError,
    NamedKey,
    decode_signature,
    load_private_key,
    parse_key_document,
    sign,
    suits,
    verify_any,
)
from .common import check_allowlist, json_object, require_json, require_post

__all__ = [
    "KEY_ROUTE_KEYS",
    "KeyDefaults",
    "KeyedOptions",
    "admit",
    "check_signature",
    "dev_key_warnings",
    "dev_public_key",
    "dev_sign",
    "dev_signature",
    "key_signature_verified",
    "read_keys",
    "signature_bytes",
    "verified_keyed_json",
]

KEY_ROUTE_KEYS = frozenset(
    {
        "public_key_file",
        "public_key_url",
        "key_format",
        "key_fetch_headers",
        "key_fetch_timeout",
        "refetch_interval",
        "dev_signing_key",
    }
)


@dataclass(frozen=True)
class KeyDefaults:
    """What a preset brings: its algorithm, its keys' usual home and format, keys built in."""

    algorithm: str
    key_format: str = "pem"
    url: str | None = None  # fetched when the route names neither a file nor a URL
    built_in: tuple[NamedKey, ...] = ()  # trusted when the route names neither (Woovi's published key)


@dataclass(frozen=True)
class KeyedOptions(ProviderOptions):
    """The keys of a route whose sender signs with a private key (subclassed by each such sender)."""

    algorithm: str = ""
    keys: KeySource = field(default_factory=lambda: KeySource(algorithm=""), compare=False, hash=False)
    dev_key: NamedKey | None = field(default=None, compare=False, hash=False)
    dev_signing_key: Path | None = None  # the private key file, read again when send-test signs

    def key_sources(self) -> tuple[RefreshableKeys, ...]:
        return (self.keys,) if self.keys.refreshable else ()

    def describe(self) -> str:
        return f"{self.algorithm}, public keys from {self.keys.description}"

    def warnings(self) -> tuple[str, ...]:
        return dev_key_warnings(self.dev_signing_key)


def dev_key_warnings(dev_signing_key: Path | None) -> tuple[str, ...]:
    """What check-config says of a route that trusts a local dev signing key."""
    if dev_signing_key is None:
        return ()
    return (
        f"TRUSTS A LOCAL DEV SIGNING KEY ({dev_signing_key}): anyone holding that file can post"
        " accepted events here; remove dev_signing_key before production",
    )


def read_keys(reader: Reader, raw: Table, key: str, defaults: KeyDefaults) -> dict[str, Any]:
    """The route's key settings as KeyedOptions fields (``algorithm``, ``keys``, ``dev_key``, ...)."""
    algorithm = defaults.algorithm
    key_format = reader.choice(raw, key, "key_format", KEY_FORMATS, default=defaults.key_format)
    file = reader.optional_path(raw, key, "public_key_file", must_exist=True)
    url = reader.optional_string(raw, key, "public_key_url")
    if file is not None and url is not None:
        reader.fail(f"{key}.public_key_url", "give public_key_file or public_key_url, not both")
    if file is not None:
        source = KeySource(
            algorithm, keys=_file_keys(reader, f"{key}.public_key_file", file, key_format, algorithm)
        )
    elif url is not None or defaults.url is not None:
        source = _url_source(reader, raw, key, url or defaults.url or "", key_format, defaults)
    elif defaults.built_in:
        source = KeySource(algorithm, keys=defaults.built_in)
    else:
        reader.fail(
            f"{key}.public_key_file", "the sender's public key is needed: public_key_file or public_key_url"
        )
    dev_file = reader.optional_path(raw, key, "dev_signing_key", must_exist=True)
    dev_key = dev_public_key(reader, f"{key}.dev_signing_key", dev_file, algorithm) if dev_file else None
    return {"algorithm": algorithm, "keys": source, "dev_key": dev_key, "dev_signing_key": dev_file}


def _file_keys(
    reader: Reader, where: str, path: Path, key_format: str, algorithm: str
) -> tuple[NamedKey, ...]:
    try:
        keys = parse_key_document(path.read_bytes(), key_format, str(path))
    except (OSError, KeyDocumentError) as exc:
        reader.fail(where, f"{path}: {exc}")
    usable = tuple(named for named in keys if suits(algorithm, named.key))
    if not usable:
        reader.fail(where, f"{path}: no key for {algorithm} (its keys are of another type or curve)")
    return usable


def _url_source(
    reader: Reader, raw: Table, key: str, url: str, key_format: str, defaults: KeyDefaults
) -> KeySource:
    if not url.startswith("https://") and not (url.startswith("http://") and loopback_url(url)):
        reader.fail(f"{key}.public_key_url", f"must be an https:// URL, got {url[:80]!r}")
    if redact_userinfo(url) != url:  # it is logged and shown: credentials go in a header from a secret
        reader.fail(
            f"{key}.public_key_url",
            'holds credentials (before "@"): send them in a header,'
            ' key_fetch_headers = { Authorization = { env = "..." } }',
        )
    headers_table = reader.as_table(
        raw.get("key_fetch_headers", {}),
        f"{key}.key_fetch_headers",
        'must be a table like { Authorization = { env = "KEY_FETCH_TOKEN" } }',
    )
    where = f"{key}.key_fetch_headers"
    headers = {name: reader.secret(headers_table, where, name) or "" for name in headers_table}
    return KeySource(
        defaults.algorithm,
        keys=defaults.built_in,  # trusted until the first fetch replaces them
        url=url,
        key_format=key_format,
        headers=headers,
        refetch_interval=reader.number(raw, key, "refetch_interval", default=60.0, minimum=1.0),
        timeout=reader.number(raw, key, "key_fetch_timeout", default=10.0, minimum=0.1),
    )


def dev_public_key(reader: Reader, where: str, path: Path, algorithm: str) -> NamedKey:
    """The public half of a route's ``dev_signing_key``, which the route then also trusts."""
    try:
        public = load_private_key(path.read_bytes()).public_key()
    except (OSError, KeyDocumentError) as exc:
        reader.fail(where, f"{path}: {exc}")
    if not suits(algorithm, public):
        reader.fail(where, f"{path}: not a key for {algorithm} (dev-certs writes one per algorithm)")
    return NamedKey(public, None, "dev signing key")


def signature_bytes(request: IncomingRequest, header: str, encoding: str, prefix: str = "") -> bytes:
    """The signature a header carries, decoded; 401 when it is missing or does not decode."""
    value = request.header(header)
    if value is None or not value.strip():
        raise Refusal(401, f"signature: {header} header missing")
    value = value.strip()
    if prefix and not value.startswith(prefix):
        raise Refusal(401, f"signature: {header} does not start with {prefix!r}")
    decoded = decode_signature(value[len(prefix) :], encoding)
    if not decoded:
        raise Refusal(401, f"signature: {header} is not {encoding}")
    return decoded


def check_signature(
    options: KeyedOptions, signature: bytes, messages: Iterable[bytes], kid: str | None = None
) -> NamedKey:
    """The trusted key (the route's, or its dev key) that signed one of ``messages``.

    None did: 401 — as :class:`StaleKeys` when the keys can be fetched again, so the dispatcher
    re-fetches (rate-limited) and verifies once more. No key held at all (a fetch not yet done):
    503, the sender retries later."""
    source = options.keys
    trusted = (*source.matching(kid), *((options.dev_key,) if options.dev_key else ()))
    found = verify_any(options.algorithm, trusted, signature, messages)
    if found is not None:
        return found
    if not source.keys:
        raise StaleKeys(503, "signature: the sender's public keys are not available yet", source)
    reason = (
        "signature: matches no trusted public key"
        if kid is None
        else f"signature: no key {kid[:60]!r} matches"
    )
    if source.refreshable:
        raise StaleKeys(401, reason, source)
    raise Refusal(401, reason)


def admit(route: RouteConfig, request: IncomingRequest, sender: str) -> None:
    """Before the signature is even read: the method, then the route's allowlist."""
    require_post(request, sender)
    check_allowlist(route, request)


def verified_keyed_json(
    options: KeyedOptions,
    request: IncomingRequest,
    signature: bytes,
    messages: Iterable[bytes],
    kid: str | None = None,
) -> dict[str, Any]:
    """After :func:`admit` and the signature's decoding: the signature checked, then the JSON body."""
    check_signature(options, signature, messages, kid)
    require_json(request)
    return json_object(request.body)


def key_signature_verified(route: RouteConfig, client: ClientIdentity | None) -> str:
    """The ``verified_by`` of a sender that signs with a private key."""
    return "public-key-signature"


def dev_signature(route: RouteConfig, options: KeyedOptions, message: bytes) -> bytes:
    """``message`` signed with the route's local dev signing key, as the sender would sign it."""
    return dev_sign(route, options.dev_signing_key, options.algorithm, message)


def dev_sign(route: RouteConfig, dev_signing_key: Path | None, algorithm: str, message: bytes) -> bytes:
    """``message`` signed with ``dev_signing_key`` (``send-test``); a clear error for a route without one."""
    if dev_signing_key is None:
        raise ReceiverError(
            f"route {route.path} has no dev_signing_key: send-test signs {route.provider} requests with a"
            " local key the route also trusts (dev-certs writes one); the sender's own key is never ours"
        )
    try:
        private = load_private_key(dev_signing_key.read_bytes())
    except (OSError, KeyDocumentError) as exc:
        raise ReceiverError(f"route {route.path}: dev_signing_key {dev_signing_key}: {exc}") from None
    return sign(algorithm, private, message)
