"""No tracebacks, ever: every subcommand given missing, unreadable or unwritable files, bad URLs and bad
times ends in one line naming the bad thing, and a non-zero exit.

The cases are made from the parser itself (every runnable command, every argument that is a path, a URL
or a time), so a new command is covered the day it is added; only which paths a command *writes* is
listed here by hand (a missing output is made, not an error).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives.serialization import NoEncryption, load_pem_private_key, pkcs12
from cryptography.x509 import load_pem_x509_certificate
from support import run_cli

from mtls_receiver.cli import _parser, main

#: (command words, dest) of the paths a command writes: a missing one is created, so the bad value is
#: one that cannot be created (under a regular file)
OUTPUTS = {
    (("dev-certs",), "directory"),
    (("serve",), "state_dir"),
    (("efi", "convert-p12"), "target"),
    (("efi", "hmac-url"), "secret_file"),
    (("certs", "fetch-efi"), "directory"),
}
BAD_URL = "localhost:18499/webhook"  # no scheme: the issue's own example
BAD_TIME = "yesterday"
UNREACHABLE = "https://127.0.0.1:9/webhook"  # nothing listens on port 9: never the internet


@dataclass(frozen=True)
class Files:
    """What the good arguments point at: a config, certificates, a .p12, a directory, a garbage file."""

    config: Path
    cert: Path
    p12: Path
    directory: Path
    garbage: Path
    regular: Path  # a regular file: nothing can be created under it, not even by root


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    root = tmp_path_factory.mktemp("cli-errors")
    made = run_cli("dev-certs", str(root / "dev"), "--port", "9")  # nothing listens on 9
    assert made.returncode == 0, made.stderr
    ca = trustme.CA()
    leaf = ca.issue_cert("client.invalid")
    p12 = root / "account.p12"
    p12.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"account",
            load_pem_private_key(leaf.private_key_pem.bytes(), None),  # type: ignore[arg-type]
            load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes()),
            None,
            NoEncryption(),
        )
    )
    (root / "garbage").write_bytes(b"\xff\x00 not a certificate, not TOML, not UTF-8 [[\n")
    (root / "regular").write_text("a file\n")
    return Files(
        config=root / "dev" / "config.toml",
        cert=root / "dev" / "client.pem",
        p12=p12,
        directory=root / "dev",
        garbage=root / "garbage",
        regular=root / "regular",
    )


def leaf_commands(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    groups = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    if not groups:
        yield prefix, parser
    for group in groups:
        for name, sub in group.choices.items():
            yield from leaf_commands(sub, (*prefix, name))


def _kind(action: argparse.Action) -> str | None:
    """What sort of bad value an argument can be given: a path, a URL, a time; None: none of those."""
    if action.type is Path:
        return "path"
    if action.dest in ("since", "inicio", "fim"):
        return "time"
    if action.dest.endswith("url"):
        return "url"
    return None


def _good(action: argparse.Action, files: Files, words: tuple[str, ...]) -> list[str]:
    """A value the command accepts for a required argument (the bad one is varied elsewhere)."""
    kind = _kind(action)
    if kind == "path":
        if (words, action.dest) in OUTPUTS:
            return [str(files.directory / "out" / "made.pem")]
        return [str({"source": files.p12, "cert": files.cert}.get(action.dest, files.config))]
    if kind == "url":
        return [UNREACHABLE]
    if kind == "time":
        return ["2026-01-01T00:00:00-03:00"]
    if action.choices:
        return [str(next(iter(action.choices)))]
    return {"route": ["0"]}.get(action.dest, ["x"])  # send-test's ROUTE: the first route


def _argv(
    words: tuple[str, ...], parser: argparse.ArgumentParser, files: Files, varied: argparse.Action, bad: str
) -> list[str]:
    argv = list(words)
    exclusive = {
        other
        for group in parser._mutually_exclusive_groups
        if varied in group._group_actions
        for other in group._group_actions
        if other is not varied
    }
    required_groups = [group for group in parser._mutually_exclusive_groups if group.required]
    for action in parser._actions:
        optional_positional = not action.option_strings and action.nargs in ("*", "?")
        if action is varied or action in exclusive or optional_positional:
            continue
        first_of_group = any(group._group_actions[0] is action for group in required_groups)
        if action.required or first_of_group and not any(varied in g._group_actions for g in required_groups):
            if action.option_strings:
                argv += [action.option_strings[0], *_good(action, files, words)]
            else:
                argv += _good(action, files, words)
    if words[:2] == ("efi", "webhook"):
        argv += ["--api-url", "https://127.0.0.1:9", "--client-id", "id", "--cert", str(files.cert)]
        if words[2] == "set":
            argv.append("--no-precheck")
    if words == ("events", "replay"):
        argv.append("--dead")  # --since goes with --dead
    argv += [varied.option_strings[0], bad] if varied.option_strings else [bad]
    return argv


def _labels(words: tuple[str, ...], action: argparse.Action) -> tuple[str, ...]:
    """The bad values an argument is tried with."""
    kind = _kind(action)
    if kind == "path" and (words, action.dest) in OUTPUTS:
        return ("unwritable",)
    if kind == "path":
        return ("missing", "directory", "garbage")
    return (kind,) if kind is not None else ()


def _bad(label: str, files: Files) -> str:
    return {
        "url": BAD_URL,
        "time": BAD_TIME,
        "unwritable": str(files.regular / "sub" / "file"),
        "missing": "/nonexistent-dir/missing-file",
        "directory": str(files.directory),
        "garbage": str(files.garbage),
    }[label]


def _cases() -> Iterator[object]:
    for words, parser in leaf_commands(_parser()):
        for action in parser._actions:
            if (words, action.dest) == (("serve",), "config"):
                continue  # as check-config's (and a good config would serve for ever)
            for label in _labels(words, action):
                yield pytest.param(words, action.dest, label, id=f"{' '.join(words)} {action.dest} {label}")


@pytest.mark.parametrize(("words", "dest", "label"), list(_cases()))
def test_bad_input_is_one_line_naming_it(
    words: tuple[str, ...],
    dest: str,
    label: str,
    files: Files,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bad = _bad(label, files)
    parser = dict(leaf_commands(_parser()))[words]
    varied = next(action for action in parser._actions if action.dest == dest)
    monkeypatch.setenv("EFI_CLIENT_SECRET", "secret")
    argv = _argv(words, parser, files, varied, bad)
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse: a usage error
        code = exit_.code  # type: ignore[assignment]
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code not in (0, None), f"{argv}: exit 0\n{err}"
    assert "Traceback" not in err and len(lines) == 1, f"{argv}:\n{err}"
    named = [bad, *varied.option_strings, varied.metavar or "", varied.dest.upper()]
    assert any(name and name in lines[0] for name in named), f"{argv}: does not name {bad!r}:\n{err}"


@pytest.mark.parametrize(
    "argv",
    [
        ["probe", BAD_URL],
        ["efi", "hmac-url", "https://pix.example.com.br/webhook", "--secret-file", "REGULAR/efi-hmac"],
        ["efi", "convert-p12", "/missing.p12", "out.pem"],
        ["events", "replay", "--dead", "--since", BAD_TIME, "--config", "CONFIG"],
    ],
)
def test_the_issues_examples_as_a_user_runs_them(argv: list[str], files: Files) -> None:
    argv = [word.replace("REGULAR", str(files.regular)).replace("CONFIG", str(files.config)) for word in argv]
    result = run_cli(*argv)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_hmac_url_makes_the_secret_files_directory(tmp_path: Path) -> None:
    """The README's path on a fresh server: /etc/mtls-receiver does not exist yet."""
    secret_file = tmp_path / "etc" / "mtls-receiver" / "efi-hmac"
    made = run_cli("efi", "hmac-url", "https://pix.example.com.br/webhook", "--secret-file", str(secret_file))
    assert made.returncode == 0, made.stderr
    assert secret_file.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("pix.example.com.br/webhook", "expected an absolute URL"),
        ("ftp://pix.example.com.br/webhook", "expected an absolute URL"),
        ("https://pix.example.com.br:99999/webhook", "expected an absolute URL"),
        ("https://pix.example.com.br/webhook?hmac=abc", "already has an hmac value"),
    ],
)
def test_hmac_url_validates_its_url(url: str, problem: str) -> None:
    result = run_cli("efi", "hmac-url", url)
    assert result.returncode == 2 and problem in result.stderr and "Traceback" not in result.stderr


def test_hmac_url_puts_ignorar_once_and_last() -> None:
    result = run_cli("efi", "hmac-url", "https://pix.example.com.br/webhook?ignorar=&conta=1")
    assert result.returncode == 0, result.stderr
    (url,) = [line.strip() for line in result.stdout.splitlines() if "hmac=" in line and "https://" in line]
    assert url.count("ignorar") == 1 and url.endswith("&ignorar=") and "?conta=1&hmac=" in url


def test_a_bug_is_one_line_and_exit_70(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The last resort: an exception nobody meant is said in one line (the traceback with debug)."""

    def broken(args: argparse.Namespace) -> int:
        raise KeyError("boom")

    monkeypatch.setattr("mtls_receiver.cli._forward_new_secret", broken)
    assert main(["forward", "new-secret"]) == 70
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error: KeyError" in err and "Traceback" not in err
    assert main(["--log-level", "debug", "forward", "new-secret"]) == 70
    assert "Traceback" in capsys.readouterr().err
