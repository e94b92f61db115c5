"""Efí's Pix webhook API: register, read, list, delete webhooks and ask for resends.

OAuth2 client credentials over mutual TLS with the account's certificate (the ``.p12``
Efí issues, or PEM), then the ``/v2/webhook`` endpoints. Errors come back as Efí
words them, with the HTTP status, as :class:`EfiApiError`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import ssl
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import certifi
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    NoEncryption,
    PrivateFormat,
    pkcs12,
)

from ...errors import ReceiverError
from ...files import write_private

__all__ = ["EFI_API_URLS", "EfiApiError", "EfiClient", "EfiCredentials", "p12_to_pem"]

EFI_API_URLS = {"prod": "https://pix.api.efipay.com.br", "sandbox": "https://pix-h.api.efipay.com.br"}
RESEND_TYPES = ("PIX_RECEBIDO", "PIX_ENVIADO", "DEVOLUCAO_RECEBIDA", "DEVOLUCAO_ENVIADA")


class EfiApiError(ReceiverError):
    """Efí answered with an error: its HTTP status and its own message."""

    def __init__(self, status: int, message: str) -> None:
        self.status, self.message = status, message
        super().__init__(f"Efí answered HTTP {status}: {message}")


@dataclass(frozen=True)
class EfiCredentials:
    client_id: str
    client_secret: str = field(repr=False)
    certificate: Path  # .p12/.pfx or PEM (certificate and key)
    certificate_password: str | None = field(default=None, repr=False)


def p12_to_pem(data: bytes, password: str | None = None, pem_password: bytes | None = None) -> bytes:
    """The key, the certificate and any chain from a PKCS#12 file, as PEM (the key encrypted if asked)."""
    try:
        key, cert, chain = pkcs12.load_key_and_certificates(data, password.encode() if password else None)
    except ValueError as exc:
        raise ReceiverError(f"cannot open the .p12 (wrong password, or not PKCS#12): {exc}") from None
    if key is None or cert is None:
        raise ReceiverError("the .p12 holds no private key and certificate")
    encryption = BestAvailableEncryption(pem_password) if pem_password else NoEncryption()
    parts = [
        key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, encryption),
        cert.public_bytes(Encoding.PEM),
    ]
    parts += [extra.public_bytes(Encoding.PEM) for extra in chain or []]
    return b"".join(parts)


def _client_context(credentials: EfiCredentials, ca: Path | None) -> ssl.SSLContext:
    """Trust Efí's public certificate (or ``ca``), present the account certificate."""
    context = ssl.create_default_context(cafile=str(ca) if ca else certifi.where())
    path = credentials.certificate
    if path.suffix.lower() in (".p12", ".pfx"):
        pem = p12_to_pem(path.read_bytes(), credentials.certificate_password)
        with tempfile.TemporaryDirectory() as private:  # ssl wants a file; 0600 in a 0700 directory
            pem_path = Path(private) / "account.pem"
            write_private(pem_path, pem)
            context.load_cert_chain(pem_path)
    else:
        try:
            context.load_cert_chain(path, password=credentials.certificate_password)
        except (ssl.SSLError, OSError) as exc:
            raise ReceiverError(f"{path}: cannot load the account certificate and key: {exc}") from None
    return context


class EfiClient:
    """``async with EfiClient(base_url, credentials) as efi: await efi.set_webhook(...)``."""

    def __init__(
        self, base_url: str, credentials: EfiCredentials, ca: Path | None = None, timeout: float = 90
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.credentials = credentials
        self._context = _client_context(credentials, ca)
        self._timeout = aiohttp.ClientTimeout(total=timeout)  # Efí probes the URL during PUT: be patient
        self._session: aiohttp.ClientSession | None = None
        self._token: str | None = None

    async def __aenter__(self) -> EfiClient:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self._context), timeout=self._timeout
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        authorized: bool = True,
    ) -> Any:
        assert self._session is not None, "use 'async with EfiClient(...)'"
        all_headers = dict(headers or {})
        if authorized:
            all_headers["Authorization"] = f"Bearer {await self._access_token()}"
        try:
            async with self._session.request(
                method, self.base_url + path, json=json_body, headers=all_headers, params=params
            ) as response:
                text = await response.text()
                if response.status >= 400:
                    raise EfiApiError(response.status, _error_message(text))
                return await response.json(content_type=None) if text.strip() else None
        except aiohttp.ClientError as exc:
            raise ReceiverError(f"cannot reach Efí's API at {self.base_url}: {exc}") from None

    async def _access_token(self) -> str:
        if self._token is None:
            basic = base64.b64encode(
                f"{self.credentials.client_id}:{self.credentials.client_secret}".encode()
            ).decode()
            answer = await self._request(
                "POST",
                "/oauth/token",
                json_body={"grant_type": "client_credentials"},
                headers={"Authorization": f"Basic {basic}"},
                authorized=False,
            )
            self._token = str(answer["access_token"])
        return self._token

    async def set_webhook(self, chave: str, webhook_url: str, skip_mtls: bool = False) -> dict[str, Any]:
        headers = {"x-skip-mtls-checking": "true"} if skip_mtls else {}
        answer = await self._request(
            "PUT",
            f"/v2/webhook/{quote(chave, safe='')}",
            json_body={"webhookUrl": webhook_url},
            headers=headers,
        )
        return answer or {"webhookUrl": webhook_url, "chave": chave}

    async def get_webhook(self, chave: str) -> dict[str, Any]:
        return await self._request("GET", f"/v2/webhook/{quote(chave, safe='')}")  # type: ignore[no-any-return]

    async def list_webhooks(self, inicio: str, fim: str) -> AsyncIterator[dict[str, Any]]:
        """Every webhook registered between the two dates, following Efí's pagination."""
        page = 0
        while True:
            answer = await self._request(
                "GET",
                "/v2/webhook",
                params={"inicio": inicio, "fim": fim, "paginacao.paginaAtual": str(page)},
            )
            for webhook in answer.get("webhooks", []):
                yield webhook
            pages = answer.get("parametros", {}).get("paginacao", {}).get("quantidadeDePaginas", 1)
            page += 1
            if page >= pages:
                return

    async def delete_webhook(self, chave: str) -> None:
        await self._request("DELETE", f"/v2/webhook/{quote(chave, safe='')}")

    async def resend(self, tipo: str, e2eids: list[str]) -> Any:
        if tipo not in RESEND_TYPES:
            raise ReceiverError(f"tipo must be one of {', '.join(RESEND_TYPES)}")
        return await self._request(
            "POST", "/v2/gn/webhook/reenviar", json_body={"tipo": tipo, "e2eids": e2eids}
        )


def _error_message(text: str) -> str:
    """Efí's error JSON (``nome``/``mensagem``, or OAuth's ``error``/``error_description``) as one line."""
    with contextlib.suppress(ValueError):
        document = json.loads(text)
        if isinstance(document, dict):
            name = document.get("nome") or document.get("error") or ""
            message = (
                document.get("mensagem") or document.get("error_description") or document.get("message") or ""
            )
            if name or message:
                return f"{name}: {message}" if name and message else str(name or message)
    return text.strip()[:300] or "(no body)"
