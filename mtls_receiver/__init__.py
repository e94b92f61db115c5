"""mtls-receiver: a webhook receiver for Brazilian payment providers.

It terminates TLS (mutual TLS when the sender has a certificate), verifies each sender its own way and
stores every accepted event durably before answering 2xx.
"""

from __future__ import annotations

from .config import Config, ListenerConfig, RouteConfig, StoreConfig, load_config
from .errors import ConfigError, ReceiverError, Refusal, StoreUnavailable
from .events import AuditRecord, IncomingRequest, NewEvent, Peer, StoredEvent, Verdict

__version__ = "0.1.0"

__all__ = [
    "AuditRecord",
    "Config",
    "ConfigError",
    "IncomingRequest",
    "ListenerConfig",
    "NewEvent",
    "Peer",
    "ReceiverError",
    "Refusal",
    "RouteConfig",
    "StoreConfig",
    "StoreUnavailable",
    "StoredEvent",
    "Verdict",
    "__version__",
    "load_config",
]
