"""The docs a user copies from must stay true: the test command, the example configs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from support import Pki
from mtls_receiver.config import Config, load_config

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_ci_runs_the_readme_test_command() -> None:
    (command,) = [line for line in README.splitlines() if "python -m pytest" in line and line.startswith("python3")]
    assert command in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()


def _with_local_files(text: str, pki: Pki, tmp_path: Path) -> str:
    """Point the production paths at throwaway files so the config can be loaded here."""
    (tmp_path / "efi-hmac").write_text("a-random-secret-of-some-length\n", encoding="utf-8")
    replacements = {
        r'"/etc/letsencrypt/[^"]*fullchain\.pem"': f'"{pki.server_cert}"',
        r'"/etc/letsencrypt/[^"]*privkey\.pem"': f'"{pki.server_key}"',
        r'"/etc/mtls-receiver/tls/fullchain\.pem"': f'"{pki.server_cert}"',
        r'"/etc/mtls-receiver/tls/privkey\.pem"': f'"{pki.server_key}"',
        r'"/etc/mtls-receiver/efi-chain-prod\.crt"': f'"{pki.client_ca}"',
        r'"/etc/mtls-receiver/efi-hmac"': f'"{tmp_path / "efi-hmac"}"',
        r'"/etc/mtls-receiver/firebanking-secret"': f'"{tmp_path / "efi-hmac"}"',
        r'"/var/lib/mtls-receiver/inbox\.db"': f'"{tmp_path / "inbox.db"}"',
    }
    for pattern, value in replacements.items():
        text = re.sub(pattern, value, text)
    assert '"/etc/' not in text and '"/var/' not in text, text
    return text


def _load(text: str, pki: Pki, tmp_path: Path) -> Config:
    path = tmp_path / "config.toml"
    path.write_text(_with_local_files(text, pki, tmp_path), encoding="utf-8")
    return load_config(path)


def test_deploy_example_config_loads(pki: Pki, tmp_path: Path) -> None:
    config = _load((ROOT / "deploy" / "config.example.toml").read_text(encoding="utf-8"), pki, tmp_path)
    assert config.listeners[0].client_certs == "required" and config.listeners[0].port == 443
    assert config.routes[0].pix_keys == ("your-pix-key@example.com.br",)


TOML_BLOCKS = re.findall(r"```toml\n(.*?)```", README, re.S)


@pytest.mark.parametrize("block", range(len(TOML_BLOCKS)))
def test_every_readme_config_block_loads(block: int, pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = TOML_BLOCKS[block]
    if "[[listeners]]" not in text:  # a fragment (e.g. [forward]): add it to the first full example
        text = TOML_BLOCKS[0] + "\n" + text
    for name in set(re.findall(r'env = "([A-Z_]+)"', text)):
        value = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"  # base64, as Pomelo's are
        monkeypatch.setenv(name, "whsec_" + value if name.startswith("FORWARD") else value)
    config = _load(text, pki, tmp_path)
    assert config.routes and config.listeners


def test_readme_has_the_config_examples_it_promises() -> None:
    modes = [re.findall(r'mode = "([a-z-]+)"', block) for block in TOML_BLOCKS]
    assert ["mtls"] in modes and ["skip-mtls"] in modes and ["notifications", "authorizations"] in modes
    providers = {p for block in TOML_BLOCKS for p in re.findall(r'provider = "([a-z]+)"', block)}
    assert providers == {"efi", "infi", "pomelo", "firebanking", "hmac"}
    assert any("proxy_protocol = true" in block for block in TOML_BLOCKS)
