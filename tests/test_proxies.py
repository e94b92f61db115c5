"""The proxy snippets of docs/proxies.md, run as written with the real nginx, Caddy and HAProxy.

Each snippet is cut out of docs/proxies.md and only its ports and file paths are filled in (for Caddy
also the test's certificate instead of one from Let's Encrypt), so the docs and this test cannot drift
apart. The route's allowlist lets in 127.0.0.2 only. The real client connects from 127.0.0.2 and
must get in; a client at 127.0.0.3 forges every client-address header to claim 127.0.0.2 and must be
refused and audited under its own address, whatever the proxy passes on.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from support import Pki, client_context, pix, until
from test_docs import PAGES, _with_local_files

from mtls_receiver.config import Config, load_config
from mtls_receiver.lifecycle import Receiver

SECTION = PAGES["docs/proxies.md"]
BLOCKS: list[tuple[str, str]] = re.findall(r"```(\w*)\n(.*?)```", SECTION, re.S)
REAL, FORGER = "127.0.0.2", "127.0.0.3"  # loopback addresses of the real client and of the forger
HMAC = "a-random-secret-of-some-length"  # what _with_local_files puts in the efi-hmac file
Lines = Sequence[tuple[str, str]]

FORGERIES: list[Lines] = [
    [("X-Forwarded-For", REAL)],
    [("X-Forwarded-For", REAL), ("X-Forwarded-For", REAL)],  # two lines: the first one forged
    [("Forwarded", f"for={REAL}")],
    [("Forwarded", f'for="{REAL}:443";proto=https')],
    [("X-Real-IP", REAL)],
    [("Forwarded", f"for={REAL}"), ("X-Real-IP", REAL), ("X-Forwarded-For", f"{REAL}, {REAL}")],
]


def snippet(language: str, containing: str = "") -> str:
    """The one fenced block of docs/proxies.md in ``language`` that contains ``containing``."""
    (text,) = [text for lang, text in BLOCKS if lang == language and containing in text]
    return text


def fill(text: str, replacements: dict[str, str]) -> str:
    """Replace what a test must change; a docs edit that removes one of them fails here, loudly."""
    for old, new in replacements.items():
        assert old in text, f"the docs/proxies.md snippet no longer contains {old!r}:\n{text}"
        text = text.replace(old, new)
    return text


def receiver_config(block: str, pki: Pki, tmp_path: Path, fills: dict[str, str]) -> Config:
    """The page's listener + route, on a free port, with an allowlist naming the real client only."""
    text = fill(_with_local_files(block, pki, tmp_path), fills)
    text = re.sub(r'^(mode = "[a-z-]+")$', rf'\1\nallow_ips = ["{REAL}/32"]', text, count=1, flags=re.M)
    text += f'\n[store]\npath = "{tmp_path / "inbox.db"}"\n\n[admin]\naddress = "127.0.0.1:0"\n'
    path = tmp_path / "receiver.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def run_proxy(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Start a proxy process and wait (bounded) until it listens; stop it afterwards."""
    started: list[subprocess.Popen[bytes]] = []

    async def start(command: list[str], port: int, env: dict[str, str] | None = None) -> None:
        if shutil.which(command[0]) is None:
            pytest.skip(f"{command[0]} is not installed (.ci/run installs it)")
        log = (tmp_path / f"{command[0]}.log").open("wb")
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
        started.append(process)

        async def listening() -> bool:
            if process.poll() is not None:
                pytest.fail(f"{command[0]} exited: {(tmp_path / f'{command[0]}.log').read_text()}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                return False
            writer.close()
            return True

        await until(listening, 15, lambda: f"{command[0]} does not listen on {port}", interval=0.05)

    yield start
    for process in started:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def post(
    port: int,
    source: str,
    pki: Pki,
    lines: Lines = (),
    target: str = f"/webhook?hmac={HMAC}/pix",
    cert: Path | None = None,
) -> int:
    """One POST from ``source`` with the given header lines (repeated names allowed), the status back."""
    body = json.dumps({"pix": [pix("E" + source.replace(".", ""))]}).encode()
    extra = "".join(f"{name}: {value}\r\n" for name, value in lines)
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(
            "127.0.0.1",
            port,
            ssl=client_context(pki, cert),
            server_hostname="localhost",
            local_addr=(source, 0),
        ),
        10,
    )
    try:
        writer.write(
            f"POST {target} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n{extra}"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        raw = await asyncio.wait_for(reader.read(), 20)
    finally:
        writer.close()
    assert raw.startswith(b"HTTP/1."), raw[:200]
    return int(raw.split()[1])


async def check_addresses(
    receiver: Receiver,
    port: int,
    pki: Pki,
    cert: Path | None = None,
    target: str = f"/webhook?hmac={HMAC}/pix",
) -> None:
    """The real client gets in; no forged header lets the forger in; each is audited as itself."""
    assert await post(port, REAL, pki, cert=cert, target=target) == 200
    for lines in FORGERIES:
        assert await post(port, FORGER, pki, lines, cert=cert, target=target) == 403, lines
    assert (
        await post(
            port,
            REAL,
            pki,
            [("X-Forwarded-For", FORGER), ("Forwarded", f"for={FORGER}")],
            cert=cert,
            target=target,
        )
        == 200
    )
    expected = {(200, REAL): 2, (403, FORGER): len(FORGERIES)}  # repeated refusals are one row with a count
    audits: dict[tuple[int, str], int] = {}

    async def all_audited() -> bool:
        nonlocal audits
        audits = await audited(receiver)
        return audits == expected

    await until(all_audited, 10, lambda: f"audited {audits}, expected {expected}", interval=0.05)


async def audited(receiver: Receiver) -> dict[tuple[int, str], int]:
    """(status, peer) -> how many requests the audit trail counts."""
    counts: dict[tuple[int, str], int] = {}
    for audit in await receiver.store.list_audit():
        counts[audit.status, audit.peer] = counts.get((audit.status, audit.peer), 0) + audit.count
    return counts


async def proxied_receiver(start_receiver: Callable[..., Any], pki: Pki, tmp_path: Path) -> Receiver:
    """The docs' behind-a-proxy listener (client_certs = "none", X-Forwarded-For from 127.0.0.1)."""
    config = receiver_config(
        snippet("toml", "client_address_header"),
        pki,
        tmp_path,
        {'address = "127.0.0.1:8443"': 'address = "127.0.0.1:0"'},
    )
    receiver: Receiver = await start_receiver(config)
    return receiver


async def test_nginx_snippet(
    start_receiver: Callable[..., Any], run_proxy: Callable[..., Any], pki: Pki, tmp_path: Path
) -> None:
    receiver = await proxied_receiver(start_receiver, pki, tmp_path)
    port = free_port()
    server = fill(
        snippet("nginx"),
        {
            "listen 443 ssl;": f"listen 127.0.0.1:{port} ssl;",
            "/etc/letsencrypt/live/pix.example.com.br/fullchain.pem": str(pki.server_cert),
            "/etc/letsencrypt/live/pix.example.com.br/privkey.pem": str(pki.server_key),
            "https://127.0.0.1:8443;": f"https://127.0.0.1:{receiver.port()};",
        },
    )
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"worker_processes 1;\npid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/nginx-error.log;\n"
        f"events {{ worker_connections 64; }}\nhttp {{\naccess_log off;\n{server}}}\n"
    )
    await run_proxy(
        [
            "nginx",
            "-p",
            str(tmp_path),
            "-e",
            str(tmp_path / "nginx-error.log"),
            "-c",
            str(conf),
            "-g",
            "daemon off;",
        ],
        port,
    )
    await check_addresses(receiver, port, pki)


async def test_caddy_snippet(
    start_receiver: Callable[..., Any], run_proxy: Callable[..., Any], pki: Pki, tmp_path: Path
) -> None:
    receiver = await proxied_receiver(start_receiver, pki, tmp_path)
    port = free_port()
    site = fill(
        snippet("", "# Caddyfile"),
        {
            "pix.example.com.br {": f"https://localhost:{port} {{\n    bind 127.0.0.1\n"
            f"    tls {pki.server_cert} {pki.server_key}",
            "https://127.0.0.1:8443 {": f"https://127.0.0.1:{receiver.port()} {{",
        },
    )
    caddyfile = tmp_path / "Caddyfile"
    caddyfile.write_text(
        f"{{\n    admin off\n    auto_https disable_redirects\n"
        f"    storage file_system {tmp_path / 'caddy'}\n}}\n{site}"
    )
    home = str(tmp_path)
    env = {"HOME": home, "XDG_CONFIG_HOME": home, "XDG_DATA_HOME": home, "PATH": "/usr/bin:/bin"}
    await run_proxy(["caddy", "run", "--config", str(caddyfile), "--adapter", "caddyfile"], port, env)
    await check_addresses(receiver, port, pki)


HAPROXY_DEFAULTS = "defaults\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n"


async def test_haproxy_http_snippet(
    start_receiver: Callable[..., Any], run_proxy: Callable[..., Any], pki: Pki, tmp_path: Path
) -> None:
    receiver = await proxied_receiver(start_receiver, pki, tmp_path)
    port = free_port()
    pem = tmp_path / "haproxy.pem"
    pem.write_bytes(pki.server_cert.read_bytes() + pki.server_key.read_bytes())
    frontend = fill(
        snippet("", "# haproxy.cfg, mode http"),
        {
            "bind :443 ": f"bind 127.0.0.1:{port} ",
            "/etc/haproxy/certs/pix.example.com.br.pem": str(pem),
            "127.0.0.1:8443 ": f"127.0.0.1:{receiver.port()} ",
        },
    )
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(HAPROXY_DEFAULTS + frontend)
    await run_proxy(["haproxy", "-db", "-f", str(cfg)], port)
    await check_addresses(receiver, port, pki)


async def test_haproxy_tcp_snippet_believes_no_header(
    start_receiver: Callable[..., Any], run_proxy: Callable[..., Any], pki: Pki, tmp_path: Path
) -> None:
    """mTLS end to end through a TCP balancer: the PROXY header gives the address, request headers nothing."""
    config = receiver_config(
        snippet("toml", "proxy_protocol = true"),
        pki,
        tmp_path,
        {'address = "0.0.0.0:443"': 'address = "127.0.0.1:0"', '["10.0.0.5/32"]': '["127.0.0.1/32"]'},
    )
    receiver: Receiver = await start_receiver(config)
    port = free_port()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(
        HAPROXY_DEFAULTS
        + fill(
            snippet("", "# haproxy.cfg, mode tcp"),
            {
                "bind :443\n": f"bind 127.0.0.1:{port}\n",
                "10.0.0.11:443 ": f"127.0.0.1:{receiver.port()} ",
            },
        )
    )
    await run_proxy(["haproxy", "-db", "-f", str(cfg)], port)
    await check_addresses(receiver, port, pki, cert=pki.client, target="/webhook")
