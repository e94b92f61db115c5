"""HTTP/1.1 parsing without sockets, then the same cases over real TLS connections."""

from __future__ import annotations

import asyncio
import re

import pytest

from conftest import Pki, client_context, pix
from mtls_receiver.config import Limits
from mtls_receiver.errors import Refusal
from mtls_receiver.http11 import Response, head_too_large, parse_chunked, parse_head
from mtls_receiver.server import Receiver

LIMITS = Limits(max_headers=8, max_header_size=100)


def head(*lines: str) -> bytes:
    return "\r\n".join(lines).encode("latin-1")


def test_a_request_head() -> None:
    parsed = parse_head(head("POST /webhook/pix?ignorar=%2Fpix HTTP/1.1", "Host: x", "content-type:  application/json ",
                             "Content-Length: 12", "X-Dup: first", "x-dup: second"), LIMITS)
    assert (parsed.method, parsed.path, parsed.query_string) == ("POST", "/webhook/pix", "ignorar=%2Fpix")
    assert parsed.target == "/webhook/pix?ignorar=%2Fpix"
    assert parsed.headers == {"Host": "x", "content-type": "application/json", "Content-Length": "12", "X-Dup": "first"}
    assert (parsed.content_length, parsed.chunked, parsed.keep_alive, parsed.expect_continue) == (12, False, True, False)


def test_percent_decoded_path_and_connection_semantics() -> None:
    assert parse_head(head("POST /web%68ook HTTP/1.1"), LIMITS).path == "/webhook"
    assert not parse_head(head("POST / HTTP/1.1", "Connection: close"), LIMITS).keep_alive
    assert not parse_head(head("POST / HTTP/1.0"), LIMITS).keep_alive
    assert parse_head(head("POST / HTTP/1.0", "Connection: keep-alive"), LIMITS).keep_alive
    assert parse_head(head("POST / HTTP/1.1", "Expect: 100-continue"), LIMITS).expect_continue
    chunked = parse_head(head("POST / HTTP/1.1", "Transfer-Encoding: chunked"), LIMITS)
    assert chunked.chunked and chunked.content_length is None


@pytest.mark.parametrize(("lines", "status", "reason"), [
    (("GET",), 400, "malformed request line"),
    (("POST / HTTP/2.0",), 400, "malformed request line"),
    (("POST  / HTTP/1.1",), 400, "malformed request line"),
    (("POST / HTTP/1.1", "No colon here"), 400, "malformed header line"),
    (("POST / HTTP/1.1", "Bad Name: x"), 400, "malformed header line"),
    (("POST / HTTP/1.1", " folded: continuation"), 400, "malformed header line"),
    (("POST / HTTP/1.1", "X: a\nY: b"), 400, "bare CR, LF or NUL"),
    (("POST / HTTP/1.1", "X: a\rb"), 400, "bare CR, LF or NUL"),
    (("POST / HTTP/1.1", "X: a\x00"), 400, "bare CR, LF or NUL"),
    (("POST / HTTP/1.1", *(f"X-{n}: y" for n in range(9))), 431, "max_headers"),
    (("POST / HTTP/1.1", "X: " + "y" * 100), 431, "max_header_size"),
    (("POST / HTTP/1.1", "Content-Length: 1", "Content-Length: 2"), 400, "invalid Content-Length"),
    (("POST / HTTP/1.1", "Content-Length: -1"), 400, "invalid Content-Length"),
    (("POST / HTTP/1.1", "Content-Length: 1_2"), 400, "invalid Content-Length"),
    (("POST / HTTP/1.1", "Content-Length: +12"), 400, "invalid Content-Length"),
    (("POST / HTTP/1.1", "Transfer-Encoding: chunked", "Content-Length: 5"), 400, "both Transfer-Encoding"),
    (("POST / HTTP/1.1", "Transfer-Encoding: gzip, chunked"), 400, "not supported"),
])
def test_malformed_heads_are_refused_with_a_reason(lines: tuple[str, ...], status: int, reason: str) -> None:
    with pytest.raises(Refusal) as refused:
        parse_head(head(*lines), LIMITS)
    assert refused.value.status == status and reason in refused.value.reason


def test_repeated_equal_content_length_is_one_length() -> None:
    assert parse_head(head("POST / HTTP/1.1", "Content-Length: 3", "content-length: 3"), LIMITS).content_length == 3


def test_an_unfinished_head_is_too_large_only_past_the_limits() -> None:
    allowed = (LIMITS.max_headers + 1) * (LIMITS.max_header_size + 2)
    assert not head_too_large(allowed, LIMITS) and head_too_large(allowed + 1, LIMITS)


def test_chunked_bodies() -> None:
    body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\nNEXT"
    assert parse_chunked(body, 100) == (b"hello world", len(body) - 4)
    for cut in range(len(body) - 4):  # any prefix is "not yet"
        assert parse_chunked(body[:cut], 100) is None
    with pytest.raises(Refusal, match="413"):
        parse_chunked(body, 10)
    with pytest.raises(Refusal, match="malformed chunk size"):
        parse_chunked(b"zz\r\n", 100)
    with pytest.raises(Refusal, match="malformed chunk"):
        parse_chunked(b"2\r\nabc\r\n0\r\n\r\n", 100)


def test_responses() -> None:
    rendered = Response.text(403, "allowlist: nope", headers={"Retry-After": "5"}).render(keep_alive=False)
    head_bytes, _, body = rendered.partition(b"\r\n\r\n")
    lines = head_bytes.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 403 Forbidden" and body == b"allowlist: nope\n"
    assert {"Content-Length: 16", "Connection: close", "Retry-After: 5",
            "Content-Type: text/plain; charset=utf-8"} <= set(lines)
    overridden = Response(200, b"{}", headers={"Content-Type": "application/json", "Content-Length": "999"})
    assert b"Content-Type: application/json\r\n" in overridden.render(True)
    assert b"999" not in overridden.render(True)  # framing is ours, never the caller's


# --- the same over TLS ---------------------------------------------------------------------------------

async def exchange(receiver: Receiver, pki: Pki, *writes: bytes, pause: float = 0.0) -> bytes:
    """Write the chunks (optionally pausing between them), then read until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", receiver.port(), ssl=client_context(pki, pki.client),
                                                   server_hostname="localhost")
    for chunk in writes:
        writer.write(chunk)
        await writer.drain()
        await asyncio.sleep(pause)
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return answer


def request(e2e: str, close: bool = False, extra: str = "") -> bytes:
    body = ('{"pix":[{"endToEndId":"%s","valor":"1.00","horario":"2026-11-23T10:00:00Z"}]}' % e2e).encode()
    connection = "close" if close else "keep-alive"
    return (f"POST /webhook/pix HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{extra}"
            f"Content-Length: {len(body)}\r\nConnection: {connection}\r\n\r\n").encode() + body


def statuses(raw: bytes) -> list[int]:
    return [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)]


async def test_pipelined_requests_are_answered_in_order(receiver: Receiver, pki: Pki) -> None:
    raw = await exchange(receiver, pki, request("E-P1") + request("E-P2") + request("E-P1", close=True))
    assert statuses(raw) == [200, 200, 200]
    events = await receiver.store.list_events()
    assert sorted(e.dedup_key for e in events) == ["E-P1", "E-P2"]


async def test_a_request_trickled_byte_by_byte(receiver: Receiver, pki: Pki) -> None:
    data = request("E-TRICKLE", close=True)
    raw = await exchange(receiver, pki, *(data[n:n + 7] for n in range(0, len(data), 7)), pause=0.001)
    assert statuses(raw) == [200]


async def test_chunked_request_body(receiver: Receiver, pki: Pki) -> None:
    body = b'{"pix":[%s]}' % (b'{"endToEndId":"E-CHUNKED","valor":"1.00","horario":"2026-11-23T10:00:00Z"}')
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[n:n + 10]), body[n:n + 10]) for n in range(0, len(body), 10))
    raw = await exchange(receiver, pki, b"POST /webhook/pix HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                         b"Content-Type: application/json\r\nConnection: close\r\n\r\n", chunks, b"0\r\n\r\n", pause=0.01)
    assert statuses(raw) == [200]
    assert (await receiver.store.list_events())[0].dedup_key == "E-CHUNKED"


async def test_expect_100_continue(receiver: Receiver, pki: Pki) -> None:
    data = request("E-CONTINUE", close=True, extra="Expect: 100-continue\r\n")
    head_part, _, body = data.partition(b"\r\n\r\n")
    reader, writer = await asyncio.open_connection("127.0.0.1", receiver.port(), ssl=client_context(pki, pki.client),
                                                   server_hostname="localhost")
    writer.write(head_part + b"\r\n\r\n")
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10) == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(body)
    assert (await asyncio.wait_for(reader.read(), 10)).startswith(b"HTTP/1.1 200")
    writer.close()


async def test_malformed_head_is_answered_audited_and_closed(receiver: Receiver, pki: Pki) -> None:
    raw = await exchange(receiver, pki, b"POST /webhook/pix HTTP/1.1\r\nBad Header\r\n\r\n" + request("E-AFTER"))
    assert statuses(raw) == [400] and b"malformed header line" in raw  # nothing after it is read
    audit = (await receiver.store.list_audit())[0]
    assert (audit.status, audit.reason, audit.method) == (400, "malformed header line", "-")
    assert audit.client is not None  # who sent it is known from the handshake
    assert await receiver.store.list_events() == []


async def test_http_1_0_gets_one_answer_and_a_close(receiver: Receiver, pki: Pki) -> None:
    body = b'{"pix":[' + str(pix("E-HTTP10")).replace("'", '"').encode() + b"]}"
    raw = await exchange(receiver, pki, b"POST /webhook/pix HTTP/1.0\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    assert statuses(raw) == [200] and b"Connection: close" in raw
