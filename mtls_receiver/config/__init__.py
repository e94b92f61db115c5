"""The TOML configuration, loaded into frozen dataclasses and validated up front.

Every problem is reported as a :class:`ConfigError` naming the file, the key
(``listeners[0].cert``) and what is wrong, before anything listens. ``schema`` says what a
configuration is, ``reader`` reads typed values out of TOML, ``load`` puts the two together.
"""

from __future__ import annotations

from .load import load_config, parse_config
from .reader import Reader, Table
from .schema import (
    CLIENT_CERT_POLICIES,
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
    ProviderOptions,
    RelayConfig,
    RouteConfig,
    StoreConfig,
    redact_dsn,
    redact_userinfo,
)

__all__ = [
    "CLIENT_CERT_POLICIES",
    "TLS_VERSIONS",
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
    "Reader",
    "RelayConfig",
    "RouteConfig",
    "StoreConfig",
    "Table",
    "load_config",
    "parse_config",
    "redact_dsn",
    "redact_userinfo",
]
