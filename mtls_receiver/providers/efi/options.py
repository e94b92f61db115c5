"""An Efí route's settings: its Pix keys, the secrets of its skip-mTLS URL, Efí's sender address."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...addresses import Network, parse_networks
from ...config.reader import Reader, Table
from ...config.schema import ProviderOptions
from ..bacen_pix import require_certificate_listener
from ..base import RouteContext

__all__ = ["KEYS", "MIN_HMAC_SECRET_LENGTH", "MODES", "SENDER_IPS", "EfiOptions", "parse_options"]

MODES = ("mtls", "skip-mtls")
KEYS = frozenset({"pix_keys", "hmac_secrets"})
SENDER_IPS = ("34.193.116.226/32",)  # Efí staff: deliveries come only from this address
MIN_HMAC_SECRET_LENGTH = 16


@dataclass(frozen=True)
class EfiOptions(ProviderOptions):
    pix_keys: tuple[str, ...] = ()  # the only chaves accepted in Pix notifications; empty: any
    hmac_secrets: tuple[str, ...] = field(default=(), repr=False)  # the URL's hmac value (several: rotation)

    def sender_ips(self, mode: str) -> tuple[Network, ...]:
        """Without a certificate (skip-mtls), only Efí's address; with one, the certificate says who."""
        return parse_networks(SENDER_IPS) if mode == "skip-mtls" else ()

    def describe(self) -> str:
        return f"pix_keys: {', '.join(self.pix_keys)}" if self.pix_keys else ""


def parse_options(reader: Reader, raw: Table, route: RouteContext) -> EfiOptions:
    key = route.key
    require_certificate_listener(reader, route, "efi")
    secrets = reader.secret_list(raw, key, "hmac_secrets", check=_too_short)
    if route.mode == "skip-mtls" and not secrets:
        reader.fail(
            f"{key}.hmac_secrets",
            "skip-mtls needs at least one secret (make one: mtls-receiver efi hmac-url URL)",
        )
    return EfiOptions(pix_keys=reader.string_list(raw, key, "pix_keys"), hmac_secrets=secrets)


def _too_short(secret: str) -> str | None:
    if len(secret) < MIN_HMAC_SECRET_LENGTH:
        return f"too short: use at least {MIN_HMAC_SECRET_LENGTH} random characters"
    return None
