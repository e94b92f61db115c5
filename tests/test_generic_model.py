"""The symmetric verification model (signatures.py) through the generic providers ``hmac``,
``token`` and ``allowlist``, configured as a user writes them. Every signature here is computed
with hmac/hashlib/base64 directly from the scheme's description, never with the code under test."""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path

import pytest
from support import Pki
from support.senders import NOW, PEER, accepted, config_error, flipped, load_routes, refused, request

from mtls_receiver.cli import main
from mtls_receiver.config import RouteConfig
from mtls_receiver.events import Peer
from mtls_receiver.providers import provider, verification_method

SECRET, OLD = "generic-secret-1", "generic-secret-0"
TS = str(int(NOW))
BODY = b'{"id":"evt_1","type":"thing.done","data":{"id":"ABC123"}}'
SECRETS = '[{ file = "secret" }, { file = "old" }]'


def route(tmp_path: Path, pki: Pki, body: str, provider_name: str = "hmac") -> RouteConfig:
    text = f'[[routes]]\npath = "/hooks"\nprovider = "{provider_name}"\n{body}'
    (loaded,) = load_routes(tmp_path, pki, text, secret=SECRET, old=OLD).routes
    return loaded


def mac(algorithm: str, secret: str, message: bytes) -> bytes:
    return hmac.new(secret.encode(), message, algorithm).digest()


# --- hmac: algorithms, encodings, carriers, templates ----------------------------------------------


def test_sha1_hex_with_a_prefix_in_a_header(tmp_path: Path, pki: Pki) -> None:
    hook = route(
        tmp_path,
        pki,
        f'secrets = {SECRETS}\n[routes.signature]\nheader = "X-Hub-Signature"\nprefix = "sha1="\n'
        'algorithm = "sha1"\n',
    )
    good = {"X-Hub-Signature": "sha1=" + mac("sha1", SECRET, BODY).hex()}
    assert accepted(hook, request(good, BODY)).events[0].payload["id"] == "evt_1"
    assert "does not match" in refused(hook, request(good, BODY + b" ")).reason
    bare = {"X-Hub-Signature": mac("sha1", SECRET, BODY).hex()}
    assert "must start with 'sha1='" in refused(hook, request(bare, BODY)).reason
    sha256 = {"X-Hub-Signature": "sha1=" + mac("sha256", SECRET, BODY).hex()}
    assert "not an HMAC-SHA1 digest" in refused(hook, request(sha256, BODY)).reason


def test_sha512_base64_and_the_old_secret_while_rotating(tmp_path: Path, pki: Pki) -> None:
    hook = route(
        tmp_path,
        pki,
        f'secrets = {SECRETS}\n[routes.signature]\nheader = "X-Sig"\n'
        'encoding = "base64"\nalgorithm = "sha512"\n',
    )
    for secret in (SECRET, OLD):
        signed = {"X-Sig": base64.b64encode(mac("sha512", secret, BODY)).decode()}
        accepted(hook, request(signed, BODY))
    wrong = {"X-Sig": base64.b64encode(mac("sha512", "another-secret", BODY)).decode()}
    assert refused(hook, request(wrong, BODY)).status == 401
    assert "X-Sig header missing" in refused(hook, request({}, BODY)).reason


def test_base64url_without_padding(tmp_path: Path, pki: Pki) -> None:
    hook = route(
        tmp_path, pki, f'secrets = {SECRETS}\n[routes.signature]\nheader = "X-Sig"\nencoding = "base64url"\n'
    )
    signed = {"X-Sig": base64.urlsafe_b64encode(mac("sha256", SECRET, BODY)).decode().rstrip("=")}
    accepted(hook, request(signed, BODY))


def test_signature_in_a_query_parameter(tmp_path: Path, pki: Pki) -> None:
    hook = route(
        tmp_path, pki, f'secrets = {SECRETS}\n[routes.signature]\nquery = "signature"\nalgorithm = "sha1"\n'
    )
    digest = mac("sha1", SECRET, BODY).hex()
    accepted(hook, request({}, BODY, path=f"/hooks?signature={digest}"))
    accepted(hook, request({}, BODY, path=f"/hooks?a=1&signature={digest}"))
    for changed in flipped(BODY, step=7):
        assert refused(hook, request({}, changed, path=f"/hooks?signature={digest}")).status == 401
    assert "signature query parameter missing" in refused(hook, request({}, BODY)).reason


MULTI = (
    f'secrets = {SECRETS}\n[routes.signature]\nheader = "X-Signature"\nsignature_field = "v1"\n'
    'timestamp_field = "t"\nsigned = ["timestamp", "literal:.", "body"]\n'
)


def multi_header(ts: str, *secrets: str, body: bytes = BODY) -> dict[str, str]:
    fields = ",".join(f"v1={mac('sha256', s, f'{ts}.'.encode() + body).hex()}" for s in secrets)
    return {"X-Signature": f"t={ts},{fields}"}


def test_multi_field_header_any_v1_matches(tmp_path: Path, pki: Pki) -> None:
    hook = route(tmp_path, pki, MULTI)
    accepted(hook, request(multi_header(TS, SECRET), BODY))
    accepted(hook, request(multi_header(TS, "not-the-secret", SECRET), BODY))  # the sender rotating
    assert refused(hook, request(multi_header(TS, "not-the-secret"), BODY)).status == 401
    stale = str(int(NOW) - 301)
    assert "timestamp 301s old" in refused(hook, request(multi_header(stale, SECRET), BODY)).reason
    future = str(int(NOW) + 400)
    assert "in the future" in refused(hook, request(multi_header(future, SECRET), BODY)).reason
    no_ts = {"X-Signature": multi_header(TS, SECRET)["X-Signature"].split(",", 1)[1]}
    assert "missing" in refused(hook, request(no_ts, BODY)).reason
    no_v1 = {"X-Signature": f"t={TS}"}
    assert "no 'v1' field" in refused(hook, request(no_v1, BODY)).reason


def test_a_template_of_literal_query_header_and_lower_cased_parts(tmp_path: Path, pki: Pki) -> None:
    hook = route(
        tmp_path,
        pki,
        f'secrets = {SECRETS}\n[routes.signature]\nheader = "X-Sig"\n'
        'signed = ["literal:id:", "lower:query:data.id", "literal:;rid:", "header:x-request-id",'
        ' "literal:;"]\n',
    )
    message = b"id:abc123;rid:req-9;"  # written from the template, with data.id lower-cased
    headers = {"X-Sig": mac("sha256", SECRET, message).hex(), "x-request-id": "req-9"}
    accepted(hook, request(headers, BODY, path="/hooks?data.id=ABC123"))
    assert refused(hook, request(headers, BODY, path="/hooks?data.id=ABC124")).status == 401
    other = {**headers, "x-request-id": "req-8"}
    assert refused(hook, request(other, BODY, path="/hooks?data.id=ABC123")).status == 401


def test_the_timestamp_header_and_path_parts_keep_working(tmp_path: Path, pki: Pki) -> None:
    hook = route(
        tmp_path,
        pki,
        f'secrets = {SECRETS}\n[routes.signature]\nheader = "X-Sig"\ntimestamp_header = "X-Ts"\n'
        'signed = ["timestamp", "path", "body"]\nseparator = "|"\n',
    )
    message = f"{TS}|/hooks?x=1|".encode() + BODY
    accepted(hook, request({"X-Sig": mac("sha256", SECRET, message).hex(), "X-Ts": TS}, BODY, "/hooks?x=1"))


def test_an_unsigned_dedup_header_is_warned_about(tmp_path: Path, pki: Pki) -> None:
    """check-config warns when a dedup/event header is not among the signed bytes (a replay may vary it)."""
    text = 'dedup = ["header:X-Id"]\nevent = "header:X-Type"\n[routes.signature]\nheader = "X-Sig"\n'
    unsigned = route(tmp_path, pki, f"secrets = {SECRETS}\n{text}")
    assert [w.split(" ")[0] for w in unsigned.options.warnings()] == ["header:X-Id", "header:X-Type"]
    covered = route(
        tmp_path, pki, f'secrets = {SECRETS}\n{text}signed = ["header:x-id", "header:X-Type", "body"]\n'
    )
    assert covered.options.warnings() == ()


def test_dedup_and_event_from_the_body_or_a_form(tmp_path: Path, pki: Pki) -> None:
    hook = route(
        tmp_path,
        pki,
        f'secrets = {SECRETS}\ndedup = ["/id"]\nevent = "/type"\n[routes.signature]\nheader = "X-Sig"\n',
    )
    verdict = accepted(hook, request({"X-Sig": mac("sha256", SECRET, BODY).hex()}, BODY))
    assert (verdict.kind, verdict.events[0].dedup_key) == ("thing.done", "/hooks|evt_1")
    form = b"id=evt_2&type=form.sent"
    headers = {
        "X-Sig": mac("sha256", SECRET, form).hex(),
        "Content-Type": "application/x-www-form-urlencoded",
    }
    verdict = accepted(hook, request(headers, form))
    assert verdict.events[0].payload == {"id": "evt_2", "type": "form.sent"}


@pytest.mark.parametrize(
    ("signature", "key", "problem"),
    [
        ('header = "X"\nsigned = ["bodies"]', "signature.signed", "unknown part 'bodies'"),
        ('header = "X"\nsigned = ["query:"]', "signature.signed", "needs a name"),
        ('header = "X"\nquery = "s"', "signature.header", "or `query`"),
        ('header = "X"\nalgorithm = "md5"', "signature.algorithm", "must be one of"),
        ('header = "X"\ntimestamp_field = "t"', "signature.timestamp_field", "only with signature_field"),
        ('query = "s"\nsignature_field = "v1"', "signature.signature_field", "only with header"),
        ('header = "X"\nsigned = ["timestamp", "body"]', "signature.timestamp_header", "needed when"),
    ],
)
def test_signature_config_errors_name_the_key(
    tmp_path: Path, pki: Pki, signature: str, key: str, problem: str
) -> None:
    text = f'[[routes]]\npath = "/hooks"\nprovider = "hmac"\nsecrets = {SECRETS}\n'
    text += f"[routes.signature]\n{signature}\n"
    error = config_error(tmp_path, pki, text, secret=SECRET, old=OLD)
    assert error.key == f"routes[0].{key}" and problem in error.problem


def test_hmac_sample_is_signed_as_configured(tmp_path: Path, pki: Pki) -> None:
    hook = route(tmp_path, pki, MULTI)
    sample = provider("hmac").sample
    assert sample is not None
    made = sample(hook, "thing.done", NOW)
    accepted(hook, request(dict(made.headers), made.body, "/hooks" + made.path))


# --- token: a static header, HTTP Basic, Bearer ----------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "extra", "good", "verified_by"),
    [
        ("header", 'header = "X-Webhook-Token"\n', {"X-Webhook-Token": SECRET}, "static-token"),
        ("bearer", "", {"Authorization": f"Bearer {OLD}"}, "bearer-token"),
        (
            "basic",
            "",
            {"Authorization": "Basic " + base64.b64encode(b"user:" + SECRET.encode()).decode()},
            "basic-auth",
        ),
    ],
)
def test_static_tokens(
    tmp_path: Path, pki: Pki, mode: str, extra: str, good: dict[str, str], verified_by: str
) -> None:
    secrets = {
        "secret": f"user:{SECRET}" if mode == "basic" else SECRET,
        "old": f"user:{OLD}" if mode == "basic" else OLD,
    }
    text = (
        f'[[routes]]\npath = "/hooks"\nprovider = "token"\nmode = "{mode}"\n{extra}'
        'secrets = [{ file = "secret" }, { file = "old" }]\ndedup = ["/id"]\n'
    )
    (hook,) = load_routes(tmp_path, pki, text, **secrets).routes
    assert accepted(hook, request(good, BODY)).events[0].dedup_key == "/hooks|evt_1"
    assert verification_method(hook, None) == verified_by
    wrong = {
        name: value.replace(SECRET, "x" + SECRET[1:]).replace(OLD, "x" + OLD[1:])
        for name, value in good.items()
    }
    if mode == "basic":
        wrong = {"Authorization": "Basic " + base64.b64encode(b"user:x" + SECRET[1:].encode()).decode()}
    assert "does not match" in refused(hook, request(wrong, BODY)).reason
    assert "missing" in refused(hook, request({}, BODY)).reason


def test_basic_credentials_need_a_colon(tmp_path: Path, pki: Pki) -> None:
    text = (
        '[[routes]]\npath = "/hooks"\nprovider = "token"\nmode = "basic"\nsecrets = [{ file = "secret" }]\n'
    )
    error = config_error(tmp_path, pki, text, secret="no-colon")
    assert error.key == "routes[0].secrets[0]" and "user:password" in error.problem


def test_header_mode_needs_the_header(tmp_path: Path, pki: Pki) -> None:
    text = (
        '[[routes]]\npath = "/hooks"\nprovider = "token"\nmode = "header"\nsecrets = [{ file = "secret" }]\n'
    )
    assert config_error(tmp_path, pki, text, secret=SECRET).key == "routes[0].header"


# --- allowlist only: the loud opt-in --------------------------------------------------------------

UNSIGNED = '[[routes]]\npath = "/hooks"\nprovider = "allowlist"\n'


def test_an_unsigned_route_needs_the_opt_in_and_addresses(tmp_path: Path, pki: Pki) -> None:
    error = config_error(tmp_path, pki, UNSIGNED + 'allow_ips = ["203.0.113.0/24"]\n')
    assert error.key == "routes[0].unsigned_allowlist_only"
    error = config_error(tmp_path, pki, UNSIGNED + "unsigned_allowlist_only = true\n")
    assert error.key == "routes[0].allow_ips"
    error = config_error(tmp_path, pki, UNSIGNED + "unsigned_allowlist_only = true\nallow_ips = []\n")
    assert error.key == "routes[0].allow_ips"


def test_an_unsigned_route_accepts_only_its_addresses(tmp_path: Path, pki: Pki) -> None:
    text = UNSIGNED + 'unsigned_allowlist_only = true\nallow_ips = ["203.0.113.0/24"]\n'
    (hook,) = load_routes(tmp_path, pki, text).routes
    accepted(hook, request({}, BODY))
    assert refused(hook, request({}, BODY, peer=Peer("198.51.100.7"))).status == 403
    assert verification_method(hook, None) == "ip-allowlist-only"
    assert hook.options.warnings() and "UNSIGNED" in hook.options.warnings()[0]
    assert PEER.address.startswith("203.0.113.")


def test_check_config_warns_about_an_unsigned_route(
    tmp_path: Path, pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    load_routes(tmp_path, pki, UNSIGNED + 'unsigned_allowlist_only = true\nallow_ips = ["127.0.0.1"]\n')
    assert main(["check-config", "--config", str(tmp_path / "config.toml")]) == 0
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("WARNING")]
    assert any(line.startswith("WARNING: route /hooks: UNSIGNED") for line in warnings), warnings


def test_plain_digest_of_the_hash_function_itself() -> None:
    """A self-check of the digest the PagBank preset compares (sha256 of token-body)."""
    assert hashlib.sha256(b"t-" + BODY).hexdigest() == hashlib.sha256(b"t" + b"-" + BODY).hexdigest()


def test_a_malformed_entry_beside_a_good_one_is_skipped(tmp_path: Path, pki: Pki) -> None:
    hook = route(tmp_path, pki, MULTI)
    good = multi_header(TS, SECRET)["X-Signature"]
    accepted(hook, request({"X-Signature": good.replace("t=", "v1=zz,t=")}, BODY))
    assert "is not hex" in refused(hook, request({"X-Signature": f"t={TS},v1=zz,v1=yy"}, BODY)).reason
