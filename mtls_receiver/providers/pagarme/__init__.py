"""Pagar.me: one module per API generation, chosen by the route's ``mode``.

``postback`` (the default): the v1–v4 postbacks, ``X-Hub-Signature: sha1=<hex>`` (postback.py).
``v5``: the Core API webhooks, ``X-Webhook-Asymmetric-Signature`` RS256 with Pagar.me's JWKS (core_api.py).
Each mode module exposes ``KEYS``, ``parse_options``, ``verify``, ``sample`` and ``verified_by``;
a new mode is one more entry in ``_MODES``.
"""

from __future__ import annotations

from ..modes import delegating_provider
from . import core_api, postback

__all__ = ["PROVIDER"]

_MODES = {"postback": postback, "v5": core_api}

PROVIDER = delegating_provider("pagarme", _MODES)
