"""A Python ``module:function`` called with the envelope; an exception is a failed attempt."""

from __future__ import annotations

import asyncio
import importlib
import inspect
from collections.abc import Callable
from typing import Any

from .base import Message, Outcome, Sink

__all__ = ["HandlerSink", "load_handler"]


def load_handler(spec: str) -> Callable[..., Any]:
    """Import ``module:function``; ImportError/AttributeError/TypeError say what is wrong."""
    module_name, _, function_name = spec.partition(":")
    function = getattr(importlib.import_module(module_name), function_name)
    if not callable(function):
        raise TypeError(f"{spec} is not callable")
    return function  # type: ignore[no-any-return]


class HandlerSink(Sink):
    def __init__(self, spec: str) -> None:
        self.spec = spec
        self._function: Callable[..., Any] | None = None

    async def deliver(self, message: Message) -> Outcome:
        if self._function is None:  # loaded on first use: a reload may name a new one
            self._function = load_handler(self.spec)
        if inspect.iscoroutinefunction(self._function):
            await self._function(message.envelope)
        else:
            await asyncio.to_thread(self._function, message.envelope)
        return Outcome()
