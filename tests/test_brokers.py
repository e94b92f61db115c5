"""Forwarding into the merchant's message broker: RabbitMQ, NATS JetStream, Redis Streams, for real.

Each test publishes to names of its own (see ``support.brokers``) on the machine's brokers and
removes them; "the broker goes away" is a TCP proxy the test closes (the brokers themselves are
shared and never stopped). A test skips only when its broker is not reachable, saying so.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from standardwebhooks.webhooks import Webhook
from support import (
    OLD_SECRET,
    PYTHON,
    SECRET,
    Pki,
    Serve,
    client_context,
    config_text,
    https_post,
    pix,
    run_cli,
    until,
)
from support.brokers import BrokerKit, Received, reachable
from support.tcp_proxy import TcpProxy

from mtls_receiver.config import Config, load_config
from mtls_receiver.lifecycle import Receiver

pytestmark = pytest.mark.usefixtures("forward_secrets")

KINDS = ["rabbitmq", "nats", "redis"]


@pytest.fixture(params=KINDS)
async def kit(request: pytest.FixtureRequest) -> AsyncIterator[BrokerKit]:
    if not reachable(request.param):
        pytest.skip(f"no {request.param} server on 127.0.0.1 (CI starts one: .ci/run)")
    broker = BrokerKit(request.param)
    yield broker
    await broker.cleanup()


@pytest.fixture
async def proxy(kit: BrokerKit) -> AsyncIterator[TcpProxy]:
    from support.brokers import PORTS

    forwarding = await TcpProxy(PORTS[kit.kind]).open()
    yield forwarding
    await forwarding.close()


def forward_to(destination: str = "bus", **policy: object) -> str:
    settings = {"max_attempts": 200, "backoff_base": 0.05, "backoff_max": 0.2, "timeout": 2, **policy}
    lines = "".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items())
    secrets = '[{ env = "T_FORWARD_SECRET" }, { env = "T_FORWARD_OLD" }]'
    return f'\n[forward]\ndestination = "{destination}"\nsecrets = {secrets}\n{lines}'


async def start_with(write_config: Callable[..., Config], start_receiver, extra: str) -> Receiver:  # type: ignore[no-untyped-def]
    config = write_config()
    config.source.write_text(config.source.read_text() + extra, encoding="utf-8")
    return await start_receiver(load_config(config.source))  # type: ignore[no-any-return]


async def send(port: int, pki: Pki, *items: dict[str, object]) -> None:
    answer = await https_post(port, "/webhook/pix", {"pix": list(items)}, client_context(pki, pki.client))
    assert answer.status == 200


async def failed_attempts(receiver: Receiver, dedup_key: str, at_least: int) -> bool:
    """The event ``dedup_key`` has at least that many attempts recorded (failed: it is not delivered)."""
    events = [e for e in await receiver.store.list_events() if e.dedup_key == dedup_key]
    found = await receiver.store.get_event(events[0].id) if events else None
    return found is not None and len(found[1]) >= at_least and found[0].status != "delivered"


def envelopes(received: list[Received]) -> list[dict[str, object]]:
    return [json.loads(message.body) for message in received]


async def test_event_reaches_the_broker_signed_and_read_by_a_consumer(
    kit: BrokerKit, write_config, start_receiver, pki: Pki
) -> None:  # type: ignore[no-untyped-def]
    receiver = await start_with(write_config, start_receiver, kit.table() + forward_to())
    await send(receiver.port(), pki, pix("E1", chave="k1"))
    await until(kit.read)
    (message,) = kit.received
    (event,) = await receiver.store.list_events()
    for secret in (SECRET, OLD_SECRET):  # both rotation secrets sign, as over HTTP
        assert Webhook(secret).verify(message.body, message.headers)["payload"] == pix("E1", chave="k1")
    envelope = json.loads(message.body)
    assert message.headers["webhook-id"] == envelope["id"] == event.id
    assert (envelope["type"], envelope["dedup_key"], envelope["route"]) == ("efi.pix", "E1", "/webhook")

    async def delivered() -> bool:
        return len(await receiver.store.list_events(status="delivered")) == 1

    await until(delivered)
    async with aiohttp.ClientSession() as session:  # the console names where events go
        async with session.get(f"http://127.0.0.1:{receiver.admin_port}/config") as answer:
            assert answer.status == 200 and f"{kit.kind} &#39;bus&#39;" in await answer.text()
    assert (
        receiver.metrics.registry.get_sample_value(
            "mtls_receiver_destination_deliveries_total", {"destination": "bus", "outcome": "delivered"}
        )
        == 1
    )


async def test_broker_unreachable_then_back_delivers_without_a_restart(
    kit: BrokerKit, proxy: TcpProxy, write_config, start_receiver, pki: Pki
) -> None:  # type: ignore[no-untyped-def]
    """A connection that worked, then broke (the proxy cuts it), is opened again by itself."""
    receiver = await start_with(write_config, start_receiver, kit.table(proxy.port) + forward_to())
    await send(receiver.port(), pki, pix("E1"))
    await until(kit.read)
    await proxy.close()
    await send(receiver.port(), pki, pix("E2"))
    await until(lambda: failed_attempts(receiver, "E2", 2), timeout=30)
    assert [e["dedup_key"] for e in envelopes(await kit.read())] == ["E1"]
    await proxy.open()
    await until(lambda: _count(kit, 2), timeout=30)
    assert [e["dedup_key"] for e in envelopes(kit.received)] == ["E1", "E2"]
    (second,) = [e for e in await receiver.store.list_events() if e.dedup_key == "E2"]
    found = await receiver.store.get_event(second.id)
    assert found is not None and found[1][0].error and found[1][0].status_code is None


async def _count(kit: BrokerKit, expected: int) -> bool:
    return len(await kit.read()) >= expected


async def test_order_per_key_with_several_events_per_key(
    kit: BrokerKit, proxy: TcpProxy, write_config, start_receiver, pki: Pki
) -> None:  # type: ignore[no-untyped-def]
    """Everything queues while the broker is away; four deliveries at a time then, never out of
    order within a key (one Pix and its refunds share the endToEndId)."""
    await proxy.close()
    receiver = await start_with(
        write_config, start_receiver, kit.table(proxy.port) + forward_to(concurrency=4)
    )
    sent: dict[str, list[str]] = {}
    for refund in range(4):
        for key in ("E-A", "E-B", "E-C"):
            item = pix(
                key,
                devolucoes=[{"id": f"D{refund}", "rtrId": "D" * 32, "valor": "1.00", "status": "DEVOLVIDO"}],
            )
            await send(receiver.port(), pki, item)
            sent.setdefault(key, []).append(f"{key}|D{refund}:DEVOLVIDO")
    await proxy.open()
    await until(lambda: _count(kit, 12), timeout=60)
    seen: dict[str, list[str]] = {}
    for envelope in envelopes(kit.received):
        key = str(envelope["dedup_key"])
        if key not in seen.get(key.split("|")[0], []):  # at least once: a repeat is not a reorder
            seen.setdefault(key.split("|")[0], []).append(key)
    assert seen == sent


def test_kill_9_with_deliveries_pending_every_event_reaches_the_broker(
    tmp_path: Path, pki: Pki, serve: Serve
) -> None:
    for kind in KINDS:
        if not reachable(kind):
            continue  # reported by the other tests' skips
        asyncio.run(_kill_9_scenario(BrokerKit(kind), tmp_path / kind, pki, serve))


async def _kill_9_scenario(kit: BrokerKit, directory: Path, pki: Pki, serve: Serve) -> None:
    """A slow link to the broker (each chunk held 100 ms each way, two publishes at a time: 30 events
    take 3 s at the very least) keeps publishes unconfirmed for a while: the kill lands with some
    published but not confirmed, and most not yet tried."""
    from support.brokers import PORTS

    directory.mkdir()
    proxy = await TcpProxy(PORTS[kit.kind], delay=0.1).open()
    config = directory / "config.toml"
    config.write_text(config_text(pki) + kit.table(proxy.port) + forward_to(concurrency=2), encoding="utf-8")
    try:
        server, port = await asyncio.to_thread(serve, config)
        sent = [f"E{n:03d}" for n in range(30)]
        await asyncio.gather(*(send(port, pki, pix(e2e)) for e2e in sent))
        await until(lambda: _count(kit, 3), timeout=30)
        server.kill()  # SIGKILL with deliveries in flight and most still pending
        assert len(await kit.read()) < len(sent)
        proxy.delay = 0  # the restarted receiver need not crawl
        restarted, _ = await asyncio.to_thread(serve, config)
        try:

            async def all_there() -> bool:
                return {e["dedup_key"] for e in envelopes(await kit.read())} == set(sent)

            await until(all_there, timeout=60)
        finally:
            restarted.terminate()
    finally:
        await proxy.close()
        await kit.cleanup()


def test_config_naming_a_broker_whose_extra_is_missing_fails_check_config(tmp_path: Path, pki: Pki) -> None:
    config = tmp_path / "config.toml"
    for kind, module in (("rabbitmq", "aio_pika"), ("nats", "nats"), ("redis", "redis")):
        config.write_text(config_text(pki) + BrokerKit(kind).table() + forward_to(), encoding="utf-8")
        hidden = f"import sys; sys.modules[{module!r}] = None"  # as if the extra were not installed
        code = f"{hidden}; from mtls_receiver.cli import main; sys.exit(main())"
        result = subprocess.run(
            [PYTHON, "-c", code, "check-config", "--config", str(config)], capture_output=True, text=True
        )
        assert result.returncode == 2, result.stderr
        assert (
            f"destinations[0].type: {kind} needs its client library: pip install 'mtls-receiver[{kind}]'"
            in result.stderr
        )
        assert run_cli("check-config", "--config", str(config)).returncode == 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('destination = "nope"', "forward.destination: no [[destinations]] entry named 'nope'"),
        ('url = "amqp://127.0.0.1/"', "forward.url: must be an http:// or https:// URL"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, pki: Pki, extra: str, message: str) -> None:
    config = tmp_path / "config.toml"
    text = config_text(pki) + BrokerKit("redis").table() + forward_to().replace('destination = "bus"', extra)
    config.write_text(text, encoding="utf-8")
    result = run_cli("check-config", "--config", str(config))
    assert result.returncode == 2 and message in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("kind", "plain", "with_credentials"),
    [
        ("rabbitmq", "amqp://127.0.0.1", "amqp://guest:s3cret@127.0.0.1"),
        ("redis", "redis://127.0.0.1", "redis://:s3cret@127.0.0.1"),
        ("nats", "nats://127.0.0.1", "nats://s3cret@127.0.0.1"),  # a token
    ],
)
def test_a_broker_url_with_credentials_must_come_from_the_environment(
    tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch, kind: str, plain: str, with_credentials: str
) -> None:
    config = tmp_path / "config.toml"
    table = BrokerKit(kind).table()
    url = re.search(r'url = "([^"]+)"', table)
    assert url is not None
    inline = table.replace(plain, with_credentials)
    config.write_text(config_text(pki) + inline + forward_to(), encoding="utf-8")
    result = run_cli("check-config", "--config", str(config))
    assert result.returncode == 2 and "destinations[0].url: holds credentials" in result.stderr
    assert "s3cret" not in result.stderr
    monkeypatch.setenv("T_BROKER_URL", url.group(1).replace(plain, with_credentials))
    from_env = table.replace(f'"{url.group(1)}"', '{ env = "T_BROKER_URL" }')
    config.write_text(config_text(pki) + from_env + forward_to(), encoding="utf-8")
    checked = run_cli("check-config", "--config", str(config))
    assert checked.returncode == 0, checked.stderr
    assert "***@127.0.0.1" in checked.stdout and "s3cret" not in checked.stdout


@pytest.mark.parametrize("kind", ["rabbitmq", "nats"])
async def test_a_message_the_broker_cannot_keep_is_a_failed_attempt_not_a_drop(
    kind: str, write_config, start_receiver, pki: Pki
) -> None:  # type: ignore[no-untyped-def]
    """RabbitMQ: no queue bound (mandatory publishing gets it back); NATS: no stream for the subject."""
    if not reachable(kind):
        pytest.skip(f"no {kind} server on 127.0.0.1 (CI starts one: .ci/run)")
    kit = BrokerKit(kind)
    try:
        table = kit.table()
        table = table.replace(f'queue = "{kit.name}"\n', "").replace("declare = true\n", "declare = false\n")
        if kind == "rabbitmq":  # the exchange exists, nothing is bound to it
            table = table.replace("declare = false\n", "declare = true\n")
        receiver = await start_with(write_config, start_receiver, table + forward_to())
        await send(receiver.port(), pki, pix("E1"))
        await until(lambda: failed_attempts(receiver, "E1", 2), timeout=30)
        (event,) = await receiver.store.list_events()
        found = await receiver.store.get_event(event.id)
        assert found is not None and found[0].status == "pending"
        assert ("PublishError" if kind == "rabbitmq" else "NoStreamResponseError") in found[1][0].error
        await _make_room(kit)
        await until(kit.read, timeout=30)
        assert [e["dedup_key"] for e in envelopes(kit.received)] == ["E1"]
    finally:
        await kit.cleanup()


async def _make_room(kit: BrokerKit) -> None:
    """What the operator does: bind a queue (RabbitMQ) or create the stream (NATS)."""
    if kit.kind == "rabbitmq":
        import aio_pika

        connection = await aio_pika.connect("amqp://127.0.0.1:5672/")
        channel = await connection.channel()
        queue = await channel.declare_queue(kit.name, durable=True)
        await queue.bind(kit.name, f"{kit.name}.#")
        await connection.close()
    else:
        import nats

        client = await nats.connect("nats://127.0.0.1:4222")
        await client.jetstream().add_stream(name=kit.name, subjects=[f"{kit.name}.>"])
        await client.close()


def test_a_route_may_forward_to_another_destination(tmp_path: Path, pki: Pki) -> None:
    routes = (
        '[[routes]]\npath = "/webhook"\nprovider = "efi"\nmode = "mtls"\nforward_destination = "events"\n'
        '[[routes]]\npath = "/other"\nprovider = "efi"\nmode = "mtls"\n'
    )
    config = tmp_path / "config.toml"
    tables = BrokerKit("redis").table(destination="events") + BrokerKit("nats").table()
    config.write_text(config_text(pki, routes=routes) + tables + forward_to(), encoding="utf-8")
    loaded = load_config(config)
    webhook, other = loaded.destination("/webhook"), loaded.destination("/other")
    assert webhook is not None and webhook.broker is not None and webhook.broker.kind == "redis"
    assert other is not None and other.broker is not None and other.broker.name == "bus"
    assert webhook.broker.target({"type": "efi.pix", "provider": "efi", "kind": "pix"}).startswith("mtlsr-")


async def test_replay_publishes_again_and_jetstream_drops_the_duplicate(
    kit: BrokerKit, write_config, start_receiver, pki: Pki
) -> None:  # type: ignore[no-untyped-def]
    """``events replay`` publishes the event again with the same webhook-id: RabbitMQ and Redis keep
    both copies (consumers deduplicate), JetStream drops the second by its Nats-Msg-Id."""
    receiver = await start_with(write_config, start_receiver, kit.table() + forward_to())
    await send(receiver.port(), pki, pix("E1"))
    await until(kit.read)
    (event,) = await receiver.store.list_events()
    replayed = run_cli("events", "replay", event.id, "--config", str(receiver.config.source))
    assert replayed.returncode == 0, replayed.stderr
    receiver.forwarder.wake()  # type: ignore[union-attr]

    async def delivered_twice() -> bool:
        found = await receiver.store.get_event(event.id)
        return found is not None and found[0].status == "delivered" and len(found[1]) == 2

    await until(delivered_twice)
    copies = 1 if kit.kind == "nats" else 2
    await until(lambda: _count(kit, copies))
    assert [m.headers["webhook-id"] for m in await kit.read()] == [event.id] * copies


async def test_a_reload_that_changes_the_destination_closes_the_old_one(
    write_config, start_receiver, pki: Pki
) -> None:  # type: ignore[no-untyped-def]
    if not reachable("redis"):
        pytest.skip("no redis server on 127.0.0.1 (CI starts one: .ci/run)")
    first, second = BrokerKit("redis"), BrokerKit("redis")
    try:
        receiver = await start_with(write_config, start_receiver, first.table() + forward_to())
        await send(receiver.port(), pki, pix("E1"))
        await until(first.read)
        forwarder = receiver.forwarder
        assert forwarder is not None and len(forwarder._sinks) == 1
        (old_sink,) = forwarder._sinks.values()
        text = receiver.config.source.read_text(encoding="utf-8")
        receiver.config.source.write_text(text.replace(first.name, second.name), encoding="utf-8")
        assert await receiver.reload()
        await send(receiver.port(), pki, pix("E2"))
        await until(second.read)
        assert [e["dedup_key"] for e in envelopes(second.received)] == ["E2"]
        assert [e["dedup_key"] for e in envelopes(await first.read())] == ["E1"]
        assert old_sink not in forwarder._sinks.values() and old_sink._client is None  # type: ignore[attr-defined]
    finally:
        await first.cleanup()
        await second.cleanup()


def test_commands_that_only_read_the_store_need_neither_the_broker_url_nor_its_client(
    tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("T_BROKER_URL", raising=False)
    config = tmp_path / "config.toml"
    table = BrokerKit("rabbitmq").table().replace('"amqp://127.0.0.1:5672/"', '{ env = "T_BROKER_URL" }')
    config.write_text(config_text(pki) + table + forward_to(), encoding="utf-8")
    listed = run_cli("events", "list", "--config", str(config))  # the config loads; no inbox yet
    assert "destinations" not in listed.stderr and "no inbox there" in listed.stderr, listed.stderr
    checked = run_cli("check-config", "--config", str(config))
    assert (
        checked.returncode == 2
        and "destinations[0].url.env: environment variable T_BROKER_URL" in checked.stderr
    )
