"""BS2: the ``autorizacao`` you registered (``basic`` or ``bearer``), nothing signed.

BS2 also offers ``none``: such a route needs the loud ``unsigned_allowlist_only = true`` and
``allow_ips`` (BS2 publishes no addresses), and ``check-config`` warns about it. BS2 cancels a
send that takes more than 1000 ms, so nothing here waits on the application. Event type and
dedup: the route's ``event``/``dedup`` when given, else the body's ``tipo``/``evento`` with its
``endToEndId``/``id`` (docs only), else a digest of the body.
"""

from __future__ import annotations

from typing import Any

from .common import first_text
from .credentials import credential_provider

__all__ = ["PROVIDER"]


def _guess(body: dict[str, Any]) -> tuple[str, str | None]:
    kind = first_text(body.get("tipo"), body.get("evento"), body.get("event")) or "event"
    resource = first_text(body.get("endToEndId"), body.get("id"), body.get("txId"))
    return kind, f"{kind}:{resource}:{first_text(body.get('status'))}" if resource else None


PROVIDER = credential_provider("bs2", "BS2", ("basic", "bearer", "none"), _guess)
