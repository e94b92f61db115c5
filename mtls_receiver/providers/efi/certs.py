"""Download Efí's webhook client-CA chain onto the server (never shipped with the package)."""

from __future__ import annotations

import ssl
import urllib.request
from pathlib import Path

import certifi
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ...errors import ReceiverError

__all__ = ["EFI_CHAIN_URLS", "fetch_efi_chain"]

EFI_CHAIN_URLS = {
    "prod": "https://certificados.efipay.com.br/webhooks/certificate-chain-prod.crt",
    "sandbox": "https://certificados.efipay.com.br/webhooks/certificate-chain-homolog.crt",
}


def fetch_efi_chain(
    directory: Path,
    sandbox: bool = False,
    url: str | None = None,
    context: ssl.SSLContext | None = None,
    timeout: float = 30.0,
) -> Path:
    """Fetch the chain, check it parses as PEM certificates, write ``efi-chain-<env>.crt``."""
    environment = "sandbox" if sandbox else "prod"
    source = url or EFI_CHAIN_URLS[environment]
    context = context or ssl.create_default_context(cafile=certifi.where())
    try:
        with urllib.request.urlopen(source, timeout=timeout, context=context) as response:  # noqa: S310
            data = response.read(1_000_000)
    except OSError as exc:
        raise ReceiverError(f"cannot download {source}: {exc}") from None
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ReceiverError(f"{source} did not return PEM certificates") from None
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"efi-chain-{environment}.crt"
    target.write_bytes(b"".join(cert.public_bytes(Encoding.PEM) for cert in certificates))
    return target
