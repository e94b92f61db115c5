"""Looking at the inbox from the command line: the audit (list, summary, filters), times that mean
what they say, inspection without secrets, and queuing events stored before forwarding existed."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import pytest
from support import Pki, config_text, run_cli
from test_docs import TOML_BLOCKS, _as_config, _with_local_files

from mtls_receiver.config import load_config
from mtls_receiver.events import AuditRecord, NewEvent
from mtls_receiver.store import AuditCount, AuditQuery, AuditRepeats, Store, open_store
from mtls_receiver.times import parse_time, store_time

BEFORE, AT = "2026-11-30T10:57:59.999+00:00", "2026-11-30T10:58:00.000+00:00"
SAO_PAULO = "2026-11-30T07:58:00-03:00"  # = AT


def row(
    at: str = AT,
    route: str = "/webhook",
    status: int = 401,
    reason: str = "signature: bad",
    peer: str = "192.0.2.1",
) -> AuditRecord:
    return AuditRecord(at, "main", route, "POST", route, peer, status, reason)


# --- times --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        (SAO_PAULO, AT),  # the offset is honoured
        ("2026-11-30T10:58:00Z", AT),
        ("2026-11-30T10:58:00", AT),  # no offset: UTC
        ("2026-11-30T10:58", AT),
        ("2026-11-30", "2026-11-30T00:00:00.000+00:00"),
        ("2026-11-30T13:58:00.5+03:00", "2026-11-30T10:58:00.500+00:00"),
    ],
)
def test_times_are_read_as_written_and_kept_as_the_store_writes_them(typed: str, stored: str) -> None:
    assert store_time(parse_time(typed)) == stored


@pytest.mark.parametrize("typed", ["yesterday", "", "30/11/2026", "2026-13-01", "now"])
def test_what_is_not_a_time_is_an_error(typed: str) -> None:
    with pytest.raises(ValueError, match="not an ISO 8601 time"):
        parse_time(typed)


# --- the store's audit queries and stored-event replay, on both backends --------------------------


async def _audit_rows(store: Store) -> None:
    for audit in (
        row(BEFORE),
        row(AT, status=403, reason="allowlist: 198.51.100.7 not allowed", peer="198.51.100.7"),
        row(AT, route="-", status=404, reason="not found"),
        row(AT, reason="100%_literal"),
    ):
        await store.record("efi", audit.route, (), audit)
    # a coalesced row: first at BEFORE, repeated until after AT -> counted 5 times, seen after AT
    repeats = dataclasses.replace(row(BEFORE, status=401, reason="signature: bad"), count=5, last_at=AT)
    await store.record_repeats([AuditRepeats(repeats)])


async def test_audit_filters(store: Store) -> None:
    await _audit_rows(store)

    async def reasons(**query: object) -> list[str]:
        return [audit.reason for audit in await store.list_audit(50, AuditQuery(**query))]  # type: ignore[arg-type]

    assert len(await store.list_audit(50, AuditQuery())) == 5
    assert await reasons(route="-") == ["not found"]
    assert await reasons(status=403) == ["allowlist: 198.51.100.7 not allowed"]
    assert await reasons(peer="198.51.100.7") == ["allowlist: 198.51.100.7 not allowed"]
    assert await reasons(reason="ALLOWLIST") == ["allowlist: 198.51.100.7 not allowed"]  # any case
    assert await reasons(reason="0%_l") == ["100%_literal"]  # % and _ are the text, not wildcards
    assert await reasons(reason="0%x") == []
    since = await reasons(since=AT)  # the coalesced row's last repeat is at AT: it counts
    assert sorted(since) == sorted(
        ["signature: bad", "100%_literal", "not found", "allowlist: 198.51.100.7 not allowed"]
    )
    assert await reasons(since="2026-11-30T10:58:00.001+00:00") == []
    assert await reasons(route="/webhook", status=401, since=AT) == ["signature: bad", "100%_literal"]


async def test_audit_summary_counts_repeats(store: Store) -> None:
    await _audit_rows(store)
    counts = await store.audit_summary(AuditQuery())
    assert counts[0] == AuditCount("/webhook", 401, "signature: bad", 6)  # 1 row + 5 repeats
    assert sum(count.requests for count in counts) == 9
    assert await store.audit_summary(AuditQuery(status=404)) == [AuditCount("-", 404, "not found", 1)]


async def test_replay_stored_queues_events_never_queued(store: Store) -> None:
    ids = {}
    for dedup, route, at, queue in (
        ("old", "/a", BEFORE, False),
        ("new", "/a", AT, False),
        ("other-route", "/b", AT, False),
        ("queued", "/a", AT, True),
    ):
        receipt = await store.record("efi", route, [NewEvent("pix", dedup, {})], row(at, route), queue=queue)
        ids[dedup] = receipt.stored[0]
    assert await store.replay(stored_on=["/a"], dead_since=AT) == 1
    statuses = {event.dedup_key: event.status for event in await store.list_events()}
    assert statuses == {"old": "stored", "new": "pending", "other-route": "stored", "queued": "pending"}
    assert await store.replay(stored_on=["/a", "/b"]) == 2  # "new" is queued now: not again
    assert {event.status for event in await store.list_events()} == {"pending"}


# --- the commands, as a user runs them ------------------------------------------------------------

SKIP_MTLS = (
    '[[routes]]\npath = "/webhook"\nprovider = "efi"\nmode = "skip-mtls"\n'
    'hmac_secrets = [{ env = "T_INSPECTION_UNSET_HMAC" }]\nforward_url = "https://app.example/hook"\n'
    '\n[forward]\nsecrets = [{ file = "/nonexistent/forward-secret" }]\n'
)


@pytest.fixture
def inbox(tmp_path: Path, pki: Pki) -> Path:
    """A config whose secrets cannot be read here (they live in the service's environment), and an
    inbox holding events and audit rows around AT."""
    config = tmp_path / "config.toml"
    config.write_text(
        config_text(pki, client_certs="optional", routes=SKIP_MTLS, store=str(tmp_path / "inbox.db"))
    )

    async def fill() -> None:
        store = open_store(load_config(config, read_secrets=False).store)
        await store.open()
        await _audit_rows(store)
        for dedup, at in (("E-before", BEFORE), ("E-at", AT)):
            await store.record(
                "efi", "/webhook", [NewEvent("pix", dedup, {})], row(at, status=200, reason="")
            )
        await store.close()

    asyncio.run(fill())
    return config


@pytest.mark.parametrize(
    ("page", "block"), TOML_BLOCKS, ids=[f"{page}-{i}" for i, (page, _) in enumerate(TOML_BLOCKS)]
)
def test_every_documented_config_loads_without_its_secrets(
    page: str, block: str, pki: Pki, tmp_path: Path
) -> None:
    """No environment variable set, no secret file there: inspection still reads the config."""
    path = tmp_path / "config.toml"
    path.write_text(_with_local_files(_as_config(page, block), pki, tmp_path).replace("efi-hmac", "absent"))
    assert load_config(path, read_secrets=False).routes


def test_inspection_needs_no_secrets(inbox: Path) -> None:
    checked = run_cli("check-config", "--config", str(inbox))  # serving needs them: it says which
    assert checked.returncode == 2 and "T_INSPECTION_UNSET_HMAC is not set" in checked.stderr
    assert "forward-secret" in checked.stderr  # every problem, not just the first
    for command in (
        ("events", "list"),
        ("events", "audit"),
        ("audit", "list"),
        ("audit", "summary"),
        ("db", "migrate"),
    ):
        result = run_cli(*command, "--config", str(inbox))
        assert result.returncode == 0, f"{command}: {result.stderr}"


def test_audit_list_filters_and_since_with_an_offset(inbox: Path) -> None:
    def listed(*filters: str) -> list[dict[str, object]]:
        result = run_cli("audit", "list", "--config", str(inbox), "--json", *filters)
        assert result.returncode == 0, result.stderr
        return [json.loads(line) for line in result.stdout.splitlines()]

    assert {row["at"] for row in listed("--since", SAO_PAULO, "--status", "200")} == {AT}
    assert listed("--since", "2026-11-30T10:58:00", "--status", "200") == listed(
        "--since", SAO_PAULO, "--status", "200"
    )  # no offset: UTC
    assert [row["reason"] for row in listed("--reason", "allowlist", "--peer", "198.51.100.7")] == [
        "allowlist: 198.51.100.7 not allowed"
    ]
    assert [row["status"] for row in listed("--route", "-")] == [404]
    text = run_cli("audit", "list", "--config", str(inbox), "--status", "599")
    assert text.returncode == 0 and "no audit rows" in text.stdout and "matching the filters" in text.stdout


def test_audit_summary(inbox: Path) -> None:
    result = run_cli("audit", "summary", "--config", str(inbox))
    assert result.returncode == 0, result.stderr
    lines = [line.split() for line in result.stdout.splitlines()]
    assert lines[0] == ["11", "request(s)"]
    sections = result.stdout.split("\nby ")
    assert [section.split(":")[0] for section in sections[1:]] == ["route", "status", "reason"]
    assert "        7  401" in sections[2] and "        6  signature: bad" in sections[3]
    as_json = run_cli("audit", "summary", "--config", str(inbox), "--json", "--status", "404")
    assert [json.loads(line) for line in as_json.stdout.splitlines()] == [
        {"route": "-", "status": 404, "reason": "not found", "requests": 1}
    ]


def test_since_that_is_not_a_time_is_an_error(inbox: Path) -> None:
    for command in (("audit", "list"), ("events", "replay", "--stored")):
        result = run_cli(*command, "--since", "yesterday", "--config", str(inbox))
        assert result.returncode == 2 and "queued" not in result.stdout
        assert (
            result.stderr.count("\n") == 1 and "--since: not an ISO 8601 time: 'yesterday'" in result.stderr
        )


def test_replay_stored_since_an_offset_time(inbox: Path) -> None:
    queued = run_cli("events", "replay", "--stored", "--since", SAO_PAULO, "--config", str(inbox))
    assert (queued.returncode, queued.stdout) == (0, "queued 1 event(s) for delivery\n"), queued.stderr
    listed = run_cli("events", "list", "--config", str(inbox), "--json")
    statuses = {event["dedup_key"]: event["status"] for event in map(json.loads, listed.stdout.splitlines())}
    assert statuses == {"E-before": "stored", "E-at": "pending"}


def test_replay_stored_without_forwarding_is_refused(tmp_path: Path, pki: Pki) -> None:
    config = tmp_path / "config.toml"
    config.write_text(config_text(pki))
    result = run_cli("events", "replay", "--stored", "--config", str(config))
    assert result.returncode == 2 and "no route forwards anywhere" in result.stderr


def test_events_list_has_a_header_and_says_when_empty(inbox: Path, tmp_path: Path, pki: Pki) -> None:
    listed = run_cli("events", "list", "--config", str(inbox))
    header, *rows = listed.stdout.splitlines()
    assert header.split()[:4] == ["RECEIVED", "(UTC)", "ID", "STATUS"] and len(rows) == 2
    empty = run_cli("events", "list", "--config", str(inbox), "--status", "dead")
    assert (
        empty.returncode == 0
        and "no events in SQLite" in empty.stdout
        and "matching the filters" in empty.stdout
    )


def test_events_list_escapes_what_a_sender_wrote(tmp_path: Path, pki: Pki) -> None:
    """A kind taken from the payload (a route's ``event = "/type"``) cannot set the terminal's title
    or colours: it is escaped as the dedup key and subject are."""
    config = tmp_path / "config.toml"
    config.write_text(config_text(pki, store=str(tmp_path / "inbox.db")))
    hostile = "\x1b]0;owned\x07\x1b[2Jkind"

    async def fill() -> None:
        store = open_store(load_config(config, read_secrets=False).store)
        await store.open()
        await store.record("token", "/webhook", [NewEvent(hostile, hostile, {})], row(status=200, reason=""))
        await store.close()

    asyncio.run(fill())
    listed = run_cli("events", "list", "--config", str(config))
    assert listed.returncode == 0 and "\x1b" not in listed.stdout and "\x07" not in listed.stdout
    assert "token/\\x1b]0;owned\\x07\\x1b[2Jkind" in listed.stdout
