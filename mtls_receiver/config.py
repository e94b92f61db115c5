"""The TOML configuration, loaded into frozen dataclasses and validated up front.

Every problem is reported as a :class:`ConfigError` naming the file, the key
(``listeners[0].cert``) and what is wrong, before anything listens.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .addresses import CLIENT_ADDRESS_HEADERS, Network, parse_networks
from .errors import ConfigError
from .signatures import SIGNED_PARTS, SignatureScheme, decode_secret

__all__ = [
    "CLIENT_CERT_POLICIES",
    "Config",
    "AdminConfig",
    "Destination",
    "Limits",
    "ForwardConfig",
    "HealthConfig",
    "ListenerConfig",
    "RelayConfig",
    "RouteConfig",
    "StoreConfig",
    "load_config",
    "parse_config",
]

CLIENT_CERT_POLICIES = ("required", "optional", "none")
TLS_VERSIONS = ("1.2", "1.3")
PROVIDER_MODES: dict[str, tuple[str, ...]] = {
    "efi": ("mtls", "skip-mtls"),
    "infi": ("hmac",),
    "pomelo": ("notifications", "authorizations"),
    "firebanking": ("hmac",),
    "hmac": ("hmac",),
}
EFI_SENDER_IPS = ("34.193.116.226/32",)  # Efí staff: deliveries come only from this address
POMELO_SENDER_IPS = {
    "production": ("34.206.159.176/32", "52.0.20.124/32", "35.84.78.117/32", "52.43.46.111/32"),
    "staging": ("34.226.254.178/32", "44.198.3.59/32", "34.223.185.46/32", "100.20.205.117/32"),
}
FIREBANKING_FAMILIES = ("pix", "bankslip", "card", "onboarding")
DEFAULT_TIMEOUT_BODY = '{"status":"REJECTED","status_detail":"SYSTEM_ERROR","message":"no answer in time"}'

MIN_HMAC_SECRET_LENGTH = 16


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


@dataclass(frozen=True)
class RouteConfig:
    """A webhook path on a listener, served by one provider's verifier."""

    path: str
    listener: str
    provider: str
    mode: str
    allow_ips: tuple[Network, ...] = ()  # empty: any address
    tolerance: int | None = None  # timestamp tolerance in seconds; None: the provider's default
    pix_keys: tuple[str, ...] = ()  # efi
    hmac_secrets: tuple[str, ...] = field(default=(), repr=False)  # efi: the URL's hmac value
    secrets: tuple[str, ...] = field(default=(), repr=False)  # infi, firebanking, hmac: signing secrets
    api_keys: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # pomelo: (api key, api secret)
    families: tuple[str, ...] = ()  # firebanking
    signature: SignatureScheme | None = None  # hmac: how the sender signs
    dedup: tuple[str, ...] = ()  # hmac: JSON pointers or "header:Name", joined into the dedup key
    event: str | None = None  # hmac: JSON pointer or "header:Name" naming the event type
    relay: RelayConfig | None = None  # pomelo authorizations: the application that answers
    forward: Destination | None = None  # overrides [forward] for this route


@dataclass(frozen=True)
class RelayConfig:
    """Where synchronous requests are answered, and what to answer when the application is late."""

    url: str
    deadline: float = 2.5
    timeout_status: int = 200
    timeout_body: str = DEFAULT_TIMEOUT_BODY


@dataclass(frozen=True)
class Destination:
    """Where accepted events go: an HTTP URL (signed deliveries) or a Python ``module:function``."""

    url: str | None = None
    handler: str | None = None

    def describe(self) -> str:
        return self.url or f"handler {self.handler}"


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
    """The plain-HTTP admin listener (/metrics, /healthz, /readyz): loopback by default."""

    host: str = "127.0.0.1"
    port: int = 9464
    enabled: bool = True


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


def redact_dsn(dsn: str) -> str:
    """A database URL without its password, for messages and logs."""
    return re.sub(r"(//[^:/@]+):[^@]*@", r"\1:***@", dsn)


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


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a TOML file; raise ConfigError naming what is wrong."""
    source = Path(path)
    try:
        raw = tomllib.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(str(source), "", "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(source), "", f"cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(source), "", f"not valid TOML: {exc}") from None
    return parse_config(raw, source)


def parse_config(raw: Mapping[str, Any], source: Path) -> Config:
    """Validate an already-parsed TOML document; paths are relative to ``source``."""
    reader = _Reader(source)
    reader.only_keys(raw, "", {"workers", "listeners", "routes", "store", "forward", "admin", "health"})
    workers = reader.integer(raw, "", "workers", default=os.cpu_count() or 1, minimum=1)
    listeners = tuple(
        _listener(reader, item, f"listeners[{i}]")
        for i, item in enumerate(reader.table_list(raw, "listeners", required=True))
    )
    _unique(reader, [lst.name for lst in listeners], "listeners", "name")
    routes = tuple(
        _route(reader, item, f"routes[{i}]", {lst.name: lst for lst in listeners})
        for i, item in enumerate(reader.table_list(raw, "routes", required=True))
    )
    _unique(reader, [f"{r.listener} {r.path}" for r in routes], "routes", "path (per listener)")
    store = _store(reader, reader.table(raw, "store"))
    forward = _forward(reader, reader.table(raw, "forward"), routes)
    return Config(source=source, listeners=listeners, routes=routes, store=store, forward=forward,
                  admin=_admin(reader, reader.table(raw, "admin")),
                  health=_health(reader, reader.table(raw, "health")), workers=workers)


def _store(reader: _Reader, raw: Mapping[str, Any]) -> StoreConfig:
    reader.only_keys(raw, "store", {"path", "url", "commit_delay", "audit_retention_days"})
    delay = reader.number(raw, "store", "commit_delay", default=StoreConfig.commit_delay, minimum=0)
    if delay > 0.1:
        reader.fail("store.commit_delay", f"must be at most 0.1 (seconds), got {delay!r}")
    retention = reader.integer(raw, "store", "audit_retention_days", default=StoreConfig.audit_retention_days,
                               minimum=1)
    if "url" not in raw:
        return StoreConfig(path=reader.path(raw, "store", "path", default="inbox.db"), commit_delay=delay,
                           audit_retention_days=retention)
    if "path" in raw:
        reader.fail("store.url", "give either path (SQLite) or url (PostgreSQL), not both")
    url = reader.string(raw, "store", "url")
    if url.startswith("env:"):  # the DSN may hold a password: it can come from the environment
        url = os.environ.get(url[4:], "")
        if not url:
            reader.fail("store.url", f"environment variable {raw['url'][4:]} is not set or empty")
    if not url.startswith(("postgresql://", "postgres://")):
        reader.fail("store.url", "must be a postgresql:// URL (or env:VAR naming one)")
    return StoreConfig(url=url, commit_delay=delay, audit_retention_days=retention)


def _admin(reader: _Reader, raw: Mapping[str, Any]) -> AdminConfig:
    reader.only_keys(raw, "admin", {"address", "enabled"})
    enabled = reader.boolean(raw, "admin", "enabled", default=True)
    if "address" not in raw:
        return AdminConfig(enabled=enabled)
    host, port = _address(reader, raw, "admin")
    return AdminConfig(host=host, port=port, enabled=enabled)


def _health(reader: _Reader, raw: Mapping[str, Any]) -> HealthConfig:
    reader.only_keys(raw, "health", set(vars(HealthConfig())))
    defaults = HealthConfig()
    interval = reader.number(raw, "health", "heartbeat_interval", default=defaults.heartbeat_interval,
                             minimum=0.05)
    hung_after = reader.number(raw, "health", "hung_after", default=defaults.hung_after, minimum=0.1)
    unready_after = reader.number(raw, "health", "unready_after", default=defaults.unready_after, minimum=0.1)
    if hung_after < 3 * interval:
        reader.fail("health.hung_after", f"must be at least 3 heartbeat intervals ({3 * interval:g} s),"
                    f" so that a late answer or two does not get a busy worker killed; got {hung_after:g}")
    if unready_after < interval:
        reader.fail("health.unready_after", f"must be at least one heartbeat interval ({interval:g} s),"
                    f" got {unready_after:g}")
    return HealthConfig(heartbeat_interval=interval, hung_after=hung_after, unready_after=unready_after)


def _forward(reader: _Reader, raw: Mapping[str, Any], routes: tuple[RouteConfig, ...]) -> ForwardConfig:
    reader.only_keys(raw, "forward", {"url", "handler", "secrets", "concurrency", "timeout", "max_attempts",
                                      "max_age", "backoff_base", "backoff_max"})
    secrets = tuple(reader.secret_list(raw, "forward", "secrets"))
    for i, secret in enumerate(secrets):
        try:
            if not secret.startswith("whsec_") or len(decode_secret(secret[6:], "base64")) < 16:
                raise ValueError
        except ValueError:
            reader.fail(f"forward.secrets[{i}]", "must be 'whsec_' + base64 of at least 16 random bytes"
                        " (make one: mtls-receiver forward new-secret)")
    default = _destination(reader, raw, "forward", "url", "handler")
    uses_url = (default and default.url) or any(r.forward and r.forward.url for r in routes)
    if uses_url and not secrets:
        reader.fail("forward.secrets", "needed to sign deliveries to a URL (make one: mtls-receiver forward new-secret)")
    defaults = ForwardConfig()
    return ForwardConfig(
        default=default,
        secrets=secrets,
        concurrency=reader.integer(raw, "forward", "concurrency", default=defaults.concurrency, minimum=1),
        timeout=reader.number(raw, "forward", "timeout", default=defaults.timeout, minimum=0.1),
        max_attempts=reader.integer(raw, "forward", "max_attempts", default=defaults.max_attempts, minimum=1),
        max_age=reader.number(raw, "forward", "max_age", default=defaults.max_age, minimum=1),
        backoff_base=reader.number(raw, "forward", "backoff_base", default=defaults.backoff_base, minimum=0.01),
        backoff_max=reader.number(raw, "forward", "backoff_max", default=defaults.backoff_max, minimum=0.01),
    )


def _destination(reader: _Reader, raw: Mapping[str, Any], key: str, url_key: str, handler_key: str) -> Destination | None:
    url = reader.string(raw, key, url_key, default=None)
    handler = reader.string(raw, key, handler_key, default=None)
    if url is not None and handler is not None:
        reader.fail(f"{key}.{handler_key}", f"give either {url_key} or {handler_key}, not both")
    if url is not None and not url.startswith(("http://", "https://")):
        reader.fail(f"{key}.{url_key}", f"must be an http:// or https:// URL, got {url!r}")
    if handler is not None and not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", handler):
        reader.fail(f"{key}.{handler_key}", f"must be 'module:function', got {handler!r}")
    return Destination(url=url, handler=handler) if url or handler else None


def _listener(reader: _Reader, raw: Mapping[str, Any], key: str) -> ListenerConfig:
    reader.only_keys(
        raw, key,
        {"name", "address", "cert", "key", "key_password", "client_certs", "client_ca", "min_tls",
         "trusted_proxies", "client_address_header", "proxy_hops", "proxy_protocol", "limits"},
    )
    host, port = _address(reader, raw, key)
    policy = reader.choice(raw, key, "client_certs", CLIENT_CERT_POLICIES, default="required")
    client_ca = reader.path(raw, key, "client_ca", must_exist=True, default=None)
    if policy != "none" and client_ca is None:
        reader.fail(f"{key}.client_ca", f"required when client_certs = {policy!r}")
    trusted_proxies = reader.networks(raw, key, "trusted_proxies", default=())
    proxy_protocol = reader.boolean(raw, key, "proxy_protocol", default=False)
    if proxy_protocol and not trusted_proxies:
        reader.fail(f"{key}.proxy_protocol", "needs trusted_proxies: the addresses of the load balancers allowed to send it")
    header, hops = _client_address_header(reader, raw, key, trusted_proxies, proxy_protocol)
    return ListenerConfig(
        name=reader.string(raw, key, "name", default="default"),
        host=host,
        port=port,
        cert=reader.path(raw, key, "cert", must_exist=True),
        key=reader.path(raw, key, "key", must_exist=True),
        client_certs=policy,
        client_ca=client_ca,
        min_tls=reader.choice(raw, key, "min_tls", TLS_VERSIONS, default="1.2"),
        key_password=reader.secret(raw, key, "key_password"),
        trusted_proxies=trusted_proxies,
        client_address_header=header,
        proxy_hops=hops,
        proxy_protocol=proxy_protocol,
        limits=_limits(reader, raw.get("limits", {}), f"{key}.limits"),
    )


def _client_address_header(
    reader: _Reader, raw: Mapping[str, Any], key: str, trusted_proxies: tuple[Network, ...], proxy_protocol: bool
) -> tuple[str | None, int | None]:
    """The one header the trusted proxies write, and the hop count; both checked against each other.

    trusted_proxies without a header is allowed only with proxy_protocol (the address comes from
    the PROXY header alone): otherwise which header to believe would be a guess, and a wrong guess
    lets a client choose its own address.
    """
    named = reader.string(raw, key, "client_address_header", default=None)
    hops = reader.integer(raw, key, "proxy_hops", default=None, minimum=1)
    choices = ", ".join(map(repr, CLIENT_ADDRESS_HEADERS))
    spelled = {known.lower(): known for known in CLIENT_ADDRESS_HEADERS}
    header = spelled.get(named.lower()) if named is not None else None
    if named is not None and header is None:
        reader.fail(f"{key}.client_address_header", f"must be one of {choices}, got {named!r}")
    if header is not None and not trusted_proxies:
        reader.fail(f"{key}.client_address_header",
                    "needs trusted_proxies: the addresses of the proxies that write it")
    if hops is not None and header is None:
        reader.fail(f"{key}.proxy_hops", "needs client_address_header: the header whose addresses it counts")
    if hops is not None and hops > 1 and header == "X-Real-IP":
        reader.fail(f"{key}.proxy_hops", "X-Real-IP holds one address: proxy_hops can only be 1")
    if trusted_proxies and header is None and not proxy_protocol:
        reader.fail(f"{key}.trusted_proxies",
                    f"needs client_address_header: the one header your proxy writes ({choices}), "
                    "or proxy_protocol = true")
    return header, hops


def _limits(reader: _Reader, raw: Any, key: str) -> Limits:
    if not isinstance(raw, dict):
        reader.fail(key, "must be a table, e.g. limits = { max_body = 1048576 }")
    defaults = Limits()
    reader.only_keys(raw, key, set(vars(defaults)))
    values: dict[str, Any] = {}
    for name, default in vars(defaults).items():
        if isinstance(default, int):
            values[name] = reader.integer(raw, key, name, default=default, minimum=1)
        else:
            values[name] = reader.number(raw, key, name, default=default, minimum=0.1)
    return Limits(**values)


_COMMON_ROUTE_KEYS = {"path", "listener", "provider", "mode", "allow_ips", "tolerance", "forward_url", "forward_handler"}
_PROVIDER_ROUTE_KEYS = {
    "efi": {"pix_keys", "hmac_secrets"},
    "infi": {"secrets"},
    "firebanking": {"secrets", "families"},
    "pomelo": {"api_keys", "environment", "app_url", "deadline", "timeout_status", "timeout_body"},
    "hmac": {"secrets", "signature", "dedup", "event"},
}


def _route(
    reader: _Reader, raw: Mapping[str, Any], key: str, listeners: Mapping[str, ListenerConfig]
) -> RouteConfig:
    provider = reader.choice(raw, key, "provider", tuple(PROVIDER_MODES))
    reader.only_keys(raw, key, _COMMON_ROUTE_KEYS | _PROVIDER_ROUTE_KEYS[provider])
    path = reader.string(raw, key, "path")
    if not path.startswith("/") or "?" in path or "#" in path:
        reader.fail(f"{key}.path", f"must be a URL path starting with '/' (no query): {path!r}")
    default_listener = listeners["default"].name if "default" in listeners else None
    if default_listener is None and len(listeners) == 1:
        default_listener = next(iter(listeners))
    listener = reader.string(raw, key, "listener", default=default_listener)
    if listener not in listeners:
        reader.fail(f"{key}.listener", f"no listener named {listener!r} (have: {', '.join(listeners)})")
    mode = reader.choice(raw, key, "mode", PROVIDER_MODES[provider], default=PROVIDER_MODES[provider][0])
    tolerance = reader.integer(raw, key, "tolerance", default=None, minimum=1)
    common = dict(
        path=path.rstrip("/") or "/", listener=listener, provider=provider, mode=mode, tolerance=tolerance,
        forward=_destination(reader, raw, key, "forward_url", "forward_handler"),
    )
    build = {"efi": _efi_route, "pomelo": _pomelo_route, "hmac": _generic_route}.get(provider, _signed_route)
    return build(reader, raw, key, common, listeners[listener])


def _efi_route(
    reader: _Reader, raw: Mapping[str, Any], key: str, common: dict[str, Any], listener: ListenerConfig
) -> RouteConfig:
    mode = common["mode"]
    if mode == "mtls" and listener.client_certs == "none":
        reader.fail(
            f"{key}.mode",
            f"efi mode 'mtls' needs client certificates, but listener {listener.name!r} has client_certs = 'none'",
        )
    secrets = reader.secret_list(raw, key, "hmac_secrets")
    if mode == "skip-mtls" and not secrets:
        reader.fail(f"{key}.hmac_secrets", "skip-mtls needs at least one secret (make one: mtls-receiver efi hmac-url URL)")
    for i, secret in enumerate(secrets):
        if len(secret) < MIN_HMAC_SECRET_LENGTH:
            reader.fail(f"{key}.hmac_secrets[{i}]", f"too short: use at least {MIN_HMAC_SECRET_LENGTH} random characters")
    default_ips = parse_networks(EFI_SENDER_IPS) if mode == "skip-mtls" else ()
    return RouteConfig(
        **common,
        allow_ips=reader.networks(raw, key, "allow_ips", default=default_ips),
        pix_keys=tuple(reader.string_list(raw, key, "pix_keys")),
        hmac_secrets=tuple(secrets),
    )


def _signing_secrets(reader: _Reader, raw: Mapping[str, Any], key: str, encoding: str = "utf-8") -> tuple[str, ...]:
    secrets = reader.secret_list(raw, key, "secrets")
    if not secrets:
        reader.fail(f"{key}.secrets", 'at least one signing secret is needed, e.g. [{ env = "WEBHOOK_SECRET" }]')
    for i, secret in enumerate(secrets):
        try:
            decode_secret(secret, encoding)
        except ValueError:
            reader.fail(f"{key}.secrets[{i}]", "not valid base64 (signature.secret_encoding = 'base64')")
    return tuple(secrets)


def _signed_route(
    reader: _Reader, raw: Mapping[str, Any], key: str, common: dict[str, Any], listener: ListenerConfig
) -> RouteConfig:
    """INFI and FireBanking: a preset signature, secrets, and (FireBanking) event families."""
    families = tuple(reader.string_list(raw, key, "families"))
    for family in families:
        if family not in FIREBANKING_FAMILIES:
            reader.fail(f"{key}.families", f"unknown family {family!r} (have: {', '.join(FIREBANKING_FAMILIES)})")
    return RouteConfig(
        **common,
        allow_ips=reader.networks(raw, key, "allow_ips", default=()),
        secrets=_signing_secrets(reader, raw, key),
        families=families,
    )


def _pomelo_route(
    reader: _Reader, raw: Mapping[str, Any], key: str, common: dict[str, Any], listener: ListenerConfig
) -> RouteConfig:
    environment = reader.choice(raw, key, "environment", tuple(POMELO_SENDER_IPS), default="production")
    pairs = []
    for i, item in enumerate(reader.table_list_at(raw, key, "api_keys")):
        where = f"{key}.api_keys[{i}]"
        reader.only_keys(item, where, {"key", "secret"})
        api_key = reader.string(item, where, "key")
        secret = reader.secret(item, where, "secret")
        try:
            decode_secret(secret or "", "base64")
        except ValueError:
            reader.fail(f"{where}.secret", "Pomelo's api-secret must be base64")
        pairs.append((api_key, secret or ""))
    if not pairs:
        reader.fail(f"{key}.api_keys", 'at least one pair is needed: [{ key = "...", secret = { env = "..." } }]')
    relay = None
    if common["mode"] == "authorizations":
        relay = RelayConfig(
            url=reader.string(raw, key, "app_url"),
            deadline=reader.number(raw, key, "deadline", default=RelayConfig.deadline, minimum=0.1),
            timeout_status=reader.integer(raw, key, "timeout_status", default=200, minimum=200),
            timeout_body=reader.string(raw, key, "timeout_body", default=DEFAULT_TIMEOUT_BODY),
        )
    else:
        for name in ("app_url", "deadline", "timeout_status", "timeout_body"):
            if name in raw:
                reader.fail(f"{key}.{name}", "only for mode = 'authorizations'")
    return RouteConfig(
        **common,
        allow_ips=reader.networks(raw, key, "allow_ips", default=parse_networks(POMELO_SENDER_IPS[environment])),
        api_keys=tuple(pairs),
        relay=relay,
    )


def _generic_route(
    reader: _Reader, raw: Mapping[str, Any], key: str, common: dict[str, Any], listener: ListenerConfig
) -> RouteConfig:
    where = f"{key}.signature"
    table = raw.get("signature")
    if not isinstance(table, dict):
        reader.fail(where, "a [routes.signature] table is needed (header, prefix, encoding, signed, ...)")
    reader.only_keys(table, where, {"header", "prefix", "encoding", "secret_encoding", "signed", "separator",
                                    "timestamp_header", "timestamp_required"})
    signed = tuple(reader.string_list(table, where, "signed") or ["body"])
    for part in signed:
        if part not in SIGNED_PARTS:
            reader.fail(f"{where}.signed", f"unknown part {part!r} (have: {', '.join(SIGNED_PARTS)})")
    timestamp_header = reader.string(table, where, "timestamp_header", default=None)
    if "timestamp" in signed and timestamp_header is None:
        reader.fail(f"{where}.timestamp_header", "needed when the timestamp is signed")
    scheme = SignatureScheme(
        header=reader.string(table, where, "header"),
        prefix=reader.string(table, where, "prefix", default=""),
        encoding=reader.choice(table, where, "encoding", ("hex", "base64"), default="hex"),
        secret_encoding=reader.choice(table, where, "secret_encoding", ("utf-8", "base64"), default="utf-8"),
        signed=signed,
        separator=reader.string(table, where, "separator", default=""),
        timestamp_header=timestamp_header,
        timestamp_required=reader.boolean(table, where, "timestamp_required", default=timestamp_header is not None),
        tolerance=common["tolerance"] or 300,
    )
    dedup = tuple(reader.string_list(raw, key, "dedup"))
    event = reader.string(raw, key, "event", default=None)
    for i, field_ref in enumerate((*dedup, *([event] if event else []))):
        if not (field_ref.startswith("/") or field_ref.startswith("header:")):
            reader.fail(f"{key}.{'dedup' if i < len(dedup) else 'event'}",
                        f"{field_ref!r}: use a JSON pointer like '/data/id' or 'header:X-Event-Id'")
    return RouteConfig(
        **common,
        allow_ips=reader.networks(raw, key, "allow_ips", default=()),
        secrets=_signing_secrets(reader, raw, key, scheme.secret_encoding),
        signature=scheme,
        dedup=dedup,
        event=event,
    )


def _address(reader: _Reader, raw: Mapping[str, Any], key: str) -> tuple[str, int]:
    text = reader.string(raw, key, "address")
    host, sep, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not (port_text.isascii() and port_text.isdigit()) or not 0 <= int(port_text) < 65536:
        reader.fail(f"{key}.address", f"expected 'host:port' (e.g. '0.0.0.0:443' or '[::]:443'), got {text!r}")
    return host, int(port_text)


def _unique(reader: _Reader, values: list[str], key: str, what: str) -> None:
    seen: set[str] = set()
    for i, value in enumerate(values):
        if value in seen:
            reader.fail(f"{key}[{i}]", f"duplicate {what}: {value!r}")
        seen.add(value)


_MISSING: Any = object()


class _Reader:
    """Typed accessors over raw TOML tables that fail with file/key/problem."""

    def __init__(self, source: Path) -> None:
        self.source = source

    def fail(self, key: str, problem: str) -> Any:
        raise ConfigError(str(self.source), key, problem)

    def only_keys(self, raw: Mapping[str, Any], key: str, allowed: set[str]) -> None:
        for name in raw:
            if name not in allowed:
                where = f"{key}.{name}" if key else name
                self.fail(where, f"unknown key (allowed here: {', '.join(sorted(allowed))})")

    def _get(self, raw: Mapping[str, Any], key: str, name: str, default: Any) -> Any:
        if name in raw:
            return raw[name]
        if default is _MISSING:
            self.fail(f"{key}.{name}" if key else name, "missing")
        return default

    def _typed(self, raw: Mapping[str, Any], key: str, name: str, kind: type, label: str, default: Any) -> Any:
        value = self._get(raw, key, name, default)
        if value is not default and not isinstance(value, kind):
            self.fail(f"{key}.{name}" if key else name, f"must be {label}, got {type(value).__name__}")
        return value

    def string(self, raw: Mapping[str, Any], key: str, name: str, default: Any = _MISSING) -> Any:
        return self._typed(raw, key, name, str, "a string", default)

    def string_list(self, raw: Mapping[str, Any], key: str, name: str) -> list[str]:
        value = self._typed(raw, key, name, list, "a list of strings", [])
        if not all(isinstance(item, str) for item in value):
            self.fail(f"{key}.{name}", "must be a list of strings")
        return value

    def table(self, raw: Mapping[str, Any], name: str) -> Mapping[str, Any]:
        return self._typed(raw, "", name, dict, "a table", {})

    def table_list(self, raw: Mapping[str, Any], name: str, required: bool = False) -> list[Mapping[str, Any]]:
        value = self._typed(raw, "", name, list, f"an array of tables ([[{name}]])", _MISSING if required else [])
        if required and not value:
            self.fail(name, f"at least one [[{name}]] table is needed")
        if not all(isinstance(item, dict) for item in value):
            self.fail(name, f"must be an array of tables ([[{name}]])")
        return value

    def choice(
        self, raw: Mapping[str, Any], key: str, name: str, allowed: tuple[str, ...], default: Any = _MISSING
    ) -> Any:
        value = self.string(raw, key, name, default)
        if value not in allowed:
            self.fail(f"{key}.{name}", f"must be one of {', '.join(map(repr, allowed))}, got {value!r}")
        return value

    def path(
        self, raw: Mapping[str, Any], key: str, name: str, must_exist: bool = False, default: Any = _MISSING
    ) -> Any:
        value = self.string(raw, key, name, default)
        if value is None:
            return None
        resolved = (self.source.parent / Path(value).expanduser()).resolve()
        if must_exist and not resolved.is_file():
            self.fail(f"{key}.{name}", f"file not found: {resolved}")
        return resolved

    def integer(self, raw: Mapping[str, Any], key: str, name: str, default: Any, minimum: int) -> Any:
        value = self._get(raw, key, name, default)
        if value is default:
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.fail(f"{key}.{name}" if key else name, f"must be a whole number >= {minimum}, got {value!r}")
        return value

    def number(self, raw: Mapping[str, Any], key: str, name: str, default: float, minimum: float) -> float:
        value = self._get(raw, key, name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
            self.fail(f"{key}.{name}", f"must be a number >= {minimum}, got {value!r}")
        return float(value)

    def table_list_at(self, raw: Mapping[str, Any], key: str, name: str) -> list[Mapping[str, Any]]:
        value = self._typed(raw, key, name, list, "a list of tables", [])
        if not all(isinstance(item, dict) for item in value):
            self.fail(f"{key}.{name}", "must be a list of tables")
        return value

    def boolean(self, raw: Mapping[str, Any], key: str, name: str, default: bool) -> bool:
        return bool(self._typed(raw, key, name, bool, "true or false", default))

    def networks(
        self, raw: Mapping[str, Any], key: str, name: str, default: tuple[Network, ...]
    ) -> tuple[Network, ...]:
        if name not in raw:
            return default
        items = self.string_list(raw, key, name)
        try:
            return parse_networks(items)
        except ValueError as exc:
            return self.fail(f"{key}.{name}", f"not an IP address or CIDR: {exc}")

    def secret(self, raw: Mapping[str, Any], key: str, name: str) -> str | None:
        """A secret comes from ``{ env = "VAR" }`` or ``{ file = "path" }``, never inline."""
        return self._resolve_secret(raw[name], f"{key}.{name}") if name in raw else None

    def secret_list(self, raw: Mapping[str, Any], key: str, name: str) -> list[str]:
        value = self._typed(raw, key, name, list, 'a list like [{ env = "VAR" }, { file = "/path" }]', [])
        return [self._resolve_secret(item, f"{key}.{name}[{i}]") for i, item in enumerate(value)]

    def _resolve_secret(self, value: Any, where: str) -> str:
        if isinstance(value, str):
            self.fail(where, 'secrets are not accepted inline; use { env = "VAR" } or { file = "/path" }')
        if not isinstance(value, dict) or len(value) != 1 or not set(value) <= {"env", "file"}:
            self.fail(where, 'must be { env = "VAR" } or { file = "/path" }')
        ((kind, ref),) = value.items()
        if not isinstance(ref, str) or not ref:
            self.fail(f"{where}.{kind}", "must be a non-empty string")
        if kind == "env":
            secret = os.environ.get(ref, "")
            if not secret:
                self.fail(f"{where}.env", f"environment variable {ref} is not set or empty")
            return secret
        path = (self.source.parent / Path(ref).expanduser()).resolve()
        try:
            secret = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            self.fail(f"{where}.file", f"cannot read secret file {path}: {exc.strerror or exc}")
        if not secret:
            self.fail(f"{where}.file", f"secret file {path} is empty")
        return secret
