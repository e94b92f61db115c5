"""Client-certificate pinning: which of the certificates a listener's CA verified a route accepts.

A PSP's CA proves the sender is that PSP, not whose account the notification is for, nor which of the
PSP's (or, with a shared CA bundle, which PSP's) certificates it was: any customer of the same PSP can
register your URL as their webhook (bacen/pix-api#239, #313). A route's ``client_subjects`` (exact
RFC 4514 subjects), ``client_cn`` (CN patterns) and ``client_fingerprints`` (SHA-256) narrow it down.
Subjects and CN patterns are one kind (any may match), fingerprints another; each kind a route gives
must match. The check is a pure function, run for every route before its provider's verifier.
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.x509.oid import NameOID

from .errors import Refusal

if TYPE_CHECKING:
    from .config.schema import ClientPin
    from .events import ClientIdentity

__all__ = [
    "check_client_pin",
    "cn_pattern_problem",
    "common_names",
    "normalize_fingerprint",
    "subject_problem",
]

_SHOWN = 120  # characters of a presented subject a refusal repeats
_HEX64 = re.compile(r"[0-9a-f]{64}")


def check_client_pin(pin: ClientPin, identity: ClientIdentity | None) -> None:
    """Refusal(403) unless the verified client certificate matches the route's pin."""
    if identity is None:
        raise Refusal(
            403, "certificate: this route accepts only pinned client certificates, none was presented"
        )
    shown = _shown(identity.subject)
    if (pin.subjects or pin.cn_patterns) and not _name_matches(pin, identity.subject):
        raise Refusal(403, f"certificate: subject {shown} is not pinned on this route")
    if pin.fingerprints and identity.fingerprint not in pin.fingerprints:
        raise Refusal(
            403,
            f"certificate: subject {shown} (sha256 {identity.fingerprint[:16]}...) is not a pinned"
            " fingerprint on this route",
        )


def _shown(subject: str) -> str:
    """The presented subject as a refusal names it: escaped, truncated (it is the sender's to choose)."""
    return repr(subject[:_SHOWN]) + ("..." if len(subject) > _SHOWN else "")


def _name_matches(pin: ClientPin, subject: str) -> bool:
    if subject in pin.subjects:
        return True
    names = common_names(subject)
    if len(names) != 1:  # none, or several: which one the sender meant is a guess (fail closed)
        return False
    return any(_cn_regex(pattern).fullmatch(names[0]) for pattern in pin.cn_patterns)


@functools.lru_cache(maxsize=256)
def common_names(subject: str) -> tuple[str, ...]:
    """The CN values of an RFC 4514 subject (as ``ClientIdentity.subject`` renders it)."""
    try:
        name = x509.Name.from_rfc4514_string(subject)
    except ValueError:
        return ()
    return tuple(str(attribute.value) for attribute in name.get_attributes_for_oid(NameOID.COMMON_NAME))


@functools.lru_cache(maxsize=64)
def _cn_regex(pattern: str) -> re.Pattern[str]:
    """``*`` is one or more characters other than a dot (one DNS label, or part of one); ASCII letters
    case-insensitive, others exact: Unicode case folding would let the Kelvin sign pass for ``k``
    (``*.ban\u212a.com.br`` for ``*.bank.com.br``)."""
    return re.compile("[^.]+".join(re.escape(part) for part in pattern.split("*")), re.IGNORECASE | re.ASCII)


def subject_problem(subject: str) -> str | None:
    """Why a configured subject could never equal a rendered one, or None when it can."""
    try:
        canonical = x509.Name.from_rfc4514_string(subject).rfc4514_string()
    except ValueError:
        return (
            f"{subject[:_SHOWN]!r} is not an RFC 4514 subject: write it as check-config, events list"
            " and refusals show it, e.g. 'CN=webhook.example.com.br,O=Example S.A.,C=BR'"
        )
    if canonical != subject:
        return f"write it as the certificate's subject is shown, {canonical!r} (compared exactly)"
    return None


def cn_pattern_problem(pattern: str) -> str | None:
    """A pattern must name something: at least one dot-separated part without ``*``."""
    if not pattern or pattern != pattern.strip():
        return f"{pattern!r}: a CN pattern is a CN like 'webhook.example.com.br' or '*.example.com.br'"
    if "**" in pattern or all("*" in label for label in pattern.split(".")):
        return f"{pattern!r} pins nothing: give at least one part without '*', e.g. '*.example.com.br'"
    return None


def normalize_fingerprint(text: str) -> str | None:
    """A SHA-256 fingerprint as lowercase hex without colons, or None if ``text`` is not one."""
    compact = text.strip().replace(":", "").lower()
    return compact if _HEX64.fullmatch(compact) else None
