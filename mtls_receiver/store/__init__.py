"""The durable inbox: events and the audit trail, in SQLite or PostgreSQL.

:func:`open_store` picks the backend a config names; the interface both keep, :class:`Store`, and
the types it passes are in :mod:`.base` (re-exported here).
"""

from __future__ import annotations

from ..config import StoreConfig
from ..errors import ConfigError
from .base import Access, AuditCount, AuditQuery, AuditRepeats, Receipt, Store

__all__ = ["Access", "AuditCount", "AuditQuery", "AuditRepeats", "Receipt", "Store", "open_store"]


def open_store(config: StoreConfig, access: Access = Access.SERVE) -> Store:
    """The backend for a store config (not yet opened), for what the caller will do (``access``)."""
    if config.url is not None:
        try:
            from .postgres import PostgresStore
        except ImportError:  # asyncpg is the "postgres" extra
            raise ConfigError(
                "[store]", "url", "PostgreSQL needs asyncpg: pip install 'mtls-receiver[postgres]'"
            ) from None
        return PostgresStore(config.url, commit_delay=config.commit_delay, access=access)
    from .sqlite import SQLiteStore

    assert config.path is not None
    return SQLiteStore(config.path, access=access, commit_delay=config.commit_delay)
