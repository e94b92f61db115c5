"""Do what Efí does when a webhook is registered, and say what it will see.

1. a POST without a client certificate: must be refused (TLS or HTTP 4xx);
2. the test notification to the registered URL, with a certificate: must be 2xx;
3. a sample Pix to the URL with ``/pix`` appended to the string: must be 2xx.

A skip-mTLS URL (one with an ``hmac`` query value) is registered without the certificate check:
what protects it is the secret, so the checks are those of the secret instead (:func:`probe_skip_mtls`).
"""

from __future__ import annotations

import json
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import aiohttp
import certifi

from ...errors import ReceiverError
from ..bacen_pix import sample_notification

__all__ = [
    "ProbeResult",
    "client_context",
    "has_hmac",
    "probe",
    "probe_skip_mtls",
    "probe_without_certificate",
    "sample_pix",
]


@dataclass(frozen=True)
class ProbeResult:
    step: str
    ok: bool | None  # None: skipped
    detail: str

    def line(self) -> str:
        mark = {True: "PASS", False: "FAIL", None: "SKIP"}[self.ok]
        return f"{mark}  {self.step}: {self.detail}"


def sample_pix(pix_key: str | None = None) -> dict[str, object]:
    """A well-formed Pix item whose endToEndId says it is a probe (ISPB 00000000, 'PROBE')."""
    return sample_notification(time.time(), pix_key)


async def probe(
    url: str,
    ca: Path | None,
    cert: Path | None,
    key: Path | None = None,
    pix_key: str | None = None,
    timeout: float = 15.0,
) -> list[ProbeResult]:
    """Run the three registration checks against ``url`` and report each."""
    results = [await probe_without_certificate(url, ca, timeout)]
    if cert is None:
        skipped = "no --cert given (only a certificate chained to the route's client CA can pass)"
        results += [ProbeResult("test notification", None, skipped), ProbeResult("sample Pix", None, skipped)]
        return results
    context = client_context(ca, cert, key)
    results.append(await _expect_2xx("test notification", url, b"{}", context, timeout))
    body = json.dumps(sample_pix(pix_key)).encode()
    results.append(await _expect_2xx("sample Pix", url + "/pix", body, context, timeout))
    return results


def has_hmac(url: str) -> bool:
    """Whether ``url`` is a skip-mTLS registration URL: it carries an ``hmac`` query value."""
    return any(name == "hmac" for name, _ in parse_qsl(urlsplit(url).query, keep_blank_values=True))


def _without_hmac(url: str) -> str:
    parts = urlsplit(url)
    kept = [(name, value) for name, value in parse_qsl(parts.query, keep_blank_values=True) if name != "hmac"]
    return parts._replace(query=urlencode(kept)).geturl()


async def probe_skip_mtls(
    url: str, ca: Path | None, cert: Path | None, key: Path | None = None, timeout: float = 15.0
) -> list[ProbeResult]:
    """What a skip-mTLS registration relies on: the secret. Without it the route must refuse;
    with it, Efí's test notification and a Pix (``/pix`` appended to the string) must be 2xx.

    No certificate is presented unless ``cert`` is given (Efí does not need the server to ask)."""
    context = client_context(ca, cert, key)
    results = [await _expect_refusal("request without the hmac", _without_hmac(url), context, timeout)]
    results.append(await _expect_2xx("test notification with the hmac", url, b"{}", context, timeout))
    body = json.dumps(sample_pix()).encode()
    results.append(await _expect_2xx("sample Pix with the hmac", url + "/pix", body, context, timeout))
    return results


async def _expect_refusal(step: str, url: str, context: ssl.SSLContext, timeout: float) -> ProbeResult:
    try:
        status, text = await _post(url, b"{}", context, timeout)
    except TimeoutError:
        return ProbeResult(step, False, f"POST {url}: no answer within {timeout:g}s")
    except aiohttp.ClientError as exc:
        return ProbeResult(step, False, f"POST {url}: {_reason(exc)}")
    if 400 <= status < 500 and status != 404:
        return ProbeResult(step, True, f"refused with HTTP {status} {text!r}")
    return ProbeResult(step, False, f"answered HTTP {status} {text!r}: anyone can post without the secret")


def client_context(ca: Path | None, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """Trust ``ca`` (default: public CAs), present ``cert`` (and ``key``); a file that does not load
    is a one-line error naming it."""
    try:
        context = ssl.create_default_context(cafile=str(ca) if ca else certifi.where())
    except (OSError, ValueError) as exc:
        raise ReceiverError(
            f"{ca}: cannot load it as a CA bundle (PEM certificates): {_reason(exc)}"
        ) from None
    if cert is not None:
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ValueError) as exc:
            named = f"{cert} (key {key})" if key else str(cert)
            raise ReceiverError(f"{named}: cannot load a certificate and its key: {_reason(exc)}") from None
    return context


async def _post(url: str, body: bytes, context: ssl.SSLContext, timeout: float) -> tuple[int, str]:
    limit = aiohttp.ClientTimeout(total=timeout)
    connector = aiohttp.TCPConnector(ssl=context, force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=limit) as session:
        async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
            return response.status, (await response.text(errors="replace")).strip()[:200]


async def probe_without_certificate(url: str, ca: Path | None, timeout: float = 15.0) -> ProbeResult:
    """Efí's first registration check: a POST without a client certificate must be refused."""
    step = "request without client certificate"
    try:
        status, text = await _post(url, b"{}", client_context(ca, None, None), timeout)
    except aiohttp.ClientConnectorCertificateError as exc:
        return ProbeResult(
            step,
            False,
            f"the server's own certificate is not trusted ({_reason(exc)});"
            " Efí will not connect either (or pass --ca for a private CA)",
        )
    except aiohttp.ClientSSLError as exc:
        return ProbeResult(step, True, f"refused during the TLS handshake ({_reason(exc)})")
    except aiohttp.ClientConnectorError as exc:
        return ProbeResult(step, False, f"cannot connect: {_reason(exc)}")
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
        return ProbeResult(step, True, f"connection closed after the handshake ({_reason(exc)})")
    except TimeoutError:
        return ProbeResult(step, False, f"no answer within {timeout:g}s (Efí reports a time-out)")
    if 400 <= status < 500 and status != 404:
        return ProbeResult(step, True, f"refused with HTTP {status}")
    return ProbeResult(
        step, False, f"answered HTTP {status} {text!r}: Efí will say mutual TLS is not configured"
    )


async def _expect_2xx(
    step: str, url: str, body: bytes, context: ssl.SSLContext, timeout: float
) -> ProbeResult:
    try:
        status, text = await _post(url, body, context, timeout)
    except TimeoutError:
        return ProbeResult(step, False, f"POST {_shown(url)}: no answer within {timeout:g}s")
    except aiohttp.ClientError as exc:
        return ProbeResult(step, False, f"POST {_shown(url)}: {_reason(exc)}")
    if status == 403 and text.startswith("allowlist"):  # the route takes only the sender's addresses
        return ProbeResult(
            step,
            None,
            f"HTTP 403 from the route's allowlist: only the sender's address passes"
            f" (probe from an address in allow_ips to check the rest) {text!r}",
        )
    return ProbeResult(step, 200 <= status < 300, f"POST {_shown(url)} -> HTTP {status} {text!r}")


def _shown(url: str) -> str:
    """``url`` with its hmac value hidden: a probe's output is pasted into tickets and chats."""
    parts = urlsplit(url)
    if not has_hmac(url):
        return url
    query = "&".join(
        f"{name}=***" if name == "hmac" else f"{name}={value}"
        for name, value in parse_qsl(parts.query, keep_blank_values=True)
    )
    return parts._replace(query=query).geturl()


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
