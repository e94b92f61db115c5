"""Kiwify: one module per webhook family, chosen by the route's ``mode``.

``sales`` (the default): sales/products webhooks, ``?signature=<hex>`` HMAC-SHA1 (sales.py).
``banking``: KiwiBank webhooks, Ed25519 over a SHA-256 digest (banking.py).
Each mode module exposes ``KEYS``, ``parse_options``, ``verify``, ``sample`` and ``verified_by``;
a new mode is one more entry in ``_MODES``.
"""

from __future__ import annotations

from ..modes import delegating_provider
from . import banking, sales

__all__ = ["PROVIDER"]

_MODES = {"sales": sales, "banking": banking}

PROVIDER = delegating_provider("kiwify", _MODES)
