"""What the operator console reads: traffic per route, events by filter, refusals by reason and peer.

The statements are written once (``?`` placeholders, as :mod:`.rows`) and run by both backends
through :class:`ConsoleReads`, which needs only a backend's ``select``. They read and never write:
the console looks at the inbox the way ``events list`` does, and only ``replay`` changes it.

Time bounds on events use the event id, which starts with its arrival time in milliseconds
(:func:`.rows.new_event_id`): a range of the unique index on ``id`` instead of a scan of every
event. Audit rows are few by comparison (repeats are coalesced, old ones purged) and are scanned.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..events import AuditRecord, StoredEvent
from .rows import AUDIT_COLUMNS, EVENT_COLUMNS, EVENTS_FROM, audit_from_row, event_from_row

__all__ = [
    "EVENT_STATUSES",
    "QUERY_TIMEOUT",
    "ConsoleReads",
    "EventQuery",
    "RefusalGroup",
    "RouteTraffic",
    "event_id_bound",
]

EVENT_STATUSES = ("stored", "pending", "delivered", "dead")
#: seconds a console query may run (a search of every payload of a large inbox): then it is stopped
QUERY_TIMEOUT = 10.0


@dataclass(frozen=True)
class EventQuery:
    """A filter of the events page; every field left empty matches everything."""

    route: str | None = None
    provider: str | None = None
    status: str | None = None
    since: datetime | None = None  # received at or after (UTC)
    until: datetime | None = None  # received before
    search: str | None = None  # an event id, a dedup key, or a string value in the payload (endToEndId)
    limit: int = 50
    offset: int = 0


@dataclass(frozen=True)
class RouteTraffic:
    """One route's requests since a moment: answered below 400, refused, and accepted requests that
    stored no new event (duplicates: the sender repeating an event already stored)."""

    route: str
    accepted: int = 0
    refused: int = 0
    stored_requests: int = 0  # accepted requests that stored at least one new event

    @property
    def duplicates(self) -> int:
        return max(0, self.accepted - self.stored_requests)


@dataclass(frozen=True)
class RefusalGroup:
    """Refusals sharing a reason (or a peer): how many, from how many others, the last one's time."""

    key: str
    count: int
    others: int  # distinct peers of a reason, or distinct reasons of a peer
    last_at: str


def event_id_bound(moment: datetime) -> str:
    """The smallest event id of an event received at ``moment`` (ids start with milliseconds in hex)."""
    return f"evt_{int(moment.timestamp() * 1000):012x}"


def _like_pattern(text: str) -> str:
    """``text`` as a whole JSON string value inside a stored payload, LIKE's wildcards taken literally."""
    quoted = json.dumps(text, ensure_ascii=False)  # as the inbox wrote it (jsoncodec): "...", escaped
    return "%" + quoted.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def events_sql(query: EventQuery) -> tuple[str, list[Any]]:
    """The SELECT for ``query``: newest first, ``limit + 1`` rows (the extra one says a next page exists)."""
    where, params = ["1 = 1"], []
    if query.route:
        where.append("e.route = ?")
        params.append(query.route)
    if query.provider:
        where.append("e.provider = ?")
        params.append(query.provider)
    if query.status:
        where.append("COALESCE(o.status, 'stored') = ?")
        params.append(query.status)
    if query.since is not None:
        where.append("e.id >= ?")
        params.append(event_id_bound(query.since))
    if query.until is not None:
        where.append("e.id < ?")
        params.append(event_id_bound(query.until))
    if query.search:
        where.append("(e.id = ? OR e.dedup_key = ? OR e.payload LIKE ? ESCAPE '\\')")
        params += [query.search, query.search, _like_pattern(query.search)]
    sql = (
        f"SELECT {EVENT_COLUMNS} FROM {EVENTS_FROM} WHERE {' AND '.join(where)}"
        " ORDER BY e.seq DESC LIMIT ? OFFSET ?"
    )
    return sql, [*params, query.limit + 1, query.offset]


#: requests per route and outcome since a moment (a coalesced row stands for ``count`` refusals)
TRAFFIC = (
    "SELECT route, CASE WHEN status < 400 THEN 'accepted' ELSE 'refused' END, SUM(count)"
    " FROM audit WHERE at >= ? GROUP BY 1, 2"
)
#: requests that stored a new event: its events carry the request's time and peer
STORING_REQUESTS = (
    "SELECT route, COUNT(DISTINCT received_at || ' ' || peer) FROM events WHERE id >= ? GROUP BY route"
)
_GROUP = {
    "reason": "SELECT reason, SUM(count), COUNT(DISTINCT peer), MAX(COALESCE(last_at, at)) FROM audit",
    "peer": "SELECT peer, SUM(count), COUNT(DISTINCT reason), MAX(COALESCE(last_at, at)) FROM audit",
}


def refusal_groups_sql(by: str) -> str:
    """Refusals since a moment grouped ``by`` reason or peer, the most frequent first."""
    return f"{_GROUP[by]} WHERE status >= 400 AND at >= ? GROUP BY 1 ORDER BY 2 DESC, 4 DESC LIMIT ?"


def refusals_sql(reason: str | None, peer: str | None) -> tuple[str, list[Any]]:
    """Refused requests since a moment (the first parameter), newest first, of a reason and/or a peer."""
    where = ["status >= 400", "at >= ?"]
    params: list[Any] = []
    if reason is not None:
        where.append("reason = ?")
        params.append(reason)
    if peer is not None:
        where.append("peer = ?")
        params.append(peer)
    return f"SELECT {AUDIT_COLUMNS} FROM audit WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ?", params


class ConsoleReads:
    """The console's queries, for a backend that can run a shared ``?`` statement (``select``)."""

    async def select(self, sql: str, *params: Any) -> Sequence[Sequence[Any]]:
        raise NotImplementedError

    async def traffic(self, since: datetime) -> dict[str, RouteTraffic]:
        """Requests per route since ``since``: accepted, refused, duplicates."""
        at = since.strftime("%Y-%m-%dT%H:%M:%S.000+00:00")
        counts: dict[str, dict[str, int]] = {}
        for route, outcome, count in await self.select(TRAFFIC, at):
            counts.setdefault(route, {})[outcome] = int(count)
        for route, count in await self.select(STORING_REQUESTS, event_id_bound(since)):
            counts.setdefault(route, {})["stored_requests"] = int(count)
        return {route: RouteTraffic(route, **values) for route, values in counts.items()}

    async def find_events(self, query: EventQuery) -> list[StoredEvent]:
        """Events matching ``query``, newest first; one more than ``query.limit`` if there are more."""
        sql, params = events_sql(query)
        return [event_from_row(row) for row in await self.select(sql, *params)]

    async def refusal_groups(self, since: str, by: str, limit: int = 50) -> list[RefusalGroup]:
        """Refusals since ``since`` (an audit ``at``) grouped by ``reason`` or ``peer``."""
        rows = await self.select(refusal_groups_sql(by), since, limit)
        return [
            RefusalGroup(str(key), int(count), int(others), str(last)) for key, count, others, last in rows
        ]

    async def refusals(
        self, since: str, reason: str | None = None, peer: str | None = None, limit: int = 100
    ) -> list[AuditRecord]:
        """The refused requests behind a group, newest first."""
        sql, params = refusals_sql(reason, peer)
        return [audit_from_row(row) for row in await self.select(sql, since, *params, limit)]
