"""HTTP/1.1 for webhook senders: requests framed by llhttp, responses as bytes, without I/O.

The connection code (``listener``) feeds bytes in as they arrive and writes bytes out;
:class:`RequestParser` is pure, so every malformed-request case is testable without a
socket. Framing is llhttp's (through ``httptools``: the parser of Node.js and uvicorn),
fed incrementally, so a body costs linear time however it is cut into chunks. On top of
llhttp's strict defaults (no leniency flag is ever set) it refuses what llhttp leaves to
the application: more than one ``Transfer-Encoding`` line or any coding but ``chunked``,
``Upgrade``/``CONNECT``, HTTP versions other than 1.0 and 1.1, and anything over the
limits (request target, header lines, body). Refusals are 4xx: bad input never gets a 5xx.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from http import HTTPStatus
from typing import NamedTuple
from urllib.parse import unquote

import httptools

from .config import Limits
from .errors import Refusal

__all__ = ["CONTINUE", "Parsed", "RequestHead", "RequestParser", "Response", "keep_alive_hint"]

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
#: bytes a partial request line may have beyond its target: method, two spaces, version, CR
_REQUEST_LINE_EXTRA = 32
#: bytes of empty lines skipped before a request line (RFC 9112 2.2: at least one); llhttp skips any number
_BLANK_BYTES = 4


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


class Parsed(NamedTuple):
    """One request as the parser hands it over: complete, or refused (``head`` None if it was not read)."""

    head: RequestHead | None
    body: bytes
    refusal: Refusal | None = None


class RequestParser:
    """Bytes in (any cut), complete requests or one final refusal out, in the order they were sent.

    llhttp parses everything it is fed, pipelined requests included: complete ones queue up
    in :meth:`next`'s order and the connection hands them over one at a time. After a
    refusal nothing more is parsed (the connection answers it and closes).

    llhttp does not say where in the bytes fed anything ends, so the limits on lines still
    arriving are counted here from the bytes fed: exactly, except in the one read in which a
    pipelined request starts right after another ends, which is not counted (a line can then
    exceed its limit by at most that one read before it is refused; a complete line never can).
    """

    __slots__ = (
        "limits",
        "_max_headers",
        "_max_field",
        "_parser",
        "_ready",
        "_failed",
        "_refusal",
        "_url",
        "_headers",
        "_folded",
        "_raw_headers",
        "_framing_fields",
        "_lines",
        "_head",
        "_body",
        "_body_size",
        "_in_head",
        "_in_trailer",
        "_line",
        "_blank",
        "_completed",
    )

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._max_headers = limits.max_headers
        self._max_field = limits.max_header_size - 2  # name and value; the line also has ": "
        self._parser = httptools.HttpRequestParser(self)
        self._ready: deque[Parsed] = deque()
        self._failed = False
        self._refusal: Refusal | None = None  # raised inside a callback, for feed() to find
        self._completed = False  # a request ended during the current feed()
        self._line = 0  # bytes of the head or trailer line still arriving
        self._blank = 0  # bytes of empty lines llhttp skipped before a request line
        self._reset()

    def _reset(self) -> None:
        self._url = b""
        self._headers: dict[str, str] = {}  # first value per name, names as sent
        self._folded: dict[str, str] = {}  # lower-case name -> first value
        self._raw_headers: list[tuple[str, str]] = []  # every line in order: a proxy's header combined
        self._framing_fields: list[tuple[str, str]] | None = None  # Content-Length, Transfer-Encoding lines
        self._lines = 0
        self._head: RequestHead | None = None
        self._body: bytes | bytearray = b""
        self._body_size = 0
        self._in_head = self._in_trailer = False

    # --- what the connection uses ---------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Parse ``data``, the next bytes of the stream; what completes is queued for :meth:`next`."""
        if self._failed:
            return
        self._completed = False
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as error:
            if self._refusal is None:  # not a refusal of ours: a bug, raised as itself
                raise (error.__context__ or error) from None
            self._fail(self._refusal)
        except httptools.HttpParserUpgrade:
            self._fail(Refusal(400, "protocol upgrade (Upgrade, CONNECT) not supported"))
        except httptools.HttpParserError as error:
            self._fail(Refusal(400, f"malformed request: {error}"))
        else:
            if self._in_head or self._in_trailer:
                self._measure_line(data)
            elif self._head is None and not self._completed:  # no request byte: llhttp skipped empty lines
                self._blank += len(data)
                if self._blank > _BLANK_BYTES:
                    self._fail(Refusal(400, "malformed request: empty lines instead of a request line"))

    def next(self) -> Parsed | None:
        """The oldest request (or refusal) not yet handed over; None while there is none."""
        return self._ready.popleft() if self._ready else None

    @property
    def head(self) -> RequestHead | None:
        """The head of the request whose body is still arriving, if any."""
        return self._head

    @property
    def pending(self) -> bool:
        """Something is queued, or a request has started arriving."""
        return bool(self._ready) or self._in_head or self._head is not None

    # --- llhttp's callbacks (hot: each request calls them all) ---------------------------------

    def on_message_begin(self) -> None:
        self._in_head = True
        self._line = self._blank = 0

    def on_url(self, fragment: bytes) -> None:
        self._url += fragment  # one fragment but when cut across reads; bounded below
        if len(self._url) > self.limits.max_header_size:
            raise self._refuse(
                414, f"request target longer than {self.limits.max_header_size} bytes (max_header_size)"
            )

    def on_header(self, name: bytes, value: bytes) -> None:
        """A complete header (or trailer) line: counted and sized; trailers are otherwise ignored."""
        self._lines += 1
        if self._lines > self._max_headers or len(name) + len(value) > self._max_field:
            raise self._refuse(
                431,
                f"more than {self._max_headers} header lines (max_headers)"
                if self._lines > self._max_headers
                else f"a header line is longer than {self.limits.max_header_size} bytes (max_header_size)",
            )
        if self._head is not None:
            return
        key = name.decode("latin-1")
        lower = key.lower()
        text = value.decode("latin-1").rstrip(" \t")
        self._raw_headers.append((key, text))
        if lower in _FRAMING_FIELDS:
            if self._framing_fields is None:
                self._framing_fields = []
            self._framing_fields.append((lower, text))
        if lower not in self._folded:
            self._folded[lower] = self._headers[key] = text

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head = head = self._build_head()
        self._lines = 0  # trailers get their own max_headers
        if (head.content_length or 0) > self.limits.max_body:
            raise self._refuse(
                413,
                f"body of {head.content_length} bytes is over the limit of {self.limits.max_body} (max_body)",
            )

    def on_chunk_header(self) -> None:
        self._in_trailer = True  # until data arrives: after the last chunk, trailer lines follow
        self._line = 0

    def on_body(self, fragment: bytes) -> None:
        self._in_trailer = False
        self._body_size += len(fragment)
        if self._body_size > self.limits.max_body:
            raise self._refuse(413, f"body is over the limit of {self.limits.max_body} bytes (max_body)")
        if not self._body:
            self._body = fragment  # one fragment (the usual case): no copy
        else:
            if isinstance(self._body, bytes):
                self._body = bytearray(self._body)
            self._body += fragment  # amortised linear, however many chunks

    def on_message_complete(self) -> None:
        body = self._body
        self._ready.append(Parsed(self._head, bytes(body) if isinstance(body, bytearray) else body))
        self._completed = True
        self._reset()

    # --- checks ---------------------------------------------------------------------------------

    def _build_head(self) -> RequestHead:
        parser = self._parser
        version = parser.get_http_version()
        if version != "1.1" and version != "1.0":
            raise self._refuse(400, f"HTTP/{version} not supported (HTTP/1.1 and 1.0 are)")
        if parser.should_upgrade():
            raise self._refuse(400, "protocol upgrade (Upgrade, CONNECT) not supported")
        chunked, length = self._framing() if self._framing_fields else (False, 0)
        target = self._url.decode("latin-1")
        path, _, query = target.partition("?")
        expect = self._folded.get("expect")
        return RequestHead(
            method=parser.get_method().decode("ascii"),
            target=target,
            path=unquote(path) if "%" in path else path,
            query_string=query,
            headers=self._headers,
            content_length=None if chunked else length,
            chunked=chunked,
            keep_alive=parser.should_keep_alive(),
            expect_continue=expect is not None and expect.lower() == "100-continue",
            raw_headers=tuple(self._raw_headers),
        )

    def _framing(self) -> tuple[bool, int]:
        """(chunked, Content-Length): one ``chunked`` line or one length, anything else is refused.

        llhttp already refuses a length with a coding, repeated lengths and ``chunked`` not last;
        it accepts other codings before ``chunked`` and several lines, which nobody here decodes.
        """
        fields = self._framing_fields or []
        codings = [value for name, value in fields if name == "transfer-encoding"]
        if codings and len(codings) < len(fields):
            raise self._refuse(400, "both Transfer-Encoding and Content-Length")
        if len(fields) > 1:
            raise self._refuse(400, "repeated Transfer-Encoding" if codings else "repeated Content-Length")
        value = fields[0][1].lstrip(" \t")
        if codings:
            if value.lower() != "chunked":
                raise self._refuse(400, f"Transfer-Encoding {value[:40]!r} not supported (only chunked)")
            return True, 0
        if not (value.isascii() and value.isdigit()):
            raise self._refuse(400, "invalid Content-Length")
        return False, int(value)

    def _measure_line(self, data: bytes) -> None:
        """Bound the head or trailer line still arriving, which httptools buffers without limit."""
        newline = data.rfind(b"\n")
        if newline >= 0 and (self._in_trailer or self._lines or not self._completed):
            self._line = len(data) - newline - 1  # the last line end in ``data`` is this request's
        elif newline < 0 and not self._completed:
            self._line += len(data)
        else:  # started in this read after another request ended: where, llhttp does not say
            self._line = 0
        if self._line > self.limits.max_header_size + _REQUEST_LINE_EXTRA:
            self._fail(
                Refusal(
                    431, f"a header line is longer than {self.limits.max_header_size} bytes (max_header_size)"
                )
            )

    def _refuse(self, status: int, reason: str) -> Refusal:
        self._refusal = refusal = Refusal(status, reason)
        return refusal

    def _fail(self, refusal: Refusal) -> None:
        self._ready.append(Parsed(self._head, b"", refusal))
        self._failed = True


_FRAMING_FIELDS = frozenset(("content-length", "transfer-encoding"))


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
    def text(
        cls, status: int, reason: str, close: bool = False, headers: dict[str, str] | None = None
    ) -> Response:
        return cls(status, reason.encode() + b"\n", headers, close=close)

    def render(self, keep_alive_for: float | None) -> bytes:
        """The response as bytes: the connection stays open ``keep_alive_for`` idle seconds, or closes (None).

        ``headers`` may override the content type, never the framing.
        """
        hint = None if keep_alive_for is None else keep_alive_hint(keep_alive_for)
        if self.headers is None:  # the usual answers: rendered once per second (the Date header)
            key, date = (self.status, self.body, self.content_type, hint), _date()
            rendered = _rendered.get(key)
            if rendered is None or rendered[0] != date:
                if len(_rendered) >= _RENDERED_MAX:  # refusal texts vary: keep the cache small
                    _rendered.clear()
                rendered = _rendered[key] = (date, self._render(hint))
            return rendered[1]
        return self._render(hint)

    def _render(self, hint: int | None) -> bytes:
        fields = {"Content-Type": self.content_type, **(self.headers or {})}
        extra = "".join(
            f"{name}: {value}\r\n" for name, value in fields.items() if name.lower() not in _FRAMING
        )
        connection = b"close" if hint is None else b"keep-alive\r\nKeep-Alive: timeout=%d" % hint
        return b"HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Length: %d\r\nConnection: %s\r\n%s\r\n%s" % (
            self.status,
            _phrase(self.status),
            _date(),
            len(self.body),
            connection,
            extra.encode("latin-1"),
            self.body,
        )


def keep_alive_hint(idle_timeout: float) -> int:
    """The ``Keep-Alive: timeout=`` to announce: whole seconds, one under the real idle timeout, at least 1.

    A client that honours it stops reusing an idle connection before the server closes it, so it
    never sends a request into a connection that is closing (and then wonders whether it arrived).
    """
    return max(1, int(idle_timeout) - 1)


_FRAMING = frozenset(("content-length", "connection", "date", "keep-alive", "transfer-encoding"))
_RENDERED_MAX = 256
_rendered: dict[tuple[int, bytes, str, int | None], tuple[bytes, bytes]] = {}  # -> (Date, response)


def _phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Unknown"
