"""A local stand-in for Efí's Pix webhook API, over mutual TLS, with the documented behaviour.

On ``PUT /v2/webhook/:chave`` it does what Efí does: a POST to the URL without a client
certificate (which must be refused), then the test notification with its webhook client
certificate (which must be answered 2xx), and Efí's error messages when either fails.
"""

from __future__ import annotations

import base64
import secrets
import ssl
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from aiohttp import web

ERRORS = {
    "mtls": "A autenticação de TLS mútuo não está configurada na URL informada",
    "timeout": "A URL do webhook informada atingiu o tempo limite de resposta",
    "status": "A URL do webhook informada respondeu com o código HTTP {status}",
}


@dataclass
class EfiStandIn:
    client_id: str
    client_secret: str
    server_context: ssl.SSLContext  # the API's own TLS, requiring the account certificate
    receiver_ca: Path  # to verify the receiver's server certificate when probing
    webhook_client: Path  # Efí's webhook client certificate (PEM with key)
    page_size: int = 2
    webhooks: dict[str, dict[str, str]] = field(default_factory=dict)
    probes: list[str] = field(default_factory=list)
    resends: list[dict[str, object]] = field(default_factory=list)
    tokens: set[str] = field(default_factory=set)
    runner: web.AppRunner | None = None
    url: str = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/oauth/token", self.token)
        app.router.add_put("/v2/webhook/{chave}", self.put)
        app.router.add_get("/v2/webhook/{chave}", self.get)
        app.router.add_delete("/v2/webhook/{chave}", self.delete)
        app.router.add_get("/v2/webhook", self.list)
        app.router.add_post("/v2/gn/webhook/reenviar", self.resend)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=self.server_context).start()
        self.url = f"https://localhost:{self.runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    @staticmethod
    def error(status: int, name: str, message: str) -> web.Response:
        return web.json_response({"nome": name, "mensagem": message}, status=status)

    async def token(self, request: web.Request) -> web.Response:
        expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        body = await request.json()
        if (
            request.headers.get("Authorization") != f"Basic {expected}"
            or body.get("grant_type") != "client_credentials"
        ):
            return web.json_response(
                {"error": "invalid_client", "error_description": "Invalid or inactive credentials"},
                status=401,
            )
        token = secrets.token_hex(16)
        self.tokens.add(token)
        return web.json_response(
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": 3600,
                "scope": "webhook.write webhook.read",
            }
        )

    def authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization", "").removeprefix("Bearer ") in self.tokens

    async def put(self, request: web.Request) -> web.Response:
        if not self.authorized(request):
            return self.error(401, "nao_autorizado", "Token inválido")
        url = (await request.json()).get("webhookUrl", "")
        skip = request.headers.get("x-skip-mtls-checking") == "true"
        problem = await self.registration_probe(url, skip)
        if problem:
            return self.error(400, "webhook_invalido", problem)
        chave = request.match_info["chave"]
        self.webhooks[chave] = {
            "webhookUrl": url,
            "chave": chave,
            "criacao": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
        return web.json_response({"webhookUrl": url})

    async def registration_probe(self, url: str, skip_mtls: bool) -> str | None:
        """Efí's two requests; the first is skipped with x-skip-mtls-checking."""
        anonymous = ssl.create_default_context(cafile=str(self.receiver_ca))
        with_certificate = ssl.create_default_context(cafile=str(self.receiver_ca))
        with_certificate.load_cert_chain(self.webhook_client)
        timeout = aiohttp.ClientTimeout(total=10)
        if not skip_mtls:
            self.probes.append("without certificate")
            try:
                async with aiohttp.ClientSession(timeout=timeout) as session:
                    async with session.post(url, data=b"{}", ssl=anonymous) as response:
                        if response.status < 400:
                            return ERRORS["mtls"]
            except aiohttp.ClientConnectorError as exc:
                if not isinstance(exc, aiohttp.ClientSSLError):
                    return ERRORS["timeout"]
            except (aiohttp.ClientError, TimeoutError):
                pass  # refused during or right after the handshake: as it must be
        self.probes.append("test notification")
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                async with session.post(
                    url, json={"evento": "teste_webhook"}, ssl=with_certificate
                ) as response:
                    if not 200 <= response.status < 300:
                        return ERRORS["status"].format(status=response.status)
        except (aiohttp.ClientError, TimeoutError):
            return ERRORS["timeout"]
        return None

    async def get(self, request: web.Request) -> web.Response:
        if not self.authorized(request):
            return self.error(401, "nao_autorizado", "Token inválido")
        webhook = self.webhooks.get(request.match_info["chave"])
        if webhook is None:
            return self.error(404, "webhook_nao_encontrado", "Webhook não encontrado para a chave informada")
        return web.json_response(webhook)

    async def delete(self, request: web.Request) -> web.Response:
        if not self.authorized(request):
            return self.error(401, "nao_autorizado", "Token inválido")
        if self.webhooks.pop(request.match_info["chave"], None) is None:
            return self.error(404, "webhook_nao_encontrado", "Webhook não encontrado para a chave informada")
        return web.Response(status=204)

    async def list(self, request: web.Request) -> web.Response:
        if not self.authorized(request):
            return self.error(401, "nao_autorizado", "Token inválido")
        if "inicio" not in request.query or "fim" not in request.query:
            return self.error(400, "parametros_invalidos", "inicio e fim são obrigatórios")
        page = int(request.query.get("paginacao.paginaAtual", "0"))
        items = sorted(self.webhooks.values(), key=lambda w: w["chave"])
        pages = max(1, -(-len(items) // self.page_size))
        chunk = items[page * self.page_size : (page + 1) * self.page_size]
        return web.json_response(
            {
                "parametros": {
                    "inicio": request.query["inicio"],
                    "fim": request.query["fim"],
                    "paginacao": {
                        "paginaAtual": page,
                        "itensPorPagina": self.page_size,
                        "quantidadeDePaginas": pages,
                        "quantidadeTotalDeItens": len(items),
                    },
                },
                "webhooks": chunk,
            }
        )

    async def resend(self, request: web.Request) -> web.Response:
        if not self.authorized(request):
            return self.error(401, "nao_autorizado", "Token inválido")
        self.resends.append(await request.json())
        return web.Response(status=202)
