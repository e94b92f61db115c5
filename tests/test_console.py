"""The operator console, end to end: a real receiver, real requests, pages opened in headless Chromium.

Chromium is Debian's (``/usr/bin/chromium``, installed by ``.ci/run``), driven by Playwright's
Python package; Playwright's own browser download is not used. Without Chromium these tests skip
and say why, except where ``MTLS_RECEIVER_REQUIRE_BROWSER=1`` (CI) makes that a failure.

``MTLS_RECEIVER_SCREENSHOTS=DIR`` writes a screenshot of each page to ``DIR/console-*.png`` (the
ones in docs/ come from ``MTLS_RECEIVER_SCREENSHOTS=docs pytest tests/test_console.py``).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from support import App, Pki, Serve, client_context, forward_table, https_post, pix, shared_config, until

from mtls_receiver.config import Config, load_config
from mtls_receiver.errors import ConfigError
from mtls_receiver.lifecycle import Receiver
from mtls_receiver.store.reads import EventQuery

pytestmark = pytest.mark.usefixtures("forward_secrets")

CHROMIUM = os.environ.get("MTLS_RECEIVER_CHROMIUM", "/usr/bin/chromium")
SHOTS = os.environ.get("MTLS_RECEIVER_SCREENSHOTS")
TOKEN = "console-test-token-0123456789abcdef"


def _no_browser(reason: str) -> None:
    if os.environ.get("MTLS_RECEIVER_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (MTLS_RECEIVER_REQUIRE_BROWSER=1: CI must run the browser tests)")
    pytest.skip(reason)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """Headless Chromium from Debian's package, launched by Playwright."""
    if not (os.access(CHROMIUM, os.X_OK) or shutil.which(CHROMIUM)):
        _no_browser(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        _no_browser("Playwright is not installed (pip install -e '.[test]')")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            yield launched
        finally:
            await launched.close()


async def shot(page: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(Path(SHOTS) / f"console-{name}.png"), full_page=True)


def with_extra(write_config: Callable[..., Config], extra: str, admin: str | None = None) -> Config:
    config = write_config()
    text = config.source.read_text(encoding="utf-8") + extra
    if admin is not None:
        text = text.replace('[admin]\naddress = "127.0.0.1:0"\n', admin)
    config.source.write_text(text, encoding="utf-8")
    return load_config(config.source)


async def post(
    receiver: Receiver, pki: Pki, body: object, path: str = "/webhook/pix", method: str = "POST"
) -> int:
    context = client_context(pki, pki.client)
    return (await https_post(receiver.port(), path, body, context, method=method)).status  # type: ignore[arg-type]


async def events_with(receiver: Receiver, status: str, count: int) -> None:
    async def reached() -> bool:
        return len(await receiver.store.list_events(status=status, limit=1000)) == count

    await until(reached)


async def test_every_page_answers_the_operators_questions(  # type: ignore[no-untyped-def]
    browser: Any, app: App, write_config, start_receiver, pki: Pki
) -> None:
    app.up = False
    config = with_extra(write_config, forward_table(app.url, max_attempts=2))
    receiver: Receiver = await start_receiver(config)
    hostile = "<img src=x onerror=document.title=1>"
    assert await post(receiver, pki, {"pix": [pix("E2EDEAD01", infoPagador=hostile)]}) == 200
    assert await post(receiver, pki, {"pix": [pix("E2EDEAD01", infoPagador=hostile)]}) == 200  # a duplicate
    assert await post(receiver, pki, {"pix": [pix(f"E2EBULK{n:03}") for n in range(55)]}) == 200
    assert await post(receiver, pki, {"pix": []}, path="/nowhere") == 404
    assert await post(receiver, pki, b"{not json") == 400
    assert await post(receiver, pki, b"", path="/webhook", method="GET") == 405
    await events_with(receiver, "dead", 56)
    base = f"http://127.0.0.1:{receiver.admin_port}"
    page = await browser.new_page(viewport={"width": 1280, "height": 900})

    # Overview: requests per route, the outbox, certificates, workers and store
    await page.goto(f"{base}/")
    text = await page.inner_text("main")
    row = await page.locator("tr", has=page.locator("a", has_text="/webhook")).first.inner_text()
    assert re.split(r"\s+", row.strip())[2:8] == ["3", "2", "1", "3", "2", "1"], row
    assert "Dead\n56" in text and "Ready\nyes" in text
    assert "server certificate" in text and "client CA" in text and "answering" in text
    await shot(page, "overview")

    # Events: newest first, paginated, filtered, searched by endToEndId
    await page.goto(f"{base}/events")
    assert await page.locator("tbody tr").count() == 50
    await shot(page, "events")
    await page.click("text=Older →")
    assert await page.locator("tbody tr").count() == 6
    assert "E2EDEAD01" in await page.inner_text("tbody")
    await page.goto(f"{base}/events")
    await page.fill("#q", "E2EBULK007")
    await page.click("button:has-text('Filter')")
    assert await page.locator("tbody tr").count() == 1
    await page.goto(f"{base}/events")
    await page.select_option("#status", "delivered")
    await page.click("button:has-text('Filter')")
    assert "No events." in await page.inner_text("tbody")
    await page.goto(f"{base}/events?since=2000-01-01T00:00")
    assert await page.locator("tbody tr").count() == 50
    await page.goto(f"{base}/events?until=2000-01-01T00:00")
    assert "No events." in await page.inner_text("tbody")
    answer = await page.goto(f"{base}/events?since=yesterday")
    assert answer.status == 400 and "not a date and time" in await page.inner_text("body")
    await page.goto(f"{base}/events?q=E2EDEAD01")
    await page.click("tbody a")

    # Event: payload (escaped), sender, attempts
    text = await page.inner_text("main")
    assert hostile in text and await page.locator("main img").count() == 0
    assert "efi-like client" in text and "mtls-client-certificate" in text
    assert text.count("HTTP 503") == 2 and "dead" in text
    assert await page.title() != "1"
    await shot(page, "event")

    # Refusals: by reason and peer, and the requests behind a group
    await page.goto(f"{base}/refusals")
    text = await page.inner_text("main")
    assert "not found" in text and "127.0.0.1" in text
    bad_body = page.locator("a", has_text=re.compile("JSON|json|body"))
    await bad_body.first.click()
    assert await page.locator("h2", has_text="Requests refused for").count() == 1
    assert "POST /webhook" in await page.inner_text("main")
    await page.goto(f"{base}/refusals")
    await shot(page, "refusals")

    # Configuration: secrets only as where they come from
    await page.goto(f"{base}/config")
    text = await page.inner_text("main")
    assert "env:T_FORWARD_SECRET" in text and "env:T_FORWARD_OLD" in text
    assert os.environ["T_FORWARD_SECRET"] not in await page.content()
    assert "/webhook" in text and "efi" in text
    await shot(page, "config")

    # Dead letters: pick one and send it again; the application now takes it
    app.up = True
    await page.goto(f"{base}/dead")
    await shot(page, "dead")
    (dead,) = await receiver.store.find_events(EventQuery(search="E2EDEAD01"))
    dead_id = dead.id
    await page.click("text=Older →")  # the oldest dead event is on the second page
    await page.check(f"input[value='{dead_id}']")
    await page.click("button:has-text('Replay selected')")
    assert "1 event(s) queued for delivery again." in await page.inner_text("main")
    await until(lambda: len(app.received) == 1)
    await events_with(receiver, "delivered", 1)
    await page.goto(f"{base}/events/{dead_id}")
    assert "delivered" in await page.inner_text("h1")
    await page.goto(f"{base}/dead")
    await page.click("button:has-text('Replay every dead event')")
    assert "55 event(s) queued for delivery again." in await page.inner_text("main")
    await events_with(receiver, "delivered", 56)

    # readable on a phone: no horizontal scroll of the page itself
    phone = await browser.new_page(viewport={"width": 390, "height": 844})
    for path in ("/", "/events", f"/events/{dead_id}", "/refusals", "/dead", "/config"):
        await phone.goto(base + path)
        width = await phone.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, (path, width)
    await phone.goto(f"{base}/events/{dead_id}")
    await shot(phone, "phone")


async def test_a_cross_site_post_is_refused(  # type: ignore[no-untyped-def]
    browser: Any, app: App, write_config, start_receiver, pki: Pki
) -> None:
    app.up = False
    receiver: Receiver = await start_receiver(
        with_extra(write_config, forward_table(app.url, max_attempts=1))
    )
    assert await post(receiver, pki, {"pix": [pix("E2ECSRF01")]}) == 200
    await events_with(receiver, "dead", 1)
    (dead,) = await receiver.store.find_events(EventQuery(status="dead"))
    base = f"http://127.0.0.1:{receiver.admin_port}"

    async def evil(request: web.Request) -> web.Response:  # another site's page, posting to the console
        form = (
            f'<form id="f" method="post" action="{base}/replay"><input name="id" value="{dead.id}">'
            '<input name="csrf" value="guessed"></form><script>document.getElementById("f").submit()</script>'
        )
        return web.Response(text=form, content_type="text/html")

    site = web.Application()
    site.router.add_get("/", evil)
    runner = web.AppRunner(site)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        page = await browser.new_page()
        await page.goto(f"{base}/dead")  # the operator has the console open: a session cookie exists
        evil_port = runner.addresses[0][1]
        async with page.expect_navigation(url=f"{base}/replay"):
            await page.goto(f"http://localhost:{evil_port}/")
        assert "refused: a request from another site" in await page.inner_text("body")
    finally:
        await runner.cleanup()
    # nor without a browser's headers: no form token of this session, no replay
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base}/replay", data={"id": dead.id}, allow_redirects=False) as answer:
            assert answer.status == 403 and "form's token" in await answer.text()
    assert [event.status for event in await receiver.store.find_events(EventQuery())] == ["dead"]


def test_off_loopback_the_admin_listener_requires_a_token(write_config: Callable[..., Config]) -> None:
    with pytest.raises(ConfigError) as refused:
        with_extra(write_config, "", admin='[admin]\naddress = "0.0.0.0:0"\n')
    assert "admin.token" in str(refused.value) and "not loopback" in str(refused.value)
    with pytest.raises(ConfigError) as inline:
        with_extra(write_config, "", admin='[admin]\naddress = "0.0.0.0:0"\ntoken = "inline"\n')
    assert "admin.token" in str(inline.value) and "not accepted inline" in str(inline.value)


def test_a_short_token_is_refused(
    write_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sign-in has no rate limit of its own: a token short enough to guess online is a config error."""
    monkeypatch.setenv("T_ADMIN_TOKEN", "guessable")
    with pytest.raises(ConfigError) as short:
        admin = '[admin]\naddress = "0.0.0.0:0"\ntoken = { env = "T_ADMIN_TOKEN" }\n'
        with_extra(write_config, "", admin=admin)
    assert "admin.token" in str(short.value) and "too short" in str(short.value)
    assert "guessable" not in str(short.value)


def test_a_token_comes_from_the_environment_and_is_never_shown(
    write_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("T_ADMIN_TOKEN", TOKEN)
    for address in ("0.0.0.0:0", "[::1]:0", "localhost:0"):
        admin = f'[admin]\naddress = "{address}"\ntoken = {{ env = "T_ADMIN_TOKEN" }}\n'
        config = with_extra(write_config, "", admin=admin)
        assert config.admin.token == TOKEN and config.admin.token_source == "env:T_ADMIN_TOKEN"
        assert TOKEN not in repr(config)
    for loopback in ("[::1]:0", "localhost:0", "127.0.0.2:0"):  # loopback: a token is optional
        config = with_extra(write_config, "", admin=f'[admin]\naddress = "{loopback}"\n')
        assert config.admin.token is None and config.admin.loopback


async def test_with_a_token_every_page_asks_for_it(  # type: ignore[no-untyped-def]
    browser: Any,
    write_config,
    start_receiver,
    pki: Pki,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (tmp_path / "admin-token").write_text(TOKEN + "\n", encoding="utf-8")
    admin = f'[admin]\naddress = "0.0.0.0:0"\ntoken = {{ file = "{tmp_path / "admin-token"}" }}\n'
    caplog.set_level(logging.INFO, "mtls_receiver")
    receiver: Receiver = await start_receiver(with_extra(write_config, "", admin=admin))
    assert f"token required, file:{tmp_path / 'admin-token'}" in caplog.text
    assert TOKEN not in caplog.text
    base = f"http://127.0.0.1:{receiver.admin_port}"
    async with aiohttp.ClientSession() as session:
        for path in ("/", "/events", "/refusals", "/dead", "/config"):
            async with session.get(base + path, allow_redirects=False) as answer:
                assert answer.status == 303 and answer.headers["Location"].startswith("/login?next=")
        async with session.get(f"{base}/config", headers={"Authorization": f"Bearer {TOKEN}"}) as answer:
            assert answer.status == 200 and "file:" in await answer.text()
        async with session.get(
            f"{base}/", headers={"Authorization": "Bearer wrong"}, allow_redirects=False
        ) as a:
            assert a.status == 303
        async with session.get(f"{base}/metrics") as answer:  # Prometheus and probes need no token
            assert answer.status == 200
    page = await browser.new_page()
    await page.goto(f"{base}/refusals?window=week")
    assert page.url.startswith(f"{base}/login")
    await page.fill("#token", "not the token")
    await page.click("button:has-text('Sign in')")
    assert "That is not the token." in await page.inner_text("main")
    await page.fill("#token", TOKEN)
    await page.click("button:has-text('Sign in')")
    assert page.url == f"{base}/refusals?window=week"
    assert "By reason" in await page.inner_text("main")
    await page.goto(f"{base}/config")
    assert f"file:{tmp_path / 'admin-token'}" in await page.inner_text("main")
    assert TOKEN not in await page.content()
    await page.click("button:has-text('Sign out')")
    assert page.url.startswith(f"{base}/login")
    await page.goto(f"{base}/")
    assert page.url.startswith(f"{base}/login")


async def test_two_workers_on_postgresql(  # type: ignore[no-untyped-def]
    browser: Any, serve: Serve, tmp_path: Path, pki: Pki, pg_dsn: str
) -> None:
    """The supervisor serves the console (workers' admin ports do not); the inbox is PostgreSQL."""
    config = shared_config(tmp_path, pki, pg_dsn, "pg")
    config.write_text("workers = 2\n" + config.read_text(encoding="utf-8"), encoding="utf-8")
    server, port = serve(config)
    context = client_context(pki, pki.client)
    for n in range(3):
        answer = await https_post(port, "/webhook/pix", {"pix": [pix(f"E2EPG{n}")]}, context)
        assert answer.status == 200
    assert (await https_post(port, "/webhook/pix", b"{", context)).status == 400
    base = f"http://127.0.0.1:{server.admin_port()}"
    page = await browser.new_page()
    await page.goto(f"{base}/")
    text = await page.inner_text("main")
    assert "with 2 workers" in text and "PostgreSQL" in text and "answering" in text
    row = await page.locator("tr", has=page.locator("a", has_text="/webhook")).first.inner_text()
    assert re.split(r"\s+", row.strip())[2:5] == ["3", "1", "0"], row
    await page.goto(f"{base}/events?q=E2EPG1")
    assert await page.locator("tbody tr").count() == 1
    await page.click("tbody a")
    assert "E2EPG1" in await page.inner_text("pre")
    await page.goto(f"{base}/refusals")
    assert "body is not valid JSON" in await page.inner_text("main")
    for worker_admin in server.worker_admin_ports(port):
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{worker_admin}/") as answer:
                assert answer.status == 404  # a worker's admin port serves only its supervisor


async def test_without_a_token_a_dns_name_pointed_here_is_refused(  # type: ignore[no-untyped-def]
    app: App, write_config, start_receiver, pki: Pki
) -> None:
    """DNS rebinding: another site's name resolving to 127.0.0.1 is the console's origin to a browser,
    so its page could read every page and post the replay form with the session's token."""
    app.up = False
    receiver: Receiver = await start_receiver(
        with_extra(write_config, forward_table(app.url, max_attempts=1))
    )
    assert await post(receiver, pki, {"pix": [pix("E2EREBIND1")]}) == 200
    await events_with(receiver, "dead", 1)
    port = receiver.admin_port
    base = f"http://127.0.0.1:{port}"
    rebound = {"Host": f"rebind.attacker.example:{port}"}
    async with aiohttp.ClientSession() as session:
        for path in ("/", "/events", "/dead", "/config"):
            async with session.get(base + path, headers=rebound, allow_redirects=False) as answer:
                assert answer.status == 421 and "E2EREBIND1" not in await answer.text()
        async with session.get(f"{base}/dead") as answer:  # as the operator's browser sees it
            csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', await answer.text())
            assert answer.status == 200 and csrf is not None
        origin = {**rebound, "Origin": f"http://rebind.attacker.example:{port}"}
        form = {"csrf": csrf[1], "all": "dead"}
        async with session.post(f"{base}/replay", data=form, headers=origin, allow_redirects=False) as a:
            assert a.status == 421
        for host in (f"localhost:{port}", f"[::1]:{port}"):  # this machine's own names still answer
            async with session.get(f"{base}/dead", headers={"Host": host}) as answer:
                assert answer.status == 200
    assert [event.status for event in await receiver.store.find_events(EventQuery())] == ["dead"]


async def test_signing_in_never_sends_the_browser_to_another_site(  # type: ignore[no-untyped-def]
    write_config, start_receiver, tmp_path: Path
) -> None:
    """URL parsers drop a tab or newline in ``next``: ``/<TAB>/evil.example`` is ``//evil.example``."""
    (tmp_path / "admin-token").write_text(TOKEN + "\n", encoding="utf-8")
    admin = f'[admin]\naddress = "127.0.0.1:0"\ntoken = {{ file = "{tmp_path / "admin-token"}" }}\n'
    receiver: Receiver = await start_receiver(with_extra(write_config, "", admin=admin))
    base = f"http://127.0.0.1:{receiver.admin_port}"
    async with aiohttp.ClientSession() as session:
        for target in ("/\t/evil.example/", "/\n/evil.example/", "/\r\n/evil.example/", "//evil.example/"):
            form = {"token": TOKEN, "next": target}
            async with session.post(f"{base}/login", data=form, allow_redirects=False) as answer:
                assert answer.status == 303 and answer.headers["Location"] == "/", target
        async with session.post(
            f"{base}/login", data={"token": TOKEN, "next": "/events?q=E2E"}, allow_redirects=False
        ) as answer:
            assert answer.headers["Location"] == "/events?q=E2E"
