"""Client-certificate pinning, for every route whatever its provider: the pure check, the config keys,
check-config, then certificates from the same CA through a real mTLS server."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from support import Pki, client_context, https_post, pix, run_cli

from mtls_receiver.config import ClientPin, Config
from mtls_receiver.errors import ConfigError, Refusal
from mtls_receiver.events import ClientIdentity
from mtls_receiver.lifecycle import Receiver
from mtls_receiver.pinning import check_client_pin

PSP = ClientIdentity("CN=webhook.psp.com.br,O=PSP S.A.,C=BR", "CN=PSP CA", "ab" * 32)


def identity(subject: str, fingerprint: str = "cd" * 32) -> ClientIdentity:
    return ClientIdentity(subject, "CN=PSP CA", fingerprint)


def refused(pin: ClientPin, who: ClientIdentity | None) -> Refusal:
    with pytest.raises(Refusal) as caught:
        check_client_pin(pin, who)
    assert caught.value.status == 403 and "\n" not in caught.value.reason
    return caught.value


# --- the pure check ------------------------------------------------------------------------------


def test_exact_subject() -> None:
    pin = ClientPin(subjects=("CN=webhook.psp.com.br,O=PSP S.A.,C=BR",))
    check_client_pin(pin, PSP)
    other = refused(pin, identity("CN=webhook.psp.com.br,O=Other Ltda,C=BR"))
    assert "subject 'CN=webhook.psp.com.br,O=Other Ltda,C=BR' is not pinned" in other.reason
    assert "none was presented" in refused(pin, None).reason


@pytest.mark.parametrize(
    ("pattern", "cn", "accepted"),
    [
        ("*.psp.com.br", "webhook.psp.com.br", True),
        ("*.psp.com.br", "WEBHOOK.PSP.COM.BR", True),  # names are compared case-insensitively
        ("*.bank.com.br", "webhook.ban\u212a.com.br", False),  # ... but a Kelvin sign is not a k
        ("*.psp.com.br", "webhook.p\u017fp.com.br", False),  # nor a long s an s
        ("*.psp.com.br", "a.b.psp.com.br", False),  # * is one label
        ("*.psp.com.br", "psp.com.br", False),  # ... and not an empty one
        ("*.psp.com.br", "webhook.psp.com.br.evil.example", False),  # the whole CN must match
        ("webhook-*.psp.com.br", "webhook-02.psp.com.br", True),
        ("webhook-*.psp.com.br", "other.psp.com.br", False),
        ("webhook.psp.com.br", "webhookxpsp.com.br", False),  # a dot is a dot
        ("BANCO PSP S.A.:60746948000112", "BANCO PSP S.A.:60746948000112", True),  # razão social:CNPJ
    ],
)
def test_cn_patterns(pattern: str, cn: str, accepted: bool) -> None:
    pin = ClientPin(cn_patterns=(pattern,))
    who = identity(f"CN={cn},O=PSP S.A.")
    if accepted:
        check_client_pin(pin, who)
    else:
        assert cn in refused(pin, who).reason


def test_cn_pattern_needs_exactly_one_cn() -> None:
    pin = ClientPin(cn_patterns=("*.psp.com.br",))
    refused(pin, identity("O=PSP S.A.,C=BR"))
    refused(pin, identity("CN=webhook.psp.com.br+CN=evil.example,O=PSP S.A."))


def test_subjects_and_patterns_are_one_kind_fingerprints_another() -> None:
    """Any subject or CN pattern may match; with fingerprints given too, one of them must match as well."""
    names = ClientPin(subjects=("CN=x",), cn_patterns=("*.psp.com.br",))
    check_client_pin(names, PSP)
    both = ClientPin(cn_patterns=("*.psp.com.br",), fingerprints=("ab" * 32,))
    check_client_pin(both, PSP)
    renewed = refused(both, identity(PSP.subject, "ef" * 32))
    assert "not a pinned fingerprint" in renewed.reason and "sha256 efefefefefefefef..." in renewed.reason
    check_client_pin(ClientPin(fingerprints=("cd" * 32, "ab" * 32)), PSP)


def test_presented_subject_is_escaped_and_truncated() -> None:
    hostile = "CN=x\r\nX-Injected: 1," + "O=" + "A" * 500
    reason = refused(ClientPin(subjects=("CN=x",)), identity(hostile)).reason
    assert (
        "\\r\\n" in reason
        and "\r" not in reason
        and len(reason) < 250
        and reason.endswith("not pinned on this route")
    )


# --- config -------------------------------------------------------------------------------------

PIX_ROUTE = '[[routes]]\npath = "/bank"\nprovider = "pix"\n'


def test_pins_are_read_and_normalised(write_config: Callable[..., Config]) -> None:
    colons = ":".join(f"{byte:02X}" for byte in bytes.fromhex("ab" * 32))
    config = write_config(
        routes=PIX_ROUTE
        + 'client_subjects = ["CN=webhook.psp.com.br,O=PSP S.A.\\\\, filial,C=BR"]\n'
        + 'client_cn = ["*.psp.com.br"]\n'
        + f'client_fingerprints = ["{colons}", "{"CD" * 32}"]\n'
    )
    assert config.routes[0].client_pin == ClientPin(
        subjects=("CN=webhook.psp.com.br,O=PSP S.A.\\, filial,C=BR",),
        cn_patterns=("*.psp.com.br",),
        fingerprints=("ab" * 32, "cd" * 32),
    )
    assert write_config(routes=PIX_ROUTE).routes[0].client_pin is None


@pytest.mark.parametrize(
    ("lines", "key", "problem"),
    [
        ('client_subjects = ["CN=a, O=b"]', "routes[0].client_subjects[0]", "not an RFC 4514 subject"),
        ('client_subjects = ["CN=ok", "cn=a"]', "routes[0].client_subjects[1]", "not an RFC 4514 subject"),
        ('client_subjects = ["CN=a", "2.5.4.3=b"]', "routes[0].client_subjects[1]", "'CN=b'"),
        ("client_subjects = []", "routes[0].client_subjects", "pins nothing"),
        ('client_subjects = "CN=a"', "routes[0].client_subjects", "list of strings"),
        ('client_cn = ["*"]', "routes[0].client_cn[0]", "pins nothing"),
        ('client_cn = ["*.*"]', "routes[0].client_cn[0]", "pins nothing"),
        ('client_cn = [" a.b"]', "routes[0].client_cn[0]", "CN pattern"),
        ('client_fingerprints = ["abc"]', "routes[0].client_fingerprints[0]", "64 hex digits"),
        (f'client_fingerprints = ["{"g" * 64}"]', "routes[0].client_fingerprints[0]", "not a SHA-256"),
    ],
)
def test_config_errors_name_the_key(
    write_config: Callable[..., Config], lines: str, key: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        write_config(routes=PIX_ROUTE + lines + "\n")
    assert caught.value.key == key and problem in caught.value.problem


def test_pins_need_a_listener_that_asks_for_certificates(write_config: Callable[..., Config]) -> None:
    route = '[[routes]]\npath = "/hook"\nprovider = "hmac"\nsecrets = [{ env = "T_PIN_SECRET" }]\n'
    route += 'client_cn = ["*.psp.com.br"]\n[routes.signature]\nheader = "X-Sig"\n'
    with pytest.MonkeyPatch.context() as env:
        env.setenv("T_PIN_SECRET", "a-secret-of-some-length")
        with pytest.raises(ConfigError) as caught:
            write_config(routes=route, client_certs="none")
        assert caught.value.key == "routes[0].client_cn" and "client_certs = 'none'" in caught.value.problem
        optional = write_config(routes=route, client_certs="optional")
    assert optional.routes[0].client_pin == ClientPin(cn_patterns=("*.psp.com.br",))


def test_check_config_prints_each_routes_pins(tmp_path: Path, write_config: Callable[..., Config]) -> None:
    config = write_config(
        routes=PIX_ROUTE + f'client_cn = ["*.psp.com.br"]\nclient_fingerprints = ["{"ab" * 32}"]\n'
    )
    result = run_cli("check-config", "--config", str(config.source))
    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("route /bank")]
    assert line.endswith(f"client pin: CN *.psp.com.br; sha256 {'ab' * 32}")


# --- through a real server: certificates from the same CA ------------------------------------------


def subject_of(cert: Path) -> str:
    return x509.load_pem_x509_certificates(cert.read_bytes())[0].subject.rfc4514_string()


def fingerprint_of(cert: Path) -> str:
    """As ``openssl x509 -noout -fingerprint -sha256`` prints it: upper case, colons."""
    digest = hashlib.sha256(
        x509.load_pem_x509_certificates(cert.read_bytes())[0].public_bytes(Encoding.DER)
    ).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, 64, 2)).upper()


@pytest.fixture
async def pinned(
    write_config: Callable[..., Config], start_receiver: Callable[[Config], Awaitable[Receiver]], pki: Pki
) -> Receiver:
    routes = (
        f'[[routes]]\npath = "/subject"\nprovider = "pix"\nclient_subjects = ["{subject_of(pki.client)}"]\n'
        f'[[routes]]\npath = "/fingerprint"\nprovider = "pix"\n'
        f'client_fingerprints = ["{fingerprint_of(pki.client)}"]\n'
        '[[routes]]\npath = "/cn"\nprovider = "pix"\nclient_cn = ["*.other-like.com.br"]\n'
        '[[routes]]\npath = "/efi"\nprovider = "efi"\nclient_cn = ["efi-like client"]\n'  # not only pix
    )
    return await start_receiver(write_config(routes=routes, client_certs="optional"))


async def post(receiver: Receiver, pki: Pki, path: str, cert: Path | None, e2e: str) -> tuple[int, str]:
    body = json.dumps({"pix": [pix(e2e)]}).encode()
    answer = await https_post(receiver.port(), path, body, client_context(pki, cert))
    return answer.status, answer.body.decode()


@pytest.mark.parametrize(
    ("path", "right", "wrong"),
    [
        ("/subject", "client", "other_client"),
        ("/fingerprint", "client", "other_client"),
        ("/cn", "other_client", "client"),
        ("/efi", "client", "other_client"),
    ],
)
async def test_only_the_pinned_certificate_is_accepted(
    pinned: Receiver, pki: Pki, path: str, right: str, wrong: str
) -> None:
    assert await post(pinned, pki, f"{path}/pix", getattr(pki, right), "E1") == (200, "200")
    status, reason = await post(pinned, pki, f"{path}/pix", getattr(pki, wrong), "E2")
    wrong_subject = subject_of(getattr(pki, wrong))
    assert status == 403 and reason.startswith("certificate: subject ") and repr(wrong_subject) in reason
    status, reason = await post(pinned, pki, f"{path}/pix", None, "E3")
    assert status == 403 and "none was presented" in reason
    assert [e.dedup_key for e in await pinned.store.list_events()] == ["E1"]
    newest_first = await pinned.store.list_audit()
    assert [row.status for row in newest_first] == [403, 403, 200]
    assert newest_first[1].client is not None and newest_first[1].client.subject == wrong_subject
    assert wrong_subject in newest_first[1].reason and newest_first[0].client is None
