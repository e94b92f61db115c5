"""A route's trusted public keys: read from a file at config load, or fetched from the sender's URL.

A fetched key set is fetched once when a worker starts (and when a reload brings a new config), then
kept. When a signature matches no key, the dispatcher asks :meth:`KeySource.refresh` for the keys
again (how Stark Bank's SDKs follow a rotation): at most one fetch per ``refetch_interval`` whatever
the number of failing requests (a flood of bad signatures cannot turn into a flood of fetches), and
concurrent failures share that one fetch. A failed fetch keeps the keys already held; it never lets
a request in. The verifiers only read :attr:`KeySource.keys` (no I/O in them).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp
from cryptography.hazmat.primitives import serialization

from .publickeys import KeyDocumentError, NamedKey, parse_key_document, suits

__all__ = ["MAX_KEY_DOCUMENT", "KeyFetchError", "KeySource", "loopback_url"]

log = logging.getLogger("mtls_receiver")

MAX_KEY_DOCUMENT = 1024 * 1024  # bytes: a key document is small; a larger answer is refused


class KeyFetchError(Exception):
    """A key document could not be fetched or held no usable key (the message never has a header value)."""


def loopback_url(url: str) -> bool:
    """A URL on this machine: the one place a key document may come over plain HTTP (a local stand-in)."""
    return (urlsplit(url).hostname or "") in ("localhost", "127.0.0.1", "::1")


@dataclass(eq=False)
class KeySource:
    """The public keys one route trusts, and where more come from (``url``; None: a fixed set).

    It lives in a frozen options dataclass, excluded from its comparison: its keys change as
    fetches succeed, the route's configuration does not."""

    algorithm: str  # keys that cannot verify it are left out of a fetched document
    keys: tuple[NamedKey, ...] = ()  # the trusted keys now: the file's, or the last good fetch's
    url: str | None = None
    key_format: str = "pem"
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)  # may carry credentials
    refetch_interval: float = 60.0  # seconds between two fetches caused by failing signatures
    timeout: float = 10.0  # seconds a fetch may take
    _last_refetch: float = field(default=float("-inf"), repr=False)
    _inflight: asyncio.Future[bool] | None = field(default=None, repr=False)
    _on_fetch: Callable[[bool], None] | None = field(default=None, repr=False)

    @property
    def description(self) -> str:
        return self.url or (self.keys[0].origin if self.keys else "no key")

    @property
    def refreshable(self) -> bool:
        return self.url is not None

    def observe(self, on_fetch: Callable[[bool], None]) -> None:
        self._on_fetch = on_fetch

    def inherit(self, previous: object) -> None:
        """A reload's new source starts from the keys the old one fetched from the same URL: a sender's
        key endpoint that is down during a reload does not leave the route without keys."""
        if (
            isinstance(previous, KeySource)
            and self.url is not None
            and (previous.url, previous.key_format, previous.algorithm)
            == (self.url, self.key_format, self.algorithm)
        ):
            self.keys = previous.keys

    def matching(self, kid: str | None) -> tuple[NamedKey, ...]:
        """The keys a signature naming ``kid`` may come from (all of them when it names none)."""
        return self.keys if kid is None else tuple(key for key in self.keys if key.kid == kid)

    async def load(self) -> None:
        """The start-up fetch (no rate limit); raises KeyFetchError, keeping the keys held."""
        if self.url is not None:
            self._replace(await self._fetch(self.url))

    async def refresh(self) -> bool:
        """Fetch again after a failed signature, at most once per interval: True if new keys arrived."""
        if self.url is None:
            return False
        if self._inflight is None:
            now = time.monotonic()
            if now - self._last_refetch < self.refetch_interval:
                return False
            self._last_refetch = now
            self._inflight = asyncio.ensure_future(self._refetch(self.url))
            self._inflight.add_done_callback(self._done)
        return await asyncio.shield(self._inflight)

    def _done(self, _: asyncio.Future[bool]) -> None:
        self._inflight = None

    async def _refetch(self, url: str) -> bool:
        try:
            fetched = await self._fetch(url)
        except KeyFetchError as exc:
            log.warning(
                "public keys: re-fetch from %s failed, keeping %d key(s): %s", url, len(self.keys), exc
            )
            return False
        return self._replace(fetched)

    def _replace(self, fetched: tuple[NamedKey, ...]) -> bool:
        """Hold ``fetched`` from now on; True when it has a key not held before."""
        before = {_fingerprint(key) for key in self.keys}
        self.keys = fetched
        added = any(_fingerprint(key) not in before for key in fetched)
        if added:
            log.info("public keys: %d key(s) from %s", len(fetched), self.url)
        return added

    async def _fetch(self, url: str) -> tuple[NamedKey, ...]:
        """The usable keys of the document at ``url``; each attempt is reported to the observer."""
        try:
            keys = await self._fetch_once(url)
        except KeyFetchError:
            self._report(False)
            raise
        self._report(True)
        return keys

    def _report(self, ok: bool) -> None:
        if self._on_fetch is not None:
            self._on_fetch(ok)

    async def _fetch_once(self, url: str) -> tuple[NamedKey, ...]:
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout)) as session,
                session.get(url, headers=dict(self.headers), allow_redirects=False) as response,
            ):
                if response.status != 200:
                    raise KeyFetchError(f"HTTP {response.status}")
                document = await _read_at_most(response.content, MAX_KEY_DOCUMENT + 1)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise KeyFetchError(f"{type(exc).__name__}: {str(exc)[:200]}") from None
        if len(document) > MAX_KEY_DOCUMENT:
            raise KeyFetchError(f"key document larger than {MAX_KEY_DOCUMENT} bytes")
        try:
            keys = parse_key_document(document, self.key_format, url)
        except KeyDocumentError as exc:
            raise KeyFetchError(str(exc)) from None
        usable = tuple(key for key in keys if suits(self.algorithm, key.key))
        if not usable:
            raise KeyFetchError(f"none of its {len(keys)} key(s) is a key for {self.algorithm}")
        return usable


async def _read_at_most(body: aiohttp.StreamReader, limit: int) -> bytes:
    """A body to its end, or its first ``limit`` bytes: one ``read(n)`` returns only what has arrived
    so far (a document sent in two pieces would be cut at the first)."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await body.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _fingerprint(named: NamedKey) -> tuple[str | None, bytes]:
    der = named.key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return named.kid, der
