"""The docs a user copies from must stay true: the test command, the example configs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import Pki
from mtls_receiver.config import load_config

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_ci_runs_the_readme_test_command() -> None:
    (command,) = [line for line in README.splitlines() if "python -m pytest" in line and line.startswith("python3")]
    assert command in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()


def _with_local_files(text: str, pki: Pki, tmp_path: Path) -> str:
    """Point the production paths at throwaway files so the config can be loaded here."""
    replacements = {
        r'"/etc/letsencrypt/[^"]*fullchain\.pem"': f'"{pki.server_cert}"',
        r'"/etc/letsencrypt/[^"]*privkey\.pem"': f'"{pki.server_key}"',
        r'"/etc/mtls-receiver/efi-chain-prod\.crt"': f'"{pki.client_ca}"',
        r'"/var/lib/mtls-receiver/inbox\.db"': f'"{tmp_path / "inbox.db"}"',
    }
    for pattern, value in replacements.items():
        text, count = re.subn(pattern, value, text)
        assert count == 1, pattern
    return text


@pytest.mark.parametrize("source", ["README.md", "deploy/config.example.toml"])
def test_production_config_examples_load(source: str, pki: Pki, tmp_path: Path) -> None:
    text = (ROOT / source).read_text(encoding="utf-8")
    if source.endswith(".md"):
        text = re.search(r"```toml\n(.*?)```", text, re.S).group(1)  # type: ignore[union-attr]
    path = tmp_path / "config.toml"
    path.write_text(_with_local_files(text, pki, tmp_path), encoding="utf-8")
    config = load_config(path)
    assert config.listeners[0].client_certs == "required" and config.listeners[0].port == 443
    assert config.routes[0].pix_keys == ("your-pix-key@example.com.br",)
