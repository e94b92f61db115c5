"""What a newcomer meets first: dev certificates any client loads (Java, curl), dev-certs that keeps
its keys, dev receivers side by side, hints that work as printed, check-config that says everything."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from support import PYTHON, Pki, Serve, ServerProcess, config_text, run_cli, wait_until

from mtls_receiver.config import load_config
from mtls_receiver.devcerts import free_port

JAVA_CLIENT = Path(__file__).parent / "java" / "DevClient.java"
PASSWORD = "changeit"
PIX = {
    "pix": [
        {"endToEndId": "E00000000202611301058JAVA00001", "valor": "0.01", "horario": "2026-11-30T10:58:00Z"}
    ]
}


@pytest.fixture
def dev(tmp_path: Path) -> Path:
    made = run_cli("dev-certs", str(tmp_path / "dev"), "--port", "0")
    assert made.returncode == 0, made.stderr
    return tmp_path / "dev"


@pytest.mark.parametrize("name", ["client.pem", "foreign-client.pem"])
def test_dev_client_certificates_name_themselves(dev: Path, name: str) -> None:
    """RFC 5280: a subjectAltName extension holds at least one name (Java refuses an empty one)."""
    certificate = x509.load_pem_x509_certificates((dev / name).read_bytes())[0]
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(names.get_values_for_type(x509.DNSName)), names


def _run(*command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=cwd)
    assert result.returncode == 0, f"{shlex.join(command)}:\n{result.stdout}{result.stderr}"
    return result


def test_java_connects_with_the_dev_client_certificate(dev: Path, serve: Serve, tmp_path: Path) -> None:
    if not all(shutil.which(tool) for tool in ("java", "javac", "keytool", "openssl")):
        pytest.skip("a JDK (java, javac, keytool) and openssl are needed")
    _, port = serve(dev / "config.toml")
    work = tmp_path / "java"
    work.mkdir()
    keystore, truststore = work / "client.p12", work / "trust.p12"
    _run("openssl", "pkcs12", "-export", "-in", str(dev / "client.pem"), "-out", str(keystore),
         "-passout", f"pass:{PASSWORD}", "-name", "dev-client", cwd=work)  # fmt: skip
    # keytool could not load the client certificate while its subjectAltName was empty
    _run("keytool", "-list", "-v", "-keystore", str(keystore), "-storetype", "PKCS12",
         "-storepass", PASSWORD, cwd=work)  # fmt: skip
    _run("keytool", "-importcert", "-noprompt", "-alias", "dev-server-ca", "-file",
         str(dev / "server-ca.pem"), "-keystore", str(truststore), "-storetype", "PKCS12",
         "-storepass", PASSWORD, cwd=work)  # fmt: skip
    shutil.copy(JAVA_CLIENT, work / "DevClient.java")
    _run("javac", "DevClient.java", cwd=work)
    sent = _run("java", "-cp", str(work), "DevClient", f"https://127.0.0.1:{port}/webhook/pix", str(keystore),
                str(truststore), PASSWORD, json.dumps(PIX), cwd=work)  # fmt: skip
    assert sent.stdout.strip() == "200"
    listed = run_cli("events", "list", "--config", str(dev / "config.toml"), "--json")
    (event,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (
        event["dedup_key"] == PIX["pix"][0]["endToEndId"] and "efi-like dev client" in event["client_subject"]
    )


def test_curl_connects_with_the_dev_client_certificate(dev: Path, serve: Serve) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    _, port = serve(dev / "config.toml")
    sent = subprocess.run(
        ["curl", "-sS", "--cacert", str(dev / "server-ca.pem"), "--cert", str(dev / "client.pem"),
         "-H", "Content-Type: application/json", "--data", json.dumps(PIX),
         f"https://localhost:{port}/webhook/pix"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert (sent.returncode, sent.stdout) == (0, "200"), sent.stderr


def test_dev_certs_keeps_existing_keys_unless_forced(dev: Path) -> None:
    before = {name: (dev / name).read_bytes() for name in ("server.key", "client.pem")}
    again = run_cli("dev-certs", str(dev))
    assert again.returncode == 2 and "--force" in again.stderr and again.stderr.count("\n") == 1
    assert {name: (dev / name).read_bytes() for name in before} == before
    forced = run_cli("dev-certs", str(dev), "--force")
    assert forced.returncode == 0, forced.stderr
    assert all((dev / name).read_bytes() != data for name, data in before.items())


def test_two_dev_receivers_run_side_by_side(tmp_path: Path, serve: Serve) -> None:
    """Each dev config gets a free admin port (not the default 9464 both would want), printed."""
    admin_ports = []
    for name in ("one", "two"):
        made = run_cli("dev-certs", str(tmp_path / name), "--port", str(free_port()))
        assert made.returncode == 0, made.stderr
        admin = load_config(tmp_path / name / "config.toml").admin
        assert f"admin port (metrics, health): http://127.0.0.1:{admin.port}" in made.stdout
        admin_ports.append(admin.port)
    assert len(set(admin_ports)) == 2 and 0 not in admin_ports
    servers = [serve(tmp_path / name / "config.toml")[0] for name in ("one", "two")]
    assert all(server.proc is not None and server.proc.poll() is None for server in servers)


def test_serve_refuses_port_with_a_config(dev: Path) -> None:
    result = run_cli("serve", "--config", str(dev / "config.toml"), "--port", "8444")
    assert result.returncode == 2 and "--port goes with --dev" in result.stderr


def test_printed_commands_work_without_activating_the_venv(tmp_path: Path) -> None:
    """The hint after `serve --dev` (set-up command 1) runs as printed, from a shell without the venv."""
    script = Path(PYTHON).parent / "mtls-receiver"
    if script.is_file():
        made = subprocess.run(
            [str(script), "dev-certs", str(tmp_path / "made")], capture_output=True, text=True, timeout=60
        )
        assert f"run: {script.absolute()} serve --config" in made.stdout, made.stdout + made.stderr
    server = ServerProcess("serve", "--dev", "--state-dir", str(tmp_path / "state"), "--port", "0")
    server.start()
    try:

        def hint() -> re.Match[str] | None:
            return re.search(r"Then: (.*events list --config \S+)\n", "".join(server.output))

        wait_until(hint, 20, lambda: "no hint printed:\n" + "".join(server.output))
        match = hint()
        assert match is not None
        environment = {key: value for key, value in os.environ.items() if key != "VIRTUAL_ENV"}
        environment["PATH"] = "/usr/bin:/bin"
        listed = subprocess.run(
            shlex.split(match.group(1)), capture_output=True, text=True, timeout=60, env=environment
        )
        assert listed.returncode == 0, listed.stderr
    finally:
        server.kill()


def test_check_config_reports_every_problem(tmp_path: Path, pki: Pki) -> None:
    config = tmp_path / "config.toml"
    text = config_text(pki).replace("[store]\n", "[store]\ncommit_delay = 5\n")
    text += '\n[[routes]]\npath = "nope"\nprovider = "efi"\n\n[health]\nhung_after = "x"\n'
    config.write_text(text)
    result = run_cli("check-config", "--config", str(config))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert [line.split(": ")[2] for line in lines] == [
        "routes[1].path",
        "store.commit_delay",
        "health.hung_after",
    ]
    assert all(line.startswith(f"mtls-receiver: {config}: ") for line in lines)


def test_check_config_prints_allowlists_and_store(
    tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("T_CHECK_HMAC", "a-long-enough-secret-value")
    routes = (
        '[[routes]]\npath = "/webhook"\nprovider = "efi"\nmode = "skip-mtls"\n'
        'hmac_secrets = [{ env = "T_CHECK_HMAC" }]\n'
        '[[routes]]\npath = "/other"\nprovider = "efi"\nmode = "skip-mtls"\nallow_ips = ["10.0.0.0/8"]\n'
        'hmac_secrets = [{ env = "T_CHECK_HMAC" }]\n'
        '[[routes]]\npath = "/mtls"\nprovider = "efi"\n'
    )
    config = tmp_path / "config.toml"
    config.write_text(
        config_text(pki, client_certs="optional", routes=routes, store=str(tmp_path / "inbox.db"))
    )
    result = run_cli("check-config", "--config", str(config))
    assert result.returncode == 0, result.stderr
    allowlists = [line.strip() for line in result.stdout.splitlines() if line.strip().startswith("allowlist")]
    assert allowlists == [
        "allowlist    34.193.116.226/32 (the sender default)",
        "allowlist    10.0.0.0/8 (allow_ips)",
        "allowlist    any address",
    ]
    assert f"store: SQLite {tmp_path / 'inbox.db'} (writable by " in result.stdout


def test_check_config_says_when_the_store_cannot_be_written(tmp_path: Path, pki: Pki) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    config = tmp_path / "config.toml"
    config.write_text(config_text(pki, store=str(blocker / "inbox.db")))
    result = run_cli("check-config", "--config", str(config))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert f"{config}: store.path: {blocker} is not a directory" in result.stderr


@pytest.fixture
def as_another_user(tmp_path: Path) -> Iterator[tuple[Path, list[str]]]:
    """A directory that user ``nobody`` can enter, and how to run the CLI as that user (root ignores
    file modes: the unreadable and unwritable cases need someone else). Non-root: as oneself."""
    if os.geteuid() != 0:
        yield tmp_path, [PYTHON, "-m", "mtls_receiver"]
        return
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to run the CLI as another user")
    shared = Path(tempfile.mkdtemp(prefix="mtls-receiver-nobody-"))
    shared.chmod(0o755)
    command = [
        "setpriv",
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
        PYTHON,
        "-m",
        "mtls_receiver",
    ]
    yield shared, command
    shutil.rmtree(shared)


def test_unreadable_config_and_unwritable_store_as_another_user(
    as_another_user: tuple[Path, list[str]], pki: Pki
) -> None:
    directory, cli = as_another_user
    for name in ("server_cert", "server_key", "client_ca"):
        shutil.copy(getattr(pki, name), directory / Path(getattr(pki, name)).name)
        (directory / Path(getattr(pki, name)).name).chmod(0o644)
    text = config_text(pki, store=str(directory / "store" / "inbox.db"))
    for name in ("server_cert", "server_key", "client_ca"):
        text = text.replace(str(getattr(pki, name)), str(directory / Path(getattr(pki, name)).name))
    (directory / "store").mkdir()
    (directory / "store").chmod(0o555)  # the inbox cannot be created in it (by anyone but root)
    config = directory / "config.toml"
    config.write_text(text)
    config.chmod(0o644)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*cli, *args], capture_output=True, text=True, timeout=60, cwd=directory)

    checked = run("check-config", "--config", str(config))
    assert checked.returncode == 2 and checked.stderr.count("\n") == 1, checked.stderr
    assert f"store.path: {directory / 'store'} (where the inbox" in checked.stderr
    assert "is not writable by" in checked.stderr
    config.chmod(0o600 if os.geteuid() == 0 else 0o000)
    for command in (("check-config",), ("events", "list"), ("audit", "summary")):
        result = run(*command, "--config", str(config))
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert (
            result.stderr
            == f"mtls-receiver: {config}: cannot read: [Errno 13] Permission denied: '{config}'\n"
        )
