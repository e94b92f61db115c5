"""Efí routes: the pure verifier first, then the same cases through a real mTLS server."""

from __future__ import annotations

import json

import pytest
from support import Pki, client_context, https_post, pix

from mtls_receiver.config import RouteConfig
from mtls_receiver.errors import Refusal
from mtls_receiver.events import ClientIdentity, IncomingRequest, Peer
from mtls_receiver.lifecycle import Receiver
from mtls_receiver.providers import efi, verifier_for

ROUTE = RouteConfig(path="/webhook", listener="main", provider="efi", mode="mtls", options=efi.EfiOptions())
EFI = Peer("198.51.100.7", ClientIdentity("CN=efi", "CN=efi ca", "ab" * 32))


def request(
    path: str, body: object = b"", query: str = "", method: str = "POST", peer: Peer = EFI
) -> IncomingRequest:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return IncomingRequest(method, path, query, {}, data, peer)


def refusal(route: RouteConfig, req: IncomingRequest) -> Refusal:
    with pytest.raises(Refusal) as caught:
        efi.verify(route, req)
    return caught.value


# --- pure verification -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "query", "kind"),
    [
        ("/webhook", "", "test"),
        ("/webhook/", "", "test"),
        ("/webhook", "ignorar=", "test"),
        ("/webhook/pix", "", "pix"),
        ("/webhook//pix", "", "pix"),  # registered with a trailing slash
        ("/webhook", "ignorar=/pix", "pix"),
        ("/webhook/", "ignorar=/pix", "pix"),
        ("/webhook/rec", "", "rec"),
        ("/webhook", "ignorar=/rec", "rec"),
        ("/webhook/cobr", "", "cobr"),
        ("/webhook", "ignorar=/cobr", "cobr"),
        ("/webhook", "other=/pix", "test"),  # only ignorar carries the suffix
    ],
)
def test_target_kind(path: str, query: str, kind: str) -> None:
    assert efi.target("/webhook", path, query).kind == kind


@pytest.mark.parametrize("path", ["/webhook/pixx", "/webhook/pix/extra", "/webhookpix", "/other"])
def test_unknown_target_is_404(path: str) -> None:
    with pytest.raises(Refusal) as caught:
        efi.target("/webhook", path, "")
    assert caught.value.status == 404


def test_root_route() -> None:
    assert efi.target("/", "/pix", "").kind == "pix"
    assert efi.target("/", "/", "").kind == "test"


@pytest.mark.parametrize("body", [b"", b"not json", b'{"evento": "teste_webhook"}', b"[]"])
def test_test_notification_accepts_any_body(body: bytes) -> None:
    verdict = efi.verify(ROUTE, request("/webhook", body))
    assert verdict.kind == "test" and verdict.events == () and verdict.body == b"200"


def test_pix_items_become_events_with_dedup_keys() -> None:
    refund = {"id": "D1", "rtrId": "D" * 32, "valor": "1.00", "status": "EM_PROCESSAMENTO"}
    verdict = efi.verify(ROUTE, request("/webhook/pix", {"pix": [pix("E1"), pix("E2", devolucoes=[refund])]}))
    assert [e.dedup_key for e in verdict.events] == ["E1", "E2|D1:EM_PROCESSAMENTO"]
    assert verdict.events[1].payload["devolucoes"][0]["rtrId"] == "D" * 32


def test_bare_array_is_a_pix_list() -> None:
    assert [e.dedup_key for e in efi.verify(ROUTE, request("/webhook/pix", [pix("E9")])).events] == ["E9"]


def test_sent_pix_not_realised_may_have_null_horario() -> None:
    item = pix("E3", tipo="SOLICITACAO", status="NAO_REALIZADO", horario=None)
    assert efi.verify(ROUTE, request("/webhook/pix", {"pix": [item]})).events[0].dedup_key == "E3"


def test_rec_and_cobr_dedup_by_content() -> None:
    body = {"recs": [{"idRec": "R1", "status": "APROVADA"}, {"idRec": "R1", "status": "CANCELADA"}]}
    keys = [e.dedup_key for e in efi.verify(ROUTE, request("/webhook/rec", body)).events]
    assert len(set(keys)) == 2 and all(k.startswith("rec:") for k in keys)
    again = [e.dedup_key for e in efi.verify(ROUTE, request("/webhook", body, "ignorar=/rec")).events]
    assert again == keys
    assert efi.verify(ROUTE, request("/webhook/cobr", {"cobsr": [{"txid": "T"}]})).kind == "cobr"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{", "not valid JSON"),
        (b'"text"', "JSON object"),
        ({"pix": []}, "non-empty 'pix' list"),
        ({"recs": []}, "non-empty 'pix' list"),
        ({"pix": ["x"]}, "pix[0] must be an object"),
        ({"pix": [{"valor": "1.00", "horario": "x"}]}, "pix[0].endToEndId"),
        ({"pix": [pix("E1", valor="10")]}, "pix[0].valor"),
        ({"pix": [pix("E1", valor="1.5")]}, "pix[0].valor"),
        ({"pix": [pix("E1", valor=10.0)]}, "pix[0].valor"),
        ({"pix": [pix("E1", valor="12345678901.00")]}, "pix[0].valor"),
        ({"pix": [pix("E1"), pix("E2", horario=None)]}, "pix[1].horario"),
        ({"pix": [pix("E1", devolucoes=[{"id": "D1"}])]}, "devolucoes[0]"),
        ({"pix": [pix("E1", devolucoes="D1")]}, "devolucoes must be a list"),
    ],
)
def test_malformed_pix_is_400_with_reason(body: object, reason: str) -> None:
    refused = refusal(ROUTE, request("/webhook/pix", body))
    assert refused.status == 400 and reason in refused.reason


def test_rec_needs_recs_list() -> None:
    refused = refusal(ROUTE, request("/webhook/rec", {"pix": [pix("E1")]}))
    assert refused.status == 400 and "'recs'" in refused.reason


def test_pix_keys_refuse_foreign_keys() -> None:
    route = RouteConfig(
        path="/webhook",
        listener="main",
        provider="efi",
        mode="mtls",
        options=efi.EfiOptions(pix_keys=("mine",)),
    )
    assert efi.verify(route, request("/webhook/pix", {"pix": [pix("E1", chave="mine")]})).events
    refused = refusal(
        route, request("/webhook/pix", {"pix": [pix("E1", chave="mine"), pix("E2", chave="theirs")]})
    )
    assert refused.status == 403 and "theirs" in refused.reason and "mine" not in refused.reason
    assert (
        refusal(route, request("/webhook/pix", {"pix": [pix("E3")]})).status == 403
    )  # no chave: fail closed


def test_methods_and_missing_certificate() -> None:
    assert refusal(ROUTE, request("/webhook/pix", method="GET")).status == 405
    assert refusal(ROUTE, request("/nope", method="GET")).status == 404
    assert refusal(ROUTE, request("/webhook", peer=Peer("198.51.100.7"))).status == 403


def test_unknown_provider_refuses_everything() -> None:
    route = RouteConfig(path="/webhook", listener="main", provider="nobody", mode="x")
    with pytest.raises(Refusal) as caught:
        verifier_for("nobody")(route, request("/webhook"))
    assert caught.value.status == 403


# --- through the server ------------------------------------------------------------------------


async def post(
    receiver: Receiver, pki: Pki, path: str, body: object = b"", method: str = "POST"
) -> tuple[int, bytes]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    answer = await https_post(receiver.port(), path, data, client_context(pki, pki.client), method)
    return answer.status, answer.body


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/webhook", b""),
        ("/webhook", b"anything at all"),
        ("/webhook", {"evento": "teste"}),
        ("/webhook/pix", {"pix": [pix("E100")]}),
        ("/webhook?ignorar=/pix", {"pix": [pix("E101")]}),
        ("/webhook?ignorar=", b""),
        ("/webhook/rec", {"recs": [{"idRec": "RR1"}]}),
        ("/webhook/cobr", {"cobsr": [{"txid": "T1"}]}),
    ],
)
async def test_routes_answer_200(receiver: Receiver, pki: Pki, path: str, body: object) -> None:
    assert await post(receiver, pki, path, body) == (200, b"200")


async def test_kinds_are_stored(receiver: Receiver, pki: Pki) -> None:
    await post(receiver, pki, "/webhook?ignorar=/pix", {"pix": [pix("E200")]})
    await post(receiver, pki, "/webhook?ignorar=/rec", {"recs": [{"idRec": "R"}]})
    await post(receiver, pki, "/webhook/cobr", {"cobsr": [{"txid": "T"}]})
    assert sorted(e.kind for e in await receiver.store.list_events()) == ["cobr", "pix", "rec"]


@pytest.mark.parametrize(
    ("path", "method", "status"),
    [
        ("/webhook/unknown", "POST", 404),
        ("/elsewhere", "POST", 404),
        ("/webhook/pix", "GET", 405),
        ("/webhook", "PUT", 405),
    ],
)
async def test_404_and_405_are_audited(
    receiver: Receiver, pki: Pki, path: str, method: str, status: int
) -> None:
    assert (await post(receiver, pki, path, b"", method))[0] == status
    (audit,) = await receiver.store.list_audit()
    assert (audit.status, audit.method, audit.path) == (status, method, path.split("?")[0])
    assert audit.client is not None


async def test_malformed_pix_is_400_and_audited(receiver: Receiver, pki: Pki) -> None:
    status, body = await post(receiver, pki, "/webhook/pix", {"pix": [pix("E1", valor="1,00")]})
    assert status == 400 and b"pix[0].valor" in body and body.count(b"\n") == 1
    (audit,) = await receiver.store.list_audit()
    assert audit.status == 400 and "valor" in audit.reason
    assert await receiver.store.list_events() == []


async def test_pix_keys_403_is_recorded(write_config, start_receiver, pki: Pki) -> None:  # type: ignore[no-untyped-def]
    routes = '[[routes]]\npath = "/webhook"\nprovider = "efi"\npix_keys = ["mine@example.com"]\n'
    receiver = await start_receiver(write_config(routes=routes))
    assert (await post(receiver, pki, "/webhook/pix", {"pix": [pix("E1", chave="mine@example.com")]}))[
        0
    ] == 200
    status, body = await post(receiver, pki, "/webhook/pix", {"pix": [pix("E2", chave="intruder")]})
    assert status == 403 and b"intruder" in body
    assert [e.dedup_key for e in await receiver.store.list_events()] == ["E1"]
    refused = (await receiver.store.list_audit())[0]
    assert refused.status == 403 and "intruder" in refused.reason


async def test_body_over_limit_is_413(receiver: Receiver, pki: Pki) -> None:
    status, _ = await post(receiver, pki, "/webhook/pix", b"x" * (1024 * 1024 + 1))
    assert status == 413
    assert (await receiver.store.list_audit())[0].status == 413
