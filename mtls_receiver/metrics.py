"""Prometheus metrics and the admin endpoints (/metrics, /healthz, /readyz), never on a public port."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from .config import Config
from .tls import read_certificates

__all__ = ["Metrics", "SampleKey", "admin_app", "counted", "refusal_class"]

_STATUS_CLASSES = {
    400: "bad request",
    401: "unauthorized",
    403: "forbidden",
    404: "not found",
    405: "method not allowed",
    413: "body too large",
    415: "unsupported media type",
}


def refusal_class(status: int, reason: str) -> str:
    """A bounded label for a refusal: the check that failed (``allowlist``, ``hmac``...) or the status."""
    prefix, sep, _ = reason.partition(":")
    if sep and re.fullmatch(r"[a-z -]{2,20}", prefix):
        return prefix
    return _STATUS_CLASSES.get(status, str(status))


class Metrics:
    """One registry per receiver (tests run several in one process)."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.requests = Counter(
            "mtls_receiver_requests",
            "Requests answered, by route, provider and outcome.",
            ["route", "provider", "outcome"],
            registry=registry,
        )
        self.refusals = Counter(
            "mtls_receiver_refusals",
            "Refused requests, by route and reason.",
            ["route", "reason"],
            registry=registry,
        )
        self.latency = Histogram(
            "mtls_receiver_request_duration_seconds",
            "Time from request to answer.",
            ["route"],
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.handshake_failures = Counter(
            "mtls_receiver_tls_handshake_failures",
            "Refused or failed TLS handshakes, by listener and reason.",
            ["listener", "reason"],
            registry=registry,
        )
        self.deliveries = Counter(
            "mtls_receiver_delivery_attempts",
            "Forwarding attempts, by outcome.",
            ["outcome"],
            registry=registry,
        )
        self.key_fetches = Counter(
            "mtls_receiver_public_key_fetches",
            "Fetches of senders' public keys (at start, reload, and after a failing signature), by route"
            " and outcome (ok, failed).",
            ["route", "outcome"],
            registry=registry,
        )
        self.events = Gauge("mtls_receiver_inbox_events", "Events in the inbox.", registry=registry)
        self.outbox = Gauge(
            "mtls_receiver_outbox_events", "Events by delivery status.", ["status"], registry=registry
        )
        self.expiry = Gauge(
            "mtls_receiver_certificate_expiry_days",
            "Days until a certificate expires.",
            ["listener", "kind", "subject"],
            registry=registry,
        )
        self._expiry_dates: list[tuple[tuple[str, str, str], datetime]] = []
        self._per_request: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}

    def count_request(self, route: str, provider: str, outcome: str, seconds: float) -> None:
        """One answered request (the labelled children are looked up once, not per request)."""
        key = (route, provider, outcome)
        children = self._per_request.get(key)
        if children is None:
            children = self._per_request[key] = (self.requests.labels(*key), self.latency.labels(route))
        children[0].inc()
        children[1].observe(seconds)

    def certificates(self, config: Config) -> None:
        """Remember every certificate's expiry date (at start and reload); days are computed per scrape."""
        dates = []
        for listener in config.listeners:
            files = [("server", listener.cert)]
            if listener.client_ca is not None and listener.client_certs != "none":
                files.append(("client_ca", listener.client_ca))
            for kind, path in files:
                dates += [
                    ((listener.name, kind, cert.subject), cert.not_after) for cert in read_certificates(path)
                ]
        self._expiry_dates = dates
        self.refresh_expiry()

    def refresh_expiry(self) -> None:
        self.expiry.clear()
        now = datetime.now(UTC)
        for labels, not_after in self._expiry_dates:
            self.expiry.labels(*labels).set(round((not_after - now).total_seconds() / 86400, 2))

    def render(self, added: Mapping[SampleKey, float] | None = None) -> bytes:
        """The exposition text; ``added`` (the workers' counts, see ``counted``) is added in."""
        if added is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        merged.register(_Summed(self.registry, added))
        return generate_latest(merged)


SampleKey = tuple[str, tuple[tuple[str, str], ...]]  # sample name, sorted labels


def counted(texts: Iterable[str], into: dict[SampleKey, float] | None = None) -> dict[SampleKey, float]:
    """Every counter and histogram sample in exposition ``texts``, summed (into ``into``, if given)."""
    total = {} if into is None else into
    for text in texts:
        for family in text_string_to_metric_families(text):
            if family.type in ("counter", "histogram"):
                for sample in family.samples:
                    key = _sample_key(sample)
                    total[key] = total.get(key, 0.0) + sample.value
    return total


class _Summed(Collector):
    """This process's metrics, with the workers' counter and histogram samples added in.

    Requests and handshakes happen in the workers; gauges (inbox, outbox, certificates) and
    delivery counts are the supervisor's own.
    """

    def __init__(self, own: CollectorRegistry, added: Mapping[SampleKey, float]) -> None:
        self.own, self.added = own, added

    def collect(self) -> Iterator[Metric]:
        added = self.added
        for family in self.own.collect():
            if family.type in ("counter", "histogram"):
                seen = {_sample_key(s) for s in family.samples}
                family.samples = [
                    s._replace(value=s.value + added.get(_sample_key(s), 0.0)) for s in family.samples
                ]
                family.samples += [
                    Sample(name, dict(labels), value)
                    for (name, labels), value in added.items()
                    if _belongs(name, family) and (name, labels) not in seen
                ]
            yield family


def _sample_key(sample: Sample) -> SampleKey:
    return sample.name, tuple(sorted(sample.labels.items()))


def _belongs(sample: str, family: Metric) -> bool:
    suffixes = ("_total",) if family.type == "counter" else ("_bucket", "_count", "_sum")
    return any(sample == family.name + suffix for suffix in suffixes)


def admin_app(
    render: Callable[[], Awaitable[bytes]], ready: Callable[[], Awaitable[bool]]
) -> web.Application:
    async def get_metrics(request: web.Request) -> web.Response:
        return web.Response(body=await render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(request: web.Request) -> web.Response:
        if await ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready\n")

    app = web.Application()
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app
