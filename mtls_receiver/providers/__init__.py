"""The senders: one module (or package) per sender, registered here by the name routes give it.

A provider module owns everything about its sender: the route keys it accepts (defaults,
validation, error messages), its modes, its default allowlist, how it verifies (a pure
function: no sockets, no I/O), its events' kinds and dedup keys, the ``verified_by`` it records,
and any commands of its own. It exposes all of it as one :class:`Provider`, named ``PROVIDER``.
Nothing outside ``providers/`` names a sender; this registry is the one place that does.

Adding a sender:

1. ``providers/<name>.py``: a frozen dataclass subclassing ``config.ProviderOptions`` (its route
   keys, typed), ``parse_options(reader, raw, context)`` reading them through the typed
   ``config.Reader`` (``reader.fail(key, problem)`` for anything wrong), ``verify(route,
   request) -> Verdict`` (``common.options_of`` gives it its options; ``common.verified_json``
   does method, allowlist, HMAC signature and JSON body), and ``PROVIDER = Provider(...)``.
2. One line in ``_MODULES`` below.
3. ``tests/test_<name>.py``: signatures built from the provider's documented algorithm (never
   from the verifier) and its published example vectors, its config errors, one request through
   a real server.
4. Docs: its row in the README's table of senders, and its section (or page) under ``docs/``
   with its config and where its dashboard takes the URL and secret.
"""

from __future__ import annotations

import functools
import importlib
from typing import TYPE_CHECKING

from ..errors import Refusal
from .base import DevRoute, Provider, Verifier

if TYPE_CHECKING:
    from ..config.schema import RouteConfig
    from ..events import ClientIdentity, IncomingRequest, Verdict

__all__ = [
    "PROVIDER_NAMES",
    "DevRoute",
    "Provider",
    "Verifier",
    "dev_route",
    "provider",
    "verification_method",
    "verifier_for",
]

#: ``provider = "..."`` -> the module under providers/ that defines it (imported when first asked for)
_MODULES = {
    "efi": "efi",
    "pix": "pix",
    "infi": "infi",
    "pomelo": "pomelo",
    "firebanking": "firebanking",
    "hmac": "generic",
    "token": "token",
    "allowlist": "allowlist",
    "mercadopago": "mercadopago",
    "asaas": "asaas",
    "pagbank": "pagbank",
    "pagarme": "pagarme",
    "kiwify": "kiwify",
    "iugu": "iugu",
    "celcoin": "celcoin",
    "bs2": "bs2",
    "stripe": "stripe",
    "standard-webhooks": "standard_webhooks",
    "public-key": "public_key",
    "starkbank": "starkbank",
    "woovi": "woovi",
}
PROVIDER_NAMES = tuple(_MODULES)
_DEV_PROVIDER = "efi"  # the sender ``serve --dev`` demonstrates


@functools.cache
def provider(name: str) -> Provider:
    """The provider registered as ``name``; KeyError for an unknown one."""
    module = importlib.import_module(f"{__name__}.{_MODULES[name]}")
    found = getattr(module, "PROVIDER", None)
    if not isinstance(found, Provider) or found.name != name:
        raise TypeError(f"{module.__name__}.PROVIDER must be the Provider named {name!r}")
    return found


def _refuse_everything(route: RouteConfig, request: IncomingRequest) -> Verdict:
    raise Refusal(403, f"no verifier configured for provider {route.provider!r}")


def verifier_for(name: str) -> Verifier:
    """The verification function for a provider; an unknown one refuses everything (fail closed)."""
    return provider(name).verify if name in _MODULES else _refuse_everything


def verification_method(route: RouteConfig, client: ClientIdentity | None) -> str:
    """How the sender of an event was authenticated, as recorded with it and sent on."""
    if route.provider not in _MODULES:
        return "none"  # its verifier refuses everything: nothing is ever recorded as verified by it
    return provider(route.provider).verified_by(route, client)


def dev_route() -> DevRoute:
    """What ``serve --dev`` and ``dev-certs`` set up: the demonstrated sender's route and sample request."""
    dev = provider(_DEV_PROVIDER).dev
    if dev is None:
        raise TypeError(f"provider {_DEV_PROVIDER!r} has no dev route")
    return dev
