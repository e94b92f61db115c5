"""Config files as a user writes them."""

from __future__ import annotations

from pathlib import Path

from .pki import Pki

__all__ = ["config_text", "shared_config"]

EFI_ROUTE = '[[routes]]\npath = "/webhook"\nprovider = "efi"\nmode = "mtls"\n'


def config_text(
    pki: Pki,
    *,
    client_certs: str = "required",
    port: int = 0,
    routes: str | None = None,
    store: str = "inbox.db",
    min_tls: str = "1.2",
    host: str = "127.0.0.1",
    listener_extra: str = "",
) -> str:
    """A config as a user writes it; routes default to one Efí mTLS route at /webhook."""
    routes = routes if routes is not None else EFI_ROUTE
    return (
        f'[[listeners]]\nname = "main"\naddress = "{host}:{port}"\n'
        f'cert = "{pki.server_cert}"\nkey = "{pki.server_key}"\n'
        f'client_certs = "{client_certs}"\nclient_ca = "{pki.client_ca}"\nmin_tls = "{min_tls}"\n'
        f"{listener_extra}\n"
        f'{routes}\n[store]\npath = "{store}"\n\n[admin]\naddress = "127.0.0.1:0"\n'
    )


def shared_config(tmp_path: Path, pki: Pki, dsn: str, name: str, extra: str = "") -> Path:
    """``{name}.toml``: the default config with its inbox in the PostgreSQL database ``dsn``
    (instances given the same ``dsn`` share one inbox)."""
    path = tmp_path / f"{name}.toml"
    text = config_text(pki).replace('[store]\npath = "inbox.db"', f'[store]\nurl = "{dsn}"')
    path.write_text(text + extra, encoding="utf-8")
    return path
