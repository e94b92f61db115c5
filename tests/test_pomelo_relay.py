"""Pomelo authorisations end to end: a real application server answers, the receiver signs.

Also: every HMAC provider's dedup through the server (same event twice -> stored once, two 2xx).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable

import pytest
from support import Answer, App, Pki, client_context, https_post, until
from test_hmac_providers import FIRE_BODY, FIRE_SECRET, INFI_BODY, INFI_SECRET, hex_hmac

from mtls_receiver.config import Config, RelayConfig, RouteConfig
from mtls_receiver.dispatch import handling_deadline
from mtls_receiver.lifecycle import Receiver
from mtls_receiver.providers.pomelo import PomeloOptions

SECRET = base64.b64encode(b"relay-test-secret-0123456789").decode()
AUTH_PATH = "/pomelo/transactions/authorizations"


APPROVED = {"status": "APPROVED", "message": "ok"}


@pytest.fixture
def app(app: App) -> App:
    """The merchant's application, approving every authorisation."""
    app.answer = dict(APPROVED)
    return app


def auth_routes(app_url: str, deadline: float = 1.0) -> str:
    return (
        f'[[routes]]\npath = "{AUTH_PATH}"\nprovider = "pomelo"\nmode = "authorizations"\n'
        'allow_ips = ["127.0.0.1/32"]\napi_keys = [{ key = "pk-1", secret = { env = "T_POMELO_SECRET" } }]\n'
        f'app_url = "{app_url}"\ndeadline = {deadline}\n'
        'timeout_body = \'{"status":"REJECTED","status_detail":"CLIENT_TIMEOUT"}\'\n'
    )


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_POMELO_SECRET", SECRET)
    monkeypatch.setenv("T_INFI_SECRET", INFI_SECRET)
    monkeypatch.setenv("T_FIRE_SECRET", FIRE_SECRET)


def signed_headers(endpoint: str, body: bytes, idempotency_key: str, ts: int | None = None) -> dict[str, str]:
    stamp = str(int(time.time()) if ts is None else ts)
    digest = hmac.new(
        base64.b64decode(SECRET), stamp.encode() + endpoint.encode() + body, hashlib.sha256
    ).digest()
    return {
        "x-api-key": "pk-1",
        "x-endpoint": endpoint,
        "x-timestamp": stamp,
        "x-signature": "hmac-sha256 " + base64.b64encode(digest).decode(),
        "x-idempotency-key": idempotency_key,
    }


def assert_signed_answer(answer: Answer, endpoint: str) -> None:
    """Verify the answer the way Pomelo does, from the documented algorithm."""
    headers = answer.headers
    assert headers["x-endpoint"] == endpoint
    assert abs(int(headers["x-timestamp"]) - time.time()) < 5
    message = headers["x-timestamp"].encode() + endpoint.encode() + answer.body
    expected = hmac.new(base64.b64decode(SECRET), message, hashlib.sha256).digest()
    assert headers["x-signature"] == "hmac-sha256 " + base64.b64encode(expected).decode()


async def authorize(
    receiver: Receiver,
    pki: Pki,
    key: str,
    body: bytes = b'{"transaction":{"id":"ctx-1"}}',
    ts: int | None = None,
) -> Answer:
    return await https_post(
        receiver.port(),
        AUTH_PATH,
        body,
        client_context(pki),
        headers=signed_headers(AUTH_PATH, body, key, ts),
    )


@pytest.fixture
async def relay_receiver(app: App, write_config: Callable[..., Config], start_receiver) -> Receiver:  # type: ignore[no-untyped-def]
    return await start_receiver(write_config(client_certs="none", routes=auth_routes(app.url)))


async def test_application_answer_is_returned_signed(relay_receiver: Receiver, app: App, pki: Pki) -> None:
    answer = await authorize(relay_receiver, pki, "idem-1")
    assert answer.status == 200 and json.loads(answer.body) == app.answer
    assert_signed_answer(answer, AUTH_PATH)
    (call,) = app.calls
    assert call["X-Idempotency-Key"] == "idem-1" and call["X-Endpoint"] == AUTH_PATH
    (audit,) = await relay_receiver.store.list_audit()
    assert audit.status == 200 and "application answered 200" in audit.reason


async def test_repeat_of_finished_request_gets_stored_answer(
    relay_receiver: Receiver, app: App, pki: Pki
) -> None:
    first = await authorize(relay_receiver, pki, "idem-2")
    app.answer = {"status": "REJECTED"}  # the application would answer differently now
    again = await authorize(relay_receiver, pki, "idem-2")
    assert again.body == first.body and len(app.calls) == 1
    assert_signed_answer(again, AUTH_PATH)


async def test_repeat_while_in_progress_gets_425(relay_receiver: Receiver, app: App, pki: Pki) -> None:
    app.delay = 0.5
    first = asyncio.create_task(authorize(relay_receiver, pki, "idem-3"))
    await until(lambda: app.calls)
    repeat = await authorize(relay_receiver, pki, "idem-3")
    assert repeat.status == 425
    assert_signed_answer(repeat, AUTH_PATH)
    assert (await first).status == 200 and len(app.calls) == 1


async def test_late_application_gets_signed_configured_rejection(
    app: App, write_config, start_receiver, pki: Pki
) -> None:  # type: ignore[no-untyped-def]
    receiver = await start_receiver(
        write_config(client_certs="none", routes=auth_routes(app.url, deadline=0.3))
    )
    app.delay = 2.0
    started = time.monotonic()
    answer = await authorize(receiver, pki, "idem-4")
    assert time.monotonic() - started < 1.9  # answered at the deadline, not when the application finished
    assert answer.status == 200 and json.loads(answer.body) == {
        "status": "REJECTED",
        "status_detail": "CLIENT_TIMEOUT",
    }
    assert_signed_answer(answer, AUTH_PATH)


async def test_unreachable_application_gets_signed_rejection(write_config, start_receiver, pki: Pki) -> None:  # type: ignore[no-untyped-def]
    receiver = await start_receiver(
        write_config(client_certs="none", routes=auth_routes("http://127.0.0.1:9/x"))
    )
    answer = await authorize(receiver, pki, "idem-5")
    assert json.loads(answer.body)["status_detail"] == "CLIENT_TIMEOUT"
    assert_signed_answer(answer, AUTH_PATH)


async def test_stored_answer_survives_restart(app: App, write_config, pki: Pki) -> None:  # type: ignore[no-untyped-def]
    config = write_config(client_certs="none", routes=auth_routes(app.url))
    for _attempt in range(2):
        receiver = Receiver(config)
        await receiver.start()
        try:
            answer = await authorize(receiver, pki, "idem-6")
        finally:
            await receiver.stop()
        assert answer.status == 200
        assert_signed_answer(answer, AUTH_PATH)
    assert len(app.calls) == 1


async def test_stale_or_tampered_authorisation_is_refused(
    relay_receiver: Receiver, app: App, pki: Pki
) -> None:
    stale = await authorize(relay_receiver, pki, "idem-7", ts=int(time.time()) - 61)
    assert stale.status == 401 and b"old" in stale.body
    body = b'{"transaction":{"id":"ctx-1"}}'
    headers = signed_headers(AUTH_PATH, body, "idem-8")
    tampered = await https_post(
        relay_receiver.port(), AUTH_PATH, body.replace(b"1", b"2"), client_context(pki), headers=headers
    )
    assert tampered.status == 401
    assert app.calls == []


# --- dedup through the server, per provider -------------------------------------------------------


def infi_request() -> tuple[str, bytes, dict[str, str]]:
    ts = str(int(time.time()))
    return (
        "/infi",
        INFI_BODY,
        {
            "X-Infi-Timestamp": ts,
            "X-Infi-Event-Id": "evt_1",
            "X-Infi-Signature": "sha256=" + hex_hmac(INFI_SECRET, f"{ts}.".encode() + INFI_BODY),
        },
    )


def fire_request() -> tuple[str, bytes, dict[str, str]]:
    return (
        "/fire",
        FIRE_BODY,
        {
            "X-Fire-Event": "pix.received",
            "X-Fire-Timestamp": str(int(time.time())),
            "X-Fire-Signature": "sha256=" + hex_hmac(FIRE_SECRET, FIRE_BODY),
        },
    )


def pomelo_request() -> tuple[str, bytes, dict[str, str]]:
    body = b'{"event_type":"card.shipped"}'
    return "/pomelo/notifications", body, signed_headers("/pomelo/notifications", body, "ntf-1")


SIGNED_ROUTES = (
    '[[routes]]\npath = "/infi"\nprovider = "infi"\nsecrets = [{ env = "T_INFI_SECRET" }]\n'
    '[[routes]]\npath = "/fire"\nprovider = "firebanking"\nsecrets = [{ env = "T_FIRE_SECRET" '
    '}]\nfamilies = ["pix"]\n'
    '[[routes]]\npath = "/pomelo/notifications"\nprovider = "pomelo"\nallow_ips = ["127.0.0.1/32"]\n'
    'api_keys = [{ key = "pk-1", secret = { env = "T_POMELO_SECRET" } }]\n'
)


@pytest.mark.parametrize("make", [infi_request, fire_request, pomelo_request])
async def test_same_event_twice_is_stored_once(make, write_config, start_receiver, pki: Pki) -> None:  # type: ignore[no-untyped-def]
    receiver = await start_receiver(write_config(client_certs="none", routes=SIGNED_ROUTES))
    for _ in range(2):
        path, body, headers = make()  # a retry: signed again
        answer = await https_post(receiver.port(), path, body, client_context(pki), headers=headers)
        assert 200 <= answer.status < 300, answer.body
    (event,) = await receiver.store.list_events()
    assert event.route == path and [a.status for a in await receiver.store.list_audit()] == [200, 200]


async def test_pomelo_default_allowlist_refuses_loopback(write_config, start_receiver, pki: Pki) -> None:  # type: ignore[no-untyped-def]
    routes = (
        '[[routes]]\npath = "/pomelo/notifications"\nprovider = "pomelo"\n'
        'api_keys = [{ key = "pk-1", secret = { env = "T_POMELO_SECRET" } }]\n'
    )
    receiver = await start_receiver(write_config(client_certs="none", routes=routes))
    path, body, headers = pomelo_request()
    answer = await https_post(receiver.port(), path, body, client_context(pki), headers=headers)
    assert answer.status == 403 and b"allowlist" in answer.body


def test_the_handling_deadline_never_cuts_the_applications_own_deadline() -> None:
    """limits.handling_timeout bounds a request's handling; on a relaying route the application's
    ``deadline`` (answered with the configured signed rejection) comes on top of it."""
    plain = RouteConfig(path="/n", listener="main", provider="pomelo", mode="notifications")
    relaying = RouteConfig(
        path="/a",
        listener="main",
        provider="pomelo",
        mode="authorizations",
        options=PomeloOptions(application=RelayConfig(url="http://127.0.0.1:1/", deadline=45.0)),
    )
    assert handling_deadline(30.0, [plain]) == 30.0
    assert handling_deadline(30.0, [plain, relaying]) == 75.0
