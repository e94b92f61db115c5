"""Bounded waits: poll a condition until it holds, and fail with what was seen when it never does.

Tests wait for what they can observe (a log line, a row, a counter), never for a fixed time. Only
what must NOT happen takes a fixed time to check: ``stays`` polls that it does not, for that long.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

__all__ = ["WAIT", "stays", "until", "wait_until"]

WAIT = 30.0  # the longest a wait for another process may take (seconds)

Condition = Callable[[], object]  # truthy when reached; ``until`` also awaits an awaitable result
Describe = Callable[[], str]  # what was seen instead, for the failure message


def _failure(timeout: float, what: Describe | None) -> AssertionError:
    return AssertionError(f"not within {timeout:g}s: {what() if what else 'condition not reached'}")


async def until(
    condition: Callable[[], object | Awaitable[object]],
    timeout: float = 20.0,
    what: Describe | None = None,
    interval: float = 0.02,
) -> None:
    """Wait (in the event loop) until ``condition()`` is true; it may be a coroutine function."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if await result if inspect.isawaitable(result) else result:
            return
        if time.monotonic() > deadline:
            raise _failure(timeout, what)
        await asyncio.sleep(interval)


def wait_until(
    condition: Condition, timeout: float = 20.0, what: Describe | None = None, interval: float = 0.05
) -> None:
    """Wait (blocking: a test or thread without an event loop) until ``condition()`` is true."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise _failure(timeout, what)
        time.sleep(interval)


async def stays(
    condition: Condition, seconds: float, what: Describe | None = None, interval: float = 0.02
) -> None:
    """Check (in the event loop) that ``condition()`` holds throughout ``seconds``: what must not happen
    (a second delivery) would have happened by then. Fails as soon as it does not hold."""
    deadline = time.monotonic() + seconds
    while True:
        if not condition():
            raise AssertionError(f"no longer true: {what() if what else 'condition broken'}")
        if time.monotonic() > deadline:
            return
        await asyncio.sleep(interval)
