"""What a configuration is: frozen dataclasses, validated by :mod:`.load` before anything listens.

A route's sender-specific settings are a :class:`ProviderOptions` that its provider defines
(``providers/``): this module names no sender.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..addresses import Network

__all__ = [
    "CLIENT_CERT_POLICIES",
    "TLS_VERSIONS",
    "BROKER_KINDS",
    "TEMPLATE_FIELDS",
    "AdminConfig",
    "BrokerConfig",
    "ClientPin",
    "Config",
    "Destination",
    "ForwardConfig",
    "HealthConfig",
    "Limits",
    "ListenerConfig",
    "ProviderOptions",
    "RefreshableKeys",
    "RelayConfig",
    "RouteConfig",
    "StoreConfig",
    "redact_dsn",
    "redact_userinfo",
]

CLIENT_CERT_POLICIES = ("required", "optional", "none")
TLS_VERSIONS = ("1.2", "1.3")


@dataclass(frozen=True)
class Limits:
    """What one listener tolerates before it refuses (defaults are safe for a public port 443)."""

    max_body: int = 1024 * 1024  # bytes -> 413
    max_headers: int = 64  # header lines -> 400
    max_header_size: int = 8190  # bytes per header line -> 400
    handshake_timeout: float = 10.0  # seconds for the PROXY header + TLS handshake
    header_timeout: float = 10.0  # seconds from handshake to a complete request head (slowloris)
    body_timeout: float = 30.0  # seconds to receive a body once the head is in -> 408
    keepalive_timeout: float = 15.0  # seconds an idle keep-alive connection stays open
    handling_timeout: float = 30.0  # seconds from a complete request to its answer (store, verify) -> 503
    max_connections: int = 2000  # open connections on the listener
    max_connections_per_ip: int = 100  # per client address (trusted proxies exempt)


@dataclass(frozen=True)
class ListenerConfig:
    """One TLS socket: where it listens, what it presents, whom it trusts."""

    name: str
    host: str
    port: int
    cert: Path
    key: Path
    client_certs: str = "required"
    client_ca: Path | None = None
    min_tls: str = "1.2"
    key_password: str | None = field(default=None, repr=False)
    trusted_proxies: tuple[Network, ...] = ()
    client_address_header: str | None = None  # the one header the trusted proxies write; None: PROXY only
    proxy_hops: int | None = None  # the address that many from the right; None: skip trusted proxies
    proxy_protocol: bool = False
    limits: Limits = Limits()

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class RefreshableKeys(Protocol):
    """Public keys a route fetches from its sender (``keysource.KeySource``): generic code only loads
    them at start and refreshes them when a signature matches none."""

    @property
    def description(self) -> str:
        """Where the keys come from (a URL or a file), for logs."""

    async def load(self) -> None:
        """Fetch them now; raises an exception naming the problem, keeping the keys already held."""

    async def refresh(self) -> bool:
        """Fetch them again if the rate limit allows; True when new keys arrived."""

    def observe(self, on_fetch: Callable[[bool], None]) -> None:
        """Call ``on_fetch`` after every fetch with whether it succeeded (the metrics count them)."""

    def inherit(self, previous: RefreshableKeys) -> None:
        """Start from the keys ``previous`` holds when it fetched from the same place (a reload)."""


@dataclass(frozen=True)
class ProviderOptions:
    """A route's sender-specific settings; each provider subclasses it as a frozen dataclass.

    The methods are all that generic code asks of them; the defaults fit a sender whose events are
    stored and answered at once, from any address unless the route lists some.
    """

    def sender_ips(self, mode: str) -> tuple[Network, ...]:
        """The route's ``allow_ips`` when it names none (empty: any address)."""
        return ()

    def relay(self) -> RelayConfig | None:
        """Where this route's synchronous requests are answered (relay.py); None: none are."""
        return None

    def describe(self) -> str:
        """What ``check-config`` adds to the route's line (never a secret)."""
        return ""

    def warnings(self) -> tuple[str, ...]:
        """What ``check-config`` warns about on this route: a weak or test-only setting it accepts."""
        return ()

    def key_sources(self) -> tuple[RefreshableKeys, ...]:
        """Public keys fetched from the sender, loaded by each worker before it listens."""
        return ()


@dataclass(frozen=True)
class ClientPin:
    """Which client certificates a route accepts beyond the listener's CA (``pinning.check_client_pin``).

    A CA proves the sender is the PSP, not which of the PSP's certificates: pinning narrows it to
    named subjects (exact, or a CN pattern) and/or certificate fingerprints. Each kind given must match.
    """

    subjects: tuple[str, ...] = ()  # exact RFC 4514 subjects, as ClientIdentity.subject renders them
    cn_patterns: tuple[str, ...] = ()  # CN patterns: ``*`` stands for one or more characters but a dot
    fingerprints: tuple[str, ...] = ()  # SHA-256 of the DER certificate, lowercase hex without colons

    def describe(self) -> str:
        """What ``check-config`` shows of the pin (nothing in it is secret)."""
        parts = [f"subject {subject}" for subject in self.subjects]
        parts += [f"CN {pattern}" for pattern in self.cn_patterns]
        parts += [f"sha256 {fingerprint}" for fingerprint in self.fingerprints]
        return "; ".join(parts)


@dataclass(frozen=True)
class RouteConfig:
    """A webhook path on a listener, served by one provider's verifier."""

    path: str
    listener: str
    provider: str
    mode: str
    allow_ips: tuple[Network, ...] = ()  # empty: any address
    tolerance: int | None = None  # timestamp tolerance in seconds; None: the provider's default
    options: ProviderOptions = ProviderOptions()  # what the provider reads beyond the keys above
    forward: Destination | None = None  # overrides [forward] for this route
    client_pin: ClientPin | None = None  # the client certificates accepted; None: any the CA verified

    @property
    def relay(self) -> RelayConfig | None:
        return self.options.relay()


@dataclass(frozen=True)
class RelayConfig:
    """Where synchronous requests are answered, and what to answer when the application is late."""

    url: str
    deadline: float = 2.5
    timeout_status: int = 200
    timeout_body: str = ""  # the provider's parser supplies its sender's rejection


BROKER_KINDS = ("rabbitmq", "nats", "redis")
TEMPLATE_FIELDS = ("type", "provider", "kind")  # what a routing key, subject or stream name may contain


@dataclass(frozen=True)
class BrokerConfig:
    """A message broker named in ``[[destinations]]``: where on it each event is published.

    ``routing_key`` (RabbitMQ), ``subject`` (NATS) and ``stream`` (Redis) are templates over
    :data:`TEMPLATE_FIELDS` (``"payments.{type}"``); the other fields are the broker's own.
    """

    name: str
    kind: str  # one of BROKER_KINDS
    url: str = field(repr=False)  # may carry a password
    declare: bool = False  # create what is published to (durable), if missing
    exchange: str = ""  # RabbitMQ: "" is the default exchange (routing key = queue name)
    exchange_type: str = "topic"  # RabbitMQ, when declared
    routing_key: str = ""  # RabbitMQ
    queue: str | None = None  # RabbitMQ: a durable queue declared and bound with binding_key
    binding_key: str = "#"  # RabbitMQ
    subject: str = ""  # NATS
    stream: str = ""  # NATS: the JetStream stream declared (optional); Redis: the stream written to
    stream_subjects: tuple[str, ...] = ()  # NATS, when the stream is declared
    maxlen: int | None = None  # Redis: XADD MAXLEN ~ cap

    def target(self, fields: dict[str, str]) -> str:
        """Where one event goes: the routing key, subject or stream with its fields filled in."""
        template = {"rabbitmq": self.routing_key, "nats": self.subject, "redis": self.stream}[self.kind]
        return template.format_map(fields)

    def describe(self) -> str:
        where = {
            "rabbitmq": f"exchange {self.exchange!r} routing key {self.routing_key!r}",
            "nats": f"subject {self.subject!r}",
            "redis": f"stream {self.stream!r}",
        }[self.kind]
        return f"{self.kind} {self.name!r} at {redact_userinfo(self.url)}, {where}"


@dataclass(frozen=True)
class Destination:
    """Where accepted events go: an HTTP URL (signed deliveries), a Python ``module:function``,
    or a message broker (signed messages)."""

    url: str | None = None
    handler: str | None = None
    broker: BrokerConfig | None = None

    def describe(self) -> str:
        if self.broker is not None:
            return self.broker.describe()
        return redact_userinfo(self.url) if self.url else f"handler {self.handler}"

    @property
    def label(self) -> str:
        """The destination's name in metrics: the broker's name, the URL (no password) or the handler."""
        if self.broker is not None:
            return self.broker.name
        return redact_userinfo(self.url) if self.url else f"handler {self.handler}"

    @property
    def signed(self) -> bool:
        """Deliveries carry the Standard Webhooks headers (a handler gets the envelope alone)."""
        return self.handler is None


@dataclass(frozen=True)
class ForwardConfig:
    """Delivery to the merchant's application: destination, signing secrets, retry policy."""

    default: Destination | None = None
    secrets: tuple[str, ...] = field(default=(), repr=False)  # Standard Webhooks "whsec_..." secrets
    concurrency: int = 4
    timeout: float = 10.0
    max_attempts: int = 15
    max_age: float = 3 * 86400.0
    backoff_base: float = 2.0
    backoff_max: float = 600.0


@dataclass(frozen=True)
class AdminConfig:
    """The plain-HTTP admin listener (/metrics, /healthz, /readyz and the operator console at /):
    loopback by default; anywhere else the console requires ``token``."""

    host: str = "127.0.0.1"
    port: int = 9464
    enabled: bool = True
    token: str | None = field(default=None, repr=False)  # the console's token (from env or a file)
    token_source: str = ""  # where it comes from, ``env:NAME`` or ``file:/path``: what may be shown

    @property
    def loopback(self) -> bool:
        """Only this machine can reach the listener (``localhost`` or a loopback address)."""
        return is_loopback(self.host)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class HealthConfig:
    """How the supervisor of ``workers >= 2`` watches its workers, and when it replaces one.

    Generous defaults: a worker that is merely busy answers a heartbeat from its event loop
    within milliseconds, so only a hung one (stopped, deadlocked, spinning) stays silent for long.
    """

    heartbeat_interval: float = 2.0  # seconds between heartbeats to each worker (and its write probes)
    hung_after: float = 20.0  # a worker that answers no heartbeat for this long is killed and replaced
    unready_after: float = 30.0  # ... one that cannot commit for this long, while the supervisor can


@dataclass(frozen=True)
class StoreConfig:
    """Where events and audit rows go: a SQLite file (default) or a shared PostgreSQL database."""

    path: Path | None = None
    url: str | None = field(default=None, repr=False)  # postgresql://... (may carry a password)
    commit_delay: float = 0.001  # the most a group commit waits for the writes it expects (group_commit)
    audit_retention_days: int = 30  # audit rows older than this are purged in the background (store/audit.py)

    @property
    def description(self) -> str:
        return f"SQLite {self.path}" if self.url is None else f"PostgreSQL {redact_dsn(self.url)}"


def redact_userinfo(url: str) -> str:
    """A URL without what comes before its host's ``@``: a password, or a token in the user place
    (a NATS token, ``https://TOKEN@host``); an ``@`` inside the password hides nothing."""
    return re.sub(r"^([a-z][a-z0-9+.-]*://)[^/?#]*@", r"\1***@", url)


def redact_dsn(dsn: str) -> str:
    """A database URL without its password (in the authority, or libpq's ``?password=``), for messages
    and logs."""
    shown = re.sub(r"(//[^:/?#@]+):[^/?#]*@", r"\1:***@", dsn)
    return re.sub(r"([?&](?:ssl)?password=)[^&#]*", r"\1***", shown)


@dataclass(frozen=True)
class Config:
    source: Path
    listeners: tuple[ListenerConfig, ...]
    routes: tuple[RouteConfig, ...]
    store: StoreConfig
    forward: ForwardConfig = ForwardConfig()
    admin: AdminConfig = AdminConfig()
    health: HealthConfig = HealthConfig()
    workers: int = 1  # processes serving the listeners; the file's default is the number of cores

    def destination(self, route_path: str) -> Destination | None:
        """Where events of the route at ``route_path`` are forwarded, if anywhere."""
        route = next((r for r in self.routes if r.path == route_path and r.forward), None)
        return route.forward if route else self.forward.default

    def listener_key(self, name: str) -> str:
        """The config key of a listener, ``listeners[N]``, for error messages."""
        return f"listeners[{[item.name for item in self.listeners].index(name)}]"

    def routes_for(self, listener: str) -> tuple[RouteConfig, ...]:
        return tuple(route for route in self.routes if route.listener == listener)
