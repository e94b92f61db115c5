"""TOML file -> :class:`Config`: every section checked, every problem a ConfigError naming file, key, problem.

A route's common keys are read here; the rest belongs to its provider, looked up by name in the
registry (``providers/``), whose ``parse_options`` reads them through the same :class:`Reader`.
"""

from __future__ import annotations

import importlib.util
import os
import re
import string
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from ..addresses import CLIENT_ADDRESS_HEADERS, Network
from ..errors import ConfigError, ConfigErrors
from ..pinning import cn_pattern_problem, normalize_fingerprint, subject_problem
from ..providers import PROVIDER_NAMES, provider
from ..providers.base import RouteContext
from ..signatures import decode_secret
from .reader import UNRESOLVED_SECRET, InspectionReader, Reader, Table
from .schema import (
    BROKER_KINDS,
    CLIENT_CERT_POLICIES,
    TEMPLATE_FIELDS,
    TLS_VERSIONS,
    AdminConfig,
    BrokerConfig,
    ClientPin,
    Config,
    Destination,
    ForwardConfig,
    HealthConfig,
    Limits,
    ListenerConfig,
    RouteConfig,
    StoreConfig,
    redact_userinfo,
)

__all__ = ["load_config", "parse_config"]

_TOP_LEVEL_KEYS = {"workers", "listeners", "routes", "store", "forward", "admin", "health", "destinations"}
_PIN_KEYS = ("client_subjects", "client_cn", "client_fingerprints")
_COMMON_ROUTE_KEYS = frozenset(
    {
        "path",
        "listener",
        "provider",
        "mode",
        "allow_ips",
        "tolerance",
        "forward_url",
        "forward_handler",
        "forward_destination",
    }
) | frozenset(_PIN_KEYS)
_BROKER_SCHEMES = {
    "rabbitmq": ("amqp://", "amqps://"),
    "nats": ("nats://", "tls://"),
    "redis": ("redis://", "rediss://", "unix://"),
}
_BROKER_KEYS = {
    "rabbitmq": {"exchange", "exchange_type", "routing_key", "declare", "queue", "binding_key"},
    "nats": {"subject", "declare", "stream", "stream_subjects"},
    "redis": {"stream", "maxlen"},
}
_BROKER_MODULES = {"rabbitmq": "aio_pika", "nats": "nats", "redis": "redis"}  # each its own extra
_EXCHANGE_TYPES = ("topic", "direct", "fanout", "headers")
_NEW_SECRET = "make one: mtls-receiver forward new-secret"
T = TypeVar("T")
_EMPTY: Table = {}
_NO_TABLES: list[Table] = []


def load_config(path: str | os.PathLike[str], read_secrets: bool = True) -> Config:
    """Read and validate a TOML file; raise ConfigError naming what is wrong (ConfigErrors: several).

    ``read_secrets=False`` is for commands that only look at the store: secret references are
    checked for shape but neither read nor validated (their values are placeholders).
    """
    source = Path(path)
    try:
        raw = tomllib.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(str(source), "", "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(source), "", f"cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(source), "", f"not valid TOML: {exc}") from None
    return parse_config(raw, source, read_secrets)


def parse_config(raw: Table, source: Path, read_secrets: bool = True) -> Config:
    """Validate an already-parsed TOML document; paths are relative to ``source``.

    Every top-level table, listener and route is read even after another failed, so that one run
    reports every problem (a route on a listener that failed is not judged: its errors could be
    consequences of the listener's).
    """
    reader = (Reader if read_secrets else InspectionReader)(source)
    problems: list[ConfigError] = []

    def attempt(default: T, read: Callable[..., T], *args: Any) -> T:
        try:
            return read(*args)
        except ConfigError as exc:
            problems.append(exc)
            return default

    attempt(None, reader.only_keys, raw, "", _TOP_LEVEL_KEYS)
    workers = attempt(1, reader.integer, raw, "", "workers", os.cpu_count() or 1, 1)
    listener_tables = attempt(_NO_TABLES, reader.table_list, raw, "listeners", True)
    read_listeners = [
        attempt(None, _listener, reader, item, f"listeners[{i}]") for i, item in enumerate(listener_tables)
    ]
    listeners = tuple(listener for listener in read_listeners if listener is not None)
    attempt(None, _unique, reader, [lst.name for lst in listeners], "listeners", "name")
    by_name = {lst.name: lst for lst in listeners}
    brokers: dict[str, BrokerConfig] = attempt({}, _brokers, reader, raw)
    route_tables = attempt(_NO_TABLES, reader.table_list, raw, "routes", True)
    read_routes = [
        attempt(None, _route, reader, item, f"routes[{i}]", by_name, brokers)
        for i, item in enumerate(route_tables)
        if len(listeners) == len(listener_tables) or str(_listener_name(item)) in by_name
    ]
    routes = tuple(route for route in read_routes if route is not None)
    attempt(
        None, _unique, reader, [f"{r.listener} {r.path}" for r in routes], "routes", "path (per listener)"
    )
    store = attempt(StoreConfig(), _store, reader, attempt(_EMPTY, reader.table, raw, "store"))
    forward = attempt(
        ForwardConfig(), _forward, reader, attempt(_EMPTY, reader.table, raw, "forward"), routes, brokers
    )
    admin = attempt(AdminConfig(), _admin, reader, attempt(_EMPTY, reader.table, raw, "admin"))
    health = attempt(HealthConfig(), _health, reader, attempt(_EMPTY, reader.table, raw, "health"))
    if problems:
        raise problems[0] if len(problems) == 1 else ConfigErrors(problems)
    return Config(
        source=source,
        listeners=listeners,
        routes=routes,
        store=store,
        forward=forward,
        admin=admin,
        health=health,
        workers=workers,
    )


def _listener_name(route: Table) -> object:
    """The listener a route names ("default" when it names none), before the route is read."""
    return route.get("listener", "default")


def _store(reader: Reader, raw: Table) -> StoreConfig:
    reader.only_keys(raw, "store", {"path", "url", "commit_delay", "audit_retention_days"})
    delay = reader.number(raw, "store", "commit_delay", default=StoreConfig.commit_delay, minimum=0)
    if delay > 0.1:
        reader.fail("store.commit_delay", f"must be at most 0.1 (seconds), got {delay!r}")
    retention = reader.integer(
        raw, "store", "audit_retention_days", default=StoreConfig.audit_retention_days, minimum=1
    )
    if "url" not in raw:
        return StoreConfig(
            path=reader.path(raw, "store", "path", default="inbox.db"),
            commit_delay=delay,
            audit_retention_days=retention,
        )
    if "path" in raw:
        reader.fail("store.url", "give either path (SQLite) or url (PostgreSQL), not both")
    written = reader.string(raw, "store", "url")
    url = written
    if written.startswith("env:"):  # the DSN may hold a password: it can come from the environment
        url = os.environ.get(written[4:], "")
        if not url:
            reader.fail("store.url", f"environment variable {written[4:]} is not set or empty")
    if not url.startswith(("postgresql://", "postgres://")):
        reader.fail("store.url", "must be a postgresql:// URL (or env:VAR naming one)")
    return StoreConfig(url=url, commit_delay=delay, audit_retention_days=retention)


def _admin(reader: Reader, raw: Table) -> AdminConfig:
    reader.only_keys(raw, "admin", {"address", "enabled", "token"})
    enabled = reader.boolean(raw, "admin", "enabled", default=True)
    token = reader.secret(raw, "admin", "token", check=_weak_admin_token)
    source = _secret_source(raw["token"]) if token is not None else ""
    host, port = _address(reader, raw, "admin") if "address" in raw else (AdminConfig.host, AdminConfig.port)
    admin = AdminConfig(host=host, port=port, enabled=enabled, token=token, token_source=source)
    if enabled and token is None and not admin.loopback:
        reader.fail(
            "admin.token",
            f"required when admin.address is not loopback ({host}): the console at / can replay events;"
            ' give token = { env = "VAR" } or { file = "/path" }, or listen on 127.0.0.1',
        )
    return admin


def _secret_source(reference: object) -> str:
    """Where a secret reference (already resolved, so well formed) points: ``env:NAME`` or ``file:PATH``."""
    assert isinstance(reference, dict)
    ((kind, ref),) = reference.items()
    return f"{kind}:{ref}"


def _health(reader: Reader, raw: Table) -> HealthConfig:
    defaults = HealthConfig()
    reader.only_keys(raw, "health", set(vars(defaults)))
    interval = reader.number(
        raw, "health", "heartbeat_interval", default=defaults.heartbeat_interval, minimum=0.05
    )
    hung_after = reader.number(raw, "health", "hung_after", default=defaults.hung_after, minimum=0.1)
    unready_after = reader.number(raw, "health", "unready_after", default=defaults.unready_after, minimum=0.1)
    if hung_after < 3 * interval:
        reader.fail(
            "health.hung_after",
            f"must be at least 3 heartbeat intervals ({3 * interval:g} s),"
            f" so that a late answer or two does not get a busy worker killed; got {hung_after:g}",
        )
    if unready_after < interval:
        reader.fail(
            "health.unready_after",
            f"must be at least one heartbeat interval ({interval:g} s), got {unready_after:g}",
        )
    return HealthConfig(heartbeat_interval=interval, hung_after=hung_after, unready_after=unready_after)


def _forward(
    reader: Reader, raw: Table, routes: tuple[RouteConfig, ...], brokers: Mapping[str, BrokerConfig]
) -> ForwardConfig:
    reader.only_keys(
        raw,
        "forward",
        {
            "url",
            "handler",
            "destination",
            "secrets",
            "concurrency",
            "timeout",
            "max_attempts",
            "max_age",
            "backoff_base",
            "backoff_max",
        },
    )
    secrets = reader.secret_list(raw, "forward", "secrets", check=_whsec_problem)
    default = _destination(reader, raw, "forward", ("url", "handler", "destination"), brokers)
    signed = (default and default.signed) or any(r.forward and r.forward.signed for r in routes)
    if signed and not secrets:
        reader.fail("forward.secrets", f"needed to sign deliveries to a URL or a broker ({_NEW_SECRET})")
    defaults = ForwardConfig()
    return ForwardConfig(
        default=default,
        secrets=secrets,
        concurrency=reader.integer(raw, "forward", "concurrency", default=defaults.concurrency, minimum=1),
        timeout=reader.number(raw, "forward", "timeout", default=defaults.timeout, minimum=0.1),
        max_attempts=reader.integer(raw, "forward", "max_attempts", default=defaults.max_attempts, minimum=1),
        max_age=reader.number(raw, "forward", "max_age", default=defaults.max_age, minimum=1),
        backoff_base=reader.number(
            raw, "forward", "backoff_base", default=defaults.backoff_base, minimum=0.01
        ),
        backoff_max=reader.number(raw, "forward", "backoff_max", default=defaults.backoff_max, minimum=0.01),
    )


def _whsec_problem(secret: str) -> str | None:
    """A Standard Webhooks secret: ``whsec_`` and base64 of at least 16 random bytes."""
    try:
        if secret.startswith("whsec_") and len(decode_secret(secret[6:], "base64")) >= 16:
            return None
    except ValueError:
        pass
    return f"must be 'whsec_' + base64 of at least 16 random bytes ({_NEW_SECRET})"


def _destination(
    reader: Reader, raw: Table, key: str, keys: tuple[str, str, str], brokers: Mapping[str, BrokerConfig]
) -> Destination | None:
    """One of a URL, a handler or a ``[[destinations]]`` name (``keys`` spells the three here)."""
    url_key, handler_key, broker_key = keys
    given = [name for name in keys if name in raw]
    if len(given) > 1:
        reader.fail(f"{key}.{given[1]}", f"give one of {', '.join(keys)}, not several")
    url = reader.optional_string(raw, key, url_key)
    handler = reader.optional_string(raw, key, handler_key)
    named = reader.optional_string(raw, key, broker_key)
    if url is not None and not url.startswith(("http://", "https://")):
        hint = f" (a broker is a [[destinations]] entry named by {broker_key})" if "://" in url else ""
        reader.fail(f"{key}.{url_key}", f"must be an http:// or https:// URL, got {url!r}{hint}")
    if handler is not None and not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", handler):
        reader.fail(f"{key}.{handler_key}", f"must be 'module:function', got {handler!r}")
    if named is not None and named not in brokers:
        have = ", ".join(map(repr, brokers)) or "none"
        reader.fail(f"{key}.{broker_key}", f"no [[destinations]] entry named {named!r} (have: {have})")
    broker = brokers[named] if named is not None else None
    return Destination(url=url, handler=handler, broker=broker) if url or handler or broker else None


def _brokers(reader: Reader, raw: Table) -> dict[str, BrokerConfig]:
    """The ``[[destinations]]`` entries by name: message brokers that routes and [forward] name."""
    brokers: dict[str, BrokerConfig] = {}
    for i, item in enumerate(reader.table_list(raw, "destinations")):
        broker = _broker(reader, item, f"destinations[{i}]")
        if broker.name in brokers:
            reader.fail(f"destinations[{i}].name", f"duplicate name: {broker.name!r}")
        brokers[broker.name] = broker
    return brokers


def _broker(reader: Reader, raw: Table, key: str) -> BrokerConfig:
    kind = reader.choice(raw, key, "type", BROKER_KINDS)
    reader.only_keys(raw, key, {"name", "type", "url"} | _BROKER_KEYS[kind])
    inspecting = isinstance(reader, InspectionReader)  # commands that only read the store need no client
    if not inspecting and importlib.util.find_spec(_BROKER_MODULES[kind]) is None:
        reader.fail(f"{key}.type", f"{kind} needs its client library: pip install 'mtls-receiver[{kind}]'")
    name = reader.string(raw, key, "name")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        reader.fail(f"{key}.name", f"letters, digits, '_', '.', '-' only, got {name!r}")
    url = _broker_url(reader, raw, key, kind)
    if kind == "rabbitmq":
        return _rabbitmq(reader, raw, key, name, url)
    if kind == "nats":
        return _nats(reader, raw, key, name, url)
    maxlen = reader.optional_integer(raw, key, "maxlen", minimum=1)
    return BrokerConfig(name, kind, url, stream=_template(reader, raw, key, "stream"), maxlen=maxlen)


def _rabbitmq(reader: Reader, raw: Table, key: str, name: str, url: str) -> BrokerConfig:
    declare = reader.boolean(raw, key, "declare", default=False)
    queue = reader.optional_string(raw, key, "queue")
    if queue is not None and not declare:
        reader.fail(f"{key}.queue", "is declared and bound only with declare = true")
    return BrokerConfig(
        name,
        "rabbitmq",
        url,
        declare=declare,
        exchange=reader.string(raw, key, "exchange", default=""),
        exchange_type=reader.choice(raw, key, "exchange_type", _EXCHANGE_TYPES, default="topic"),
        routing_key=_template(reader, raw, key, "routing_key"),
        queue=queue,
        binding_key=reader.string(raw, key, "binding_key", default="#"),
    )


def _nats(reader: Reader, raw: Table, key: str, name: str, url: str) -> BrokerConfig:
    subject = _template(reader, raw, key, "subject")
    declare = reader.boolean(raw, key, "declare", default=False)
    stream = reader.string(raw, key, "stream", default="")
    subjects = reader.string_list(raw, key, "stream_subjects")
    if declare and not stream:
        reader.fail(f"{key}.stream", "needed with declare = true: the JetStream stream to create")
    if declare and not subjects:
        prefix = subject.partition("{")[0]
        if "{" in subject and not prefix.endswith("."):
            reader.fail(f"{key}.stream_subjects", "needed: the subjects the declared stream keeps")
        subjects = (prefix + ">",) if "{" in subject else (subject,)
    return BrokerConfig(
        name, "nats", url, declare=declare, subject=subject, stream=stream, stream_subjects=subjects
    )


def _broker_url(reader: Reader, raw: Table, key: str, kind: str) -> str:
    """The broker URL: a plain string, or { env = "VAR" } / { file = ... } when it has a password."""
    value = raw.get("url")
    if value is None:
        reader.fail(f"{key}.url", f"required: where the {kind} server is ({_BROKER_SCHEMES[kind][0]}...)")
    url = (
        reader.resolve_secret(value, f"{key}.url")
        if isinstance(value, dict)
        else reader.string(raw, key, "url")
    )
    if url == UNRESOLVED_SECRET:  # inspecting: the reference is well formed, its value not read
        return url
    if isinstance(value, str) and redact_userinfo(url) != url:
        reader.fail(
            f"{key}.url", 'holds credentials (before "@"): give it as { env = "VAR" } or { file = "/path" }'
        )
    if not url.startswith(_BROKER_SCHEMES[kind]):
        reader.fail(
            f"{key}.url",
            f"must start with {' or '.join(_BROKER_SCHEMES[kind])}, got {redact_userinfo(url)!r}",
        )
    return url


def _template(reader: Reader, raw: Table, key: str, name: str) -> str:
    """A routing key, subject or stream name, with ``{type}``, ``{provider}`` or ``{kind}`` in it."""
    text = reader.string(raw, key, name)
    problem = f"may contain only {', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)}, got {text!r}"
    try:
        parts = list(string.Formatter().parse(text))
    except ValueError:
        reader.fail(f"{key}.{name}", problem)
    for _, field_name, spec, conversion in parts:
        if field_name is not None and (field_name not in TEMPLATE_FIELDS or spec or conversion):
            reader.fail(f"{key}.{name}", problem)
    if not text:
        reader.fail(f"{key}.{name}", "must not be empty")
    return text


def _listener(reader: Reader, raw: Table, key: str) -> ListenerConfig:
    reader.only_keys(
        raw,
        key,
        {
            "name",
            "address",
            "cert",
            "key",
            "key_password",
            "client_certs",
            "client_ca",
            "min_tls",
            "trusted_proxies",
            "client_address_header",
            "proxy_hops",
            "proxy_protocol",
            "limits",
        },
    )
    host, port = _address(reader, raw, key)
    policy = reader.choice(raw, key, "client_certs", CLIENT_CERT_POLICIES, default="required")
    client_ca = reader.optional_path(raw, key, "client_ca", must_exist=True)
    if policy != "none" and client_ca is None:
        reader.fail(f"{key}.client_ca", f"required when client_certs = {policy!r}")
    trusted_proxies = reader.networks(raw, key, "trusted_proxies", default=())
    proxy_protocol = reader.boolean(raw, key, "proxy_protocol", default=False)
    if proxy_protocol and not trusted_proxies:
        reader.fail(
            f"{key}.proxy_protocol",
            "needs trusted_proxies: the addresses of the load balancers allowed to send it",
        )
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
        limits=_limits(reader, raw, f"{key}.limits"),
    )


def _client_address_header(
    reader: Reader, raw: Table, key: str, trusted_proxies: tuple[Network, ...], proxy_protocol: bool
) -> tuple[str | None, int | None]:
    """The one header the trusted proxies write, and the hop count; both checked against each other.

    trusted_proxies without a header is allowed only with proxy_protocol (the address comes from
    the PROXY header alone): otherwise which header to believe would be a guess, and a wrong guess
    lets a client choose its own address.
    """
    named = reader.optional_string(raw, key, "client_address_header")
    hops = reader.optional_integer(raw, key, "proxy_hops", minimum=1)
    choices = ", ".join(map(repr, CLIENT_ADDRESS_HEADERS))
    spelled = {known.lower(): known for known in CLIENT_ADDRESS_HEADERS}
    header = spelled.get(named.lower()) if named is not None else None
    if named is not None and header is None:
        reader.fail(f"{key}.client_address_header", f"must be one of {choices}, got {named!r}")
    if header is not None and not trusted_proxies:
        reader.fail(
            f"{key}.client_address_header",
            "needs trusted_proxies: the addresses of the proxies that write it",
        )
    if hops is not None and header is None:
        reader.fail(f"{key}.proxy_hops", "needs client_address_header: the header whose addresses it counts")
    if hops is not None and hops > 1 and header == "X-Real-IP":
        reader.fail(f"{key}.proxy_hops", "X-Real-IP holds one address: proxy_hops can only be 1")
    if trusted_proxies and header is None and not proxy_protocol:
        reader.fail(
            f"{key}.trusted_proxies",
            f"needs client_address_header: the one header your proxy writes ({choices}), "
            "or proxy_protocol = true",
        )
    return header, hops


def _limits(reader: Reader, listener: Table, key: str) -> Limits:
    raw = reader.as_table(
        listener.get("limits", {}), key, "must be a table, e.g. limits = { max_body = 1048576 }"
    )
    defaults = Limits()
    reader.only_keys(raw, key, set(vars(defaults)))

    def count(name: str) -> int:
        return reader.integer(raw, key, name, default=getattr(defaults, name), minimum=1)

    def seconds(name: str) -> float:
        return reader.number(raw, key, name, default=getattr(defaults, name), minimum=0.1)

    return Limits(
        max_body=count("max_body"),
        max_headers=count("max_headers"),
        max_header_size=count("max_header_size"),
        handshake_timeout=seconds("handshake_timeout"),
        header_timeout=seconds("header_timeout"),
        body_timeout=seconds("body_timeout"),
        keepalive_timeout=seconds("keepalive_timeout"),
        handling_timeout=seconds("handling_timeout"),
        max_connections=count("max_connections"),
        max_connections_per_ip=count("max_connections_per_ip"),
    )


def _route(
    reader: Reader,
    raw: Table,
    key: str,
    listeners: Mapping[str, ListenerConfig],
    brokers: Mapping[str, BrokerConfig],
) -> RouteConfig:
    """The keys every route has; its provider reads the rest into the route's ``options``."""
    sender = provider(reader.choice(raw, key, "provider", PROVIDER_NAMES))
    reader.only_keys(raw, key, _COMMON_ROUTE_KEYS | sender.keys)
    path = reader.string(raw, key, "path")
    if not path.startswith("/") or "?" in path or "#" in path:
        reader.fail(f"{key}.path", f"must be a URL path starting with '/' (no query): {path!r}")
    named = reader.optional_string(raw, key, "listener")
    listener = named if named is not None else _default_listener(listeners)
    if listener is None or listener not in listeners:
        reader.fail(f"{key}.listener", f"no listener named {listener!r} (have: {', '.join(listeners)})")
    mode = reader.choice(raw, key, "mode", sender.modes, default=sender.modes[0])
    tolerance = reader.optional_integer(raw, key, "tolerance", minimum=1)
    forward = _destination(
        reader, raw, key, ("forward_url", "forward_handler", "forward_destination"), brokers
    )
    context = RouteContext(key=key, mode=mode, tolerance=tolerance, listener=listeners[listener])
    options = sender.parse_options(reader, raw, context)
    return RouteConfig(
        path=path.rstrip("/") or "/",
        listener=listener,
        provider=sender.name,
        mode=mode,
        allow_ips=reader.networks(raw, key, "allow_ips", default=options.sender_ips(mode)),
        tolerance=tolerance,
        options=options,
        forward=forward,
        client_pin=_client_pin(reader, raw, key, listeners[listener]),
    )


def _client_pin(reader: Reader, raw: Table, key: str, listener: ListenerConfig) -> ClientPin | None:
    """The route's ``client_subjects``, ``client_cn`` and ``client_fingerprints``; None when it has none."""
    given = [name for name in _PIN_KEYS if name in raw]
    if not given:
        return None
    subjects, patterns, written = (reader.string_list(raw, key, name) for name in _PIN_KEYS)
    for name, values in zip(_PIN_KEYS, (subjects, patterns, written), strict=True):
        if name in raw and not values:
            reader.fail(f"{key}.{name}", "an empty list pins nothing: list at least one, or remove the key")
    if listener.client_certs == "none":
        reader.fail(
            f"{key}.{given[0]}",
            f"pins client certificates, but listener {listener.name!r} has client_certs = 'none'",
        )
    for name, values, problem_of in (
        ("client_subjects", subjects, subject_problem),
        ("client_cn", patterns, cn_pattern_problem),
    ):
        for i, value in enumerate(values):
            problem = problem_of(value)
            if problem is not None:
                reader.fail(f"{key}.{name}[{i}]", problem)
    return ClientPin(
        subjects=subjects, cn_patterns=patterns, fingerprints=_fingerprints(reader, key, written)
    )


def _fingerprints(reader: Reader, key: str, written: tuple[str, ...]) -> tuple[str, ...]:
    """``client_fingerprints`` as lowercase hex without colons (OpenSSL prints them upper case, with)."""
    fingerprints = []
    for i, text in enumerate(written):
        fingerprint = normalize_fingerprint(text)
        if fingerprint is None:
            reader.fail(
                f"{key}.client_fingerprints[{i}]",
                f"{text[:100]!r} is not a SHA-256 fingerprint (64 hex digits, colons allowed)",
            )
        fingerprints.append(fingerprint)
    return tuple(fingerprints)


def _default_listener(listeners: Mapping[str, ListenerConfig]) -> str | None:
    """The listener a route without ``listener`` is on: the one named "default", or the only one."""
    if "default" in listeners:
        return "default"
    return next(iter(listeners)) if len(listeners) == 1 else None


def _address(reader: Reader, raw: Table, key: str) -> tuple[str, int]:
    text = reader.string(raw, key, "address")
    host, sep, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    numeric = port_text.isascii() and port_text.isdigit()
    if not sep or not host or not numeric or not 0 <= int(port_text) < 65536:
        reader.fail(
            f"{key}.address", f"expected 'host:port' (e.g. '0.0.0.0:443' or '[::]:443'), got {text!r}"
        )
    return host, int(port_text)


def _unique(reader: Reader, values: list[str], key: str, what: str) -> None:
    seen: set[str] = set()
    for i, value in enumerate(values):
        if value in seen:
            reader.fail(f"{key}[{i}]", f"duplicate {what}: {value!r}")
        seen.add(value)


MIN_ADMIN_TOKEN_LENGTH = 24


def _weak_admin_token(token: str) -> str | None:
    """The console's sign-in has no rate limit of its own: a token must not be guessable online."""
    if len(token) < MIN_ADMIN_TOKEN_LENGTH:
        return f"too short: use at least {MIN_ADMIN_TOKEN_LENGTH} random characters (openssl rand -hex 16)"
    return None
