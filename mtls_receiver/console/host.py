"""What the console needs of the receiver serving it (the supervisor's, or the single process's)."""

from __future__ import annotations

from typing import Protocol

from ..config import Config
from ..store import Store

__all__ = ["ConsoleHost", "Pool", "Wakeable"]


class Pool(Protocol):
    """The worker processes of ``workers >= 2``."""

    @property
    def ready(self) -> bool: ...

    def summary(self) -> str: ...


class Wakeable(Protocol):
    def wake(self) -> None: ...


class ConsoleHost(Protocol):
    """A :class:`~mtls_receiver.lifecycle.Receiver`, as far as the console looks at it."""

    @property
    def config(self) -> Config: ...

    @property
    def store(self) -> Store: ...

    @property
    def workers(self) -> Pool | None: ...

    @property
    def forwarder(self) -> Wakeable | None: ...

    async def ready(self) -> bool: ...
