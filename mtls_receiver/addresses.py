"""Client addresses: parsing, allowlists, and the one proxy header trusted only from trusted proxies.

Pure functions. IPv4-mapped IPv6 addresses (``::ffff:a.b.c.d``, which PaaS proxies
report) are folded to IPv4 everywhere so allowlists written in IPv4 match them.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Sequence

from .errors import Refusal

__all__ = [
    "CLIENT_ADDRESS_HEADERS",
    "Network",
    "canonical_ip",
    "client_address",
    "combined_field",
    "in_networks",
    "normalize_ip",
    "parse_networks",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# The headers a trusted proxy can be named to write, spelled as the config and messages spell them.
CLIENT_ADDRESS_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP")

_FORWARDED_PAIR = re.compile(
    r'\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)=("(?:[^"\\]|\\.)*"|[!#$%&\'*+.^_`|~0-9A-Za-z:\[\]-]*)\s*'
)


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
        if (
            isinstance(network, ipaddress.IPv6Network)
            and network.network_address.ipv4_mapped
            and network.prefixlen >= 96
        ):
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


def client_address(
    peer: str,
    header_lines: Iterable[tuple[str, str]],
    trusted_proxies: Sequence[Network],
    header: str | None = None,
    hops: int | None = None,
) -> str:
    """The sender's address: the TCP peer (or PROXY-protocol source) unless it is a trusted proxy.

    From a trusted proxy, only ``header`` is read: the one header that proxy writes (one of
    CLIENT_ADDRESS_HEADERS). Every other client-address header is ignored, because a proxy
    passes on what it does not write: nginx appends to ``X-Forwarded-For`` but forwards the
    client's own ``Forwarded`` untouched, so reading any header the proxy does not own lets
    the client choose its address. Repeated lines of ``header`` are combined in order (RFC 9110
    field-line combination) and read right to left, since a proxy appends, and the right end
    is the part written by the proxies nearest to us: with ``hops`` the ``hops``-th address
    from the right (Werkzeug's ``ProxyFix(x_for=N)``), else the first that is not itself a
    trusted proxy (uvicorn's ``forwarded_allow_ips``). A malformed header is a 400.
    """
    peer = canonical_ip(peer)
    if header is None or not trusted_proxies or not in_networks(peer, trusted_proxies):
        return peer
    combined = combined_field(header_lines, header)
    if combined is None:
        return peer  # the proxy speaking for itself (a health check)
    chain = _hop_chain(header, combined)
    if hops is not None:
        if len(chain) < hops:
            raise Refusal(
                400,
                f"malformed {header} header: {len(chain)} address(es), "
                f"the listener expects proxy_hops = {hops}",
            )
        return chain[-hops]
    for hop in reversed(chain):
        if not in_networks(hop, trusted_proxies):
            return hop
    return chain[0]


def combined_field(header_lines: Iterable[tuple[str, str]], name: str) -> str | None:
    """All lines of one header joined with ", " in order (RFC 9110 section 5.3), or None when absent."""
    wanted = name.lower()
    values = [value for key, value in header_lines if key.lower() == wanted]
    return ", ".join(values) if values else None


def _hop_chain(header: str, combined: str) -> list[str]:
    """The addresses a header lists, left (farthest from us) to right (nearest)."""
    if header == "Forwarded":
        return [_forwarded_for(element) for element in _split_outside_quotes(combined, ",")]
    parts = combined.split(",")
    if header == "X-Real-IP" and len(parts) != 1:
        raise Refusal(400, "malformed X-Real-IP header: more than one address")
    return [_hop_address(part, header) for part in parts]


@functools.lru_cache(maxsize=4096)
def canonical_ip(text: str) -> str:
    """The normalized text of an address, or the text unchanged when it is not an address (cached:
    it runs for every connection and request, and senders come from few addresses)."""
    try:
        return str(normalize_ip(text))
    except ValueError:
        return text


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
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
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
