"""The TLS policy, in one place: server contexts, client identities, certificate summaries."""

from __future__ import annotations

import functools
import hashlib
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from .config import ListenerConfig
from .errors import ConfigError
from .events import ClientIdentity

__all__ = [
    "CertSummary",
    "ClientTrust",
    "client_identity",
    "create_ssl_context",
    "read_certificates",
]

_VERIFY_MODES = {
    "required": ssl.CERT_REQUIRED,
    "optional": ssl.CERT_OPTIONAL,
    "none": ssl.CERT_NONE,
}
_MIN_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
#: TLS 1.2 suites: Mozilla's "intermediate" profile without DHE (no dhparams are configured): forward
#: secrecy and AEAD only, no CBC (LUCKY13 and its kin). The PSPs' TLS 1.2 clients use the
#: ECDHE-RSA-AES-GCM ones. TLS 1.3 suites are all AEAD and are left at OpenSSL's defaults.
TLS12_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)
MAX_CHAIN_DEPTH = 8


def create_ssl_context(
    listener: ListenerConfig, config_file: str = "<config>", key: str = "listeners[?]"
) -> ssl.SSLContext:
    """Build the server context for one listener.

    OpenSSL's default verify depth (100) already covers a PSP's root +
    intermediate + leaf chain. Session tickets are off so a resumed session
    can never skip client-certificate verification; with TLS 1.3 that also
    means issuing none (``num_tickets = 0``): OpenSSL would otherwise make and
    cache two sessions per handshake that no client may use, which costs more
    CPU per fresh connection than everything the receiver does with the request.
    TLS 1.2 offers only :data:`TLS12_CIPHERS`.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _MIN_VERSIONS[listener.min_tls]
    ctx.options |= ssl.OP_NO_TICKET | ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.num_tickets = 0
    ctx.set_ciphers(TLS12_CIPHERS)
    try:
        read_certificates(listener.cert)
    except (ValueError, OSError) as exc:
        raise ConfigError(
            config_file, f"{key}.cert", f"{listener.cert}: not a PEM certificate chain ({exc})"
        ) from None
    try:
        ctx.load_cert_chain(listener.cert, listener.key, password=listener.key_password)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            config_file, f"{key}.key", f"cannot load {listener.key} as the key of {listener.cert}: {exc}"
        ) from None
    ctx.verify_mode = _VERIFY_MODES[listener.client_certs]
    if listener.client_ca is not None and listener.client_certs != "none":
        try:
            ctx.load_verify_locations(cafile=listener.client_ca)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(config_file, f"{key}.client_ca", f"cannot load CA bundle: {exc}") from None
    return ctx


@functools.lru_cache(maxsize=256)
def client_identity(der: bytes) -> ClientIdentity:
    """Subject, issuer and fingerprint of a DER certificate (cached: senders reuse one cert)."""
    cert = x509.load_der_x509_certificate(der)
    return ClientIdentity(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        fingerprint=hashlib.sha256(der).hexdigest(),
    )


@dataclass(frozen=True)
class CertSummary:
    subject: str
    issuer: str
    not_before: datetime
    not_after: datetime

    def line(self) -> str:
        valid = f"{self.not_before:%Y-%m-%d} to {self.not_after:%Y-%m-%d}"
        return f"{self.subject} (issuer {self.issuer}; valid {valid})"


def read_certificates(path: Path) -> list[CertSummary]:
    """Every certificate in a PEM file, for summaries (check-config, a provider's certificate commands)."""
    certs = x509.load_pem_x509_certificates(path.read_bytes())
    return [
        CertSummary(
            subject=cert.subject.rfc4514_string(),
            issuer=cert.issuer.rfc4514_string(),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
        )
        for cert in certs
    ]


class ClientTrust:
    """The current client-CA trust, to re-check certificates of connections made before a reload.

    A connection keeps the context it was handshaken with; after a reload removes a CA,
    requests on such a connection are checked again here, so the old trust never lingers.
    """

    def __init__(self, listener: ListenerConfig) -> None:
        self._anchors: list[x509.Certificate] = []
        if listener.client_ca is not None and listener.client_certs != "none":
            self._anchors = x509.load_pem_x509_certificates(listener.client_ca.read_bytes())
        self._verdicts: dict[bytes, bool] = {}

    def trusts(self, der: bytes) -> bool:
        if der not in self._verdicts:
            self._verdicts[der] = self._verify(der)
        return self._verdicts[der]

    def _verify(self, der: bytes) -> bool:
        """Leaf dates, then signatures up through the bundle to a self-signed anchor in it."""
        now = datetime.now(UTC)
        cert = x509.load_der_x509_certificate(der)
        for _ in range(MAX_CHAIN_DEPTH):
            if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
                return False
            issuer = next(
                (ca for ca in self._anchors if ca.subject == cert.issuer and _signed_by(cert, ca)), None
            )
            if issuer is None:
                return False
            if issuer.subject == issuer.issuer:
                return (
                    _signed_by(issuer, issuer)
                    and issuer.not_valid_before_utc <= now <= issuer.not_valid_after_utc
                )
            cert = issuer
        return False


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
