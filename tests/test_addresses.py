"""Client addresses behind proxies (the listener keys, the pure function), and PROXY protocol parsing."""

from __future__ import annotations

import ipaddress
import struct
from pathlib import Path
from typing import Any

import pytest
from test_config import base_doc, config_error, write_config

from mtls_receiver.addresses import client_address, in_networks, parse_networks
from mtls_receiver.config import Limits, load_config
from mtls_receiver.devcerts import DevCerts, make_dev_certs
from mtls_receiver.errors import Refusal
from mtls_receiver.http11 import RequestParser
from mtls_receiver.proxy_protocol import V2_SIGNATURE, ProxyProtocolError, bytes_needed, parse_header

PROXIES = parse_networks(["10.0.0.0/8", "127.0.0.1/32", "fd00::/8"])
XFF, FWD, REAL = "X-Forwarded-For", "Forwarded", "X-Real-IP"
Lines = list[tuple[str, str]]


def address(lines: Lines, header: str | None = XFF, hops: int | None = None, peer: str = "10.0.0.1") -> str:
    return client_address(peer, lines, PROXIES, header, hops)


def test_untrusted_peer_headers_are_ignored() -> None:
    for header in (XFF, FWD, REAL):
        forged = [(XFF, "34.193.116.226"), (FWD, "for=34.193.116.226"), (REAL, "34.193.116.226")]
        assert address(forged, header, peer="198.51.100.1") == "198.51.100.1"
    assert address([(XFF, "not an ip")], peer="198.51.100.1") == "198.51.100.1"
    assert client_address("198.51.100.1", [(XFF, "34.193.116.226")], (), XFF) == "198.51.100.1"


def test_no_header_named_means_the_peer() -> None:
    """A PROXY-protocol-only listener: no header is believed, even from a trusted proxy."""
    forged = [(XFF, "34.193.116.226"), (FWD, "for=34.193.116.226"), (REAL, "34.193.116.226")]
    assert address(forged, header=None) == "10.0.0.1"


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([], "10.0.0.1"),  # a trusted proxy speaking for itself
        ([(XFF, "203.0.113.9")], "203.0.113.9"),
        ([(XFF, "1.1.1.1, 203.0.113.9, 10.0.0.2")], "203.0.113.9"),  # forged left part skipped
        ([(XFF, "203.0.113.9:4711")], "203.0.113.9"),
        ([(XFF, "[2001:db8::1]:4711, 10.9.9.9")], "2001:db8::1"),
        ([(XFF, "::ffff:203.0.113.9")], "203.0.113.9"),
        ([(XFF, "10.0.0.3, 10.0.0.2")], "10.0.0.3"),  # all trusted: the left-most
        ([("x-forwarded-for", "203.0.113.9")], "203.0.113.9"),  # names are case-insensitive
    ],
)
def test_x_forwarded_for_right_to_left(lines: Lines, expected: str) -> None:
    assert address(lines) == expected


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        # HAProxy `option forwardfor` adds its own line after the client's forged one
        ([(XFF, "34.193.116.226"), (XFF, "203.0.113.9")], "203.0.113.9"),
        ([(XFF, "34.193.116.226, 1.1.1.1"), ("Host", "x"), (XFF, "203.0.113.9, 10.0.0.2")], "203.0.113.9"),
        ([(XFF, "203.0.113.9"), (XFF, "10.0.0.2")], "203.0.113.9"),  # a trusted hop on its own line
    ],
)
def test_repeated_lines_are_combined_in_order(lines: Lines, expected: str) -> None:
    assert address(lines) == expected


@pytest.mark.parametrize(
    ("lines", "header", "expected"),
    [  # the client's own Forwarded / X-Real-IP / X-Forwarded-For, passed on by a proxy that writes another
        ([(FWD, "for=34.193.116.226"), (XFF, "203.0.113.9")], XFF, "203.0.113.9"),
        ([(REAL, "34.193.116.226"), (XFF, "203.0.113.9")], XFF, "203.0.113.9"),
        ([(XFF, "34.193.116.226"), (REAL, "203.0.113.9")], REAL, "203.0.113.9"),
        ([(FWD, "for=34.193.116.226"), (REAL, "203.0.113.9")], REAL, "203.0.113.9"),
        ([(XFF, "34.193.116.226"), (FWD, "for=203.0.113.9")], FWD, "203.0.113.9"),
        ([(XFF, "34.193.116.226")], FWD, "10.0.0.1"),  # the named header absent: the proxy itself
    ],
)
def test_only_the_named_header_counts(lines: Lines, header: str, expected: str) -> None:
    assert address(lines, header) == expected


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (
            [(FWD, 'for=192.0.2.60;proto=https;by=10.0.0.1, for="[2001:db8:cafe::17]:4711"')],
            "2001:db8:cafe::17",
        ),
        ([(FWD, 'for="203.0.113.9:1234", for=10.0.0.2')], "203.0.113.9"),
        ([(FWD, "For=unknown")], "unknown"),
        ([(FWD, "for=34.193.116.226"), (FWD, "for=203.0.113.9;proto=https")], "203.0.113.9"),
    ],
)
def test_forwarded_right_to_left(lines: Lines, expected: str) -> None:
    assert address(lines, FWD) == expected


@pytest.mark.parametrize(
    ("lines", "header", "hops", "expected"),
    [
        ([(XFF, "1.1.1.1, 203.0.113.9, 10.0.0.2")], XFF, 1, "10.0.0.2"),  # counted, trusted or not
        ([(XFF, "1.1.1.1, 203.0.113.9, 10.0.0.2")], XFF, 2, "203.0.113.9"),
        ([(XFF, "34.193.116.226"), (XFF, "203.0.113.9, 198.51.100.7")], XFF, 2, "203.0.113.9"),
        ([(FWD, "for=34.193.116.226, for=203.0.113.9")], FWD, 1, "203.0.113.9"),
        ([(REAL, "203.0.113.9")], REAL, 1, "203.0.113.9"),
    ],
)
def test_proxy_hops_counts_from_the_right(lines: Lines, header: str, hops: int, expected: str) -> None:
    assert address(lines, header, hops) == expected


def test_request_head_keeps_every_header_line() -> None:
    """client_address needs all lines of a header; the head's dict keeps only the first per name."""
    parser = RequestParser(Limits())
    parser.feed(
        b"POST /webhook HTTP/1.1\r\nX-Forwarded-For: 34.193.116.226\r\nHost: x\r\n"
        b"x-forwarded-for: 203.0.113.9 \r\nContent-Length: 0\r\n\r\n"
    )
    parsed = parser.next()
    assert parsed is not None and parsed.head is not None
    head = parsed.head
    assert head.raw_headers == (
        ("X-Forwarded-For", "34.193.116.226"),
        ("Host", "x"),
        ("x-forwarded-for", "203.0.113.9"),
        ("Content-Length", "0"),
    )
    assert client_address("10.0.0.1", head.raw_headers, PROXIES, XFF) == "203.0.113.9"


def test_mapped_ipv6_peer_counts_as_ipv4() -> None:
    assert address([(XFF, "203.0.113.9")], peer="::ffff:10.0.0.1") == "203.0.113.9"
    assert address([], peer="::ffff:198.51.100.1") == "198.51.100.1"
    efi = parse_networks(["34.193.116.226/32"])
    assert in_networks("::ffff:34.193.116.226", efi) and not in_networks("34.193.116.227", efi)
    assert parse_networks(["::ffff:100.64.0.0/106"]) == (ipaddress.ip_network("100.64.0.0/10"),)
    assert not in_networks("garbage", efi)


@pytest.mark.parametrize(
    ("lines", "header", "hops"),
    [
        ([(XFF, "203.0.113.9, bogus")], XFF, None),
        ([(XFF, "[2001:db8::1")], XFF, None),
        ([(XFF, "")], XFF, None),
        ([(XFF, "203.0.113.9"), (XFF, "")], XFF, None),  # an empty line is an empty element
        ([(XFF, "203.0.113.9:http")], XFF, None),
        ([(XFF, "203.0.113.9")], XFF, 2),  # fewer addresses than the hops the listener expects
        ([(FWD, 'for="203.0.113.9')], FWD, None),
        ([(FWD, "proto=https")], FWD, None),
        ([(FWD, "for=203.0.113.9;;by")], FWD, None),
        ([(FWD, "for=999.1.1.1")], FWD, None),
        ([(FWD, "for=203.0.113.9"), (FWD, 'for="[2001:db8::1"')], FWD, None),
        ([(REAL, "203.0.113.9, 198.51.100.7")], REAL, None),
        ([(REAL, "203.0.113.9"), (REAL, "198.51.100.7")], REAL, None),  # two lines: which one?
        ([(REAL, "\x1b[31m")], REAL, None),
    ],
)
def test_malformed_headers_from_trusted_proxy_are_400(lines: Lines, header: str, hops: int | None) -> None:
    with pytest.raises(Refusal) as caught:
        address(lines, header, hops)
    assert caught.value.status == 400 and "malformed" in caught.value.reason
    assert "\x1b" not in caught.value.reason


# --- the listener keys ------------------------------------------------------------------------------


@pytest.fixture
def dev(tmp_path: Path) -> DevCerts:
    return make_dev_certs(tmp_path, 8443)


def _listener(**keys: Any) -> dict[str, Any]:
    doc = base_doc()
    doc["listeners"][0].update(keys)
    return doc


@pytest.mark.parametrize(
    ("keys", "key", "problem"),
    [
        (
            {"trusted_proxies": ["127.0.0.1/32"]},
            "trusted_proxies",
            "needs client_address_header: the one header your proxy writes ('X-Forwarded-For', 'Forwarded', "
            "'X-Real-IP'), or proxy_protocol = true",
        ),
        (
            {"client_address_header": "X-Forwarded-For"},
            "client_address_header",
            "needs trusted_proxies: the addresses of the proxies that write it",
        ),
        (
            {"trusted_proxies": ["127.0.0.1/32"], "client_address_header": "X-Forwarded"},
            "client_address_header",
            "must be one of 'X-Forwarded-For', 'Forwarded', 'X-Real-IP', got 'X-Forwarded'",
        ),
        (
            {"trusted_proxies": ["127.0.0.1/32"], "client_address_header": ["Forwarded"]},
            "client_address_header",
            "must be a string",
        ),
        (
            {"trusted_proxies": ["127.0.0.1/32"], "proxy_protocol": True, "proxy_hops": 1},
            "proxy_hops",
            "needs client_address_header: the header whose addresses it counts",
        ),
        (
            {
                "trusted_proxies": ["127.0.0.1/32"],
                "client_address_header": "X-Forwarded-For",
                "proxy_hops": 0,
            },
            "proxy_hops",
            "must be a whole number >= 1, got 0",
        ),
        (
            {"trusted_proxies": ["127.0.0.1/32"], "client_address_header": "X-Real-IP", "proxy_hops": 2},
            "proxy_hops",
            "X-Real-IP holds one address: proxy_hops can only be 1",
        ),
    ],
)
def test_listener_key_errors(
    dev: DevCerts, tmp_path: Path, keys: dict[str, Any], key: str, problem: str
) -> None:
    error = config_error(write_config(tmp_path, _listener(**keys)))
    assert error.key == f"listeners[0].{key}"
    assert problem in error.problem


def test_listener_keys_load(dev: DevCerts, tmp_path: Path) -> None:
    loaded = load_config(
        write_config(
            tmp_path,
            _listener(
                trusted_proxies=["127.0.0.1/32"], client_address_header="x-forwarded-for", proxy_hops=2
            ),
        )
    )
    listener = loaded.listeners[0]
    assert (listener.client_address_header, listener.proxy_hops) == ("X-Forwarded-For", 2)
    only_proxy_protocol = load_config(
        write_config(tmp_path, _listener(trusted_proxies=["127.0.0.1/32"], proxy_protocol=True))
    )
    assert only_proxy_protocol.listeners[0].client_address_header is None


# --- PROXY protocol ----------------------------------------------------------------------------


def v2(source: str, port: int = 1234, command: int = 1, tlv: bytes = b"") -> bytes:
    ip = ipaddress.ip_address(source)
    family = 0x11 if ip.version == 4 else 0x21
    dest = ipaddress.ip_address("10.0.0.1" if ip.version == 4 else "fd00::1")
    body = ip.packed + dest.packed + struct.pack("!HH", port, 443) + tlv
    return V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(body)) + body


def test_v1_headers() -> None:
    assert parse_header(b"PROXY TCP4 203.0.113.7 10.0.0.1 56324 443\r\n").source == "203.0.113.7"
    header = parse_header(b"PROXY TCP6 2001:db8::7 fd00::1 56324 443\r\n")
    assert (header.version, header.source, header.source_port) == (1, "2001:db8::7", 56324)
    assert parse_header(b"PROXY UNKNOWN\r\n").source is None


def test_v2_headers() -> None:
    assert parse_header(v2("203.0.113.7")).source == "203.0.113.7"
    assert parse_header(v2("2001:db8::7", tlv=b"\x04\x00\x01x")).source == "2001:db8::7"
    assert parse_header(v2("203.0.113.7", command=0)).source is None  # LOCAL: a health check


def test_bytes_needed_reads_exactly_the_header() -> None:
    header = v2("203.0.113.7")
    assert bytes_needed(b"") == 8 and bytes_needed(header[:8]) == 8
    assert bytes_needed(header[:16]) == len(header) - 16 and bytes_needed(header) == 0
    assert bytes_needed(b"PROXY TCP4 1") == 1


@pytest.mark.parametrize(
    "data",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc",  # a TLS ClientHello: no header was sent
        b"GET / HTTP/1.1\r\n",
        b"PROXY TCP4 203.0.113.7 10.0.0.1 56324\r\n",
        b"PROXY TCP4 2001:db8::7 10.0.0.1 1 443\r\n",
        b"PROXY TCP4 203.0.113.7 10.0.0.1 1 65536\r\n",
        b"PROXY TCP5 203.0.113.7 10.0.0.1 1 443\r\n",
        b"PROXY " + b"1" * 120,
        V2_SIGNATURE + b"\x31\x11\x00\x0c" + bytes(12),  # version 3
        V2_SIGNATURE + b"\x21\x11\x00\x04" + bytes(4),  # address block too short
        V2_SIGNATURE + b"\x21\x51\x00\x0c" + bytes(12),  # unknown family
    ],
)
def test_malformed_proxy_headers(data: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        parse_header(data)
