"""Config loading (load_config) and the check-config command, against real throwaway certificates."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from mtls_receiver.cli import main
from mtls_receiver.config import load_config
from mtls_receiver.devcerts import DevCerts, make_dev_certs
from mtls_receiver.errors import ConfigError

PORT = 8443
ENV_VAR = "MTLS_RECEIVER_TEST_KEY_PASSWORD"


@pytest.fixture
def dev(tmp_path: Path) -> DevCerts:
    return make_dev_certs(tmp_path, PORT)


def base_doc() -> dict[str, Any]:
    """The dev config as a dict, to be altered one key at a time."""
    return {
        "listeners": [
            {
                "name": "dev",
                "address": f"127.0.0.1:{PORT}",
                "cert": "server.pem",
                "key": "server.key",
                "client_certs": "required",
                "client_ca": "client-ca.pem",
            }
        ],
        "routes": [{"path": "/webhook", "provider": "efi", "mode": "mtls"}],
        "store": {"path": "inbox.db"},
    }


def _toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(map(_toml_value, value)) + "]"
    return json.dumps(value)  # strings; JSON escapes are valid TOML basic-string escapes


def write_config(directory: Path, doc: dict[str, Any] | str, name: str = "test.toml") -> Path:
    """Write TOML text, or a dict of top-level tables / arrays of tables, next to the dev certs."""
    if isinstance(doc, str):
        text = doc
    else:
        lines = []
        for table, value in doc.items():
            header = f"[[{table}]]" if isinstance(value, list) else f"[{table}]"
            for item in value if isinstance(value, list) else [value]:
                lines.append(header)
                lines += [f"{k} = {_toml_value(v)}" for k, v in item.items()]
        text = "\n".join(lines) + "\n"
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.file == str(path)
    return info.value


# --- what loads ---------------------------------------------------------------------------------


def test_dev_config_loads_with_defaults_and_paths_relative_to_the_file(
    dev: DevCerts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # relative paths must not depend on the working directory
    config = load_config(dev.config)
    base = tmp_path.resolve()

    (listener,) = config.listeners
    assert (listener.name, listener.host, listener.port) == ("dev", "127.0.0.1", PORT)
    assert listener.address == f"127.0.0.1:{PORT}"
    assert (listener.cert, listener.key, listener.client_ca) == (
        base / "server.pem",
        base / "server.key",
        base / "client-ca.pem",
    )
    assert (listener.client_certs, listener.min_tls, listener.key_password) == ("required", "1.2", None)

    (route,) = config.routes
    assert (route.path, route.listener, route.provider, route.mode, route.options.pix_keys) == (
        "/webhook",
        "dev",
        "efi",
        "mtls",
        (),
    )
    assert config.store.path == base / "inbox.db"


def test_missing_file(tmp_path: Path) -> None:
    error = config_error(tmp_path / "absent.toml")
    assert (error.key, error.problem) == ("", "file not found")


def test_invalid_toml(tmp_path: Path) -> None:
    error = config_error(write_config(tmp_path, '[[listeners]\nname = "dev"\n'))
    assert error.key == ""
    assert error.problem.startswith("not valid TOML")


def _set(table: str, key: str, value: Any, index: int = 0) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        doc[table][index][key] = value

    return change


def _delete(table: str, key: str) -> Callable[[dict[str, Any]], None]:
    return lambda doc: doc[table][0].pop(key)


def _route(**fields: Any) -> Callable[[dict[str, Any]], None]:
    """Replace the route with another provider's route."""

    def change(doc: dict[str, Any]) -> None:
        doc["routes"][0] = {"path": "/hooks", **fields}

    return change


def _duplicate_route(doc: dict[str, Any]) -> None:
    doc["routes"].append({"path": "/webhook/", "provider": "efi"})  # same path once normalised


@pytest.mark.parametrize(
    ("change", "key", "problem"),
    [
        pytest.param(
            _set("listeners", "client_cert", "required"),
            "listeners[0].client_cert",
            "unknown key (allowed here:",
            id="unknown-key-typo",
        ),
        pytest.param(
            _set("listeners", "address", "localhost"),
            "listeners[0].address",
            "expected 'host:port'",
            id="address-without-port",
        ),
        pytest.param(
            _set("listeners", "address", "127.0.0.1:70000"),
            "listeners[0].address",
            "got '127.0.0.1:70000'",
            id="address-port-out-of-range",
        ),
        pytest.param(
            _set("listeners", "client_certs", "sometimes"),
            "listeners[0].client_certs",
            "must be one of 'required', 'optional', 'none', got 'sometimes'",
            id="client-certs-policy",
        ),
        pytest.param(
            _delete("listeners", "client_ca"),
            "listeners[0].client_ca",
            "required when client_certs = 'required'",
            id="client-ca-missing",
        ),
        pytest.param(
            _set("listeners", "cert", "missing.pem"),
            "listeners[0].cert",
            "file not found: ",
            id="cert-not-found",
        ),
        pytest.param(
            _set("routes", "path", "webhook"),
            "routes[0].path",
            "must be a URL path starting with '/'",
            id="route-path-relative",
        ),
        pytest.param(
            _set("routes", "listener", "public"),
            "routes[0].listener",
            "no listener named 'public' (have: dev)",
            id="route-unknown-listener",
        ),
        pytest.param(
            _set("routes", "provider", "paypal"),
            "routes[0].provider",
            "must be one of 'efi', 'pix', 'infi', 'pomelo', 'firebanking', 'hmac', 'token', 'allowlist', "
            "'mercadopago', 'asaas', 'pagbank', 'pagarme', 'kiwify', 'iugu', 'celcoin', 'bs2', 'stripe', "
            "'standard-webhooks', 'public-key', 'starkbank', 'woovi', got 'paypal'",
            id="unknown-provider",
        ),
        pytest.param(
            _set("listeners", "client_certs", "none"),
            "routes[0].mode",
            "needs client certificates, but listener 'dev' has client_certs = 'none'",
            id="efi-mtls-without-client-certs",
        ),
        pytest.param(
            _duplicate_route,
            "routes[1]",
            "duplicate path (per listener): 'dev /webhook'",
            id="duplicate-route-path",
        ),
        pytest.param(
            _set("listeners", "key_password", "hunter2"),
            "listeners[0].key_password",
            "secrets are not accepted inline",
            id="inline-secret",
        ),
        pytest.param(
            _set("listeners", "key_password", {"env": ENV_VAR}),
            "listeners[0].key_password.env",
            f"environment variable {ENV_VAR} is not set or empty",
            id="env-secret-unset",
        ),
        pytest.param(
            _set("listeners", "proxy_protocol", True),
            "listeners[0].proxy_protocol",
            "needs trusted_proxies",
            id="proxy-protocol-without-trusted-proxies",
        ),
        pytest.param(
            _set("listeners", "proxy_protocol", "yes"),
            "listeners[0].proxy_protocol",
            "must be true or false, got str",
            id="proxy-protocol-not-bool",
        ),
        pytest.param(
            _set("listeners", "trusted_proxies", ["10.0.0.0/33"]),
            "listeners[0].trusted_proxies",
            "not an IP address or CIDR",
            id="bad-cidr",
        ),
        pytest.param(
            _set("routes", "mode", "skip-mtls"),
            "routes[0].hmac_secrets",
            "skip-mtls needs at least one secret",
            id="skip-mtls-without-secret",
        ),
        pytest.param(
            _set("routes", "hmac_secrets", ["inline-secret-value"]),
            "routes[0].hmac_secrets[0]",
            "secrets are not accepted inline",
            id="inline-hmac-secret",
        ),
        pytest.param(
            _set("routes", "allow_ips", ["34.193.116.226/32", "efi"]),
            "routes[0].allow_ips",
            "not an IP address or CIDR",
            id="bad-allowlist",
        ),
        pytest.param(
            _route(provider="infi"),
            "routes[0].secrets",
            "at least one signing secret is needed",
            id="infi-without-secrets",
        ),
        pytest.param(
            _route(provider="infi", pix_keys=["x"]),
            "routes[0].pix_keys",
            "unknown key",
            id="efi-key-on-infi-route",
        ),
        pytest.param(
            _route(provider="firebanking", families=["crypto"]),
            "routes[0].families",
            "unknown family 'crypto'",
            id="firebanking-unknown-family",
        ),
        pytest.param(
            _route(provider="pomelo"),
            "routes[0].api_keys",
            "at least one pair is needed",
            id="pomelo-without-api-keys",
        ),
        pytest.param(
            _route(provider="pomelo", api_keys=[{"key": "k", "secret": "inline"}]),
            "routes[0].api_keys[0].secret",
            "secrets are not accepted inline",
            id="pomelo-inline-secret",
        ),
        pytest.param(
            _route(
                provider="pomelo", mode="authorizations", api_keys=[{"key": "k", "secret": {"env": "PATH"}}]
            ),
            "routes[0].api_keys[0].secret",
            "must be base64",
            id="pomelo-secret-not-base64",
        ),
        pytest.param(
            _route(
                provider="pomelo",
                app_url="http://127.0.0.1:9000/authorize",
                api_keys=[{"key": "k", "secret": {"env": ENV_VAR + "_B64"}}],
            ),
            "routes[0].app_url",
            "only for mode = 'authorizations'",
            id="pomelo-app-url-on-notifications",
        ),
        pytest.param(
            _route(provider="hmac", secrets=[{"env": ENV_VAR + "_B64"}]),
            "routes[0].signature",
            "a [routes.signature] table is needed",
            id="generic-without-signature",
        ),
        pytest.param(
            _route(
                provider="hmac",
                secrets=[{"env": ENV_VAR + "_B64"}],
                signature={"header": "X-Sig", "signed": ["timestamp", "body"]},
            ),
            "routes[0].signature.timestamp_header",
            "needed when the timestamp is signed",
            id="generic-signed-timestamp-without-header",
        ),
        pytest.param(
            _route(
                provider="hmac",
                secrets=[{"env": ENV_VAR + "_B64"}],
                dedup=["data.id"],
                signature={"header": "X-Sig"},
            ),
            "routes[0].dedup",
            "use a JSON pointer",
            id="generic-bad-dedup",
        ),
        pytest.param(
            _set("listeners", "limits", {"max_body": 0}),
            "listeners[0].limits.max_body",
            "whole number >= 1",
            id="limit-zero",
        ),
        pytest.param(
            _set("listeners", "limits", {"max_bodies": 10}),
            "listeners[0].limits.max_bodies",
            "unknown key",
            id="limit-unknown",
        ),
        pytest.param(
            _set("listeners", "limits", {"body_timeout": "soon"}),
            "listeners[0].limits.body_timeout",
            "must be a number",
            id="limit-not-a-number",
        ),
        pytest.param(
            _route(provider="infi", secrets=[{"env": ENV_VAR + "_B64"}], tolerance=0),
            "routes[0].tolerance",
            "whole number >= 1",
            id="tolerance-zero",
        ),
        pytest.param(
            lambda doc: doc["store"].update(commit_delay=1),
            "store.commit_delay",
            "at most 0.1",
            id="commit-delay-too-long",
        ),
        pytest.param(
            lambda doc: doc["store"].update(commit_delay=-0.001),
            "store.commit_delay",
            "must be a number >= 0",
            id="commit-delay-negative",
        ),
    ],
)
def test_error_names_file_key_and_problem(
    dev: DevCerts,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    change: Callable[[dict[str, Any]], None],
    key: str,
    problem: str,
) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv(ENV_VAR + "_B64", "c2VjcmV0LXNlY3JldC1zZWNyZXQ=")
    doc = base_doc()
    change(doc)
    error = config_error(write_config(tmp_path, doc))
    assert error.key == key
    assert problem in error.problem
    assert str(error) == f"{error.file}: {key}: {error.problem}"
    assert "hunter2" not in str(error)  # a refused inline secret is never echoed


def test_cert_not_found_names_the_resolved_path(dev: DevCerts, tmp_path: Path) -> None:
    doc = base_doc()
    doc["listeners"][0]["cert"] = "missing.pem"
    error = config_error(write_config(tmp_path, doc))
    assert error.problem == f"file not found: {(tmp_path / 'missing.pem').resolve()}"


def test_key_password_from_env(dev: DevCerts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "s3cret")
    doc = base_doc()
    doc["listeners"][0]["key_password"] = {"env": ENV_VAR}
    (listener,) = load_config(write_config(tmp_path, doc)).listeners
    assert listener.key_password == "s3cret"
    assert "s3cret" not in repr(listener)


def test_skip_mtls_route_defaults_and_short_secret(dev: DevCerts, tmp_path: Path) -> None:
    (tmp_path / "hmac").write_text("a-long-enough-random-secret\n", encoding="utf-8")
    doc = base_doc()
    doc["routes"][0].update(mode="skip-mtls", hmac_secrets=[{"file": "hmac"}])
    (route,) = load_config(write_config(tmp_path, doc)).routes
    assert [str(n) for n in route.allow_ips] == ["34.193.116.226/32"]  # Efí's sender by default
    assert route.options.hmac_secrets == ("a-long-enough-random-secret",) and "random" not in repr(route)
    (tmp_path / "hmac").write_text("short\n", encoding="utf-8")
    error = config_error(write_config(tmp_path, doc))
    assert error.key == "routes[0].hmac_secrets[0]" and "too short" in error.problem


def test_key_password_from_file_is_stripped(dev: DevCerts, tmp_path: Path) -> None:
    (tmp_path / "key-password").write_text("  s3cret\n", encoding="utf-8")
    doc = base_doc()
    doc["listeners"][0]["key_password"] = {"file": "key-password"}  # relative to the config file
    (listener,) = load_config(write_config(tmp_path, doc)).listeners
    assert listener.key_password == "s3cret"


# --- check-config -------------------------------------------------------------------------------


def test_check_config_prints_summary(dev: DevCerts, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "--config", str(dev.config)]) == 0
    out = capsys.readouterr().out.splitlines()

    assert out[0] == f"{dev.config}: OK"
    assert f"listener 'dev' on 127.0.0.1:{PORT}: client certs required, TLS >= 1.2" in out
    chain = x509.load_pem_x509_certificates(dev.client_ca.read_bytes())
    ca_lines = [line.strip() for line in out if line.strip().startswith("client CA")]
    assert len(ca_lines) == len(chain) == 2  # root + intermediate
    root = chain[0].subject.rfc4514_string()
    for line, cert in zip(ca_lines, chain, strict=True):
        assert line.startswith(f"client CA    {cert.subject.rfc4514_string()} (issuer {root}; ")
        assert line.endswith(
            f"valid {cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d})"
        )
    assert "route /webhook on 'dev': provider efi, mode mtls" in out
    assert out[-1].startswith(f"store: SQLite {dev.directory.resolve() / 'inbox.db'} (writable by ")


@pytest.mark.parametrize(
    ("listener_change", "message"),
    [
        pytest.param(
            {"client_certs": "sometimes"}, "listeners[0].client_certs: must be one of", id="invalid-config"
        ),
        pytest.param({"key": "client.pem"}, "listeners[0].key: cannot load", id="key-does-not-match-cert"),
    ],
)
def test_check_config_fails_with_message(
    dev: DevCerts,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    listener_change: dict[str, str],
    message: str,
) -> None:
    doc = base_doc()
    doc["listeners"][0].update(listener_change)
    path = write_config(tmp_path, doc)
    assert main(["check-config", "--config", str(path)]) != 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"mtls-receiver: {path}: ")
    assert message in captured.err


def test_workers_default_to_the_cores_and_commit_delay_to_a_millisecond(dev: DevCerts) -> None:
    config = load_config(dev.config)
    assert config.workers == (os.cpu_count() or 1)
    assert config.store.commit_delay == 0.001


@pytest.mark.parametrize("value", ["0", '"all"', "1.5", "true"])
def test_workers_must_be_a_whole_number_of_at_least_one(dev: DevCerts, tmp_path: Path, value: str) -> None:
    error = config_error(write_config(tmp_path, f"workers = {value}\n" + dev.config.read_text()))
    assert (error.key, error.problem.split(",")[0]) == ("workers", "must be a whole number >= 1")
    assert load_config(write_config(tmp_path, "workers = 3\n" + dev.config.read_text())).workers == 3


@pytest.mark.usefixtures("forward_secrets")
def test_check_config_never_prints_a_urls_credentials(
    dev: DevCerts, capsys: pytest.CaptureFixture[str]
) -> None:
    """A forwarding URL may carry ``user:password@`` or a token before ``@``; a PostgreSQL DSN a
    password in its authority (``@`` inside it) or libpq's ``?password=``: none is printed."""
    text = dev.config.read_text(encoding="utf-8")
    forward = (
        '\n[forward]\nurl = "https://app:fwd-pass-1@app.example/hooks"\n'
        'secrets = [{ env = "T_FORWARD_SECRET" }]\n'
    )
    route = 'mode = "mtls"\nforward_url = "https://fwd-token-2@other.example/x"\n'
    dev.config.write_text(text.replace('mode = "mtls"\n', route) + forward, encoding="utf-8")
    assert main(["check-config", "--config", str(dev.config)]) == 0
    out = capsys.readouterr().out
    assert "https://***@app.example/hooks" in out and "https://***@other.example/x" in out
    assert "fwd-pass-1" not in out and "fwd-token-2" not in out
    config = load_config(dev.config)
    assert "fwd-token-2" not in config.destination("/webhook").label  # type: ignore[union-attr]
    for dsn in ("postgresql://u:p@ss-3@db/x", "postgresql://u@db/x?sslmode=require&password=pass-4"):
        shown = dataclasses.replace(config.store, url=dsn).description
        assert "ss-3" not in shown and "pass-4" not in shown and "db/x" in shown
