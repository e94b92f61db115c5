"""A provider whose modes are separate modules (``providers/<name>/<mode>.py``), one per scheme.

Each mode module exposes ``KEYS`` (the route keys it reads; optional), ``parse_options(reader,
raw, context)``, ``verify(route, request)``, ``sample(route, event, now)`` and
``verified_by(route, client)``; :func:`delegating_provider` builds the one :class:`Provider`
that hands each call to the module of the route's ``mode``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING

from .base import Provider, RouteContext, SampleRequest

if TYPE_CHECKING:
    from ..config.reader import Reader, Table
    from ..config.schema import ProviderOptions, RouteConfig
    from ..events import ClientIdentity, IncomingRequest, Verdict

__all__ = ["delegating_provider"]


def keys_of(module: ModuleType) -> frozenset[str]:
    """The route keys a mode module reads: a key another mode reads is an error on its routes."""
    return frozenset(getattr(module, "KEYS", frozenset()))


def delegating_provider(name: str, modes: Mapping[str, ModuleType]) -> Provider:
    """The Provider ``name`` whose modes (the first is the default) are the modules of ``modes``."""

    def parse_options(reader: Reader, raw: Table, context: RouteContext) -> ProviderOptions:
        for key in sorted((keys - keys_of(modes[context.mode])) & raw.keys()):
            users = ", ".join(repr(mode) for mode, module in modes.items() if key in keys_of(module))
            reader.fail(f"{context.key}.{key}", f"not read in mode {context.mode!r} (only in mode {users})")
        options: ProviderOptions = modes[context.mode].parse_options(reader, raw, context)
        return options

    def verify(route: RouteConfig, request: IncomingRequest) -> Verdict:
        verdict: Verdict = modes[route.mode].verify(route, request)
        return verdict

    def verified_by(route: RouteConfig, client: ClientIdentity | None) -> str:
        return str(modes[route.mode].verified_by(route, client))

    def sample(route: RouteConfig, event: str | None, now: float) -> SampleRequest:
        request: SampleRequest = modes[route.mode].sample(route, event, now)
        return request

    keys: frozenset[str] = frozenset().union(*(keys_of(module) for module in modes.values()))
    return Provider(
        name=name,
        modes=tuple(modes),
        keys=keys,
        parse_options=parse_options,
        verify=verify,
        verified_by=verified_by,
        sample=sample,
    )
