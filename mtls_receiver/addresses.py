"""Client addresses: parsing, allowlists, and proxy headers trusted only from trusted proxies.

Pure functions. IPv4-mapped IPv6 addresses (``::ffff:a.b.c.d``, which PaaS proxies
report) are folded to IPv4 everywhere so allowlists written in IPv4 match them.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence

from .errors import Refusal

__all__ = ["Network", "canonical_ip", "client_address", "in_networks", "normalize_ip", "parse_networks"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_FORWARDED_PAIR = re.compile(r'\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)=("(?:[^"\\]|\\.)*"|[!#$%&\'*+.^_`|~0-9A-Za-z:\[\]-]*)\s*')


def normalize_ip(text: str) -> IPAddress:
    """Parse an address; ``::ffff:a.b.c.d`` becomes ``a.b.c.d``. Raises ValueError."""
    address = ipaddress.ip_address(text.strip())
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_networks(items: Iterable[str]) -> tuple[Network, ...]:
    """CIDRs (or single addresses) into networks; mapped IPv6 networks fold to IPv4. Raises ValueError."""
    networks: list[Network] = []
    for item in items:
        network = ipaddress.ip_network(item.strip(), strict=False)
        if isinstance(network, ipaddress.IPv6Network) and network.network_address.ipv4_mapped and network.prefixlen >= 96:
            network = ipaddress.ip_network(f"{network.network_address.ipv4_mapped}/{network.prefixlen - 96}")
        networks.append(network)
    return tuple(networks)


def in_networks(address: str, networks: Sequence[Network]) -> bool:
    """True when ``address`` parses and lies in one of ``networks`` (anything unparsable is outside)."""
    try:
        ip = normalize_ip(address)
    except ValueError:
        return False
    return any(ip.version == net.version and ip in net for net in networks)


def client_address(peer: str, headers: Mapping[str, str], trusted_proxies: Sequence[Network]) -> str:
    """The sender's address: the TCP peer unless it is a trusted proxy.

    Behind trusted proxies, ``Forwarded`` (RFC 7239) or else ``X-Forwarded-For`` is read
    right to left and the first hop that is not itself a trusted proxy wins. Headers from
    any other peer are ignored, so a forged ``X-Forwarded-For`` changes nothing.
    """
    peer = canonical_ip(peer)
    if not trusted_proxies or not in_networks(peer, trusted_proxies):
        return peer
    hops = _forwarded_hops(headers)
    for hop in reversed(hops):
        if not in_networks(hop, trusted_proxies):
            return hop
    return hops[0] if hops else peer


@functools.lru_cache(maxsize=4096)
def canonical_ip(text: str) -> str:
    """The normalized text of an address, or the text unchanged when it is not an address (cached:
    it runs for every connection and request, and senders come from few addresses)."""
    try:
        return str(normalize_ip(text))
    except ValueError:
        return text


def _forwarded_hops(headers: Mapping[str, str]) -> list[str]:
    forwarded = _header(headers, "forwarded")
    if forwarded is not None:
        return [_forwarded_for(element) for element in _split_outside_quotes(forwarded, ",")]
    xff = _header(headers, "x-forwarded-for")
    if xff is None:
        return []
    return [_hop_address(part, "X-Forwarded-For") for part in xff.split(",")]


def _header(headers: Mapping[str, str], name: str) -> str | None:
    values = [value for key, value in headers.items() if key.lower() == name]
    return ", ".join(values) if values else None


def _forwarded_for(element: str) -> str:
    """The ``for=`` of one Forwarded element; ``unknown``/obfuscated names stay as they are."""
    found = None
    for pair in _split_outside_quotes(element, ";"):
        if not pair.strip():
            continue
        match = _FORWARDED_PAIR.fullmatch(pair)
        if match is None:
            raise Refusal(400, "malformed Forwarded header")
        if match.group(1).lower() == "for":
            found = match.group(2)
    if found is None:
        raise Refusal(400, "malformed Forwarded header: an element without for=")
    value = found[1:-1].replace('\\"', '"') if found.startswith('"') else found
    if value.lower() == "unknown" or value.startswith("_"):
        return value
    return _hop_address(value, "Forwarded")


def _hop_address(text: str, header: str) -> str:
    """``1.2.3.4``, ``1.2.3.4:80``, ``2001:db8::1``, ``[2001:db8::1]:80`` → canonical address."""
    text = text.strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not re.fullmatch(r":\d{1,5}", rest)):
            raise Refusal(400, f"malformed {header} header")
        text = host
    elif text.count(":") == 1:
        text, _, port = text.partition(":")
        if not port.isdigit():
            raise Refusal(400, f"malformed {header} header")
    try:
        return str(normalize_ip(text))
    except ValueError:
        raise Refusal(400, f"malformed {header} header: {text[:45]!r} is not an IP address") from None


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    parts, current, quoted, escaped = [], [], False, False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    if quoted:
        raise Refusal(400, "malformed Forwarded header: unbalanced quotes")
    parts.append("".join(current))
    return parts
