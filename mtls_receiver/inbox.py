"""The operator's commands over the inbox: ``events``, ``audit`` and ``db migrate``.

They read the configuration without its secrets (an operator looking at the inbox needs none of
them), open the store read-only where they only read, and escape whatever a sender wrote before it
reaches the terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TypeVar

from .config import Config, load_config
from .errors import EXIT_CONFIG, EXIT_FAILURE
from .events import AuditRecord, StoredEvent
from .logs import client_fields, escape, json_line, render_fields, render_value
from .store import Access, AuditCount, AuditQuery, Store, open_store

__all__ = ["audit_list", "audit_summary", "db_migrate", "events_list", "events_replay", "events_show"]

T = TypeVar("T")


def _with_store(config: Config, access: Access, action: Callable[[Store], Awaitable[T]]) -> T:
    """Run one operator action against the configured store (also while the server runs).

    None of them owns the inbox: looking opens it read-only, and no command touches the leases
    of deliveries in flight (releasing one made the forwarder deliver a Pix twice, out of order).
    """

    async def run() -> T:
        store = open_store(config.store, access)
        await store.open()
        try:
            return await action(store)
        finally:
            await store.close()

    return asyncio.run(run())


def _event_json(event: StoredEvent) -> dict[str, object]:
    return {
        "id": event.id,
        "provider": event.provider,
        "route": event.route,
        "kind": event.kind,
        "dedup_key": event.dedup_key,
        "received_at": event.received_at,
        "peer": event.peer,
        "verified_by": event.verified_by,
        "status": event.status,
        "attempts": event.attempts,
        "client_subject": event.client.subject if event.client else None,
        "client_fingerprint": event.client.fingerprint if event.client else None,
        "payload": event.payload,
    }


def events_list(args: argparse.Namespace) -> int:
    config = load_config(args.config, read_secrets=False)
    events = _with_store(
        config, Access.READ, lambda store: store.list_events(args.limit, args.status, args.route)
    )
    if args.json:
        for event in events:
            print(json_line(_event_json(event)))
        return 0
    if not events:
        print(f"no events in {config.store.description}{_filtered(args.status, args.route)}")
        return 0
    print(f"{'RECEIVED (UTC)':<29}  {'ID':<36}  {'STATUS':<9}  SENDER/KIND  ROUTE  DEDUP KEY  CLIENT")
    for event in events:  # what a sender wrote is escaped: kind, dedup key, subject cannot drive the terminal
        client = escape(event.client.subject) if event.client else "-"
        print(
            f"{event.received_at}  {event.id}  {event.status:<9}  {event.provider}/{escape(event.kind)}"
            f"  {event.route}  {escape(event.dedup_key)}  {client}"
        )
    return 0


def _filtered(*filters: object) -> str:
    return " matching the filters" if any(value is not None for value in filters) else ""


def _audit_json(audit: AuditRecord) -> dict[str, object]:
    return {
        "at": audit.at,
        "last_at": audit.last_at,
        "count": audit.count,
        "listener": audit.listener,
        "route": audit.route,
        "method": audit.method,
        "path": audit.path,
        "peer": audit.peer,
        "status": audit.status,
        "reason": audit.reason,
        **client_fields(audit.client),
    }


def _audit_query(args: argparse.Namespace) -> AuditQuery:
    return AuditQuery(
        route=args.route, status=args.status, reason=args.reason, peer=args.peer, since=args.since
    )


def audit_list(args: argparse.Namespace) -> int:
    """Repeats of one refusal are one row: ``xN`` and the time of the last (store/audit.py)."""
    config = load_config(args.config, read_secrets=False)
    query = _audit_query(args)
    rows = _with_store(config, Access.READ, lambda store: store.list_audit(args.limit, query))
    if not rows and not args.json:
        print(f"no audit rows in {config.store.description}{_filtered(*vars(query).values())}")
    for audit in rows:
        if args.json:
            print(json_line(_audit_json(audit)))
            continue
        repeats = f"  x{audit.count} until {audit.last_at}" if audit.count > 1 else ""
        fields = {
            "listener": audit.listener,
            "peer": audit.peer,
            "reason": audit.reason,
            "subject": audit.client.subject if audit.client else None,
        }
        print(
            f"{audit.at}  {audit.status}  {render_value(audit.method)} {render_value(audit.path)}"
            f"  {render_fields(fields)}{repeats}"
        )
    return 0


def audit_summary(args: argparse.Namespace) -> int:
    """Requests (a coalesced row counts as its repeats) by route, by status and by reason."""
    config = load_config(args.config, read_secrets=False)
    query = _audit_query(args)
    counts = _with_store(config, Access.READ, lambda store: store.audit_summary(query))
    if args.json:
        for count in counts:
            print(json_line(vars(count)))
        return 0
    if not counts:
        print(f"no audit rows in {config.store.description}{_filtered(*vars(query).values())}")
        return 0
    print(f"{sum(count.requests for count in counts)} request(s)")
    for title, key in (
        ("route", lambda c: c.route),
        ("status", lambda c: str(c.status)),
        ("reason", lambda c: escape(c.reason) or "-"),
    ):
        _print_counts(title, counts, key)
    return 0


def _print_counts(title: str, counts: list[AuditCount], key: Callable[[AuditCount], str]) -> None:
    totals: Counter[str] = Counter()
    for count in counts:
        totals[key(count)] += count.requests
    print(f"\nby {title}:")
    for value, requests in totals.most_common():
        print(f"  {requests:>9}  {value}")


def events_show(args: argparse.Namespace) -> int:
    config = load_config(args.config, read_secrets=False)
    found = _with_store(config, Access.READ, lambda store: store.get_event(args.event_id))
    if found is None:
        print(f"mtls-receiver: no event {args.event_id}", file=sys.stderr)
        return EXIT_FAILURE
    event, attempts = found
    print(json_line(_event_json(event), indent=2))
    print(f"delivery attempts: {len(attempts)}")
    for attempt in attempts:
        outcome = f"HTTP {attempt.status_code}" if attempt.status_code is not None else "no HTTP answer"
        error = f"  {attempt.error}" if attempt.error and attempt.status_code is None else ""
        print(f"  #{attempt.number}  {attempt.at}  {outcome}  {attempt.duration_ms} ms{error}")
    return 0


def events_replay(args: argparse.Namespace) -> int:
    chosen = [bool(args.event_ids), args.dead, args.stored]
    if chosen.count(True) != 1 or (args.since and args.event_ids):
        print(
            "mtls-receiver: give event IDs, or --dead [--since T], or --stored [--since T]", file=sys.stderr
        )
        return EXIT_CONFIG
    config = load_config(args.config, read_secrets=False)
    stored_on: list[str] = []
    if args.stored:
        stored_on = [route.path for route in config.routes if config.destination(route.path) is not None]
        if not stored_on:
            print(
                f"mtls-receiver: {config.source}: no route forwards anywhere ([forward] url or handler,"
                " or a route's forward_url): nothing to queue for",
                file=sys.stderr,
            )
            return EXIT_CONFIG
    count = _with_store(
        config,
        Access.WRITE,
        lambda store: store.replay(args.event_ids, args.since, all_dead=args.dead, stored_on=stored_on),
    )
    print(f"queued {count} event(s) for delivery")
    if args.event_ids and count < len(args.event_ids):
        print(f"mtls-receiver: {len(args.event_ids) - count} ID(s) not found", file=sys.stderr)
        return EXIT_FAILURE
    return 0


def db_migrate(args: argparse.Namespace) -> int:
    config = load_config(args.config, read_secrets=False)

    async def touch(store: Store) -> None:  # opening a store applies the missing migrations
        return None

    _with_store(config, Access.SERVE, touch)
    print(f"{config.store.description}: schema is current")
    return 0
