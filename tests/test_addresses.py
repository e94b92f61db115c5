"""Client addresses behind proxies, and PROXY protocol parsing (pure functions)."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from mtls_receiver.addresses import client_address, in_networks, parse_networks
from mtls_receiver.errors import Refusal
from mtls_receiver.proxy_protocol import V2_SIGNATURE, ProxyProtocolError, bytes_needed, parse_header

PROXIES = parse_networks(["10.0.0.0/8", "127.0.0.1/32", "fd00::/8"])


def test_untrusted_peer_headers_are_ignored() -> None:
    assert client_address("198.51.100.1", {"X-Forwarded-For": "34.193.116.226"}, PROXIES) == "198.51.100.1"
    assert client_address("198.51.100.1", {"Forwarded": "for=34.193.116.226"}, PROXIES) == "198.51.100.1"
    assert client_address("198.51.100.1", {"X-Forwarded-For": "not an ip"}, PROXIES) == "198.51.100.1"
    assert client_address("198.51.100.1", {"X-Forwarded-For": "34.193.116.226"}, ()) == "198.51.100.1"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, "10.0.0.1"),  # a trusted proxy speaking for itself
        ({"X-Forwarded-For": "203.0.113.9"}, "203.0.113.9"),
        ({"X-Forwarded-For": "1.1.1.1, 203.0.113.9, 10.0.0.2"}, "203.0.113.9"),  # forged left part skipped
        ({"X-Forwarded-For": "203.0.113.9:4711"}, "203.0.113.9"),
        ({"X-Forwarded-For": "[2001:db8::1]:4711, 10.9.9.9"}, "2001:db8::1"),
        ({"X-Forwarded-For": "::ffff:203.0.113.9"}, "203.0.113.9"),
        ({"X-Forwarded-For": "10.0.0.3, 10.0.0.2"}, "10.0.0.3"),  # all trusted: the left-most
        ({"Forwarded": 'for=192.0.2.60;proto=https;by=10.0.0.1, for="[2001:db8:cafe::17]:4711"'},
         "2001:db8:cafe::17"),
        ({"Forwarded": 'for="203.0.113.9:1234", for=10.0.0.2'}, "203.0.113.9"),
        ({"Forwarded": "For=unknown"}, "unknown"),
        ({"Forwarded": "for=203.0.113.9", "X-Forwarded-For": "1.1.1.1"}, "203.0.113.9"),  # RFC 7239 wins
    ],
)
def test_trusted_proxy_chain(headers: dict[str, str], expected: str) -> None:
    assert client_address("10.0.0.1", headers, PROXIES) == expected


def test_mapped_ipv6_peer_counts_as_ipv4() -> None:
    assert client_address("::ffff:10.0.0.1", {"X-Forwarded-For": "203.0.113.9"}, PROXIES) == "203.0.113.9"
    assert client_address("::ffff:198.51.100.1", {}, PROXIES) == "198.51.100.1"
    efi = parse_networks(["34.193.116.226/32"])
    assert in_networks("::ffff:34.193.116.226", efi) and not in_networks("34.193.116.227", efi)
    assert parse_networks(["::ffff:100.64.0.0/106"]) == (ipaddress.ip_network("100.64.0.0/10"),)
    assert not in_networks("garbage", efi)


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Forwarded-For": "203.0.113.9, bogus"},
        {"X-Forwarded-For": "[2001:db8::1"},
        {"X-Forwarded-For": ""},
        {"Forwarded": 'for="203.0.113.9'},
        {"Forwarded": "proto=https"},
        {"Forwarded": "for=203.0.113.9;;by"},
        {"Forwarded": "for=999.1.1.1"},
    ],
)
def test_malformed_headers_from_trusted_proxy_are_400(headers: dict[str, str]) -> None:
    with pytest.raises(Refusal) as caught:
        client_address("10.0.0.1", headers, PROXIES)
    assert caught.value.status == 400 and "malformed" in caught.value.reason


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
