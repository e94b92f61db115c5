"""``send-test``: post a route's sample request to a running receiver, as its sender would.

The provider builds the request (``Provider.sample``: signed with the route's configured secret,
or marked for the dev client certificate); this module only picks the URL, the TLS trust and the
client certificate, sends it once and prints both sides. Nothing here names a sender.

Exit codes: 0 the receiver answered 2xx, 1 it answered something else or could not be reached,
2 the command was asked something it cannot do (unknown route, no sample, bad URL, missing file).
Every failure is one line on stderr.
"""

from __future__ import annotations

import dataclasses
import http.client
import re
import ssl
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

import certifi

from .config import Config, ListenerConfig, RouteConfig
from .providers import provider
from .providers.base import SampleRequest

__all__ = ["EXIT_ANSWERED_NOT_2XX", "EXIT_USAGE", "SendTestError", "Target", "find_route", "send_test"]

EXIT_ANSWERED_NOT_2XX, EXIT_USAGE = 1, 2
SERVER_CA, DEV_CLIENT = "server-ca.pem", "client.pem"  # devcerts.py's layout, beside the listener's cert
_EVENT = re.compile(r"[A-Za-z0-9_.:/-]{1,100}")
_SENSITIVE_HEADER = re.compile(r"authorization|token|secret|password|cookie", re.IGNORECASE)
_SHOWN_BODY = 4000  # characters of the answer printed
_TLS_HINTS = {  # the server's alerts, said plainly
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": " (the listener requires a client certificate: --cert FILE)",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": " (no TLS version or cipher in common, or no client certificate)",
    "TLSV1_ALERT_UNKNOWN_CA": " (the client certificate does not chain to the listener's client_ca)",
    "SSLV3_ALERT_BAD_CERTIFICATE": " (the listener refused the client certificate)",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": " (the client certificate has expired)",
}


class SendTestError(Exception):
    """One line for stderr, and the exit code that goes with it."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Target:
    """Where the sample goes: host, port, the request target (path and query), TLS trust, client cert."""

    url: str
    host: str
    port: int
    request_target: str
    ca: Path | None  # None: the public CAs (certifi)
    cert: Path | None
    key: Path | None


def send_test(
    config: Config,
    route_ref: str,
    *,
    event: str | None = None,
    url: str | None = None,
    ca: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
    timeout: float = 15.0,
    out: TextIO = sys.stdout,
) -> int:
    """Build the route's sample, send it, print what went and what came back; the exit code."""
    route = find_route(config, route_ref)
    listener = next(lst for lst in config.listeners if lst.name == route.listener)
    sample = build_sample(route, event, time.time())
    target = resolve_target(route, listener, sample, url, ca, cert, key)
    print(describe_request(route, sample, target), file=out)
    status, reason, body = post(target, sample, timeout)
    print(f"< {status} {reason}", file=out)
    for line in body.rstrip("\n").splitlines():
        print(f"< {_printable(line)}", file=out)
    return 0 if 200 <= status < 300 else EXIT_ANSWERED_NOT_2XX


def find_route(config: Config, ref: str) -> RouteConfig:
    """``ref`` is a route's index in the config (``0``) or its path as written (``/webhook``)."""
    if ref.isascii() and ref.isdigit():
        index = int(ref)
        if index >= len(config.routes):
            raise SendTestError(f"no route [{index}]: the config has {len(config.routes)} (0 is the first)")
        return config.routes[index]
    path = ref.rstrip("/") or "/"
    found = [i for i, route in enumerate(config.routes) if route.path == path]
    if not found:
        have = ", ".join(route.path for route in config.routes)
        raise SendTestError(f"no route with path {ref[:100]!r} (have: {have})")
    if len(found) > 1:
        raise SendTestError(
            f"{len(found)} routes have path {path!r} (one per listener): give its index {found}"
        )
    return config.routes[found[0]]


def build_sample(route: RouteConfig, event: str | None, now: float) -> SampleRequest:
    """The provider's sample request for ``route``; any failure to build it is one line."""
    sample = provider(route.provider).sample
    if sample is None:
        raise SendTestError(f"route {route.path}: provider {route.provider!r} has no sample request yet")
    if event is not None and not _EVENT.fullmatch(event):
        raise SendTestError(f"--event {event[:60]!r}: expected an event type like 'transaction.paid'")
    try:
        return sample(route, event, now)
    except Exception as exc:  # a provider's refusal of --event, an unreadable dev key: one line, no traceback
        raise SendTestError(f"route {route.path}: cannot build a sample: {_error_text(exc)}") from None


def resolve_target(
    route: RouteConfig,
    listener: ListenerConfig,
    sample: SampleRequest,
    url: str | None,
    ca: Path | None,
    cert: Path | None,
    key: Path | None,
) -> Target:
    """The URL (``--url``, else the listener's address and the route's path) with the sample's path
    appended to it as a string (so ``?ignorar=`` + ``/pix`` works as the sender's does), and the files."""
    if url is None and listener.port == 0:
        raise SendTestError(
            f"listener {listener.name!r} listens on port 0 (picked at start):"
            f" give --url https://host:PORT{route.path}"
        )
    full = (url if url is not None else default_url(route, listener)) + sample.path
    parts = urlsplit(full)
    try:
        port = parts.port if parts.port is not None else 443
    except ValueError:
        port = 0
    if parts.scheme != "https" or not parts.hostname or port == 0:
        raise SendTestError(f"bad URL {full[:200]!r}: expected https://host[:port]/path")
    request_target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    beside = listener.cert.parent
    ca = ca if ca is not None else _existing(beside / SERVER_CA)
    if sample.client_certificate and cert is None:
        cert = _existing(beside / DEV_CLIENT)
        if cert is None:
            raise SendTestError(
                f"route {route.path} takes a client certificate: give --cert FILE [--key FILE]"
                f" (no {DEV_CLIENT} beside {listener.cert})"
            )
    return Target(full, parts.hostname, port, request_target, ca, cert, key)


def default_url(route: RouteConfig, listener: ListenerConfig) -> str:
    """https, the listener's address (a wildcard one as loopback) and the route's path."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(listener.host, listener.host)
    netloc = f"[{host}]:{listener.port}" if ":" in host else f"{host}:{listener.port}"
    return f"https://{netloc}{route.path}"


def _existing(path: Path) -> Path | None:
    return path if path.is_file() else None


def describe_request(route: RouteConfig, sample: SampleRequest, target: Target) -> str:
    """What was sent, without a secret or a whole signature: the route's secrets are masked wherever
    they appear, sensitive headers show only their first word, long values only their start."""
    secrets = _secret_strings(route.options)
    lines = [f"> POST {_short_query(_mask(target.url, secrets))}"]
    for name, value in sample.headers.items():
        lines.append(f"> {name}: {_shown_header(name, value, secrets)}")
    certificate = f", client certificate {target.cert}" if target.cert else ""
    lines.append(f"> ({len(sample.body)} bytes of body{certificate})")
    return "\n".join(lines)


def _shown_header(name: str, value: str, secrets: tuple[str, ...]) -> str:
    if _SENSITIVE_HEADER.search(name):
        scheme = value.split(" ", 1)[0] if " " in value else ""
        return f"{scheme} …".lstrip()
    return _shown_value(_mask(value, secrets))


def _short_query(url: str) -> str:
    """A URL whose query values show only their start past 16 characters: a signature carried in a
    query parameter (Kiwify's 40 hex digits in ``?signature=``) is never printed whole."""
    path, question, query = url.partition("?")
    fields = [
        name + equals + _shown_value(value, 16)
        for name, equals, value in (f.partition("=") for f in query.split("&"))
    ]
    return path + question + "&".join(fields) if question else url


def _shown_value(value: str, longest: int = 40) -> str:
    return value if len(value) <= longest else value[: longest // 2] + "…"


def _mask(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        text = text.replace(secret, "…")
    return _printable(text)


def _secret_strings(value: object) -> tuple[str, ...]:
    """Every string held in the options' fields declared ``repr=False`` (how options mark secrets)."""
    if not dataclasses.is_dataclass(value) or isinstance(value, type):
        return ()
    found: list[str] = []
    for item in dataclasses.fields(value):
        if not item.repr:
            found.extend(_strings(getattr(value, item.name)))
    return tuple(secret for secret in found if len(secret) >= 4)


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (tuple, list)):
        return [text for item in value for text in _strings(item)]
    return []


def post(target: Target, sample: SampleRequest, timeout: float) -> tuple[int, str, str]:
    """POST the sample once; (status, reason, body). Every way of not getting an answer is one line."""
    context = _client_context(target)
    connection = http.client.HTTPSConnection(target.host, target.port, timeout=timeout, context=context)
    try:
        connection.request("POST", target.request_target, body=sample.body, headers=dict(sample.headers))
        answer = connection.getresponse()
        body = answer.read()
    except ssl.SSLCertVerificationError as exc:
        raise SendTestError(
            f"TLS: the certificate of {target.host}:{target.port} is not trusted ({exc.verify_message});"
            " give --ca FILE, or --url with the name the certificate is for",
            EXIT_ANSWERED_NOT_2XX,
        ) from None
    except ssl.SSLError as exc:
        hint = _TLS_HINTS.get(str(exc.reason), "")
        raise SendTestError(
            f"TLS with {target.host}:{target.port} failed: {_error_text(exc)}{hint}", EXIT_ANSWERED_NOT_2XX
        ) from None
    except ConnectionRefusedError:
        raise SendTestError(
            f"cannot connect to {target.host}:{target.port}: connection refused (is the receiver running?)",
            EXIT_ANSWERED_NOT_2XX,
        ) from None
    except TimeoutError:
        raise SendTestError(
            f"no answer from {target.host}:{target.port} within {timeout:g} s", EXIT_ANSWERED_NOT_2XX
        ) from None
    except (OSError, ValueError, http.client.HTTPException) as exc:  # unknown host, reset, bad header
        raise SendTestError(
            f"{target.host}:{target.port}: {_error_text(exc)}", EXIT_ANSWERED_NOT_2XX
        ) from None
    finally:
        connection.close()
    return answer.status, answer.reason, body.decode("utf-8", "replace")[:_SHOWN_BODY]


def _client_context(target: Target) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=str(target.ca) if target.ca else certifi.where())
    except (OSError, ssl.SSLError) as exc:
        raise SendTestError(f"cannot load the CA bundle {target.ca}: {_error_text(exc)}") from None
    if target.cert is not None:
        try:
            context.load_cert_chain(target.cert, target.key)
        except (OSError, ssl.SSLError) as exc:
            key = f" with the key {target.key}" if target.key is not None else ""
            raise SendTestError(
                f"cannot load the client certificate {target.cert}{key}: {_error_text(exc)}"
            ) from None
    return context


def _error_text(exc: BaseException) -> str:
    """What went wrong, on one line."""
    if isinstance(exc, ssl.SSLError) and exc.reason:
        text = str(exc.reason)
    elif isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    else:
        text = str(exc) or type(exc).__name__
    return _printable(" ".join(text.split())[:300])


def _printable(text: str) -> str:
    """Printable text as it is; anything that could drive a terminal as an escape."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")
