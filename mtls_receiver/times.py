"""Times an operator types (``--since``), read as what they say and compared as the store writes them.

The store writes every time in UTC, fixed width (``2026-11-30T10:58:00.000+00:00``), so rows compare
as text. A time typed with an offset (``-03:00``, ``Z``) is converted to UTC; one without an offset is
UTC (the store's, the logs' and the server's clock in a container: never the shell's zone, which
differs between the operator's laptop and the server). Anything else is an error, not a silent
"nothing matched": ``--since yesterday`` once queued 0 events.
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["parse_time", "store_time"]

EXAMPLE = "2026-11-30T07:58:00-03:00"


def parse_time(text: str) -> datetime:
    """An ISO 8601 date or date and time; without an offset it is UTC. ValueError names the text."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"not an ISO 8601 time: {text[:60]!r} (e.g. {EXAMPLE}, 2026-11-30T10:58Z or 2026-11-30;"
            " without an offset it is UTC)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def store_time(moment: datetime) -> str:
    """``moment`` as the store writes times (UTC, milliseconds, ``+00:00``): comparable as text."""
    utc = moment.astimezone(UTC)
    return f"{utc:%Y-%m-%dT%H:%M:%S}.{utc.microsecond // 1000:03d}+00:00"
