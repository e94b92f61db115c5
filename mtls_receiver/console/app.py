"""The console's routes on the admin listener, its sign-in and its protection against other sites.

Access: on loopback without ``[admin] token`` whoever reaches the port (this machine, or an SSH
tunnel) may look and replay. With a token (required off loopback) every page wants it, as
``Authorization: Bearer <token>`` or through the sign-in form, which sets a session cookie; the
token is compared in constant time and never stored in the cookie.

Writes (replay, sign-out) are POSTs that must come from the console's own pages: a cross-site
``Origin`` or ``Sec-Fetch-Site`` is refused, and the form carries a token derived from the
session (an HMAC under a key made at start), which another site cannot read. The session cookie
is ``SameSite=Strict`` and ``HttpOnly``. A bearer request needs no form token: a browser never
adds that header by itself.

Without a token, a request must name the console by an IP address or ``localhost`` (its ``Host``):
another site's page whose DNS name is made to point at 127.0.0.1 (DNS rebinding) is the same origin
as the console to the browser, so it could otherwise read every page and post the forms.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from urllib.parse import quote, urlsplit

import jinja2
from aiohttp import web

from ..errors import StoreUnavailable
from . import views
from .host import ConsoleHost

__all__ = ["COOKIE", "Console", "ConsoleHost", "add_console"]

log = logging.getLogger("mtls_receiver")

COOKIE = "mtls_console"
SESSION_LIFETIME = 12 * 3600.0  # seconds a sign-in lasts
MAX_SESSIONS = 1000  # the oldest sign-ins are forgotten beyond this many
_SESSION_ID = re.compile(r"[0-9a-f]{64}")
#: no script, no frames, no other origin: the pages are plain HTML with inline style
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:;"
        " form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # "no-referrer" makes a browser send "Origin: null"
    "Cache-Control": "no-store",
}

View = Callable[[ConsoleHost, web.Request], Awaitable[views.Page]]


def add_console(app: web.Application, host: ConsoleHost) -> Console:
    """Serve the console at ``/`` of the admin ``app`` (beside /metrics, /healthz, /readyz)."""
    console = Console(host)
    page = console.page
    app.router.add_get("/", page(views.overview, "overview"))
    app.router.add_get("/events", page(views.events, "events"))
    app.router.add_get("/events/{event_id}", page(views.event, "events"))
    app.router.add_get("/refusals", page(views.refusals, "refusals"))
    app.router.add_get("/dead", page(views.dead, "dead"))
    app.router.add_get("/config", page(views.config_page, "config"))
    app.router.add_post("/replay", console.action(console.replay))
    app.router.add_get("/login", console.login_form)
    app.router.add_post("/login", console.login)
    app.router.add_post("/logout", console.action(console.logout))
    return console


class Console:
    """Renders the pages for one receiver and keeps its sign-ins (in memory: one process serves it)."""

    def __init__(self, host: ConsoleHost) -> None:
        self.host = host
        self._key = secrets.token_bytes(32)  # form tokens are HMACs of the session id under it
        self._sessions: dict[str, float] = {}  # signed-in session id -> when it ends (monotonic)
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("mtls_receiver.console", "templates"),
            autoescape=True,  # every value is text: payloads and reasons come from requests
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    # --- who may look ---------------------------------------------------------------------------

    @property
    def token(self) -> str | None:
        return self.host.config.admin.token  # as last reloaded

    def _bearer(self, request: web.Request) -> bool:
        """The request carries the token as ``Authorization: Bearer``."""
        token = self.token
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if token is None or scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(value.strip().encode(), token.encode())

    @staticmethod
    def _session(request: web.Request) -> str | None:
        sid = request.cookies.get(COOKIE, "")
        return sid if _SESSION_ID.fullmatch(sid) else None

    def _signed_in(self, sid: str | None) -> bool:
        ends = self._sessions.get(sid or "")
        return ends is not None and ends > time.monotonic()

    def _check_host(self, request: web.Request) -> None:
        """Without a token, refuse a page or form reached by a DNS name (DNS rebinding, see above)."""
        if self.token is None and not _names_this_machine(request.host):
            raise web.HTTPMisdirectedRequest(
                text="refused: without [admin] token the console answers only to an IP address or"
                " localhost in the address bar (another name may be a site pointed at this machine)\n"
            )

    def _allowed(self, request: web.Request, sid: str | None) -> bool:
        return self.token is None or self._bearer(request) or self._signed_in(sid)

    def form_token(self, sid: str) -> str:
        return hmac.new(self._key, sid.encode(), hashlib.sha256).hexdigest()

    @staticmethod
    def cross_site(request: web.Request) -> bool:
        """The request was sent by another site's page (or a sandboxed one), as the browser says."""
        if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            return True
        origin = request.headers.get("Origin")
        return origin is not None and origin != f"{request.scheme}://{request.host}"

    # --- pages ----------------------------------------------------------------------------------

    def page(self, view: View, section: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """A GET page: signed in (when a token is set), rendered, with a session for its forms."""

        async def handler(request: web.Request) -> web.StreamResponse:
            self._check_host(request)
            sid = self._session(request)
            if not self._allowed(request, sid):
                raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs, safe='')}")
            new_sid = None
            if sid is None and not self._bearer(request):
                sid = new_sid = secrets.token_hex(32)
            try:
                template, values = await view(self.host, request)
            except StoreUnavailable as exc:
                template, values = "error.html", {"message": f"store unavailable: {exc}"}
                return self.render(template, values, section, sid, status=503)
            response = self.render(template, values, section, sid)
            if new_sid is not None:
                self._set_cookie(response, new_sid)
            return response

        return handler

    def render(
        self, template: str, values: dict[str, object], section: str, sid: str | None, status: int = 200
    ) -> web.Response:
        html = self.templates.get_template(template).render(
            **values,
            section=section,
            csrf=self.form_token(sid) if sid else "",
            signed_in=self.token is not None and self._signed_in(sid),
        )
        return web.Response(text=html, status=status, content_type="text/html", headers=_HEADERS)

    @staticmethod
    def _set_cookie(response: web.StreamResponse, sid: str, max_age: float | None = None) -> None:
        response.set_cookie(
            COOKIE,
            sid,
            httponly=True,
            samesite="Strict",
            path="/",
            max_age=None if max_age is None else int(max_age),
        )

    # --- writes ---------------------------------------------------------------------------------

    def action(
        self, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """A POST from the console's own page: not cross-site, signed in, with the session's form token."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            self._check_host(request)
            if self.cross_site(request):
                raise web.HTTPForbidden(text="refused: a request from another site\n")
            if not self._bearer(request):
                sid = self._session(request)
                if not self._allowed(request, sid):
                    raise web.HTTPForbidden(text="refused: sign in first\n")
                form = await request.post()
                sent = str(form.get("csrf", ""))
                if sid is None or not hmac.compare_digest(sent.encode(), self.form_token(sid).encode()):
                    raise web.HTTPForbidden(text="refused: the form's token does not match this session\n")
            return await handler(request)

        return guarded

    async def replay(self, request: web.Request) -> web.StreamResponse:
        """Queue the chosen events (or every dead one) for delivery again, as ``events replay`` does."""
        form = await request.post()
        ids = [str(value) for value in form.getall("id", [])][:1000]
        if form.get("all") == "dead":
            count = await self.host.store.replay(all_dead=True)
        else:
            count = await self.host.store.replay(ids) if ids else 0
        forwarder = self.host.forwarder
        if count and forwarder is not None:
            forwarder.wake()
        log.info("console: %d event(s) queued again for delivery", count)
        back = str(form.get("back", ""))
        if len(ids) == 1 and back == "event":
            raise web.HTTPSeeOther(f"/events/{quote(ids[0], safe='')}?replayed=1")
        raise web.HTTPSeeOther(f"/dead?replayed={count}")

    # --- signing in -----------------------------------------------------------------------------

    async def login_form(self, request: web.Request) -> web.StreamResponse:
        if self.token is None:
            raise web.HTTPSeeOther("/")
        return self._login_page(request.query.get("next", "/"), "", 200)

    def _login_page(self, back_to: str, message: str, status: int) -> web.Response:
        values: dict[str, object] = {"next": _local(back_to), "message": message}
        return self.render("login.html", values, "login", None, status=status)

    async def login(self, request: web.Request) -> web.StreamResponse:
        """The token typed in the form: right, a new session; wrong, the form again (401)."""
        if self.cross_site(request):
            raise web.HTTPForbidden(text="refused: a request from another site\n")
        token = self.token
        if token is None:
            raise web.HTTPSeeOther("/")
        form = await request.post()
        typed = str(form.get("token", "")).strip()
        if not hmac.compare_digest(typed.encode(), token.encode()):
            log.warning("console: wrong token from %s", request.remote)
            return self._login_page(str(form.get("next", "/")), "That is not the token.", 401)
        sid = self._new_session()
        response = web.HTTPSeeOther(_local(str(form.get("next", "/"))))
        self._set_cookie(response, sid, SESSION_LIFETIME)
        raise response

    def _new_session(self) -> str:
        now = time.monotonic()
        self._sessions = {sid: ends for sid, ends in self._sessions.items() if ends > now}
        while len(self._sessions) >= MAX_SESSIONS:
            del self._sessions[next(iter(self._sessions))]
        sid = secrets.token_hex(32)
        self._sessions[sid] = now + SESSION_LIFETIME
        return sid

    async def logout(self, request: web.Request) -> web.StreamResponse:
        self._sessions.pop(self._session(request) or "", None)
        response = web.HTTPSeeOther("/login" if self.token is not None else "/")
        response.del_cookie(COOKIE, path="/")
        raise response


def _local(target: str) -> str:
    """A path on this site to go back to after signing in (never another site's address). Control
    characters are refused too: URL parsers drop a tab or newline, so ``/<TAB>/evil`` is ``//evil``."""
    local = target.startswith("/") and not target.startswith("//") and "\\" not in target
    return target if local and target.isprintable() else "/"


def _names_this_machine(host: str) -> bool:
    """A ``Host`` header naming this machine whatever DNS says: an IP address, or localhost (which
    browsers resolve to loopback themselves)."""
    try:
        name = urlsplit(f"//{host}").hostname or ""
    except ValueError:
        return False
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True
