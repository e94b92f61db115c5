"""PROXY protocol v1 (text) and v2 (binary): the real client address from a TCP load balancer.

Parsing is pure: :func:`bytes_needed` says how much more to read, :func:`parse_header`
reads a complete header. The header comes before the TLS handshake, so the listener
reads exactly the header bytes off the socket and leaves the ClientHello in place.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
from dataclasses import dataclass

from .errors import ReceiverError

__all__ = ["ProxyHeader", "ProxyProtocolError", "bytes_needed", "parse_header", "read_header"]

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
V1_MAX = 107
_V2_ADDRESS_SIZES = {0x1: 12, 0x2: 36, 0x3: 216}  # INET, INET6, UNIX


class ProxyProtocolError(ReceiverError):
    """The bytes are not a valid PROXY protocol header."""


@dataclass(frozen=True)
class ProxyHeader:
    """``source`` is the client's address; None for LOCAL/UNKNOWN (a health check by the proxy itself)."""

    version: int
    source: str | None
    source_port: int | None = None


def bytes_needed(buffer: bytes) -> int:
    """How many more bytes complete the header in ``buffer`` (0: complete). Raises on garbage early."""
    if len(buffer) < 8:
        prefix = buffer[: len(buffer)]
        if not (V2_SIGNATURE.startswith(prefix) or V1_PREFIX.startswith(prefix[:6])):
            raise ProxyProtocolError("not a PROXY protocol header")
        return 8 - len(buffer)
    if buffer.startswith(V2_SIGNATURE[:8]):
        if len(buffer) < 16:
            return 16 - len(buffer)
        _check_v2_prefix(buffer)
        length: int = struct.unpack("!H", buffer[14:16])[0]
        return 16 + length - len(buffer)
    if buffer.startswith(V1_PREFIX):
        if buffer.endswith(b"\r\n"):
            return 0
        if len(buffer) >= V1_MAX or b"\n" in buffer or b"\r" in buffer[:-1]:
            raise ProxyProtocolError("PROXY v1 line too long or not ended by CRLF")
        return 1
    raise ProxyProtocolError("not a PROXY protocol header")


def parse_header(buffer: bytes) -> ProxyHeader:
    """A complete header, as delimited by :func:`bytes_needed`."""
    if bytes_needed(buffer) != 0:
        raise ProxyProtocolError("incomplete PROXY protocol header")
    if buffer.startswith(V1_PREFIX):
        return _parse_v1(buffer)
    return _parse_v2(buffer)


def _parse_v1(buffer: bytes) -> ProxyHeader:
    try:
        fields = buffer[:-2].decode("ascii").split(" ")
    except UnicodeDecodeError:
        raise ProxyProtocolError("PROXY v1 header is not ASCII") from None
    if len(fields) >= 2 and fields[1] == "UNKNOWN":
        return ProxyHeader(version=1, source=None)
    if len(fields) != 6 or fields[1] not in ("TCP4", "TCP6"):
        raise ProxyProtocolError("PROXY v1 header must be 'PROXY TCP4|TCP6 SRC DST SPORT DPORT'")
    version = 4 if fields[1] == "TCP4" else 6
    try:
        source, destination = ipaddress.ip_address(fields[2]), ipaddress.ip_address(fields[3])
    except ValueError:
        raise ProxyProtocolError("PROXY v1 header has an invalid address") from None
    if source.version != version or destination.version != version:
        raise ProxyProtocolError(f"PROXY v1 {fields[1]} header with an address of another family")
    ports = fields[4:6]
    if not all(
        p.isascii() and p.isdigit() and int(p) < 65536 and (p == "0" or not p.startswith("0")) for p in ports
    ):
        raise ProxyProtocolError("PROXY v1 header has an invalid port")
    return ProxyHeader(version=1, source=str(source), source_port=int(ports[0]))


def _check_v2_prefix(buffer: bytes) -> None:
    if buffer[:12] != V2_SIGNATURE:
        raise ProxyProtocolError("bad PROXY v2 signature")
    if buffer[12] >> 4 != 2 or buffer[12] & 0x0F not in (0, 1):
        raise ProxyProtocolError("unsupported PROXY v2 version or command")


def _parse_v2(buffer: bytes) -> ProxyHeader:
    command, family = buffer[12] & 0x0F, buffer[13] >> 4
    if command == 0 or family == 0:  # LOCAL, or UNSPEC: the proxy speaking for itself
        return ProxyHeader(version=2, source=None)
    size = _V2_ADDRESS_SIZES.get(family)
    if size is None or len(buffer) - 16 < size:
        raise ProxyProtocolError("PROXY v2 address block is too short or of an unknown family")
    body = buffer[16:]
    if family == 0x1:
        return ProxyHeader(2, str(ipaddress.IPv4Address(body[:4])), struct.unpack("!H", body[8:10])[0])
    if family == 0x2:
        return ProxyHeader(2, str(ipaddress.IPv6Address(body[:16])), struct.unpack("!H", body[32:34])[0])
    return ProxyHeader(version=2, source=None)  # AF_UNIX: no IP to report


async def read_header(sock: socket.socket) -> ProxyHeader:
    """Read exactly one header off a non-blocking socket (callers bound it with a timeout)."""
    loop = asyncio.get_running_loop()
    buffer = b""
    while (missing := bytes_needed(buffer)) > 0:
        chunk = await loop.sock_recv(sock, missing)
        if not chunk:
            raise ProxyProtocolError("connection closed before the PROXY protocol header ended")
        buffer += chunk
    return parse_header(buffer)
