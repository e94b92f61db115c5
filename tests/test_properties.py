"""Bad input, systematically: for any input each parser gives a verdict or its own refusal,
and the server answers with a status below 500. (Bounded examples; the same targets run under
atheris in fuzz/.)"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import ssl
import sys
from collections.abc import Iterator
from pathlib import Path

import h11
import httptools
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import Pki, client_context, config_text, https_post

from mtls_receiver.config import load_config
from mtls_receiver.errors import ConfigError, Refusal
from mtls_receiver.events import IncomingRequest, Peer
from mtls_receiver.lifecycle import Receiver
from mtls_receiver.providers import efi

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "fuzz"))
import targets  # noqa: E402

BOUNDED = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=25,
)
pix_like = st.fixed_dictionaries(
    {},
    optional={
        "endToEndId": st.one_of(st.text(max_size=40), st.integers(), st.none()),
        "valor": st.one_of(
            st.from_regex(r"\d{1,12}\.\d{1,3}", fullmatch=True), st.text(max_size=12), st.floats()
        ),
        "horario": st.one_of(st.text(max_size=30), st.none()),
        "chave": st.text(max_size=20),
        "tipo": st.sampled_from(["SOLICITACAO", "x"]),
        "devolucoes": st.one_of(
            json_values,
            st.lists(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "id": st.text(max_size=8),
                        "status": st.text(max_size=12),
                        "rtrId": st.text(max_size=32),
                    },
                ),
                max_size=3,
            ),
        ),
    },
)


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
@BOUNDED
@given(data=st.binary(max_size=400))
def test_fuzz_targets_on_random_bytes(name: str, data: bytes) -> None:
    targets.check(targets.TARGETS[name], data)


@BOUNDED
@given(
    body=st.one_of(
        json_values,
        st.fixed_dictionaries({"pix": st.lists(pix_like, max_size=4)}),
        st.lists(pix_like, max_size=3),
    ),
    kind=st.sampled_from(sorted(efi.KINDS)),
)
def test_efi_notifications_on_structured_json(body: object, kind: str) -> None:
    try:
        events = efi.parse_notification(kind, json.dumps(body).encode())
    except Refusal as refusal:
        assert 400 <= refusal.status < 500
    else:
        assert events and all(event.dedup_key for event in events)


@BOUNDED
@given(
    query=st.lists(
        st.tuples(
            st.sampled_from(["hmac", "ignorar", "x", "hmac "]),
            st.text(alphabet="abc/pixreco%&=+ ", max_size=20),
        ),
        max_size=4,
    ),
    path=st.sampled_from(["/webhook", "/webhook/", "/webhook/pix", "/webhook//rec", "/webhook/x", "/other"]),
)
def test_efi_query_strings(query: list[tuple[str, str]], path: str) -> None:
    query_string = "&".join(f"{k}={v}" for k, v in query)
    request = IncomingRequest("POST", path, query_string, {}, b'{"pix":[]}', Peer("34.193.116.226"))
    try:
        efi.verify(targets.EFI, request)
    except Refusal as refusal:
        assert refusal.status in (400, 401, 403, 404)
        assert "a-secret-of-sixteen" not in refusal.reason


@BOUNDED
@given(
    header=st.sampled_from(["X-Forwarded-For", "Forwarded", "X-Real-IP"]),
    value=st.lists(
        st.one_of(st.ip_addresses().map(str), st.text(alphabet='0123456789abcdef:.[]"=;for, _', max_size=30)),
        max_size=5,
    ).map(", ".join),
)
def test_forwarded_headers(header: str, value: str) -> None:
    try:
        address = targets.client_address("10.0.0.1", [(header, value)], targets.PROXIES, header)
    except Refusal as refusal:
        assert refusal.status == 400
    else:
        assert isinstance(address, str) and address


@BOUNDED
@given(
    document=st.dictionaries(
        st.sampled_from(["listeners", "routes", "store", "forward", "admin", "x"]),
        st.one_of(
            json_values,
            st.lists(
                st.dictionaries(
                    st.sampled_from(
                        [
                            "name",
                            "address",
                            "cert",
                            "key",
                            "path",
                            "provider",
                            "mode",
                            "client_certs",
                            "secrets",
                            "limits",
                            "url",
                        ]
                    ),
                    json_values,
                    max_size=6,
                ),
                max_size=3,
            ),
        ),
        max_size=5,
    )
)
def test_config_documents(document: dict[str, object]) -> None:
    try:
        targets.parse_config(document, Path("/nonexistent/config.toml"))
    except ConfigError as error:
        assert error.file == "/nonexistent/config.toml"


header_lines = st.lists(
    st.one_of(
        st.tuples(
            st.sampled_from(
                [
                    "Content-Length",
                    "content-length",
                    "Transfer-Encoding",
                    "Connection",
                    "Expect",
                    "X-Forwarded-For",
                    "Bad Name",
                    "",
                ]
            ),
            st.text(alphabet="0123456789abcdefchunkedlosxp-, \t\r\n:", max_size=12),
        ).map(lambda kv: f"{kv[0]}: {kv[1]}"),
        st.text(max_size=30),
    ),
    max_size=8,
)


@BOUNDED
@given(
    method=st.sampled_from(["POST", "GET", "P OST", ""]),
    target=st.text(max_size=20),
    version=st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2", "http/1.1"]),
    lines=header_lines,
)
def test_http_heads_that_look_almost_right(method: str, target: str, version: str, lines: list[str]) -> None:
    data = "\r\n".join([f"{method} {target} {version}", *lines, "", ""]).encode("utf-8", "surrogatepass")
    targets.check(targets.http_request, data)


# --- HTTP framing: never more lenient than h11 and llhttp together ---------------------------------------

# what the outside attack tried, and its neighbours: every str.strip() whitespace, repeated and mixed framings
SPACES = ["", " ", "\t", "\x0b", "\x0c", "\x1c", "\x85", "\xa0", "\r", "\n", "\x00"]
framing_lines = st.one_of(
    st.builds(
        lambda name, before, value, after: f"{name}:{before}{value}{after}",
        st.sampled_from(["Transfer-Encoding", "transfer-encoding", "Content-Length", "Transfer-Encoding "]),
        st.sampled_from(SPACES),
        st.sampled_from(
            [
                "chunked",
                "CHUNKED",
                "gzip",
                "gzip, chunked",
                "chunked, gzip",
                "identity",
                "0",
                "5",
                "05",
                "+5",
                "5 5",
                "-1",
                "",
            ]
        ),
        st.sampled_from(SPACES),
    ),
    st.sampled_from(
        [
            "Host: x",
            "Connection: close",
            "Expect: 100-continue",
            " folded",
            "\tfolded",
            "X: a\rb",
            "Bad Name: x",
            "X-Forwarded-For: 1.2.3.4",
            "Upgrade: websocket",
            "Connection: upgrade",
        ]
    ),
)
bodies = st.one_of(
    st.sampled_from(
        [
            b"",
            b"hello",
            b"0\r\n\r\n",
            b"5\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\r\n0\r\nT: 1\r\n\r\n",
            b"5\r\nhello\r\n0\r\nbad trailer\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"5;x=1\r\nhello\r\n0\r\n\r\n",
            b"5 \r\nhello\r\n0\r\n\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"5\nhello\n0\n\n",
        ]
    ),
    st.binary(max_size=40),
)
requests = st.builds(
    lambda method, target, version, lines, body: (
        (f"{method} {target} {version}\r\n" + "".join(line + "\r\n" for line in lines) + "\r\n").encode(
            "latin-1"
        )
        + body
    ),
    st.sampled_from(["POST", "GET", "PUT", "post", "P OST"]),
    st.sampled_from(["/webhook", "/a b", "*", "/%zz", "/\x7f"]),
    st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.1 "]),
    st.lists(framing_lines, max_size=5),
    bodies,
)


def h11_first_request(data: bytes) -> bytes | None:
    """h11's reading of the first request: its body, or None when h11 refuses it (or it is incomplete)."""
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(data)
    body = b""
    try:
        while True:
            event = connection.next_event()
            if isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return body
            elif event is h11.NEED_DATA or event is h11.PAUSED:
                return None
    except h11.RemoteProtocolError:
        return None


def h11_refuses(data: bytes) -> bool:
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(data)
    try:
        while not isinstance(event := connection.next_event(), h11.EndOfMessage):
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return False
    except h11.RemoteProtocolError:
        return True
    return False


def llhttp_refuses(data: bytes) -> bool:
    """Plain httptools, its defaults: does it fail before the first request is complete?"""
    completed: list[bool] = []

    class Protocol:
        def on_message_complete(self) -> None:
            completed.append(True)

    try:
        httptools.HttpRequestParser(Protocol()).feed_data(data)
    except (httptools.HttpParserError, httptools.HttpParserUpgrade):
        return not completed
    return False


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=requests)
def test_what_h11_and_llhttp_both_refuse_is_refused(data: bytes) -> None:
    """And where the receiver and h11 both accept the first request, they read the same body from it."""
    found = targets.parse_stream(data, max(1, len(data)))
    first = found[0] if found else None
    if h11_refuses(data) and llhttp_refuses(data):
        assert first is not None and first[2] != 0, data
    if first is not None and first[2] == 0:
        h11_body = h11_first_request(data)
        assert h11_body is None or h11_body == first[1], data


@contextlib.contextmanager
def live_receiver(
    tmp_path: Path, pki: Pki
) -> Iterator[tuple[asyncio.AbstractEventLoop, Receiver, ssl.SSLContext]]:
    """A receiver on its own event loop, for hypothesis tests that drive it one example at a time.

    Idle and unfinished connections are closed after 2 s, so a client that reads until the close
    (bytes after a complete request are the start of another one, or empty lines) is not kept waiting;
    a body shorter than its Content-Length gets its 408 after 2 s too, within the client's wait.
    """
    path = tmp_path / "config.toml"
    short = "limits = { keepalive_timeout = 2, header_timeout = 2, body_timeout = 2 }\n"
    path.write_text(config_text(pki, listener_extra=short), encoding="utf-8")
    loop = asyncio.new_event_loop()
    receiver = Receiver(load_config(path))
    loop.run_until_complete(receiver.start())
    try:
        yield loop, receiver, client_context(pki, pki.client)
    finally:
        loop.run_until_complete(receiver.stop())
        loop.close()


def test_server_never_answers_5xx_to_raw_bytes(tmp_path: Path, pki: Pki) -> None:
    """Arbitrary bytes after the handshake, as the request itself: an answer below 500, or a close."""
    answered: list[bytes] = []

    async def send(receiver: Receiver, context: ssl.SSLContext, data: bytes) -> bytes:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", receiver.port(), ssl=context, server_hostname="localhost"
        )
        writer.write(data)
        await writer.drain()
        try:
            return await asyncio.wait_for(reader.read(), 10)
        finally:
            writer.close()

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        head=st.one_of(
            st.binary(max_size=200),
            header_lines.map(lambda lines: "\r\n".join(["POST /webhook/pix HTTP/1.1", *lines]).encode()),
        ),
        body=st.binary(max_size=100),
    )
    def one(head: bytes, body: bytes) -> None:
        raw = loop.run_until_complete(send(receiver, context, head + b"\r\n\r\n" + body + b"\r\n\r\n"))
        statuses = [int(s) for s in re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)]
        assert all(status < 500 for status in statuses), raw[:300]
        answered.append(raw)

    with live_receiver(tmp_path, pki) as (loop, receiver, context):
        one()
    assert sum(1 for raw in answered if raw.startswith(b"HTTP/1.1 4")) >= 10  # refusals were really produced


def test_server_never_answers_5xx_to_garbage(tmp_path: Path, pki: Pki) -> None:
    """Random paths, query strings, headers and bodies against a live receiver: always < 500."""
    statuses: list[int] = []

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        target=st.sampled_from(
            ["/webhook", "/webhook/pix", "/webhook?ignorar=/pix", "/webhook/rec", "/x"]
        ).flatmap(lambda base: st.text(alphabet="abc%/?=&;", max_size=10).map(lambda tail: base + tail)),
        body=st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode())),
        content_type=st.sampled_from(
            ["application/json", "text/plain", "application/x-www-form-urlencoded", ""]
        ),
        method=st.sampled_from(["POST", "POST", "GET", "PUT", "DELETE"]),
    )
    def one(target: str, body: bytes, content_type: str, method: str) -> None:
        headers = {"Content-Type": content_type} if content_type else {"X-None": "1"}
        answer = loop.run_until_complete(
            https_post(
                receiver.port(), target.replace(" ", "%20"), body, context, method=method, headers=headers
            )
        )
        statuses.append(answer.status)
        assert answer.status < 500, (target, body, answer)

    with live_receiver(tmp_path, pki) as (loop, receiver, context):
        one()
    assert len(statuses) >= 30  # hypothesis really drove the server
