"""One module per sender, each a pure verification function (no sockets, no I/O)."""

from __future__ import annotations

from collections.abc import Callable

from ..config import RouteConfig
from ..errors import Refusal
from ..events import ClientIdentity, IncomingRequest, Verdict
from . import efi, firebanking, generic, infi, pomelo

__all__ = ["Verifier", "verification_method", "verifier_for"]

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


def verification_method(route: RouteConfig, client: ClientIdentity | None) -> str:
    """How the sender of an event was authenticated, as recorded with it and sent on."""
    if route.provider != "efi":
        return "hmac-signature"
    if route.mode == "mtls":
        return "mtls-client-certificate"
    return "ip-allowlist+url-hmac" + ("+client-certificate" if client else "")
