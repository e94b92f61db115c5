"""``send-test``: every sender has a sample, and the command sends it to a real receiver as a user runs it.

The samples' signatures are checked against the providers' documented algorithms (written out here,
not the verifiers' helpers), then by the verifier itself; the command runs as a subprocess against a
real ``serve`` over TLS on loopback.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from support import Serve, ServerProcess, run_cli

from mtls_receiver.config import ListenerConfig, RouteConfig
from mtls_receiver.events import IncomingRequest, Peer
from mtls_receiver.providers import PROVIDER_NAMES, infi, pomelo, provider
from mtls_receiver.providers.base import SampleRequest
from mtls_receiver.sendtest import default_url, describe_request, resolve_target

INFI_SECRET = "infi-send-test-secret"
POMELO_KEY, POMELO_SECRET = "pk-send-test", base64.b64encode(b"pomelo-send-test-secret-bytes").decode()
NOW = 1_796_000_000.0


# --- every sender has one ---------------------------------------------------------------------------


def test_every_registered_provider_has_a_sample() -> None:
    missing = [name for name in PROVIDER_NAMES if provider(name).sample is None]
    assert not missing, f"providers without a send-test sample: {', '.join(missing)}"


# --- the samples, checked against the documented algorithms ------------------------------------------

INFI_ROUTE = RouteConfig(
    path="/webhooks/infi",
    listener="signed",
    provider="infi",
    mode="hmac",
    options=infi.InfiOptions(secrets=(INFI_SECRET, "an-older-secret")),
)


def _request(route: RouteConfig, path: str, headers: dict[str, str], body: bytes) -> IncomingRequest:
    return IncomingRequest(
        "POST", route.path + path, "", dict(headers), body, Peer("127.0.0.1"), now=NOW, raw_target=route.path
    )


@pytest.mark.parametrize("event", [None, "transfer.failed"])
def test_infi_sample_is_signed_as_infi_documents(event: str | None) -> None:
    made = infi.sample(INFI_ROUTE, event, NOW)
    headers = dict(made.headers)
    timestamp = headers["X-Infi-Timestamp"]
    assert timestamp == str(int(NOW)) and made.path == "" and not made.client_certificate
    expected = hmac.new(
        INFI_SECRET.encode(), f"{timestamp}.".encode() + made.body, hashlib.sha256
    ).hexdigest()
    assert headers["X-Infi-Signature"] == f"sha256={expected}"
    document = json.loads(made.body)
    assert document["event"] == headers["X-Infi-Event"] == (event or "transaction.paid")
    assert document["status"] == (event or "transaction.paid").split(".")[1]
    assert document["eventId"] == headers["X-Infi-Event-Id"]
    assert re.fullmatch(r"E00000000\d{12}SENDTEST\w{3}", document["endToEndId"])

    verdict = infi.verify(INFI_ROUTE, _request(INFI_ROUTE, made.path, headers, made.body))
    assert [e.dedup_key for e in verdict.events] == [f"event:{document['eventId']}"]


def _pomelo_route(mode: str) -> RouteConfig:
    return RouteConfig(
        path=f"/pomelo/{mode}",
        listener="signed",
        provider="pomelo",
        mode=mode,
        options=pomelo.PomeloOptions(api_keys=((POMELO_KEY, POMELO_SECRET), ("pk-old", POMELO_SECRET))),
    )


@pytest.mark.parametrize(("mode", "event"), [("notifications", None), ("authorizations", "WITHDRAWAL")])
def test_pomelo_sample_is_signed_as_pomelo_documents(mode: str, event: str | None) -> None:
    route = _pomelo_route(mode)
    made = pomelo.sample(route, event, NOW)
    headers = {name.lower(): value for name, value in made.headers.items()}
    assert headers["x-api-key"] == POMELO_KEY and headers["x-endpoint"] == route.path
    message = headers["x-timestamp"].encode() + route.path.encode() + made.body
    digest = hmac.new(base64.b64decode(POMELO_SECRET), message, hashlib.sha256).digest()
    assert headers["x-signature"] == "hmac-sha256 " + base64.b64encode(digest).decode()
    assert headers["x-idempotency-key"]

    verdict = pomelo.verify(route, _request(route, made.path, dict(made.headers), made.body))
    document = json.loads(made.body)
    if mode == "notifications":
        assert verdict.kind == document["event_type"] == "card.shipped"
    else:
        assert verdict.kind == "authorization" and verdict.relay is not None
        assert document["transaction"]["type"] == "WITHDRAWAL"


def test_default_url_is_the_listener_address_with_wildcards_as_loopback(tmp_path: Path) -> None:
    def listener(host: str) -> ListenerConfig:
        return ListenerConfig(name="x", host=host, port=8443, cert=tmp_path / "c", key=tmp_path / "k")

    assert default_url(INFI_ROUTE, listener("0.0.0.0")) == "https://127.0.0.1:8443/webhooks/infi"
    assert default_url(INFI_ROUTE, listener("::")) == "https://[::1]:8443/webhooks/infi"
    assert default_url(INFI_ROUTE, listener("hooks.example.com.br")) == (
        "https://hooks.example.com.br:8443/webhooks/infi"
    )


def test_what_is_printed_holds_no_secret_and_no_whole_signature(tmp_path: Path) -> None:
    """A secret in the URL (Efí skip-mTLS's ``?hmac=``) or a header, a token header, a long signature."""
    signature = "sha256=" + "ab" * 32
    made = SampleRequest(
        path=f"/pix?hmac={INFI_SECRET}&signature={signature}&a=1",
        headers={"X-Echo": f"x{INFI_SECRET}x", "Authorization": "Bearer tok-123456", "X-Sig": signature},
        body=b"{}",
    )
    listener = ListenerConfig(name="x", host="0.0.0.0", port=8443, cert=tmp_path / "c", key=tmp_path / "k")
    target = resolve_target(INFI_ROUTE, listener, made, None, None, None, None)
    shown = describe_request(INFI_ROUTE, made, target)
    assert INFI_SECRET not in shown and "tok-123456" not in shown and signature not in shown
    assert "> POST https://127.0.0.1:8443/webhooks/infi/pix?hmac=…&signature=sha256=a…&a=1" in shown
    assert (
        "> Authorization: Bearer …" in shown and "> X-Sig: sha256=ababababababa…" in shown
    )  # its first 20 characters


# --- dev signing keys --------------------------------------------------------------------------------


def test_dev_certs_writes_local_signing_keys(tmp_path: Path) -> None:
    made = run_cli("dev-certs", str(tmp_path / "dev"), "--port", "0")
    assert made.returncode == 0, made.stderr
    keys = {
        "dev-signing-ecdsa-secp256k1.pem": ec.EllipticCurvePrivateKey,
        "dev-signing-rsa.pem": rsa.RSAPrivateKey,
        "dev-signing-ed25519.pem": ed25519.Ed25519PrivateKey,
    }
    for name, kind in keys.items():
        path = tmp_path / "dev" / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
        pem = path.read_bytes()
        assert pem.startswith(b"-----BEGIN PRIVATE KEY-----"), name  # PKCS#8, unencrypted
        key = serialization.load_pem_private_key(pem, password=None)
        assert isinstance(key, kind), name
        if isinstance(key, ec.EllipticCurvePrivateKey):
            assert isinstance(key.curve, ec.SECP256K1)
        if isinstance(key, rsa.RSAPrivateKey):
            assert key.key_size == 2048
        assert name in (tmp_path / "dev" / "config.toml").read_text(encoding="utf-8")
    assert 'dev_signing_key = "dev-signing-' in (tmp_path / "dev" / "config.toml").read_text(encoding="utf-8")


def test_serve_dev_adds_signing_keys_to_an_older_state_directory(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert run_cli("dev-certs", str(state), "--port", "0").returncode == 0
    rsa_key = state / "dev-signing-rsa.pem"
    kept = (state / "dev-signing-ed25519.pem").read_bytes()
    rsa_key.unlink()  # as a directory made before the keys existed
    server = ServerProcess("serve", "--dev", "--state-dir", str(state), "--port", "0")
    try:
        server.start()
        assert stat.S_IMODE(rsa_key.stat().st_mode) == 0o600
        assert (state / "dev-signing-ed25519.pem").read_bytes() == kept  # an existing key is kept
    finally:
        server.kill()


# --- the command against a real receiver -------------------------------------------------------------

SIGNED_CONFIG = """\
[[listeners]]
name = "signed"
address = "127.0.0.1:0"
cert = "server.pem"
key = "server.key"
client_certs = "none"

[[routes]]
path = "/webhooks/infi"
provider = "infi"
secrets = [{{ file = "{infi_secret}" }}]

[[routes]]
path = "/pomelo/notifications"
provider = "pomelo"
allow_ips = ["127.0.0.0/8"]
api_keys = [{{ key = "pk-send-test", secret = {{ file = "pomelo-secret" }} }}]

[store]
path = "inbox.db"

[admin]
address = "127.0.0.1:0"
"""


@pytest.fixture
def signed(tmp_path: Path, serve: Serve) -> tuple[Path, int]:
    """A dev-certs directory with a listener for signed senders (its config ``signed.toml``), served."""
    config = _signed_directory(tmp_path)
    _, port = serve(config)
    return config, port


def _signed_directory(tmp_path: Path) -> Path:
    directory = tmp_path / "dev"
    assert run_cli("dev-certs", str(directory), "--port", "0").returncode == 0
    (directory / "infi-secret").write_text(INFI_SECRET, encoding="utf-8")
    (directory / "pomelo-secret").write_text(POMELO_SECRET, encoding="utf-8")
    config = directory / "signed.toml"
    config.write_text(SIGNED_CONFIG.format(infi_secret="infi-secret"), encoding="utf-8")
    return config


def _stored(config: Path) -> list[dict[str, object]]:
    listed = run_cli("events", "list", "--config", str(config), "--json")
    return [json.loads(line) for line in listed.stdout.splitlines()]


def test_send_test_infi_is_accepted_and_stored(signed: tuple[Path, int]) -> None:
    config, port = signed
    sent = run_cli(
        "send-test",
        "/webhooks/infi",
        "--config",
        str(config),
        "--url",
        f"https://127.0.0.1:{port}/webhooks/infi",
    )
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert f"> POST https://127.0.0.1:{port}/webhooks/infi" in sent.stdout
    assert "< 200 OK" in sent.stdout
    signature = re.search(r"> X-Infi-Signature: (\S+)", sent.stdout)
    assert signature and signature.group(1).endswith("…") and len(signature.group(1)) < 30  # never all of it
    assert INFI_SECRET not in sent.stdout + sent.stderr
    (event,) = _stored(config)
    assert event["provider"] == "infi" and event["kind"] == "transaction.paid"


def test_send_test_pomelo_by_index_with_an_event_type(signed: tuple[Path, int]) -> None:
    config, port = signed
    url = f"https://127.0.0.1:{port}/pomelo/notifications"
    sent = run_cli("send-test", "1", "--config", str(config), "--url", url, "--event", "card.activated")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert "< 200 OK" in sent.stdout and POMELO_SECRET not in sent.stdout
    (event,) = _stored(config)
    assert event["provider"] == "pomelo" and event["kind"] == "card.activated"


def test_a_wrong_secret_is_refused_and_exits_1(signed: tuple[Path, int]) -> None:
    config, port = signed
    (config.parent / "wrong-secret").write_text("not-the-infi-secret", encoding="utf-8")
    wrong = config.parent / "wrong.toml"
    wrong.write_text(SIGNED_CONFIG.format(infi_secret="wrong-secret"), encoding="utf-8")
    sent = run_cli(
        "send-test",
        "/webhooks/infi",
        "--config",
        str(wrong),
        "--url",
        f"https://127.0.0.1:{port}/webhooks/infi",
    )
    assert sent.returncode == 1, sent.stdout + sent.stderr
    assert "< 401 " in sent.stdout and "X-Infi-Signature does not match" in sent.stdout
    assert _stored(config) == []


def _one_line_error(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    assert result.returncode == code, result.stdout + result.stderr
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr


def test_mistakes_are_one_line(signed: tuple[Path, int]) -> None:
    config, port = signed
    url = f"https://127.0.0.1:{port}/webhooks/infi"
    _one_line_error(run_cli("send-test", "/nope", "--config", str(config)), 2, "no route with path '/nope'")
    _one_line_error(run_cli("send-test", "7", "--config", str(config)), 2, "no route [7]")
    _one_line_error(run_cli("send-test", "0", "--config", str(config)), 2, "port 0", "--url")
    _one_line_error(run_cli("send-test", "0", "--config", str(config), "--url", "http://x/"), 2, "bad URL")
    bad_event = run_cli("send-test", "0", "--config", str(config), "--url", url, "--event", "a\nb")
    _one_line_error(bad_event, 2, "--event")
    _one_line_error(
        run_cli(
            "send-test",
            "0",
            "--config",
            str(config),
            "--url",
            url,
            "--ca",
            str(config.parent / "client-ca.pem"),
        ),
        1,
        "not trusted",
    )
    missing = run_cli(
        "send-test", "0", "--config", str(config), "--url", url, "--cert", str(config.parent / "none")
    )
    _one_line_error(missing, 2, "cannot load the client certificate")


def test_a_listener_that_requires_a_client_certificate(tmp_path: Path, serve: Serve) -> None:
    """Without one the TLS alert is said plainly; with ``--cert`` the signed sample goes through."""
    config = _signed_directory(tmp_path)
    text = config.read_text(encoding="utf-8")
    mtls = 'client_certs = "required"\nclient_ca = "client-ca.pem"'
    config.write_text(text.replace('client_certs = "none"', mtls), encoding="utf-8")
    _, port = serve(config)
    url = f"https://127.0.0.1:{port}/webhooks/infi"
    refused = run_cli("send-test", "/webhooks/infi", "--config", str(config), "--url", url)
    _one_line_error(refused, 1, "TLS with", "client certificate")
    cert = str(config.parent / "client.pem")
    sent = run_cli("send-test", "/webhooks/infi", "--config", str(config), "--url", url, "--cert", cert)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert f"client certificate {cert}" in sent.stdout and "< 200 OK" in sent.stdout


def test_receiver_not_running_is_one_line(tmp_path: Path) -> None:
    config = _signed_directory(tmp_path)
    sent = run_cli("send-test", "/webhooks/infi", "--config", str(config), "--url", "https://127.0.0.1:1/x")
    _one_line_error(sent, 1, "connection refused")


def test_send_test_to_the_dev_efi_route_with_the_dev_client_certificate(tmp_path: Path, serve: Serve) -> None:
    if provider("efi").sample is None:
        pytest.skip("efi has no sample yet (another branch adds it); test_every_... names it")
    directory = tmp_path / "dev"
    assert run_cli("dev-certs", str(directory), "--port", "0").returncode == 0
    _, port = serve(directory / "config.toml")
    sent = run_cli(
        "send-test",
        "/webhook",
        "--config",
        str(directory / "config.toml"),
        "--url",
        f"https://localhost:{port}/webhook",
    )
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert "< 200 OK" in sent.stdout and "client certificate" in sent.stdout
    (event,) = _stored(directory / "config.toml")
    assert event["provider"] == "efi" and "efi-like dev client" in str(event["client_subject"])
