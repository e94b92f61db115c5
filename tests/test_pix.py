"""``provider = "pix"`` (any PSP delivering per BACEN's API Pix): the pure verifier, then a real mTLS server.

Requests are written as the spec and the PSPs' docs describe them (bacen/pix-api ``openapi.yaml``
callbacks, #241; Inter's bare array; Pagstar's ``{"pix": {...}}``), never built by the verifier.
There is no signature and so no published vector: the client certificate is the proof.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from support import REFUSED, Pki, client_context, https_post, pix

from mtls_receiver.addresses import parse_networks
from mtls_receiver.config import Config, RouteConfig
from mtls_receiver.errors import ConfigError, Refusal
from mtls_receiver.events import ClientIdentity, IncomingRequest, Peer
from mtls_receiver.lifecycle import Receiver
from mtls_receiver.providers import efi, provider
from mtls_receiver.providers import pix as pix_provider

ROUTE = RouteConfig(
    path="/bank", listener="main", provider="pix", mode="mtls", options=pix_provider.PixOptions()
)
MINE = "pix@example.com.br"
KEYED = RouteConfig(
    path="/bank",
    listener="main",
    provider="pix",
    mode="mtls",
    options=pix_provider.PixOptions(pix_keys=(MINE,)),
)
PSP = Peer("198.51.100.7", ClientIdentity("CN=webhook.psp.com.br", "CN=psp ca", "ab" * 32))
JSON = {"Content-Type": "application/json"}


def request(path: str, body: object = b"", query: str = "", peer: Peer = PSP) -> IncomingRequest:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return IncomingRequest("POST", path, query, dict(JSON), data, peer)


def refusal(route: RouteConfig, req: IncomingRequest) -> Refusal:
    with pytest.raises(Refusal) as caught:
        pix_provider.verify(route, req)
    return caught.value


# --- pure verification -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/bank/pix", ""),  # the spec: webhookUrl + "/pix"
        ("/bank//pix", ""),  # registered with a trailing slash
        ("/bank", "ignorar=/pix"),  # registered as P?ignorar=
        ("/bank", "token=abc/pix"),  # #241: "/pix" goes at the very end of the URL string, query included
    ],
)
def test_suffix_wherever_it_lands_is_a_pix(path: str, query: str) -> None:
    verdict = pix_provider.verify(ROUTE, request(path, {"pix": [pix("E1")]}, query))
    assert verdict.kind == "pix" and [e.dedup_key for e in verdict.events] == ["E1"]


@pytest.mark.parametrize(
    "body",
    [
        {"pix": [pix("E1")]},  # the spec
        [pix("E1")],  # Banco Inter: a bare array at the root
        {"pix": pix("E1")},  # Pagstar: one object
    ],
    ids=["spec-list", "inter-array", "pagstar-object"],
)
def test_every_body_shape_gives_the_same_event(body: object) -> None:
    (event,) = pix_provider.verify(ROUTE, request("/bank/pix", body)).events
    assert (event.kind, event.dedup_key, event.order_key, event.payload) == ("pix", "E1", "E1", pix("E1"))


def test_batches_and_refunds_dedup_like_efi() -> None:
    refund = {"id": "D1", "rtrId": "D" * 32, "valor": "1.00", "status": "DEVOLVIDO"}
    body = {"pix": [pix("E1"), pix("E2", devolucoes=[refund])]}
    assert [e.dedup_key for e in pix_provider.verify(ROUTE, request("/bank/pix", body)).events] == [
        "E1",
        "E2|D1:DEVOLVIDO",
    ]


@pytest.mark.parametrize(
    "body", [b"", b"not json", b'{"evento": "teste_webhook"}', b"{}", b"[]", b'{"pix": []}', b'{"pix": "x"}']
)
def test_base_path_without_a_pix_is_the_registration_test(body: bytes) -> None:
    verdict = pix_provider.verify(ROUTE, request("/bank", body))
    assert verdict.kind == "test" and verdict.events == () and verdict.body == b"200"


@pytest.mark.parametrize("body", [{"pix": [pix("E5")]}, [pix("E5")]])
def test_a_pix_on_the_base_path_is_stored_not_taken_for_a_test(body: object) -> None:
    """A PSP that does not append /pix (bacen/pix-api#241 debated it) must not lose notifications."""
    assert [e.dedup_key for e in pix_provider.verify(ROUTE, request("/bank", body)).events] == ["E5"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{", "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),  # nested too deep to parse: 400, not 500
        (b'"text"', "JSON object"),
        ({"pix": []}, "non-empty 'pix' list"),
        ([], "non-empty 'pix' list"),
        ({"pix": "E1"}, "non-empty 'pix' list"),
        ({"pix": [pix("E1"), 3]}, "pix[1] must be an object"),
        ({"pix": {"valor": "1.00"}}, "pix[0].endToEndId"),
        ([pix("E1", valor="1,00")], "pix[0].valor"),
        ({"pix": [pix("E1", horario=None)]}, "pix[0].horario"),
        ({"pix": [pix("E1", devolucoes=[{"id": "D1"}])]}, "devolucoes[0]"),
    ],
)
def test_malformed_pix_is_400_with_reason(body: object, reason: str) -> None:
    refused = refusal(ROUTE, request("/bank/pix", body))
    assert refused.status == 400 and reason in refused.reason


@pytest.mark.parametrize("horario", ["2020-12-21T13:40:34", "2020-12-21", "21/12/2020 13:40:34"])
def test_a_horario_in_another_format_is_stored_not_refused(horario: str) -> None:
    """docs/senders/pix.md: horario's format is not checked, a bank's variant is stored (only a
    missing, empty or non-string horario is a 400)."""
    verdict = pix_provider.verify(ROUTE, request("/bank/pix", {"pix": [pix("EH1", horario=horario)]}))
    assert [e.payload["horario"] for e in verdict.events] == [horario]
    for bad in ("", 123):
        refused = refusal(ROUTE, request("/bank/pix", {"pix": [pix("EH1", horario=bad)]}))
        assert refused.status == 400 and "pix[0].horario" in refused.reason


@pytest.mark.parametrize("path", ["/bank/rec", "/bank/cobr", "/bank/pixx", "/bank/pix/more", "/bankpix"])
def test_other_suffixes_are_404(path: str) -> None:
    refused = refusal(ROUTE, request(path, {"pix": [pix("E1")]}))
    assert refused.status == 404


def test_pix_keys_refuse_foreign_keys_and_items_without_one() -> None:
    assert pix_provider.verify(KEYED, request("/bank/pix", [pix("E1", chave=MINE)])).events
    foreign = refusal(KEYED, request("/bank/pix", {"pix": [pix("E1", chave=MINE), pix("E2", chave="x\ny")]}))
    assert foreign.status == 403 and "'x\\ny'" in foreign.reason and MINE not in foreign.reason
    assert refusal(KEYED, request("/bank/pix", {"pix": pix("E3")})).status == 403


def test_certificate_address_and_method() -> None:
    assert (
        "certificate" in refusal(ROUTE, request("/bank/pix", [pix("E1")], peer=Peer("198.51.100.7"))).reason
    )
    fenced = RouteConfig(
        path="/bank",
        listener="main",
        provider="pix",
        mode="mtls",
        allow_ips=parse_networks(["203.0.113.0/24"]),
        options=pix_provider.PixOptions(),
    )
    assert refusal(fenced, request("/bank/pix", [pix("E1")])).status == 403
    wrong = IncomingRequest("PUT", "/bank/pix", "", {}, b"", PSP)
    assert refusal(ROUTE, wrong).status == 405


def test_registered_with_the_receivers_names() -> None:
    registered = provider("pix")
    assert registered.modes == ("mtls",) and registered.verify is pix_provider.verify
    assert registered.verified_by(ROUTE, PSP.identity) == "mtls-client-certificate"


def test_sample_is_a_pix_to_the_suffix_with_a_certificate() -> None:
    sample = pix_provider.sample(KEYED, None, 1_800_000_000.0)
    assert sample.path == "/pix" and sample.client_certificate
    (item,) = json.loads(sample.body)["pix"]
    assert item["chave"] == MINE and item["horario"].startswith("2027-01-15T08:00:00")
    test = pix_provider.sample(KEYED, "test", 1_800_000_000.0)
    assert (test.path, test.body, test.client_certificate) == ("", b"", True)
    with pytest.raises(ValueError, match="'pix'"):
        pix_provider.sample(KEYED, "rec", 1_800_000_000.0)


# --- config --------------------------------------------------------------------------------------


def test_config_errors_name_the_key(write_config: Callable[..., Config]) -> None:
    route = '[[routes]]\npath = "/bank"\nprovider = "pix"\n'
    with pytest.raises(ConfigError) as on_none:
        write_config(routes=route, client_certs="none")
    assert on_none.value.key == "routes[0].mode" and "client_certs = 'none'" in on_none.value.problem
    with pytest.raises(ConfigError) as efi_key:
        write_config(routes=route + 'hmac_secrets = [{ env = "X" }]\n')
    assert efi_key.value.key == "routes[0].hmac_secrets"
    with pytest.raises(ConfigError) as skip:
        write_config(routes=route + 'mode = "skip-mtls"\n')
    assert skip.value.key == "routes[0].mode"
    with pytest.raises(ConfigError) as keys:
        write_config(routes=route + "pix_keys = [1]\n")
    assert keys.value.key == "routes[0].pix_keys"


def test_check_config_warns_without_pix_keys(write_config: Callable[..., Config]) -> None:
    open_route = write_config(routes='[[routes]]\npath = "/bank"\nprovider = "pix"\n').routes[0]
    assert any("#239" in warning for warning in open_route.options.warnings())
    keyed = write_config(routes=f'[[routes]]\npath = "/bank"\nprovider = "pix"\npix_keys = ["{MINE}"]\n')
    assert keyed.routes[0].options.warnings() == () and MINE in keyed.routes[0].options.describe()


# --- through a real mTLS server -------------------------------------------------------------------

ROUTES = (
    '[[routes]]\npath = "/bank"\nprovider = "pix"\n'
    f'[[routes]]\npath = "/keyed"\nprovider = "pix"\npix_keys = ["{MINE}"]\n'
)


@pytest.fixture
async def bank(
    write_config: Callable[..., Config], start_receiver: Callable[[Config], Awaitable[Receiver]]
) -> Receiver:
    return await start_receiver(write_config(routes=ROUTES, client_certs="optional"))


async def post(
    receiver: Receiver, pki: Pki, path: str, body: object, cert: Path | None = None
) -> tuple[int, bytes]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    answer = await https_post(receiver.port(), path, data, client_context(pki, cert))
    return answer.status, answer.body


async def test_every_shape_and_suffix_is_stored_once(bank: Receiver, pki: Pki) -> None:
    sent = [
        ("/bank/pix", {"pix": [pix("E10")]}),
        ("/bank?ignorar=/pix", [pix("E11")]),  # Inter's array, registered with ?ignorar=
        ("/bank/pix", {"pix": pix("E12")}),  # Pagstar's object
        ("/bank/pix", {"pix": [pix("E10")]}),  # the PSP retries: a duplicate
        ("/bank/pix", [pix("E10"), pix("E11")]),  # ... batched with another one it already sent
        ("/bank", b""),  # the registration test
    ]
    for path, body in sent:
        assert await post(bank, pki, path, body, pki.client) == (200, b"200")
    events = await bank.store.list_events()
    assert sorted(e.dedup_key for e in events) == ["E10", "E11", "E12"]
    assert {(e.provider, e.kind, e.verified_by) for e in events} == {
        ("pix", "pix", "mtls-client-certificate")
    }
    assert all(e.client is not None and "efi-like client" in e.client.subject for e in events)


async def test_refusals_are_4xx_one_line_and_audited(bank: Receiver, pki: Pki) -> None:
    assert (await post(bank, pki, "/bank/pix", [pix("E20")]))[0] == 403  # no certificate
    status, reason = await post(bank, pki, "/bank/pix", {"pix": [pix("E21", valor="1")]}, pki.client)
    assert status == 400 and b"pix[0].valor" in reason and reason.count(b"\n") == 1
    status, reason = await post(bank, pki, "/keyed/pix", {"pix": [pix("E22", chave="intruder")]}, pki.client)
    assert status == 403 and b"'intruder'" in reason
    assert await bank.store.list_events() == []
    audit = list(reversed(await bank.store.list_audit()))  # newest first: oldest first
    assert [row.status for row in audit] == [403, 400, 403] and audit[0].client is None
    assert "certificate" in audit[0].reason and "intruder" in audit[2].reason


async def test_required_listener_refuses_a_missing_certificate_in_the_handshake(
    write_config: Callable[..., Config], start_receiver: Callable[[Config], Awaitable[Receiver]], pki: Pki
) -> None:
    receiver = await start_receiver(write_config(routes=ROUTES))
    with pytest.raises(REFUSED):
        await post(receiver, pki, "/bank/pix", [pix("E30")])
    with pytest.raises(REFUSED):
        await post(receiver, pki, "/bank/pix", [pix("E30")], pki.foreign_client)
    assert await post(receiver, pki, "/bank/pix", [pix("E30")], pki.client) == (200, b"200")


async def test_the_sample_as_sent_is_accepted(bank: Receiver, pki: Pki) -> None:
    """What send-test would send: the route's path + the sample's, with the client certificate."""
    route = next(r for r in bank.config.routes if r.path == "/keyed")
    sample = pix_provider.sample(route, None, 1_800_000_000.0)
    answer = await https_post(
        bank.port(),
        route.path + sample.path,
        sample.body,
        client_context(pki, pki.client),
        headers=dict(sample.headers),
    )
    assert answer.status == 200
    (event,) = await bank.store.list_events()
    assert event.payload["chave"] == MINE and "PROBE" in event.dedup_key


# --- the efi preset's sample (send-test) ---------------------------------------------------------

EFI_SECRET = "s3cr3t-abcdefghij-KLMNOP"


def efi_route(mode: str, pix_keys: tuple[str, ...] = (), hmac_secrets: tuple[str, ...] = ()) -> RouteConfig:
    options = efi.EfiOptions(pix_keys=pix_keys, hmac_secrets=hmac_secrets)
    return RouteConfig(path="/webhook", listener="main", provider="efi", mode=mode, options=options)


def test_efi_sample_mtls_is_a_pix_with_a_certificate() -> None:
    sample = efi.sample(efi_route("mtls", pix_keys=(MINE,)), None, 1_800_000_000.0)
    assert (sample.path, sample.client_certificate) == ("/pix", True)
    assert json.loads(sample.body)["pix"][0]["chave"] == MINE
    assert provider("efi").sample is efi.sample


def test_efi_sample_skip_mtls_is_the_registered_url_without_a_certificate() -> None:
    """Efí appends /pix to the registered ``?hmac=S&ignorar=`` string (the PROVIDERS.md example)."""
    route = efi_route("skip-mtls", hmac_secrets=(EFI_SECRET, "old-secret-0123456789"))
    sample = efi.sample(route, None, 1_800_000_000.0)
    assert (sample.path, sample.client_certificate) == (f"?hmac={EFI_SECRET}&ignorar=/pix", False)
    test = efi.sample(route, "test", 1_800_000_000.0)
    assert (test.path, test.body) == (f"?hmac={EFI_SECRET}&ignorar=", b"")
    with_secret = efi.sample(efi_route("mtls", hmac_secrets=(EFI_SECRET,)), None, 1_800_000_000.0)
    assert (with_secret.path, with_secret.client_certificate) == (f"?hmac={EFI_SECRET}&ignorar=/pix", True)


async def test_efi_skip_mtls_sample_as_sent_is_accepted(
    write_config: Callable[..., Config],
    start_receiver: Callable[[Config], Awaitable[Receiver]],
    pki: Pki,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("T_EFI_HMAC", EFI_SECRET)
    routes = (
        '[[routes]]\npath = "/webhook"\nprovider = "efi"\nmode = "skip-mtls"\n'
        'allow_ips = ["127.0.0.1/32"]\nhmac_secrets = [{ env = "T_EFI_HMAC" }]\n'
    )
    receiver = await start_receiver(write_config(routes=routes, client_certs="optional"))
    route = receiver.config.routes[0]
    for event in ("test", "pix"):
        sample = efi.sample(route, event, 1_800_000_000.0)
        context = client_context(pki, pki.client if sample.client_certificate else None)
        target = route.path + sample.path
        answer = await https_post(receiver.port(), target, sample.body, context, headers=dict(sample.headers))
        assert answer.status == 200
    (stored,) = await receiver.store.list_events()
    assert stored.verified_by == "ip-allowlist+url-hmac" and stored.client is None
