"""Celcoin: the credentials you registered with the webhook, nothing signed.

``mode = "basic"`` (``auth: {"type": "basic", "login", "pwd"}``, sent as ``Authorization: Basic``;
the only kind BaaS card webhooks support) or ``mode = "bearer"`` (the "JWT"/OAuth registration:
Celcoin fetches a token from your ``url_token`` and sends it as Bearer: list the tokens your
token endpoint issues). Event type: ``entity``; dedup: the route's ``dedup`` when given, else
the body's ``body.id``/``id`` with the entity and status, else a digest of the body (the body's
shape is docs only).
"""

from __future__ import annotations

from typing import Any

from .common import first_text
from .credentials import credential_provider

__all__ = ["PROVIDER"]


def _guess(body: dict[str, Any]) -> tuple[str, str | None]:
    inner = body.get("body")
    inner = inner if isinstance(inner, dict) else {}
    kind = first_text(body.get("entity"), body.get("event")) or "event"
    resource = first_text(inner.get("id"), inner.get("transactionId"), body.get("id"))
    status = first_text(body.get("status"), inner.get("status"))
    return kind, f"{kind}:{resource}:{status}" if resource else None


PROVIDER = credential_provider("celcoin", "Celcoin", ("basic", "bearer"), _guess)
