"""Iugu: "gatilhos" carry no signature and no credential; iugu publishes one egress address.

So a route loads only with ``unsigned_allowlist_only = true`` (loudly named on purpose) and
accepts requests from 54.207.210.151 unless ``allow_ips`` says otherwise; ``check-config``
warns about it. Treat each event as a hint and re-fetch the invoice from iugu's API. The body
is form-urlencoded (``event=invoice.status_changed&data[id]=…&data[status]=paid``), stored as
a JSON object of its fields. Dedup: (event, data[id], data[status]).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from ..addresses import Network, parse_networks
from ..config.reader import Reader, Table
from ..config.schema import ProviderOptions, RouteConfig
from ..errors import Refusal
from ..events import ClientIdentity, IncomingRequest, Verdict
from .base import Provider, RouteContext, SampleRequest
from .common import (
    STATIC_VERIFIED_BY,
    UNSIGNED_OPT_IN,
    check_unsigned_allowlist,
    first_text,
    form_object,
    one_event,
    require_post,
    require_unsigned_opt_in,
    unsigned_warning,
)

__all__ = ["EGRESS_IPS", "PROVIDER", "IuguOptions", "verify"]

#: dev.iugu.com "gatilhos": the address triggers are sent from
EGRESS_IPS = parse_networks(["54.207.210.151"])


@dataclass(frozen=True)
class IuguOptions(ProviderOptions):
    def sender_ips(self, mode: str) -> tuple[Network, ...]:
        return EGRESS_IPS

    def describe(self) -> str:
        return "UNSIGNED: client address only"

    def warnings(self) -> tuple[str, ...]:
        return (unsigned_warning(),)


def parse_options(reader: Reader, raw: Table, route: RouteContext) -> IuguOptions:
    require_unsigned_opt_in(reader, raw, route.key, default_ips=True)
    return IuguOptions()


def verify(route: RouteConfig, request: IncomingRequest) -> Verdict:
    require_post(request, "iugu")
    check_unsigned_allowlist(route, request)
    body = form_object(request.body)
    return one_event(*_kind_and_dedup(body))


def _kind_and_dedup(body: dict[str, Any]) -> tuple[str, str, dict[str, Any], str]:
    event, resource = first_text(body.get("event")), first_text(body.get("data[id]"))
    if event is None or resource is None:
        raise Refusal(400, "an iugu trigger has 'event' and 'data[id]' fields")
    return event, f"{event}:{resource}:{first_text(body.get('data[status]'))}", body, resource


def verified_by(route: RouteConfig, client: ClientIdentity | None) -> str:
    return STATIC_VERIFIED_BY["none"]


def sample(route: RouteConfig, event: str | None, now: float) -> SampleRequest:
    fields = {
        "event": event or "invoice.status_changed",
        "data[id]": f"TEST{int(now)}",
        "data[status]": "paid",
    }
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    return SampleRequest(path="", headers=headers, body=urlencode(fields).encode())


PROVIDER = Provider(
    name="iugu",
    modes=("allowlist",),
    keys=frozenset({UNSIGNED_OPT_IN}),
    parse_options=parse_options,
    verify=verify,
    verified_by=verified_by,
    sample=sample,
)
