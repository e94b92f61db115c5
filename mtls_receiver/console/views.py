"""What each console page shows: a template name and the values it renders (escaped by Jinja2).

Every page answers one of the operator's questions from the inbox and the configuration. Values
that came from a request (payloads, audit reasons, peers, certificate subjects) are passed as they
are: the templates' autoescape makes them text, never markup.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from ..config import Config, Destination, ListenerConfig, redact_userinfo
from ..errors import StoreUnavailable
from ..store.reads import EVENT_STATUSES, EventQuery, RouteTraffic
from ..tls import read_certificates
from .host import ConsoleHost

__all__ = ["PAGE_SIZE", "WINDOWS", "Page", "config_page", "dead", "event", "events", "overview", "refusals"]

PAGE_SIZE = 50
EXPIRY_WARNING_DAYS = 21  # as lifecycle's start-up warning
#: the refusals page's time windows
WINDOWS = {
    "hour": timedelta(hours=1),
    "day": timedelta(days=1),
    "week": timedelta(days=7),
    "month": timedelta(days=30),
}

Page = tuple[str, dict[str, Any]]


def audit_time(moment: datetime) -> str:
    """A moment in the format of an audit row's ``at`` (fixed-width UTC ISO 8601: compares as text)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+00:00")


# --- overview -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CertificateRow:
    listener: str
    kind: str  # server certificate or client CA
    subject: str
    not_after: str
    days: int | None  # None: the file could not be read (``error`` says why)
    error: str = ""

    @property
    def warn(self) -> bool:
        return self.days is None or self.days < EXPIRY_WARNING_DAYS


def certificates(config: Config, now: datetime) -> list[CertificateRow]:
    """Each listener's server certificate and client CA certificates, with the days they have left."""
    rows = []
    for listener in config.listeners:
        for kind, path, leaf_only in _certificate_files(listener):
            try:
                found = read_certificates(path)
            except (OSError, ValueError) as exc:
                rows.append(CertificateRow(listener.name, kind, str(path), "", None, f"cannot read: {exc}"))
                continue
            for cert in found[:1] if leaf_only else found:
                days = int((cert.not_after - now).total_seconds() // 86400)
                rows.append(
                    CertificateRow(listener.name, kind, cert.subject, f"{cert.not_after:%Y-%m-%d}", days)
                )
    return rows


def _certificate_files(listener: ListenerConfig) -> Iterator[tuple[str, Path, bool]]:
    yield "server certificate", listener.cert, True
    if listener.client_ca is not None and listener.client_certs != "none":
        yield "client CA", listener.client_ca, False


async def overview(host: ConsoleHost, request: web.Request) -> Page:
    """Per route: requests in the last hour and day; the outbox; certificates; workers and store."""
    config, now = host.config, datetime.now(UTC)
    hour: Mapping[str, RouteTraffic] = {}
    day: Mapping[str, RouteTraffic] = {}
    stats: dict[str, int] = {}
    store_error = ""
    try:
        hour = await host.store.traffic(now - timedelta(hours=1))
        day = await host.store.traffic(now - timedelta(days=1))
        stats = await host.store.stats()
    except StoreUnavailable as exc:
        store_error = str(exc)
    names = [route.path for route in config.routes]
    names += sorted((set(hour) | set(day)) - set(names))  # requests to paths no route serves (404s)
    providers = {route.path: route.provider for route in config.routes}
    traffic = [
        {
            "route": name,
            "provider": providers.get(name, "-"),
            "hour": hour.get(name, RouteTraffic(name)),
            "day": day.get(name, RouteTraffic(name)),
        }
        for name in names
    ]
    workers = host.workers
    return "overview.html", {
        "traffic": traffic,
        "stats": stats,
        "store": config.store.description,
        "store_error": store_error,
        "certificates": certificates(config, now),
        "workers": workers.summary() if workers is not None else "one process serves everything",
        "ready": await host.ready(),
        "now": audit_time(now)[:19] + "Z",
    }


# --- events ---------------------------------------------------------------------------------------


def _text(request: web.Request, name: str) -> str | None:
    value = request.query.get(name, "").strip()
    return value or None


def _moment(request: web.Request, name: str) -> datetime | None:
    """A ``datetime-local`` field (``2026-11-30T15:20``), read as UTC; anything else is ignored."""
    value = _text(request, name)
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name}: not a date and time (YYYY-MM-DDTHH:MM, UTC)") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _page_number(request: web.Request) -> int:
    value = request.query.get("page", "1")
    return int(value) if value.isdigit() and 0 < int(value) < 100_000 else 1


def _pages(request: web.Request, number: int, more: bool) -> dict[str, str]:
    """Links to the previous and next pages, with the same filter."""
    links = {}
    for name, target in (("previous", number - 1), ("next", number + 1)):
        if (name == "previous" and number > 1) or (name == "next" and more):
            query = {**{k: v for k, v in request.query.items() if k != "page"}, "page": str(target)}
            links[name] = f"{request.path}?{urlencode(query)}"
    return links


async def _event_list(host: ConsoleHost, request: web.Request, query: EventQuery) -> dict[str, Any]:
    found = await host.store.find_events(query)
    number = query.offset // PAGE_SIZE + 1
    return {
        "events": found[:PAGE_SIZE],
        "pages": _pages(request, number, len(found) > PAGE_SIZE),
        "page": number,
    }


async def events(host: ConsoleHost, request: web.Request) -> Page:
    """Events by route, provider, status, time and id / dedup key / endToEndId, newest first."""
    status = _text(request, "status")
    if status is not None and status not in EVENT_STATUSES:
        raise web.HTTPBadRequest(text=f"status: one of {', '.join(EVENT_STATUSES)}")
    number = _page_number(request)
    query = EventQuery(
        route=_text(request, "route"),
        provider=_text(request, "provider"),
        status=status,
        since=_moment(request, "since"),
        until=_moment(request, "until"),
        search=_text(request, "q"),
        limit=PAGE_SIZE,
        offset=(number - 1) * PAGE_SIZE,
    )
    config = host.config
    return "events.html", {
        **await _event_list(host, request, query),
        "filter": {
            name: request.query.get(name, "")
            for name in ("route", "provider", "status", "since", "until", "q")
        },
        "routes": [route.path for route in config.routes],
        "providers": sorted({route.provider for route in config.routes}),
        "statuses": EVENT_STATUSES,
    }


async def event(host: ConsoleHost, request: web.Request) -> Page:
    """One event: its payload, who sent it and how it was verified, every delivery attempt."""
    found = await host.store.get_event(request.match_info["event_id"])
    if found is None:
        raise web.HTTPNotFound(text="no such event")
    stored, attempts = found
    payload = json.dumps(stored.payload, indent=2, ensure_ascii=False, sort_keys=False)
    forwards = host.config.destination(stored.route) is not None
    return "event.html", {
        "event": stored,
        "payload": payload,
        "attempts": attempts,
        "replayable": forwards and stored.status in ("dead", "delivered"),
        "replayed": request.query.get("replayed") == "1",
    }


async def dead(host: ConsoleHost, request: web.Request) -> Page:
    """Events the application never took: select some and send them again."""
    number = _page_number(request)
    query = EventQuery(status="dead", limit=PAGE_SIZE, offset=(number - 1) * PAGE_SIZE)
    replayed = request.query.get("replayed", "")
    return "dead.html", {
        **await _event_list(host, request, query),
        "replayed": int(replayed) if replayed.isdigit() else None,
    }


# --- refusals -------------------------------------------------------------------------------------


async def refusals(host: ConsoleHost, request: web.Request) -> Page:
    """The audit's refusals by reason and by peer, and the requests behind the one picked."""
    window = request.query.get("window", "day")
    if window not in WINDOWS:
        window = "day"
    since = audit_time(datetime.now(UTC) - WINDOWS[window])
    reason, peer = _text(request, "reason"), _text(request, "peer")
    store = host.store
    picked = await store.refusals(since, reason, peer) if reason is not None or peer is not None else None
    return "refusals.html", {
        "window": window,
        "windows": list(WINDOWS),
        "by_reason": await store.refusal_groups(since, "reason"),
        "by_peer": await store.refusal_groups(since, "peer"),
        "reason": reason,
        "peer": peer,
        "picked": picked,
        "link": lambda **query: f"/refusals?{urlencode({'window': window, **query})}",
    }


# --- configuration --------------------------------------------------------------------------------


def _redacted(url: str | None) -> str:
    """A URL without the password or token it may carry before its host."""
    return redact_userinfo(url) if url else ""


def _destination(destination: Destination) -> str:
    """Where events go: the URL without its password, the handler, or the broker (credentials hidden)."""
    if destination.broker is not None:
        return destination.broker.describe()
    return _redacted(destination.url) or destination.handler or ""


def secret_sources(raw: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """Every secret reference in the config file as ``(key, "env:NAME" | "file:/path")``: where the
    secrets come from, never what they are."""
    if isinstance(raw, dict):
        if len(raw) == 1 and set(raw) <= {"env", "file"} and isinstance(next(iter(raw.values())), str):
            ((kind, ref),) = raw.items()
            yield key, f"{kind}:{ref}"
            return
        for name, value in raw.items():
            yield from secret_sources(value, f"{key}.{name}" if key else name)
    elif isinstance(raw, list):
        for index, item in enumerate(raw):
            yield from secret_sources(item, f"{key}[{index}]")
    elif isinstance(raw, str) and raw.startswith("env:") and key.endswith("url"):
        yield key, raw


def _file_secrets(config: Config) -> list[tuple[str, str]]:
    try:
        raw = tomllib.loads(config.source.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        return [("(config file)", f"cannot read {config.source}: {exc}")]
    return list(secret_sources(raw))


def _listener(listener: ListenerConfig) -> dict[str, Any]:
    return {
        "name": listener.name,
        "address": listener.address,
        "cert": str(listener.cert),
        "key": str(listener.key),
        "client_certs": listener.client_certs,
        "client_ca": str(listener.client_ca or ""),
        "min_tls": listener.min_tls,
        "trusted_proxies": ", ".join(map(str, listener.trusted_proxies)) or "none",
        "client_address_header": listener.client_address_header or "",
        "proxy_protocol": listener.proxy_protocol,
        "limits": asdict(listener.limits),
    }


async def config_page(host: ConsoleHost, request: web.Request) -> Page:
    """Listeners, routes with their effective allowlists, limits, where each secret comes from."""
    config = host.config
    routes = []
    for route in config.routes:
        allowed = route.allow_ips or route.options.sender_ips(route.mode)
        destination = config.destination(route.path)
        routes.append(
            {
                "path": route.path,
                "listener": route.listener,
                "provider": route.provider,
                "mode": route.mode,
                "allow": ", ".join(map(str, allowed)) or "any address",
                "allow_source": "route" if route.allow_ips else ("provider default" if allowed else ""),
                "tolerance": "provider default" if route.tolerance is None else f"{route.tolerance} s",
                "options": route.options.describe(),
                "forward": _destination(destination) if destination else "not forwarded",
            }
        )
    forward = config.forward
    admin = config.admin
    return "config.html", {
        "source": str(config.source),
        "workers": config.workers,
        "listeners": [_listener(listener) for listener in config.listeners],
        "routes": routes,
        "store": config.store.description,
        "audit_retention_days": config.store.audit_retention_days,
        "forward": {
            "default": _destination(forward.default) if forward.default else "none",
            "signing secrets": len(forward.secrets),
            "concurrency": forward.concurrency,
            "timeout": f"{forward.timeout:g} s",
            "max_attempts": forward.max_attempts,
            "max_age": f"{forward.max_age:g} s",
            "backoff": f"{forward.backoff_base:g} s doubling, at most {forward.backoff_max:g} s",
        },
        "admin": {
            "address": f"{admin.host}:{admin.port}",
            "token": admin.token_source or "none (loopback only)",
        },
        "health": asdict(config.health),
        "secrets": _file_secrets(config),
    }
