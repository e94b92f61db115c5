"""Forwarding to the merchant's application: signed deliveries, retries, dead events, replay,
order per key, bounded concurrency, Python handlers, and kill -9 with events pending."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from support import (
    OLD_SECRET,
    SECRET,
    App,
    Pki,
    Serve,
    client_context,
    config_text,
    forward_table,
    https_post,
    pix,
    run_cli,
    until,
)

from mtls_receiver.config import Config
from mtls_receiver.lifecycle import Receiver

pytestmark = pytest.mark.usefixtures("forward_secrets")


async def receiver_with(write_config: Callable[..., Config], start_receiver, extra: str) -> Receiver:  # type: ignore[no-untyped-def]
    config = write_config()
    config.source.write_text(config.source.read_text() + extra, encoding="utf-8")
    from mtls_receiver.config import load_config

    return await start_receiver(load_config(config.source))


async def send_pix(receiver: Receiver, pki: Pki, *items: dict[str, object]) -> None:
    answer = await https_post(
        receiver.port(), "/webhook/pix", {"pix": list(items)}, client_context(pki, pki.client)
    )
    assert answer.status == 200


async def until_recorded(receiver: Receiver, delivered: int = 1) -> None:
    """The application has its copy a moment before the receiver records the delivery."""

    async def recorded() -> bool:
        return len(await receiver.store.list_events(status="delivered")) == delivered

    await until(recorded)


async def test_delivery_is_signed_and_verifies_with_standardwebhooks(
    app: App, write_config, start_receiver, pki: Pki
) -> None:  # type: ignore[no-untyped-def]
    receiver = await receiver_with(write_config, start_receiver, forward_table(app.url))
    await send_pix(receiver, pki, pix("E1", chave="k1"))
    await until(lambda: len(app.received) == 1)
    headers, body = app.received[0]
    for secret in (SECRET, OLD_SECRET):  # both rotation secrets sign
        delivered = Webhook(secret).verify(body, headers)
        assert delivered["payload"] == pix("E1", chave="k1")
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()).verify(body, headers)
    envelope = json.loads(body)
    await until_recorded(receiver)
    (event,) = await receiver.store.list_events()
    assert envelope["id"] == headers["webhook-id"] == event.id and event.status == "delivered"
    assert (envelope["type"], envelope["provider"], envelope["route"], envelope["kind"]) == (
        "efi.pix",
        "efi",
        "/webhook",
        "pix",
    )
    assert envelope["sender"]["verified_by"] == "mtls-client-certificate"
    assert "efi-like client" in envelope["sender"]["client_certificate"]["subject"]
    assert envelope["received_at"] == event.received_at and envelope["dedup_key"] == "E1"


async def test_application_down_then_back(app: App, write_config, start_receiver, pki: Pki) -> None:  # type: ignore[no-untyped-def]
    app.up = False
    receiver = await receiver_with(write_config, start_receiver, forward_table(app.url))
    await send_pix(receiver, pki, pix("E1"))
    await until(lambda: len(app.attempts) >= 3)
    app.up = True
    await until_recorded(receiver)
    (event,) = await receiver.store.list_events(status="delivered")
    stored = await receiver.store.get_event(event.id)
    assert stored is not None
    attempts = stored[1]
    assert [a.status_code for a in attempts[:-1]] == [503] * (len(attempts) - 1) and attempts[
        -1
    ].status_code == 204
    assert attempts[0].error == "HTTP 503" and attempts[-1].error == ""


async def test_dead_after_limit_then_replay_delivers(
    app: App, write_config, start_receiver, pki: Pki
) -> None:  # type: ignore[no-untyped-def]
    app.up = False
    receiver = await receiver_with(write_config, start_receiver, forward_table(app.url, max_attempts=3))
    await send_pix(receiver, pki, pix("E1"))

    async def is_dead() -> bool:
        return len(await receiver.store.list_events(status="dead")) == 1

    await until(is_dead)
    assert len(app.attempts) == 3
    shown = run_cli(
        "events", "show", (await receiver.store.list_events())[0].id, "--config", str(receiver.config.source)
    )
    assert (
        shown.returncode == 0 and '"status": "dead"' in shown.stdout and shown.stdout.count("HTTP 503") == 3
    )
    app.up = True
    replayed = run_cli("events", "replay", "--dead", "--config", str(receiver.config.source))
    assert replayed.returncode == 0 and "queued 1 event" in replayed.stdout
    await until(lambda: len(app.received) == 1)
    listed = run_cli(
        "events", "list", "--status", "delivered", "--config", str(receiver.config.source), "--json"
    )
    assert json.loads(listed.stdout)["status"] == "delivered"


async def test_an_attempt_that_times_out_while_the_app_works_delivers_twice_with_one_webhook_id(  # type: ignore[no-untyped-def]
    app: App, write_config, start_receiver, pki: Pki
) -> None:
    """What docs/forwarding.md promises the application: at least once, so deduplicate on webhook-id.

    The application is slower than the forwarder's timeout once: the receiver gives up on that
    attempt and retries, while the application still finishes the first one."""
    app.delay = 1.0
    receiver = await receiver_with(write_config, start_receiver, forward_table(app.url, timeout=0.3))
    await send_pix(receiver, pki, pix("E1"))
    await until(lambda: len(app.attempts) >= 1)
    app.delay = 0.0
    await until(lambda: len(app.received) == 2)
    (event,) = await receiver.store.list_events()
    assert [headers["webhook-id"] for headers, _ in app.received] == [event.id, event.id]


async def test_replay_by_id_redelivers(app: App, write_config, start_receiver, pki: Pki) -> None:  # type: ignore[no-untyped-def]
    receiver = await receiver_with(write_config, start_receiver, forward_table(app.url))
    await send_pix(receiver, pki, pix("E1"))
    await until(lambda: len(app.received) == 1)
    event_id = app.delivered_ids()[0]
    replayed = run_cli("events", "replay", event_id, "evt_unknown", "--config", str(receiver.config.source))
    assert (
        replayed.returncode == 1
        and "queued 1 event" in replayed.stdout
        and "1 ID(s) not found" in replayed.stderr
    )
    await until(lambda: len(app.received) == 2)
    assert app.delivered_ids() == [event_id, event_id]


async def test_order_per_key_is_kept(app: App, write_config, start_receiver, pki: Pki) -> None:  # type: ignore[no-untyped-def]
    receiver = await receiver_with(write_config, start_receiver, forward_table(app.url, concurrency=4))
    app.up = False  # hold everything back until all three are stored
    for status in ("EM_PROCESSAMENTO", "DEVOLVIDO"):
        refund = {"id": "D1", "rtrId": "D" * 32, "valor": "1.00", "status": status}
        await send_pix(receiver, pki, pix("E-SAME", devolucoes=[refund]))
    await send_pix(receiver, pki, pix("E-OTHER"))
    ids = {e.dedup_key: e.id for e in await receiver.store.list_events()}
    first, second = ids["E-SAME|D1:EM_PROCESSAMENTO"], ids["E-SAME|D1:DEVOLVIDO"]
    await until(lambda: first in app.attempts and ids["E-OTHER"] in app.attempts)
    app.fail_first.add(first)
    app.up = True
    await until(lambda: len(app.received) == 3)
    delivered = app.delivered_ids()
    assert delivered.index(first) < delivered.index(second)
    assert app.attempts.index(second) > max(
        i for i, e in enumerate(app.attempts) if e == first
    )  # never overtook


async def test_concurrency_is_bounded(app: App, write_config, start_receiver, pki: Pki) -> None:  # type: ignore[no-untyped-def]
    app.delay = 0.2
    receiver = await receiver_with(write_config, start_receiver, forward_table(app.url, concurrency=2))
    await send_pix(receiver, pki, *(pix(f"E{n}") for n in range(8)))
    await until(lambda: len(app.received) == 8)
    assert app.max_active == 2


async def test_deliveries_ending_together_are_each_recorded_once(
    app: App,
    write_config,
    start_receiver,  # type: ignore[no-untyped-def]
    pki: Pki,
) -> None:
    app.delay = 0.05  # four at a time end together, and are recorded in one transaction
    receiver = await receiver_with(write_config, start_receiver, forward_table(app.url, concurrency=4))
    await send_pix(receiver, pki, *(pix(f"E{n}") for n in range(12)))

    async def all_delivered() -> bool:
        return (await receiver.store.stats()).get("delivered") == 12

    await until(all_delivered)
    for event in await receiver.store.list_events(status="delivered"):
        found = await receiver.store.get_event(event.id)
        assert found is not None and [a.status_code for a in found[1]] == [204]
    assert (
        receiver.metrics.registry.get_sample_value(
            "mtls_receiver_delivery_attempts_total", {"outcome": "delivered"}
        )
        == 12
    )
    assert len(app.received) == 12


HANDLERS = """
import asyncio
calls = []
failures = {"sync": 1, "async": 1}

def sync_handler(event):
    calls.append(("sync", event["dedup_key"]))
    if failures["sync"]:
        failures["sync"] -= 1
        raise RuntimeError("application busy")

async def async_handler(event):
    await asyncio.sleep(0)
    calls.append(("async", event["dedup_key"]))
    if failures["async"]:
        failures["async"] -= 1
        raise ValueError("not yet")
"""


@pytest.mark.parametrize("handler", ["sync_handler", "async_handler"])
async def test_python_handler_with_retry(
    handler: str,
    tmp_path: Path,
    write_config,
    start_receiver,
    pki: Pki,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = f"hooks_{handler}"
    (tmp_path / f"{module}.py").write_text(HANDLERS, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    extra = f'\n[forward]\nhandler = "{module}:{handler}"\nbackoff_base = 0.05\nbackoff_max = 0.1\n'
    receiver = await receiver_with(write_config, start_receiver, extra)
    await send_pix(receiver, pki, pix("E1"))
    calls = sys.modules[module].calls
    await until(lambda: len(calls) == 2)
    kind = handler.split("_")[0]
    assert calls == [(kind, "E1"), (kind, "E1")]
    await until_recorded(receiver)
    event = (await receiver.store.list_events())[0]
    _, attempts = await receiver.store.get_event(event.id)  # type: ignore[misc]
    assert attempts[0].status_code is None and (
        "RuntimeError" in attempts[0].error or "ValueError" in attempts[0].error
    )


def test_unknown_handler_is_a_config_error(tmp_path: Path, pki: Pki) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        config_text(pki) + '\n[forward]\nhandler = "no_such_module_here:handle"\n', encoding="utf-8"
    )
    result = run_cli("check-config", "--config", str(config))
    assert (
        result.returncode == 2 and "forward.handler: cannot load no_such_module_here:handle" in result.stderr
    )


def test_kill_9_with_events_pending_delivers_after_restart(tmp_path: Path, pki: Pki, serve: Serve) -> None:
    async def scenario() -> None:
        async with App() as app:
            app.up = False
            config = tmp_path / "config.toml"
            config.write_text(
                config_text(pki) + forward_table(app.url, backoff_base=0.2, backoff_max=0.5), encoding="utf-8"
            )
            env_server, port = await asyncio.to_thread(serve, config)
            sent = [pix(f"E{n:04d}", valor=f"{n}.00") for n in range(25)]
            context = client_context(pki, pki.client)
            for item in sent:
                answer = await https_post(port, "/webhook/pix", {"pix": [item]}, context)
                assert answer.status == 200
            await until(lambda: len(app.attempts) >= 5)
            env_server.kill()  # SIGKILL with every event pending, some attempts in flight
            await until(app.idle)  # requests the dead process had in flight get their 503 first
            app.up = True
            restarted, _ = await asyncio.to_thread(serve, config)
            try:
                await until(lambda: len(set(app.delivered_ids())) == len(sent), timeout=60)
            finally:
                restarted.terminate()
            payloads = {
                json.loads(body)["payload"]["endToEndId"]: json.loads(body)["payload"]
                for _, body in app.received
            }
            assert payloads == {item["endToEndId"]: item for item in sent}  # exactly as stored
            assert len(app.received) == len(sent)  # nothing succeeded before the crash, so no duplicates

    asyncio.run(scenario())
