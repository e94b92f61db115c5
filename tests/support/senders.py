"""Verifier-level helpers for the senders' tests: requests as IncomingRequest, routes loaded from
config text as a user writes it (secrets in files beside it), and the refusal a request gets."""

from __future__ import annotations

from pathlib import Path

import pytest

from mtls_receiver.config import Config, RouteConfig, load_config
from mtls_receiver.errors import ConfigError, Refusal
from mtls_receiver.events import IncomingRequest, Peer, Verdict
from mtls_receiver.providers import verifier_for

from .configs import config_text
from .pki import Pki

__all__ = ["NOW", "PEER", "accepted", "config_error", "flipped", "load_routes", "refused", "request"]

NOW = 1_763_900_000.0
PEER = Peer("203.0.113.10")


def request(
    headers: dict[str, str],
    body: bytes,
    path: str = "/hooks",
    now: float = NOW,
    peer: Peer = PEER,
    method: str = "POST",
) -> IncomingRequest:
    bare, _, query = path.partition("?")
    return IncomingRequest(method, bare, query, headers, body, peer, now=now, raw_target=path)


def accepted(route: RouteConfig, incoming: IncomingRequest) -> Verdict:
    return verifier_for(route.provider)(route, incoming)


def refused(route: RouteConfig, incoming: IncomingRequest) -> Refusal:
    with pytest.raises(Refusal) as caught:
        verifier_for(route.provider)(route, incoming)
    assert "\n" not in caught.value.reason
    return caught.value


def flipped(data: bytes, step: int = 1) -> list[bytes]:
    """Single-byte changes of ``data`` (every ``step``-th byte)."""
    return [data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :] for i in range(0, len(data), step)]


def _write(tmp_path: Path, pki: Pki, routes: str, secrets: dict[str, str]) -> Path:
    for name, value in secrets.items():
        (tmp_path / name).write_text(value, encoding="utf-8")
    path = tmp_path / "config.toml"
    path.write_text(config_text(pki, client_certs="none", routes=routes), encoding="utf-8")
    return path


def load_routes(tmp_path: Path, pki: Pki, routes: str, **secrets: str) -> Config:
    """The config of ``routes`` (``[[routes]]`` tables; a secret ``{ file = "NAME" }`` is the file
    NAME beside the config, written from ``secrets``)."""
    return load_config(_write(tmp_path, pki, routes, secrets))


def config_error(tmp_path: Path, pki: Pki, routes: str, **secrets: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_routes(tmp_path, pki, routes, **secrets)
    return caught.value
