"""One exception hierarchy for the whole package.

Every error the receiver raises on purpose derives from :class:`ReceiverError`,
so callers (the CLI, the server) can tell expected failures from bugs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config.schema import RefreshableKeys

__all__ = [
    "EXIT_BUG",
    "EXIT_CONFIG",
    "EXIT_FAILURE",
    "ConfigError",
    "ConfigErrors",
    "ReceiverError",
    "Refusal",
    "StaleKeys",
    "StoreUnavailable",
]

#: the command line's exit statuses: a failure it reports, a mistake in what was asked, a bug (EX_SOFTWARE)
EXIT_FAILURE, EXIT_CONFIG, EXIT_BUG = 1, 2, 70


class ReceiverError(Exception):
    """Base class of every error this package raises deliberately."""


class ConfigError(ReceiverError):
    """A configuration file is invalid; the message names file, key and problem."""

    def __init__(self, file: str, key: str, problem: str) -> None:
        self.file, self.key, self.problem = file, key, problem
        super().__init__(f"{file}: {key}: {problem}" if key else f"{file}: {problem}")


class ConfigErrors(ConfigError):
    """Several problems in one configuration file, each a :class:`ConfigError`, one per line.

    Reported together so that fixing a file takes one round, not one per mistake; the fields of
    the first are this error's own (``file``, ``key``, ``problem``).
    """

    def __init__(self, errors: list[ConfigError]) -> None:
        first = errors[0]
        super().__init__(first.file, first.key, first.problem)
        self.errors = tuple(errors)
        self.args = ("\n".join(str(error) for error in errors),)


class Refusal(ReceiverError):
    """A request is refused: carries the HTTP status to answer and a one-line reason.

    Like h11's ``status_hint``, the status travels with the error so the pure
    verification code never has to know about the web framework.
    """

    headers: Mapping[str, str] = {}  # sent with the refusal (``Retry-After`` with a 503)

    def __init__(self, status: int, reason: str) -> None:
        self.status, self.reason = status, reason
        super().__init__(f"{status}: {reason}")


class StaleKeys(Refusal):
    """No trusted public key verified a signature, and the route's keys can be fetched again.

    The verifier stays pure: it raises this, and the dispatcher awaits ``source.refresh()``
    (rate-limited) and verifies once more if new keys arrived; otherwise this refusal is the answer.
    A 503 (no key held at all: our side) tells the sender when to retry."""

    def __init__(self, status: int, reason: str, source: RefreshableKeys) -> None:
        super().__init__(status, reason)
        self.source = source
        if status == 503:
            self.headers = {"Retry-After": "30"}


class StoreUnavailable(ReceiverError):
    """The event store could not commit; the sender must retry (answered 503)."""
