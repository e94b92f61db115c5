"""HTTP/1.1 for webhook senders: request heads, bodies and responses as bytes, without I/O.

The connection code (``listener``) feeds bytes in and writes bytes out; everything
here is a pure function, so every malformed-request case is testable without a
socket. Only what a sender needs is supported: one request at a time, bodies by
``Content-Length`` or ``chunked``; anything ambiguous (both framings, duplicate
lengths, obsolete line folding) is refused rather than guessed.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace
from http import HTTPStatus
from urllib.parse import unquote

from .config import Limits
from .errors import Refusal

__all__ = ["CONTINUE", "RequestHead", "Response", "head_too_large", "parse_chunked", "parse_head"]

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

_REQUEST_LINE = re.compile(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+) (\S+) HTTP/(1\.[01])")
_HEADER_LINE = re.compile(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*(.*)")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,8})(?:;[^\r\n]*)?")


@dataclass(frozen=True, slots=True)
class RequestHead:
    """A parsed request line and headers (first value per name, names as sent)."""

    method: str
    target: str  # as sent: path and query, still percent-encoded
    path: str  # percent-decoded
    query_string: str
    headers: dict[str, str]
    content_length: int | None  # None with chunked (or no body)
    chunked: bool
    keep_alive: bool
    expect_continue: bool
    raw_headers: tuple[tuple[str, str], ...] = ()  # every header line in order, (name as sent, value)


def head_too_large(buffered: int, limits: Limits) -> bool:
    """True when a head still without its blank line already exceeds what the limits allow."""
    return buffered > (limits.max_headers + 1) * (limits.max_header_size + 2)


def parse_head(data: bytes, limits: Limits) -> RequestHead:
    """Parse everything before the blank line; Refusal(400/431) names what is wrong.

    An unknown transfer coding is a 400, not HTTP's 501: bad input never gets a 5xx here.
    """
    text = data.decode("latin-1")
    lines = text.split("\r\n")
    if text.count("\r") != len(lines) - 1 or text.count("\n") != len(lines) - 1 or "\x00" in text:
        raise Refusal(400, "bare CR, LF or NUL in the request head")
    match = _REQUEST_LINE.fullmatch(lines[0])
    if match is None:
        raise Refusal(400, "malformed request line")
    if len(lines) - 1 > limits.max_headers:
        raise Refusal(431, f"more than {limits.max_headers} header lines (max_headers)")
    headers: dict[str, str] = {}
    folded: dict[str, str] = {}  # lower-case name -> first value
    lengths: set[str] = set()
    raw_headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if len(line) > limits.max_header_size:
            raise Refusal(431, f"a header line is longer than {limits.max_header_size} bytes (max_header_size)")
        field = _HEADER_LINE.fullmatch(line)
        if field is None:
            raise Refusal(400, "malformed header line")
        name, value = field.group(1), field.group(2).rstrip(" \t")
        raw_headers.append((name, value))
        lower = name.lower()
        if lower == "content-length":
            lengths.add(value)
        if lower not in folded:
            folded[lower] = value
            headers[name] = value
    method, target, version = match.groups()
    return replace(_head(method, target, version, headers, folded, lengths), raw_headers=tuple(raw_headers))


def _head(method: str, target: str, version: str, headers: dict[str, str], folded: dict[str, str],
          lengths: set[str]) -> RequestHead:
    encoding = folded.get("transfer-encoding", "").strip().lower()
    if encoding and encoding != "chunked":
        raise Refusal(400, f"Transfer-Encoding {encoding[:40]!r} not supported (only chunked)")
    if encoding and lengths:
        raise Refusal(400, "both Transfer-Encoding and Content-Length")
    length = _content_length(lengths)
    connection = folded.get("connection", "").lower()
    keep_alive = "close" not in connection if version == "1.1" else "keep-alive" in connection
    path, _, query = target.partition("?")
    return RequestHead(
        method=method, target=target, path=unquote(path) if "%" in path else path, query_string=query,
        headers=headers, content_length=None if encoding else length, chunked=bool(encoding),
        keep_alive=keep_alive, expect_continue=folded.get("expect", "").lower() == "100-continue",
    )


def _content_length(lengths: set[str]) -> int:
    if not lengths:
        return 0
    (value, *others) = lengths
    if others or not (value.isascii() and value.isdigit()):
        raise Refusal(400, "invalid Content-Length")
    return int(value)


def parse_chunked(data: bytes | bytearray, max_body: int, start: int = 0) -> tuple[bytes, int] | None:
    """(body, where it ends in ``data``) once a whole chunked body from ``start`` is in; None while it is not."""
    body = bytearray()
    at = start
    while True:
        end = data.find(b"\r\n", at)
        if end < 0:
            return None
        size_line = _CHUNK_SIZE.fullmatch(data, at, end)
        if size_line is None:
            raise Refusal(400, "malformed chunk size")
        size = int(size_line.group(1), 16)
        if len(body) + size > max_body:
            raise Refusal(413, f"body is over the limit of {max_body} bytes (max_body)")
        at = end + 2
        if size == 0:
            return _trailer_end(data, at, bytes(body))
        if len(data) < at + size + 2:
            return None
        if data[at + size:at + size + 2] != b"\r\n":
            raise Refusal(400, "malformed chunk")
        body += data[at:at + size]
        at += size + 2


def _trailer_end(data: bytes | bytearray, at: int, body: bytes) -> tuple[bytes, int] | None:
    """Skip trailer fields (ignored) up to the final blank line."""
    while True:
        end = data.find(b"\r\n", at)
        if end < 0:
            return None
        if end == at:
            return body, end + 2
        at = end + 2


_date_cache: tuple[int, bytes] = (0, b"")


def _date() -> bytes:
    """The Date header's value, formatted once per second."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now)).encode())
    return _date_cache[1]


@dataclass(frozen=True, slots=True)
class Response:
    """What the receiver answers; ``close`` ends the connection after it (e.g. a body left unread)."""

    status: int
    body: bytes
    headers: dict[str, str] | None = None
    content_type: str = "text/plain; charset=utf-8"
    close: bool = False

    @classmethod
    def text(cls, status: int, reason: str, close: bool = False, headers: dict[str, str] | None = None) -> Response:
        return cls(status, reason.encode() + b"\n", headers, close=close)

    def render(self, keep_alive: bool) -> bytes:
        """The response as bytes; ``headers`` may override the content type."""
        if self.headers is None:  # the usual answers: rendered once per second (the Date header)
            key, date = (self.status, self.body, self.content_type, keep_alive), _date()
            rendered = _rendered.get(key)
            if rendered is None or rendered[0] != date:
                if len(_rendered) >= _RENDERED_MAX:  # refusal texts vary: keep the cache small
                    _rendered.clear()
                rendered = _rendered[key] = (date, self._render(keep_alive))
            return rendered[1]
        return self._render(keep_alive)

    def _render(self, keep_alive: bool) -> bytes:
        fields = {"Content-Type": self.content_type, **(self.headers or {})}
        extra = "".join(f"{name}: {value}\r\n" for name, value in fields.items() if name.lower() not in _FRAMING)
        connection = b"keep-alive" if keep_alive else b"close"
        return b"HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Length: %d\r\nConnection: %s\r\n%s\r\n%s" % (
            self.status, _phrase(self.status), _date(), len(self.body), connection, extra.encode("latin-1"), self.body)


_FRAMING = frozenset(("content-length", "connection", "date", "transfer-encoding"))
_RENDERED_MAX = 256
_rendered: dict[tuple[int, bytes, str, bool], tuple[bytes, bytes]] = {}  # -> (Date, response)


def _phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Unknown"
