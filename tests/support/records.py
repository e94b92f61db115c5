"""Rows as the store takes them, for tests that drive a store directly."""

from __future__ import annotations

from mtls_receiver.events import AuditRecord

__all__ = ["audit"]


def audit(status: int = 200) -> AuditRecord:
    """The audit row of one request to the Efí route."""
    return AuditRecord(
        "2026-11-23T00:00:00.000+00:00",
        "main",
        "/webhook",
        "POST",
        "/webhook/pix",
        "127.0.0.1",
        status,
        "test",
    )
