"""The docs a user copies from must stay true: the test command, the example configs.

README.md is the front page; the reference lives in docs/*.md. Every ```toml block there is loaded
with the real config reader.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import Pki

from mtls_receiver.config import Config, load_config

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
DEPLOY_EXAMPLE = (ROOT / "deploy" / "config.example.toml").read_text(encoding="utf-8")


def _read(paths: list[Path]) -> dict[str, str]:
    return {path.relative_to(ROOT).as_posix(): path.read_text(encoding="utf-8") for path in paths}


# The front page and the reference pages.
PAGES = _read([ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
MARKDOWN = PAGES


def fenced(text: str, language: str) -> list[str]:
    """The bodies of the fenced blocks in ``language``, in order (also those indented in a list)."""
    return re.findall(rf"^ *```{language}\n(.*?)^ *```", text, re.DOTALL | re.MULTILINE)


def test_ci_runs_the_readme_test_command() -> None:
    (command,) = [
        line for line in README.splitlines() if "python -m pytest" in line and line.startswith("python3")
    ]
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
    config = _load(DEPLOY_EXAMPLE, pki, tmp_path)
    assert config.listeners[0].client_certs == "required" and config.listeners[0].port == 443
    assert config.routes[0].pix_keys == ("your-pix-key@example.com.br",)


def _is_whole(block: str) -> bool:
    return "[[listeners]]" in block


TOML_BLOCKS = [(page, block) for page, text in MARKDOWN.items() for block in fenced(text, "toml")]


def _as_config(page: str, block: str) -> str:
    """A whole config as written; a fragment (e.g. [forward], one more route) added to the first whole
    config of its page, or, on a page without one, to the production example in deploy/."""
    if _is_whole(block):
        return block
    base = next((whole for whole in fenced(MARKDOWN[page], "toml") if _is_whole(whole)), DEPLOY_EXAMPLE)
    return base + "\n" + block


@pytest.mark.parametrize(
    ("page", "block"),
    [
        pytest.param(page, block, id=f"{page}-{index}")
        for page, text in MARKDOWN.items()
        for index, block in enumerate(fenced(text, "toml"))
    ],
)
def test_every_config_block_in_the_docs_loads(
    page: str, block: str, pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = _as_config(page, block)
    for name in set(re.findall(r'env = "([A-Z_]+)"', text)):
        value = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"  # base64, as Pomelo's are
        monkeypatch.setenv(name, "whsec_" + value if name.startswith("FORWARD") else value)
    config = _load(text, pki, tmp_path)
    assert config.routes and config.listeners


def test_the_docs_have_the_config_examples_they_promise() -> None:
    blocks = [block for _, block in TOML_BLOCKS]
    modes = [re.findall(r'mode = "([a-z-]+)"', block) for block in blocks]
    assert ["mtls"] in modes and ["skip-mtls"] in modes and ["notifications", "authorizations"] in modes
    providers = {p for block in blocks for p in re.findall(r'provider = "([a-z]+)"', block)}
    assert providers == {"efi", "infi", "pomelo", "firebanking", "hmac"}
    assert any("proxy_protocol = true" in block for block in blocks)
    assert any(block.startswith("[forward]") for block in blocks)
