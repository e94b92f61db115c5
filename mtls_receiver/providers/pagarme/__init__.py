"""Pagar.me: one module per API generation, chosen by the route's ``mode``.

``postback`` (the default): the v1–v4 postbacks, ``X-Hub-Signature: sha1=<hex>`` (postback.py).
Each mode module exposes ``KEYS``, ``parse_options``, ``verify``, ``sample`` and ``verified_by``;
a new mode is one more entry in ``_MODES``.
"""

from __future__ import annotations

from ..modes import delegating_provider
from . import postback

__all__ = ["PROVIDER"]

_MODES = {"postback": postback}

PROVIDER = delegating_provider("pagarme", _MODES)
