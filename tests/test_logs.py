"""Logs cannot be forged: request data is escaped in text lines and written as real fields in JSON."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme
from support import REFUSED, Pki, Serve, client_context, config_text, https_post, pix

from mtls_receiver.config import Config, load_config
from mtls_receiver.lifecycle import Receiver
from mtls_receiver.logs import JsonFormatter, TextFormatter, escape, log_fields, render_fields

#: a path that, written raw, ends the line and forges one of its own (CR, LF) and colours the terminal (ESC)
FORGED = (
    "%0d%0a2026-01-01%2000:00:00,000%20INFO%20accepted%20route=/webhook%20status=200%20%1b[2J%1b[31mowned"
)
SENT = urllib.parse.unquote(FORGED)


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("/webhook/pix", "/webhook/pix"),
        ("São Paulo", "São Paulo"),
        ("a\nb\rc", "a\\x0ab\\x0dc"),
        ("\x1b[31m", "\\x1b[31m"),
        ("\x7f\x9b", "\\x7f\\x9b"),  # DEL; U+009B is a terminal's CSI
        ("\u202eevil\u2028", "\\u202eevil\\u2028"),  # bidi override, line separator
        ('say "hi" \\x0a', 'say \\"hi\\" \\\\x0a'),  # a literal "\x0a" cannot pass for an escaped LF
    ],
)
def test_escape(raw: str, shown: str) -> None:
    assert escape(raw) == shown


def test_fields_are_quoted_when_they_hold_spaces_or_escapes() -> None:
    assert render_fields(
        {
            "route": "/webhook",
            "status": 404,
            "reason": "not found",
            "path": "/a\nb",
            "subject": None,
            "empty": "",
        }
    ) == ('route=/webhook status=404 reason="not found" path="/a\\x0ab" subject=- empty=""')


def _record(message: object, exc_info: bool = False) -> logging.LogRecord:
    logger = logging.getLogger("mtls_receiver.test")
    try:
        raise ValueError("line one\nINFO forged line")
    except ValueError:
        return logger.makeRecord(
            logger.name, logging.ERROR, __file__, 1, message, (), exc_info and __import__("sys").exc_info()
        )


def test_text_format_escapes_any_message_and_indents_tracebacks() -> None:
    formatted = TextFormatter().format(_record("stop: a\nforged \x1b[2J line", exc_info=True))
    first, *rest = formatted.split("\n")
    assert first.endswith("ERROR stop: a\\x0aforged \\x1b[2J line")
    assert rest and all(line.startswith("\t") for line in rest)  # no continuation passes for a record
    assert "\x1b" not in formatted


def test_json_format_escapes_controls_beyond_ascii() -> None:
    line = JsonFormatter().format(_record("a\x9b\u2028b"))
    assert "\x9b" not in line and "\u2028" not in line
    assert json.loads(line)["message"] == "a\x9b\u2028b"


# --- a real receiver ----------------------------------------------------------------------------


def _send_forged(port: int, pki: Pki) -> list[int]:
    """Refused requests whose paths hold CR, LF and ESC, and one accepted Pix."""
    context = client_context(pki, pki.client)

    async def send() -> list[int]:
        answers = [
            await https_post(port, path, {"pix": [pix("E1")]}, context)
            for path in (f"/{FORGED}", f"/webhook/pix{FORGED}", "/webhook/pix")
        ]
        with pytest.raises(REFUSED):  # no certificate: refused in the handshake
            await https_post(port, "/webhook/pix", {}, client_context(pki))
        return [answer.status for answer in answers]

    return asyncio.run(send())


@pytest.fixture
def config_file(tmp_path: Path, pki: Pki) -> Path:
    path = tmp_path / "config.toml"
    path.write_text("workers = 1\n" + config_text(pki), encoding="utf-8")
    return path


def _run(serve: Serve, config: Path, pki: Pki, *options: str) -> list[str]:
    server, port = serve(config, options=options)
    try:
        statuses = _send_forged(port, pki)
        assert server.terminate() == 0
    finally:
        server.kill()
    assert statuses == [404, 404, 200]
    return "".join(server.output).split("\n")


def test_a_forged_path_is_one_escaped_text_line(serve: Serve, config_file: Path, pki: Pki) -> None:
    lines = _run(serve, config_file, pki)
    text = "\n".join(lines)
    assert "\r" not in text and "\x1b" not in text
    refused = [line for line in lines if line.split(" ")[2:4] == ["WARNING", "refused"]]
    assert len(refused) == 3, text  # two requests and one handshake: one line each, nothing forged
    assert not any(line.startswith("2026-01-01") or line.startswith("[") for line in lines)
    assert 'path="/\\x0d\\x0a2026-01-01 00:00:00,000 INFO accepted route=/webhook status=200' in text
    assert ' status=404 reason="not found" peer=127.0.0.1 subject="' in text
    assert 'step="TLS handshake" peer=127.0.0.1 reason=PEER_DID_NOT_RETURN_A_CERTIFICATE' in text
    accepted = [line for line in lines if line.split(" ")[2:4] == ["INFO", "accepted"]]
    assert len(accepted) == 1 and "method=POST path=/webhook/pix status=200 kind=pix stored=1" in accepted[0]


def test_json_logs_are_fields(serve: Serve, config_file: Path, pki: Pki) -> None:
    lines = _run(serve, config_file, pki, "--log-format", "json")
    records = [json.loads(line) for line in lines if line.strip()]
    refused = [r for r in records if r["message"] == "refused" and "route" in r]
    assert [r["path"] for r in refused] == [f"/{SENT}", f"/webhook/pix{SENT}"]
    first = refused[0]
    assert {
        key: first[key] for key in ("level", "listener", "route", "method", "status", "reason", "peer")
    } == {
        "level": "warning",
        "listener": "main",
        "route": "-",
        "method": "POST",
        "status": 404,
        "reason": "not found",
        "peer": "127.0.0.1",
    }
    assert "efi-like client" in first["subject"] and len(first["sha256"]) == 64
    (accepted,) = [r for r in records if r["message"] == "accepted"]
    assert (accepted["route"], accepted["kind"], accepted["stored"], accepted["duplicates"]) == (
        "/webhook",
        "pix",
        1,
        0,
    )
    (handshake,) = [r for r in records if r.get("step") == "TLS handshake"]
    assert handshake["reason"] == "PEER_DID_NOT_RETURN_A_CERTIFICATE" and handshake["message"] == "refused"


# --- a certificate subject, in one process --------------------------------------


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """The receiver's log as ``serve`` writes it (text format)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter())
    logger = logging.getLogger("mtls_receiver")
    logger.addHandler(handler)
    level, logger.level = logger.level, logging.INFO
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(level)


async def test_certificate_subject_is_escaped(
    tmp_path: Path,
    pki: Pki,
    captured: io.StringIO,
    start_receiver: Callable[[Config], asyncio.Future[Receiver]],
) -> None:
    ca = trustme.CA(organization_name="Evil\nCA")
    client = ca.issue_cert(common_name="x\r\n2026-01-01 INFO accepted \x1b[31m")
    (tmp_path / "evil-ca.pem").write_bytes(ca.cert_pem.bytes())
    (tmp_path / "evil.pem").write_bytes(client.private_key_and_cert_chain_pem.bytes())
    text = config_text(pki, client_certs="optional")
    (tmp_path / "config.toml").write_text(text.replace(str(pki.client_ca), str(tmp_path / "evil-ca.pem")))
    receiver = await start_receiver(load_config(tmp_path / "config.toml"))
    captured.seek(0)
    captured.truncate()  # the start-up lines
    context = client_context(pki, tmp_path / "evil.pem")
    answer = await https_post(receiver.port(), "/webhook/pix", b"{", context)
    assert answer.status == 400
    log = captured.getvalue()
    assert log.count("\n") == 1 and "\r" not in log and "\x1b" not in log, log
    assert 'subject="CN=x\\x0d\\x0a2026-01-01 INFO accepted \\x1b[31m' in log
    assert " peer=127.0.0.1 " in log and "sha256=" in log


def test_log_fields_skips_work_when_the_level_is_off(captured: io.StringIO) -> None:
    log_fields(logging.getLogger("mtls_receiver"), logging.DEBUG, "never", {"path": "/x"})
    assert captured.getvalue() == ""
