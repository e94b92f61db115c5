"""One module per sender, each a pure verification function (no sockets, no I/O)."""

from __future__ import annotations

from collections.abc import Callable

from ..config import RouteConfig
from ..errors import Refusal
from ..events import IncomingRequest, Verdict
from . import efi, firebanking, generic, infi, pomelo

__all__ = ["Verifier", "verifier_for"]

Verifier = Callable[[RouteConfig, IncomingRequest], Verdict]

_VERIFIERS: dict[str, Verifier] = {
    "efi": efi.verify,
    "infi": infi.verify,
    "pomelo": pomelo.verify,
    "firebanking": firebanking.verify,
    "hmac": generic.verify,
}


def _refuse_everything(route: RouteConfig, request: IncomingRequest) -> Verdict:
    raise Refusal(403, f"no verifier configured for provider {route.provider!r}")


def verifier_for(provider: str) -> Verifier:
    """The verification function for a provider; an unknown one refuses everything (fail closed)."""
    return _VERIFIERS.get(provider, _refuse_everything)
