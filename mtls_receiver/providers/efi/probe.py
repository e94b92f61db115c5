"""Do what Efí does when a webhook is registered, and say what it will see.

1. a POST without a client certificate: must be refused (TLS or HTTP 4xx);
2. the test notification to the registered URL, with a certificate: must be 2xx;
3. a sample Pix to the URL with ``/pix`` appended to the string: must be 2xx.
"""

from __future__ import annotations

import json
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import certifi

from ..bacen_pix import sample_notification

__all__ = ["ProbeResult", "probe", "probe_without_certificate", "sample_pix"]


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
    context = _client_context(ca, cert, key)
    results.append(await _expect_2xx("test notification", url, b"{}", context, timeout))
    body = json.dumps(sample_pix(pix_key)).encode()
    results.append(await _expect_2xx("sample Pix", url + "/pix", body, context, timeout))
    return results


def _client_context(ca: Path | None, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca) if ca else certifi.where())
    if cert is not None:
        context.load_cert_chain(cert, key)
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
        status, text = await _post(url, b"{}", _client_context(ca, None, None), timeout)
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
        return ProbeResult(step, False, f"POST {url}: no answer within {timeout:g}s")
    except aiohttp.ClientError as exc:
        return ProbeResult(step, False, f"POST {url}: {_reason(exc)}")
    return ProbeResult(step, 200 <= status < 300, f"POST {url} -> HTTP {status} {text!r}")


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
