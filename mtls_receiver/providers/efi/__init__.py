"""Efí (Pix): mutual TLS, or a secret in the URL from Efí's address (``skip-mtls``).

``notifications`` verifies requests, ``options`` reads a route's settings, ``api`` talks to Efí's
webhook API, ``certs`` fetches its client-CA chain, ``probe`` checks a URL as Efí does at
registration, ``commands`` is the ``efi``, ``probe`` and ``certs fetch-efi`` commands.
"""

from __future__ import annotations

from ..base import Provider
from .commands import DEV, add_commands
from .notifications import (
    KINDS,
    Target,
    check_sender,
    parse_notification,
    registration_url,
    sample,
    target,
    verified_by,
    verify,
)
from .options import KEYS, MIN_HMAC_SECRET_LENGTH, MODES, SENDER_IPS, EfiOptions, parse_options

__all__ = [
    "KINDS",
    "MIN_HMAC_SECRET_LENGTH",
    "PROVIDER",
    "SENDER_IPS",
    "EfiOptions",
    "Target",
    "check_sender",
    "parse_notification",
    "registration_url",
    "sample",
    "target",
    "verify",
]

PROVIDER = Provider(
    name="efi",
    modes=MODES,
    keys=KEYS,
    parse_options=parse_options,
    verify=verify,
    verified_by=verified_by,
    add_commands=add_commands,
    dev=DEV,
    sample=sample,
)
