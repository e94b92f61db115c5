"""HTTP/1.1 parsing without sockets, then the same cases over real TLS connections."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from support import Pki, client_context, pix

from mtls_receiver.config import Limits
from mtls_receiver.errors import Refusal
from mtls_receiver.http11 import Parsed, RequestHead, RequestParser, Response, keep_alive_hint
from mtls_receiver.lifecycle import Receiver

LIMITS = Limits(max_headers=8, max_header_size=100)
# every character str.strip() takes for whitespace that is not SP or HTAB (latin-1, as header bytes decode)
ODD_SPACES = [c for c in map(chr, range(256)) if c.isspace() and c not in " \t\r\n"]


def head(*lines: str, body: bytes = b"") -> bytes:
    """A request head from its lines, with the blank line, then ``body``."""
    return "".join(line + "\r\n" for line in lines).encode("latin-1") + b"\r\n" + body


def parse(data: bytes, limits: Limits = LIMITS, piece: int = 0) -> list[Parsed]:
    """Everything the parser hands over for ``data``, fed at once or in pieces of ``piece`` bytes."""
    parser = RequestParser(limits)
    for at in range(0, len(data), piece or len(data) or 1):
        parser.feed(data[at : at + (piece or len(data))])
    found = []
    while (parsed := parser.next()) is not None:
        found.append(parsed)
    return found


def one(data: bytes, limits: Limits = LIMITS) -> tuple[RequestHead, bytes]:
    (parsed,) = parse(data, limits)
    assert parsed.refusal is None and parsed.head is not None, parsed.refusal
    return parsed.head, parsed.body


def refusal(data: bytes, limits: Limits = LIMITS, piece: int = 0) -> Refusal:
    *_, last = parse(data, limits, piece)
    assert last.refusal is not None, last
    return last.refusal


def chunked(*chunks: bytes, trailer: bytes = b"") -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n" + trailer + b"\r\n"


TE = "Transfer-Encoding: chunked"


def test_a_request_head() -> None:
    parsed, body = one(
        head(
            "POST /webhook/pix?ignorar=%2Fpix HTTP/1.1",
            "Host: x",
            "content-type:  application/json ",
            "Content-Length: 12",
            "X-Dup: first",
            "x-dup: second",
            body=b"twelve bytes",
        )
    )
    assert (parsed.method, parsed.path, parsed.query_string) == ("POST", "/webhook/pix", "ignorar=%2Fpix")
    assert parsed.target == "/webhook/pix?ignorar=%2Fpix" and body == b"twelve bytes"
    assert parsed.headers == {
        "Host": "x",
        "content-type": "application/json",
        "Content-Length": "12",
        "X-Dup": "first",
    }
    assert (parsed.content_length, parsed.chunked, parsed.keep_alive, parsed.expect_continue) == (
        12,
        False,
        True,
        False,
    )


def test_percent_decoded_path_and_connection_semantics() -> None:
    assert one(head("POST /web%68ook HTTP/1.1"))[0].path == "/webhook"
    assert not one(head("POST / HTTP/1.1", "Connection: close"))[0].keep_alive
    assert not one(head("POST / HTTP/1.0"))[0].keep_alive
    assert one(head("POST / HTTP/1.0", "Connection: keep-alive"))[0].keep_alive
    assert one(head("POST / HTTP/1.1", "Expect: 100-continue"))[0].expect_continue
    parsed, body = one(head("POST / HTTP/1.1", "Transfer-Encoding: Chunked ", body=chunked(b"ab", b"c")))
    assert parsed.chunked and parsed.content_length is None and body == b"abc"


@pytest.mark.parametrize(
    ("lines", "status", "reason"),
    [
        (("GET",), 400, "malformed request"),
        (("POST / HTTP/2.0",), 400, "HTTP/2.0 not supported"),
        (("POST / HTTP/1.2",), 400, "malformed request"),
        (("post / HTTP/1.1",), 400, "malformed request"),
        (("POST /a b HTTP/1.1",), 400, "malformed request"),
        (("POST / HTTP/1.1", "No colon here"), 400, "malformed request"),
        (("POST / HTTP/1.1", "Bad Name: x"), 400, "malformed request"),
        (("POST / HTTP/1.1", " folded: continuation"), 400, "malformed request"),
        (("POST / HTTP/1.1", "X: a", " folded"), 400, "malformed request"),
        (("POST / HTTP/1.1", "X: a\nY: b"), 400, "malformed request"),
        (("POST / HTTP/1.1", "X: a\rb"), 400, "malformed request"),
        (("POST / HTTP/1.1", "X: a\x00"), 400, "malformed request"),
        (("POST / HTTP/1.1", *(f"X-{n}: y" for n in range(9))), 431, "max_headers"),
        (("POST / HTTP/1.1", "X: " + "y" * 100), 431, "max_header_size"),
        (("POST /" + "a" * 100 + " HTTP/1.1",), 414, "max_header_size"),
        (("POST / HTTP/1.1", "Content-Length: 1", "Content-Length: 2"), 400, "Content-Length"),
        (("POST / HTTP/1.1", "Content-Length: 3", "content-length: 3"), 400, "Content-Length"),
        (("POST / HTTP/1.1", "Content-Length: -1"), 400, "Content-Length"),
        (("POST / HTTP/1.1", "Content-Length: 1_2"), 400, "Content-Length"),
        (("POST / HTTP/1.1", "Content-Length: +12"), 400, "Content-Length"),
        (("POST / HTTP/1.1", TE, "Content-Length: 5"), 400, "Content-Length"),
        (("POST / HTTP/1.1", "Content-Length: 5", TE), 400, "Content-Length"),
        (("POST / HTTP/1.1", "Transfer-Encoding: gzip, chunked"), 400, "not supported"),
        (("POST / HTTP/1.1", "Transfer-Encoding: gzip"), 400, "Transfer-Encoding"),
        (("POST / HTTP/1.1", "Connection: upgrade", "Upgrade: websocket"), 400, "upgrade"),
        (("CONNECT example.com:443 HTTP/1.1",), 400, "upgrade"),
        (("PRI * HTTP/2.0", "", "SM"), 400, "malformed request"),  # the HTTP/2 preface
        (("", ""), 400, "empty lines"),  # llhttp would skip empty lines until the header timeout
    ],
)
def test_malformed_heads_are_refused_with_a_reason(lines: tuple[str, ...], status: int, reason: str) -> None:
    for piece in (0, 1):  # at once, and byte by byte: the same verdict
        refused = refusal(head(*lines), piece=piece)
        assert refused.status == status and reason in refused.reason, refused


# --- found by an outside attack (issue 17): each case was accepted by the hand-written parser -------


@pytest.mark.parametrize("space", ODD_SPACES + [""])
@pytest.mark.parametrize("where", ["before", "after"])
def test_transfer_encoding_with_odd_whitespace_is_refused(space: str, where: str) -> None:
    value = f"{space}chunked" if where == "before" else f"chunked{space}"
    if not space:
        value = "chunked" + ("\x0b" if where == "before" else "\x0c")
    refused = refusal(head("POST / HTTP/1.1", f"Transfer-Encoding: {value}", body=chunked(b"abc")))
    assert refused.status == 400


@pytest.mark.parametrize(
    "codings", [("chunked", "gzip"), ("gzip", "chunked"), ("chunked", "chunked"), ("chunked", "")]
)
def test_two_transfer_encoding_lines_are_refused(codings: tuple[str, str]) -> None:
    lines = [f"Transfer-Encoding: {coding}" for coding in codings]
    assert refusal(head("POST / HTTP/1.1", *lines, body=chunked(b"abc"))).status == 400


@pytest.mark.parametrize(
    "trailer",
    [
        b"Bad trailer\r\n",
        b"X: a\r\n folded\r\n",
        b"Bad Name: x\r\n",
        b"X: a\x00\r\n",
        b"X a\r\n",
        b": x\r\n",
        b"X: a\nY: b\r\n",
    ],
)
def test_malformed_trailer_lines_are_refused(trailer: bytes) -> None:
    refused = refusal(head("POST / HTTP/1.1", TE, body=chunked(b"hello", trailer=trailer)))
    assert refused.status == 400


def test_well_formed_trailers_are_read_and_ignored_within_the_head_limits() -> None:
    parsed, body = one(head("POST / HTTP/1.1", TE, body=chunked(b"hello", trailer=b"X-Sum: 1\r\nY: 2\r\n")))
    assert body == b"hello" and "X-Sum" not in parsed.headers
    many = b"".join(b"T-%d: x\r\n" % n for n in range(9))
    assert refusal(head("POST / HTTP/1.1", TE, body=chunked(b"hello", trailer=many))).status == 431
    long = b"T: " + b"y" * 200 + b"\r\n"
    assert refusal(head("POST / HTTP/1.1", TE, body=chunked(b"hello", trailer=long))).status == 431


@pytest.mark.parametrize("piece", [0, 1, 4096, 65536])
def test_a_500_kb_request_line_is_414(piece: int) -> None:
    data = b"POST /" + b"a" * 500_000 + b" HTTP/1.1\r\nContent-Length: 0\r\n\r\n"
    refused = refusal(data, Limits(), piece)
    assert refused.status == 414 and "max_header_size" in refused.reason
    assert one(b"POST /" + b"a" * 8000 + b" HTTP/1.1\r\n\r\n", Limits())[0].path == "/" + "a" * 8000


def test_a_line_still_arriving_is_refused_before_its_end() -> None:
    """llhttp buffers a header line until its end: the parser bounds it from the bytes fed."""
    for piece in (1, 7, 1000):
        data = b"POST / HTTP/1.1\r\nX: " + b"y" * 5000  # no line end, ever
        assert refusal(data, piece=piece).status == 431
        data = b"POST / HTTP/1.1\r\n" + TE.encode() + b"\r\n\r\n" + chunked(b"ab")[:-2] + b"T: " + b"y" * 5000
        assert refusal(data, piece=piece).status == 431
        data = b"POST / HTTP/1.1" + b" " * 5000
        assert refusal(data, piece=piece).status in (400, 431)


def test_a_body_of_a_million_one_byte_chunks_is_parsed_once() -> None:
    """Each byte goes through llhttp once: the body is complete after the bytes are fed, in 64 KiB reads."""
    stream = head("POST / HTTP/1.1", TE, body=b"1\r\nx\r\n" * 1_000_000 + b"0\r\n\r\n")
    (parsed,) = parse(stream, Limits(max_body=1_000_000), piece=65536)
    assert parsed.refusal is None and parsed.body == b"x" * 1_000_000
    assert refusal(stream, Limits(max_body=999_999), piece=65536).status == 413


# --------------------------------------------------------------------------------------------------------


def test_one_empty_line_before_a_request_is_skipped() -> None:
    assert one(b"\r\n" + head("POST / HTTP/1.1"))[0].path == "/"
    first = head("POST /1 HTTP/1.1", "Content-Length: 1", body=b"x")
    found = parse(first + b"\r\n" + head("POST /2 HTTP/1.1"), piece=1)
    assert [p.head.path for p in found if p.head] == ["/1", "/2"]


def test_chunked_bodies() -> None:
    stream = head("POST / HTTP/1.1", TE, body=b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\n")
    assert one(stream)[1] == b"hello world"
    for cut in range(len(stream)):  # any prefix is "not yet", and any cut gives the same request
        parser = RequestParser(LIMITS)
        parser.feed(stream[:cut])
        assert parser.next() is None
        parser.feed(stream[cut:])
        parsed = parser.next()
        assert parsed is not None and parsed.body == b"hello world"
    assert refusal(stream, Limits(max_body=10)).status == 413
    assert refusal(head("POST / HTTP/1.1", TE, body=b"zz\r\n")).status == 400
    assert refusal(head("POST / HTTP/1.1", TE, body=b"2\r\nabc\r\n0\r\n\r\n")).status == 400
    assert refusal(head("POST / HTTP/1.1", TE, body=b"2 \r\nab\r\n0\r\n\r\n")).status == 400


def test_content_length_over_the_limit_is_413_before_the_body() -> None:
    parsed = parse(head("POST /x HTTP/1.1", "Content-Length: 1001"), Limits(max_body=1000))
    assert [p.refusal.status for p in parsed if p.refusal] == [413]
    assert parsed[0].head is not None and parsed[0].head.path == "/x"  # audited with its method and path


def test_pipelined_requests_come_out_one_at_a_time_in_order() -> None:
    first = head("POST /1 HTTP/1.1", "Content-Length: 3", body=b"one")
    second = head("POST /2 HTTP/1.1", TE, body=chunked(b"two"))
    third = head("POST /3 HTTP/1.1", "Content-Length: 5", "Connection: close", body=b"three")
    for piece in (0, 1, 5, 64):
        found = parse(first + second + third + b"POST /after-close HTTP/1.1\r\n\r\n", piece=piece)
        assert [(p.head.path, p.body) for p in found[:3] if p.head] == [
            ("/1", b"one"),
            ("/2", b"two"),
            ("/3", b"three"),
        ]
        refused = found[3].refusal  # data after "Connection: close": never answered, the connection closes
        assert refused is not None and refused.status == 400
    parser = RequestParser(LIMITS)
    parser.feed(first + b"POST / HTTP/1.1\r\nBad Header\r\n\r\n" + second)
    assert parser.next() == Parsed(one(first)[0], b"one")
    refused = parser.next()
    assert refused is not None and refused.refusal is not None and refused.refusal.status == 400
    parser.feed(second)
    assert parser.next() is None  # nothing is parsed after a refusal


def test_the_head_of_a_request_whose_body_is_arriving() -> None:
    parser = RequestParser(LIMITS)
    parser.feed(head("POST /x HTTP/1.1", "Content-Length: 4", "Expect: 100-continue", body=b"ab"))
    assert parser.next() is None and parser.pending
    assert parser.head is not None and parser.head.expect_continue
    parser.feed(b"cd")
    parsed = parser.next()
    assert parsed is not None and parsed.body == b"abcd" and parser.head is None and not parser.pending


def test_responses() -> None:
    rendered = Response.text(403, "allowlist: nope", headers={"Retry-After": "5"}).render(None)
    head_bytes, _, body = rendered.partition(b"\r\n\r\n")
    lines = head_bytes.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 403 Forbidden" and body == b"allowlist: nope\n"
    assert {
        "Content-Length: 16",
        "Connection: close",
        "Retry-After: 5",
        "Content-Type: text/plain; charset=utf-8",
    } <= set(lines)
    assert "Keep-Alive" not in head_bytes.decode()
    overridden = Response(
        200,
        b"{}",
        headers={"Content-Type": "application/json", "Content-Length": "999", "Keep-Alive": "timeout=999"},
    )
    assert b"Content-Type: application/json\r\n" in overridden.render(15.0)
    assert b"999" not in overridden.render(15.0)  # framing is ours, never the caller's
    assert b"Connection: keep-alive\r\nKeep-Alive: timeout=14\r\n" in overridden.render(15.0)


def test_the_keep_alive_hint_is_under_the_idle_timeout() -> None:
    assert [keep_alive_hint(t) for t in (15.0, 15.9, 5.0, 2.0, 1.5, 0.5)] == [14, 14, 4, 1, 1, 1]


# --- the same over TLS ---------------------------------------------------------------------------------


async def exchange(receiver: Receiver, pki: Pki, *writes: bytes, pause: float = 0.0) -> bytes:
    """Write the chunks (optionally pausing between them), then read until the server closes."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", receiver.port(), ssl=client_context(pki, pki.client), server_hostname="localhost"
    )
    for chunk in writes:
        writer.write(chunk)
        await writer.drain()
        await asyncio.sleep(pause)
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return answer


def request(e2e: str, close: bool = False, extra: str = "") -> bytes:
    item = {"endToEndId": e2e, "valor": "1.00", "horario": "2026-11-23T10:00:00Z"}
    body = json.dumps({"pix": [item]}, separators=(",", ":")).encode()
    connection = "close" if close else "keep-alive"
    return (
        f"POST /webhook/pix HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{extra}"
        f"Content-Length: {len(body)}\r\nConnection: {connection}\r\n\r\n"
    ).encode() + body


def statuses(raw: bytes) -> list[int]:
    return [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)]


async def test_pipelined_requests_are_answered_in_order(receiver: Receiver, pki: Pki) -> None:
    raw = await exchange(receiver, pki, request("E-P1") + request("E-P2") + request("E-P1", close=True))
    assert statuses(raw) == [200, 200, 200]
    events = await receiver.store.list_events()
    assert sorted(e.dedup_key for e in events) == ["E-P1", "E-P2"]


async def test_a_request_trickled_byte_by_byte(receiver: Receiver, pki: Pki) -> None:
    data = request("E-TRICKLE", close=True)
    raw = await exchange(receiver, pki, *(data[n : n + 7] for n in range(0, len(data), 7)), pause=0.001)
    assert statuses(raw) == [200]


async def test_chunked_request_body(receiver: Receiver, pki: Pki) -> None:
    body = b'{"pix":[%s]}' % (b'{"endToEndId":"E-CHUNKED","valor":"1.00","horario":"2026-11-23T10:00:00Z"}')
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(body[n : n + 10]), body[n : n + 10]) for n in range(0, len(body), 10)
    )
    raw = await exchange(
        receiver,
        pki,
        b"POST /webhook/pix HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: application/json\r\nConnection: close\r\n\r\n",
        chunks,
        b"0\r\n\r\n",
        pause=0.01,
    )
    assert statuses(raw) == [200]
    assert (await receiver.store.list_events())[0].dedup_key == "E-CHUNKED"


async def test_expect_100_continue(receiver: Receiver, pki: Pki) -> None:
    data = request("E-CONTINUE", close=True, extra="Expect: 100-continue\r\n")
    head_part, _, body = data.partition(b"\r\n\r\n")
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", receiver.port(), ssl=client_context(pki, pki.client), server_hostname="localhost"
    )
    writer.write(head_part + b"\r\n\r\n")
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10) == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(body)
    assert (await asyncio.wait_for(reader.read(), 10)).startswith(b"HTTP/1.1 200")
    writer.close()


async def test_malformed_head_is_answered_audited_and_closed(receiver: Receiver, pki: Pki) -> None:
    raw = await exchange(
        receiver, pki, b"POST /webhook/pix HTTP/1.1\r\nBad Header\r\n\r\n" + request("E-AFTER")
    )
    assert statuses(raw) == [400]  # nothing after it is read
    assert b"malformed request: Invalid header token" in raw
    audit = (await receiver.store.list_audit())[0]
    assert (audit.status, audit.reason, audit.method) == (400, "malformed request: Invalid header token", "-")
    assert audit.client is not None  # who sent it is known from the handshake
    assert await receiver.store.list_events() == []


async def test_http_1_0_gets_one_answer_and_a_close(receiver: Receiver, pki: Pki) -> None:
    body = b'{"pix":[' + str(pix("E-HTTP10")).replace("'", '"').encode() + b"]}"
    raw = await exchange(
        receiver,
        pki,
        b"POST /webhook/pix HTTP/1.0\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body),
    )
    assert statuses(raw) == [200] and b"Connection: close" in raw


def pix_body(e2e: str) -> bytes:
    return b'{"pix":[{"endToEndId":"%s","valor":"1.00","horario":"2026-11-23T10:00:00Z"}]}' % e2e.encode()


POST_PIX = b"POST /webhook/pix HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
SMUGGLED = {  # issue 17: each was read as a chunked body by the hand-written parser
    "vertical tab": b"Transfer-Encoding: \x0bchunked\r\n",
    "form feed": b"Transfer-Encoding: chunked\x0c\r\n",
    "no-break space": b"Transfer-Encoding: \xa0chunked\r\n",
    "chunked, then gzip": b"Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n",
    "gzip, then chunked": b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
}


@pytest.mark.parametrize("framing", sorted(SMUGGLED))
async def test_ambiguous_transfer_encodings_are_400_over_tls(
    receiver: Receiver, pki: Pki, framing: str
) -> None:
    body = pix_body("E-SMUGGLED")
    raw = await exchange(
        receiver, pki, POST_PIX + SMUGGLED[framing] + b"\r\n" + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    )
    assert statuses(raw) == [400]
    assert await receiver.store.list_events() == []
    assert [audit.status for audit in await receiver.store.list_audit()] == [400]


async def test_a_malformed_trailer_is_400_over_tls(receiver: Receiver, pki: Pki) -> None:
    body = pix_body("E-TRAILER")
    raw = await exchange(
        receiver,
        pki,
        POST_PIX
        + b"Transfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n%s\r\n0\r\nnot a trailer\r\n\r\n" % (len(body), body),
    )
    assert statuses(raw) == [400]
    assert await receiver.store.list_events() == []


async def test_a_500_kb_request_line_is_414_over_tls(receiver: Receiver, pki: Pki) -> None:
    raw = await exchange(
        receiver,
        pki,
        b"POST /webhook/pix?x=" + b"a" * 500_000 + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    )
    assert statuses(raw) == [414] and b"max_header_size" in raw
    (audit,) = await receiver.store.list_audit()
    assert audit.status == 414 and len(audit.reason) < 200  # the target itself is neither logged nor stored


async def test_a_body_of_one_byte_chunks_is_fed_to_the_parser_once(
    receiver: Receiver, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Linear time, checked without a clock: every byte read is fed to llhttp exactly once."""
    fed: list[int] = []
    feed = RequestParser.feed
    monkeypatch.setattr(RequestParser, "feed", lambda self, data: (fed.append(len(data)), feed(self, data)))
    body = pix_body("E-ONE-BYTE-CHUNKS") + b" " * 100_000
    data = (
        POST_PIX
        + b"Connection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"".join(b"1\r\n%c\r\n" % byte for byte in body)
        + b"0\r\n\r\n"
    )
    raw = await exchange(receiver, pki, data)
    assert statuses(raw) == [200]
    assert sum(fed) == len(data) and len(fed) > 1  # in many reads, none of them fed twice
    assert (await receiver.store.list_events())[0].dedup_key == "E-ONE-BYTE-CHUNKS"


async def test_keep_alive_answers_announce_the_idle_timeout(receiver: Receiver, pki: Pki) -> None:
    raw = await exchange(receiver, pki, request("E-KA1") + request("E-KA2", close=True))
    first, second = raw.split(b"HTTP/1.1 ")[1:]
    hint = receiver.config.listeners[0].limits.keepalive_timeout - 1
    assert b"Connection: keep-alive\r\nKeep-Alive: timeout=%d\r\n" % hint in first
    assert b"Connection: close\r\n" in second and b"Keep-Alive" not in second
