"""What a provider module hands the receiver: one :class:`Provider`, as its ``PROVIDER``.

The config loader imports this module (through the registry) while the config package is still
being imported: so nothing of the package is imported here at run time, only for type checking.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    import argparse
    from pathlib import Path

    from ..config.reader import Reader, Table
    from ..config.schema import ListenerConfig, ProviderOptions, RouteConfig
    from ..events import ClientIdentity, IncomingRequest, Verdict

__all__ = [
    "Commands",
    "DevRoute",
    "Provider",
    "RouteContext",
    "Sample",
    "SampleRequest",
    "SubCommands",
    "Verifier",
    "signature_verified",
]

#: a pure function: accept (a Verdict) or refuse (raise Refusal) one request to a route
Verifier: TypeAlias = "Callable[[RouteConfig, IncomingRequest], Verdict]"
SubCommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
#: adds a provider's commands to the CLI's subcommands, or to one of its groups by name ("certs")
Commands: TypeAlias = "Callable[[SubCommands, Mapping[str, SubCommands]], None]"


@dataclass(frozen=True)
class RouteContext:
    """What the config loader has read of a route when its provider reads the rest."""

    key: str  # the route's config key, "routes[0]", for error messages
    mode: str  # one of the provider's modes
    tolerance: int | None  # the route's timestamp tolerance; None: the provider's default
    listener: ListenerConfig  # the listener the route is on


@dataclass(frozen=True)
class DevRoute:
    """How ``serve --dev`` demonstrates a sender: the dev client's name, its routes, a request to try."""

    sender: str  # names the dev client chain: "<sender> dev root CA", "<sender, lower case> dev client"
    routes: str  # the [[routes]] tables of the dev config
    try_it: Callable[[str, Path], str]  # (the route's URL, the state directory) -> what to run


@dataclass(frozen=True)
class SampleRequest:
    """A request as the sender would make it, for ``send-test``: signed, or sent with a client certificate."""

    path: str  # appended to the route's path: "" or "/pix", and any query ("?data.id=123")
    headers: Mapping[str, str]
    body: bytes
    client_certificate: bool = False  # present the dev client certificate (mutual-TLS senders)


#: (route, event type or None for the provider's default, now in unix seconds) -> the request to send;
#: asymmetric senders sign with the route's local dev signing key, never a provider's private key
Sample: TypeAlias = "Callable[[RouteConfig, str | None, float], SampleRequest]"


def signature_verified(route: RouteConfig, client: ClientIdentity | None) -> str:
    """The ``verified_by`` of a sender that signs its requests."""
    return "hmac-signature"


@dataclass(frozen=True)
class Provider:
    """Everything the receiver knows of one sender, registered under ``name`` in ``providers/__init__``."""

    name: str  # the routes' ``provider = "..."``
    modes: tuple[str, ...]  # the routes' ``mode`` values; the first is the default
    keys: frozenset[str]  # the route keys it reads, beyond the ones every route has
    parse_options: Callable[[Reader, Table, RouteContext], ProviderOptions]  # fails through the reader
    verify: Verifier
    verified_by: Callable[[RouteConfig, ClientIdentity | None], str] = signature_verified  # recorded, sent on
    add_commands: Commands | None = None  # its ``mtls-receiver`` subcommands, if any
    dev: DevRoute | None = None  # what ``serve --dev`` shows, for the one sender it shows
    sample: Sample | None = None  # what ``send-test`` sends to one of its routes
