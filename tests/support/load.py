"""Many Pix notifications at once, each on a fresh TLS connection, and what came back."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Iterable

from .client import Answer, https_post, pix
from .polling import WAIT

__all__ = ["post_pix", "send_all", "statuses"]


async def post_pix(port: int, context: ssl.SSLContext, e2e: str) -> Answer:
    """One Pix notification on a fresh TLS connection."""
    return await https_post(port, "/webhook/pix", {"pix": [pix(e2e)]}, context)


async def send_all(
    port: int,
    context: ssl.SSLContext,
    e2es: Iterable[str],
    senders: int = 4,
    on_answer: Callable[[str, Answer], None] = lambda e2e, answer: None,
) -> dict[str, Answer | OSError]:
    """Each endToEndId once, by ``senders`` concurrent senders; a connection that fails gives its OSError."""
    results: dict[str, Answer | OSError] = {}
    queue = iter(e2es)

    async def sender() -> None:
        for e2e in queue:  # shared: each id is taken by one sender
            try:
                results[e2e] = answer = await post_pix(port, context, e2e)
            except OSError as exc:  # reset, refused, TLS EOF, timeout
                results[e2e] = exc
                continue
            on_answer(e2e, answer)

    await asyncio.wait_for(asyncio.gather(*(sender() for _ in range(senders))), WAIT)
    return results


def statuses(results: dict[str, Answer | OSError]) -> list[int | str]:
    return [r.status if isinstance(r, Answer) else type(r).__name__ for r in results.values()]
