"""The docs a user copies from must stay true: the test command, the example configs, the commands, the links.

README.md is the front page; the reference lives in docs/*.md. Every ```toml block there is loaded
with the real config reader, every documented ``mtls-receiver`` command line is parsed by the real
command-line parser, and every relative link (and its #anchor) must lead somewhere.
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from support import Pki

from mtls_receiver.cli import _parser
from mtls_receiver.config import Config, load_config
from mtls_receiver.providers import PROVIDER_NAMES

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
DEPLOY_EXAMPLE = (ROOT / "deploy" / "config.example.toml").read_text(encoding="utf-8")


def _read(paths: list[Path]) -> dict[str, str]:
    return {path.relative_to(ROOT).as_posix(): path.read_text(encoding="utf-8") for path in paths}


# The front page and the reference pages.
PAGES = _read([ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))])
# Every Markdown file of the project: a reader may follow its links and copy its commands and configs.
MARKDOWN = PAGES | _read([ROOT / "BENCHMARKS.md", *sorted(ROOT.glob("[!.]*/README.md"))])


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
        r'"/etc/mtls-receiver/psp-client-ca\.pem"': f'"{pki.client_ca}"',
        r'"/etc/mtls-receiver/efi-hmac"': f'"{tmp_path / "efi-hmac"}"',
        r'"/etc/mtls-receiver/firebanking-secret"': f'"{tmp_path / "efi-hmac"}"',
        r'"/var/lib/mtls-receiver/inbox\.db"': f'"{tmp_path / "inbox.db"}"',
    }
    replacements |= _public_key_files(tmp_path)
    for pattern, value in replacements.items():
        text = re.sub(pattern, value, text)
    assert '"/etc/' not in text and '"/var/' not in text, text
    return text


def _public_key_files(tmp_path: Path) -> dict[str, str]:
    """The senders' public key files the docs name: the vectors' keys (secp256k1, RSA), a new Ed25519 key."""
    ed25519_pem = tmp_path / "ed25519.pem"
    ed25519_pem.write_bytes(
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    vectors = ROOT / "tests" / "vectors"
    return {
        r'"/etc/mtls-receiver/keys/starkbank\.pem"': f'"{vectors / "sb_pub.pem"}"',
        r'"/etc/mtls-receiver/keys/sender\.pem"': f'"{vectors / "woovi_pub.pem"}"',
        r'"/etc/mtls-receiver/keys/kiwify\.pem"': f'"{ed25519_pem}"',
    }


def _load(text: str, pki: Pki, tmp_path: Path) -> Config:
    path = tmp_path / "config.toml"
    path.write_text(_with_local_files(text, pki, tmp_path), encoding="utf-8")
    return load_config(path)


def test_deploy_example_config_loads(pki: Pki, tmp_path: Path) -> None:
    config = _load(DEPLOY_EXAMPLE, pki, tmp_path)
    assert config.listeners[0].client_certs == "required" and config.listeners[0].port == 443
    assert config.routes[0].options.pix_keys == ("your-pix-key@example.com.br",)


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
    for name in set(re.findall(r'env = "([A-Z0-9_]+)"', text)):
        value = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"  # base64, as Pomelo's are
        monkeypatch.setenv(name, "whsec_" + value if name.startswith("FORWARD") else value)
    config = _load(text, pki, tmp_path)
    assert config.routes and config.listeners


def test_the_docs_have_the_config_examples_they_promise() -> None:
    blocks = [block for _, block in TOML_BLOCKS]
    modes = [re.findall(r'mode = "([a-z-]+)"', block) for block in blocks]
    assert ["mtls"] in modes and ["skip-mtls"] in modes and ["notifications", "authorizations"] in modes
    providers = {p for block in blocks for p in re.findall(r'provider = "([a-z0-9-]+)"', block)}
    assert providers == set(PROVIDER_NAMES)  # every sender has a config example
    assert any("proxy_protocol = true" in block for block in blocks)
    assert any(block.startswith("[forward]") for block in blocks)


def _simple_commands(line: str) -> list[list[str]]:
    """The words of each command of a shell line, split at ``&&``, ``|``, ``;`` and the like, without
    redirections (``> FILE``) and with ``runuser -u USER --`` taken off."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split, lexer.commenters = True, "#"
    commands: list[list[str]] = [[]]
    redirected = False
    for word in lexer:
        if word and set(word) <= set("&|;<>()"):
            redirected = bool(set(word) & set("<>"))
            if not redirected:
                commands.append([])
        elif redirected:
            redirected = False  # the file of ``> FILE``
        else:
            commands[-1].append(word)
    return [words[words.index("--") + 1 :] if "--" in words[:4] else words for words in commands]


def _documented_commands() -> list[tuple[str, list[str]]]:
    """Every ``mtls-receiver ...`` command in a shell block, as arguments (the synopses of
    docs/commands.md, with their ``[--option]`` and ``a|b``, are checked by name below)."""
    return [
        (name, words[1:])
        for name, text in MARKDOWN.items()
        for block in fenced(text, "sh")
        for line in block.replace("\\\n", " ").splitlines()
        for words in _simple_commands(line)
        if words and Path(words[0]).name == "mtls-receiver"
    ]


DOCUMENTED_COMMANDS = _documented_commands()


@pytest.mark.parametrize(
    ("page", "argv"), DOCUMENTED_COMMANDS, ids=[" ".join(argv[:3]) for _, argv in DOCUMENTED_COMMANDS]
)
def test_every_documented_command_parses(
    page: str, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        _parser().parse_args(argv)
    except SystemExit as stopped:
        if stopped.code != 0:  # --version and --help exit 0
            pytest.fail(f"{page}: mtls-receiver {shlex.join(argv)}: {capsys.readouterr().err}")


def _leaf_commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every runnable command of the CLI (``serve``, ``events list``, ``efi webhook set``, ...)."""
    groups = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    if not groups:
        return [prefix]
    return [
        leaf
        for group in groups
        for name, sub in group.choices.items()
        for leaf in _leaf_commands(sub, (*prefix, name))
    ]


def test_the_commands_page_names_every_command() -> None:
    page = PAGES["docs/commands.md"].replace("\\|", "|")  # `efi webhook set\|get\|...` in a table
    for *words, last in _leaf_commands(_parser()):
        pattern = " ".join(["mtls-receiver", *words, rf"(?:\S*\|)*{re.escape(last)}\b"])
        assert re.search(pattern, page), f"docs/commands.md does not name {' '.join([*words, last])}"


def _without_code(text: str) -> str:
    """The text without its fenced blocks: a ``#`` comment there is no heading, a ``](`` no link."""
    return re.sub(r"^ *```.*?^ *```", "", text, flags=re.DOTALL | re.MULTILINE)


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text lower-cased, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading anchors by its text
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The anchors of a Markdown file's headings (not ``#`` lines in code), repeats numbered like GitHub."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", _without_code(text), re.MULTILINE):
        base = slug(heading)
        found.add(f"{base}-{seen[base]}" if base in seen else base)
        seen[base] = seen.get(base, 0) + 1
    return found


LINKS = [
    (name, target)
    for name, text in MARKDOWN.items()
    for target in re.findall(r"\]\(([^)\s]+)\)", _without_code(text))
    if not re.match(r"[a-z]+:", target)
]


@pytest.mark.parametrize(("page", "target"), LINKS, ids=[f"{page}->{target}" for page, target in LINKS])
def test_every_relative_link_resolves(page: str, target: str) -> None:
    path, _, anchor = target.partition("#")
    destination = (ROOT / page).parent / path if path else ROOT / page
    assert destination.exists(), f"{page}: {target}: no such file"
    if anchor and destination.suffix == ".md":
        headings = anchors(destination.read_text(encoding="utf-8"))
        assert anchor in headings, f"{page}: {target}: no such heading"


def test_the_front_page_links_every_docs_page() -> None:
    linked = {target.partition("#")[0] for page, target in LINKS if page == "README.md"}
    assert {name for name in PAGES if name.startswith("docs/")} <= linked
