"""Efí's commands: ``efi`` (skip-mTLS URL, .p12, webhooks through Efí's API), ``probe``, ``certs fetch-efi``.

Also what ``serve --dev`` shows: an Efí route and a sample Pix to send it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit

from ...errors import ReceiverError
from ...files import make_directories, write_private
from ...times import parse_time
from ...tls import read_certificates
from ..base import DevRoute, SubCommands
from .api import EFI_API_URLS, RESEND_TYPES, EfiClient, EfiCredentials, p12_to_pem
from .certs import fetch_efi_chain
from .notifications import registration_url
from .options import MIN_HMAC_SECRET_LENGTH, SENDER_IPS
from .probe import client_context, has_hmac, probe, probe_skip_mtls, probe_without_certificate, sample_pix

__all__ = ["DEV", "add_commands"]

EXIT_FAILURE = 1  # the CLI's: a check failed
T = TypeVar("T")


def _try_a_sample_pix(url: str, directory: Path) -> str:
    body = json.dumps(sample_pix(), separators=(",", ":"))
    return (
        f"Send a sample Pix with the Efí-like dev client certificate:\n\n"
        f"  curl --cacert {directory / 'server-ca.pem'} --cert {directory / 'client.pem'} \\\n"
        f"       -H 'Content-Type: application/json' --data '{body}' {url}/pix\n\n"
    )


DEV = DevRoute(
    sender="Efi-like",
    routes='[[routes]]\npath = "/webhook"\nprovider = "efi"\nmode = "mtls"\n',
    try_it=_try_a_sample_pix,
)


def add_commands(commands: SubCommands, groups: Mapping[str, SubCommands]) -> None:
    check_url = commands.add_parser("probe", help="check a receiver URL the way Efí does at registration")
    check_url.add_argument("url")
    check_url.add_argument(
        "--ca", type=Path, help="CA bundle that signed the server certificate (default: public CAs)"
    )
    check_url.add_argument("--cert", type=Path, help="client certificate PEM (with its key, or see --key)")
    check_url.add_argument("--key", type=Path, help="client private key, if not inside --cert")
    check_url.add_argument("--pix-key", help="chave to put in the sample Pix (for routes with pix_keys)")
    check_url.add_argument("--timeout", type=float, default=15.0)
    check_url.set_defaults(func=_probe)

    efi = commands.add_parser("efi", help="Efí helpers").add_subparsers(dest="efi", required=True)
    hmac_url = efi.add_parser("hmac-url", help="make a skip-mTLS secret and print the URL to register")
    hmac_url.add_argument("base_url", metavar="BASE_URL", help="e.g. https://pix.example.com.br/webhook")
    hmac_url.add_argument(
        "--secret-file",
        type=Path,
        help="use the secret in FILE, or write a new one there (mode 0600) if FILE does not exist",
    )
    hmac_url.set_defaults(func=_efi_hmac_url)
    convert = efi.add_parser(
        "convert-p12", help="convert the account's .p12 to PEM (key + certificate), 0600"
    )
    convert.add_argument("source", type=Path, metavar="IN.p12")
    convert.add_argument("target", type=Path, metavar="OUT.pem")
    convert.add_argument(
        "--password-file", type=Path, help="the .p12 password (else $EFI_CERT_PASSWORD, else none)"
    )
    convert.set_defaults(func=_efi_convert_p12)
    _add_webhook_commands(efi)

    fetch = groups["certs"].add_parser("fetch-efi", help="download Efí's webhook CA chain into DIR")
    fetch.add_argument("directory", type=Path, metavar="DIR")
    fetch.add_argument("--sandbox", action="store_true", help="the sandbox (homologação) chain")
    fetch.set_defaults(func=_fetch_efi)


def _add_webhook_commands(efi: SubCommands) -> None:
    account = argparse.ArgumentParser(add_help=False)
    account.add_argument("--sandbox", action="store_true", help="Efí's sandbox (homologação) API")
    account.add_argument("--api-url", help="the API base URL (default: Efí's production or sandbox)")
    account.add_argument(
        "--api-ca", type=Path, help="CA bundle for the API's certificate (default: public CAs)"
    )
    account.add_argument("--client-id", help="OAuth client id (default $EFI_CLIENT_ID)")
    account.add_argument(
        "--client-secret-file", type=Path, help="file with the client secret (default $EFI_CLIENT_SECRET)"
    )
    account.add_argument(
        "--cert", type=Path, help="the account certificate, .p12 or PEM with key (default $EFI_CERT)"
    )
    account.add_argument(
        "--cert-password-file", type=Path, help="the .p12 password (default $EFI_CERT_PASSWORD)"
    )
    webhook = efi.add_parser("webhook", help="register and manage Pix webhooks through Efí's API")
    hooks = webhook.add_subparsers(dest="webhook", required=True)
    register = hooks.add_parser("set", parents=[account], help="PUT /v2/webhook/:chave")
    register.add_argument("chave")
    register.add_argument("webhook_url", metavar="URL")
    register.add_argument("--skip-mtls", action="store_true", help="register with x-skip-mtls-checking: true")
    register.add_argument(
        "--no-precheck", action="store_true", help="do not check the URL before registering"
    )
    register.add_argument(
        "--probe-ca", type=Path, help="CA of the receiver's server certificate, for the precheck"
    )
    register.set_defaults(func=_efi_webhook_set)
    show = hooks.add_parser("get", parents=[account], help="GET /v2/webhook/:chave")
    show.add_argument("chave")
    show.set_defaults(func=_efi_webhook_get)
    listing = hooks.add_parser("list", parents=[account], help="GET /v2/webhook (every page)")
    listing.add_argument(
        "--inicio",
        required=True,
        type=_api_time,
        help="ISO 8601, e.g. 2026-01-01T00:00:00-03:00 (no offset: UTC)",
    )
    listing.add_argument("--fim", required=True, type=_api_time)
    listing.set_defaults(func=_efi_webhook_list)
    remove = hooks.add_parser("delete", parents=[account], help="DELETE /v2/webhook/:chave")
    remove.add_argument("chave")
    remove.set_defaults(func=_efi_webhook_delete)
    resend = hooks.add_parser("resend", parents=[account], help="POST /v2/gn/webhook/reenviar")
    resend.add_argument("--tipo", required=True, choices=RESEND_TYPES)
    resend.add_argument("e2eids", nargs="+", metavar="E2EID")
    resend.set_defaults(func=_efi_webhook_resend)


def _api_time(text: str) -> str:
    """A time for Efí's API (RFC 3339 in UTC), read as the CLI reads every time (no offset: UTC)."""
    try:
        return f"{parse_time(text):%Y-%m-%dT%H:%M:%SZ}"
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def checked_url(url: str, what: str = "URL") -> str:
    """``url`` if it is an absolute https:// (or http://) URL with a host and a valid port."""
    parts = urlsplit(url)
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if parts.scheme not in ("https", "http") or not parts.hostname or not port_ok:
        raise ReceiverError(
            f"{what} {url[:200]!r}: expected an absolute URL like https://pix.example.com.br/webhook"
        )
    return url


def _readable(path: Path | None, what: str) -> Path | None:
    """``path`` if it names a readable file: a missing one is said in one line, before any work."""
    if path is not None and not path.is_file():
        raise ReceiverError(f"{what} {path}: {'is a directory' if path.is_dir() else 'no such file'}")
    return path


def _probe(args: argparse.Namespace) -> int:
    url = checked_url(args.url)
    ca, cert = _readable(args.ca, "--ca"), _readable(args.cert, "--cert")
    key = _readable(args.key, "--key")
    if key is not None and cert is None:
        raise ReceiverError(f"--key {key} goes with --cert (the certificate it is the key of)")
    if has_hmac(url):  # a skip-mTLS URL: the secret is checked, not the certificate
        results = asyncio.run(probe_skip_mtls(url, ca, cert, key, args.timeout))
    else:
        results = asyncio.run(probe(url, ca, cert, key, args.pix_key, args.timeout))
    for result in results:
        print(result.line())
    return EXIT_FAILURE if any(result.ok is False for result in results) else 0


def _base_url(url: str) -> str:
    """The URL to put the secret on: checked, without an ``ignorar`` (added back last, once).

    A URL that already carries an ``hmac`` is refused: two would leave which one counts to Efí.
    """
    parts = urlsplit(checked_url(url, "BASE_URL"))
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(name == "hmac" for name, _ in query):
        raise ReceiverError(f"BASE_URL already has an hmac value; give the URL without it ({parts.path})")
    if parts.fragment:
        raise ReceiverError("BASE_URL has a #fragment; Efí would not send it")
    kept = [(name, value) for name, value in query if name != "ignorar"]
    return parts._replace(query=urlencode(kept)).geturl()


def _hmac_secret(file: Path | None) -> str:
    """The secret in ``file``, or a new one (written there, 0600, its directory made if missing)."""
    if file is not None and file.exists():
        try:
            secret = file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            problem = getattr(exc, "strerror", None) or exc
            raise ReceiverError(f"--secret-file {file}: cannot read: {problem}") from None
        if len(secret) < MIN_HMAC_SECRET_LENGTH:
            raise ReceiverError(f"{file}: the secret is shorter than {MIN_HMAC_SECRET_LENGTH} characters")
        return secret
    secret = secrets.token_urlsafe(32)
    if file is not None:
        try:
            make_directories(file.parent)
            write_private(file, secret.encode() + b"\n")
        except OSError as exc:
            raise ReceiverError(f"--secret-file {file}: cannot write: {exc.strerror or exc}") from None
    return secret


def _efi_hmac_url(args: argparse.Namespace) -> int:
    file: Path | None = args.secret_file
    base_url = _base_url(args.base_url)
    secret = _hmac_secret(file)
    reference = f'{{ file = "{file.resolve()}" }}' if file else '{ env = "EFI_WEBHOOK_HMAC" }'
    path = urlsplit(base_url).path.rstrip("/") or "/"
    print(
        f"Register this URL with Efí (PUT /v2/webhook/:chave, header x-skip-mtls-checking: true):\n\n"
        f"  {registration_url(base_url, secret)}\n"
    )
    if file is None:
        print(f"Keep the secret out of the config file, e.g. export EFI_WEBHOOK_HMAC='{secret}'\n")
    print(
        'Add to the config (on a listener with client_certs = "optional",'
        ' or "none" behind a proxy):\n\n'
        f'[[routes]]\npath = "{path}"\nprovider = "efi"\nmode = "skip-mtls"\n'
        f"allow_ips = {json.dumps(list(SENDER_IPS))}   # Efí's sender address\nhmac_secrets = [{reference}]"
    )
    return 0


def _efi_convert_p12(args: argparse.Namespace) -> int:
    password = _secret_from(args.password_file, "EFI_CERT_PASSWORD", required=False)
    source = _readable(args.source, "IN.p12")
    assert source is not None
    pem = p12_to_pem(source.read_bytes(), password)
    try:
        write_private(args.target, pem)
    except OSError as exc:
        raise ReceiverError(f"OUT.pem {args.target}: cannot write: {exc.strerror or exc}") from None
    print(f"wrote {args.target} (mode 0600): private key, certificate and chain")
    return 0


def _secret_from(file: Path | None, variable: str, required: bool = True) -> str | None:
    """A secret from a file or the environment: never from the command line itself."""
    if file is not None:
        try:
            return file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            problem = getattr(exc, "strerror", None) or exc
            raise ReceiverError(f"{file}: cannot read the secret: {problem}") from None
    value = os.environ.get(variable)
    if value is None and required:
        raise ReceiverError(f"set {variable} or pass the matching --...-file option")
    return value


def _efi_client(args: argparse.Namespace) -> EfiClient:
    if args.api_url is not None:
        checked_url(args.api_url, "--api-url")
    if args.api_ca is not None:
        client_context(_readable(args.api_ca, "--api-ca"))  # a bad bundle said here, naming the file
    certificate = args.cert or (Path(os.environ["EFI_CERT"]) if os.environ.get("EFI_CERT") else None)
    _readable(certificate, "the account certificate")
    client_id = args.client_id or os.environ.get("EFI_CLIENT_ID")
    if certificate is None or not client_id:
        raise ReceiverError(
            "give the account certificate (--cert or $EFI_CERT) and --client-id (or $EFI_CLIENT_ID)"
        )
    credentials = EfiCredentials(
        client_id=client_id,
        client_secret=_secret_from(args.client_secret_file, "EFI_CLIENT_SECRET") or "",
        certificate=certificate,
        certificate_password=_secret_from(args.cert_password_file, "EFI_CERT_PASSWORD", required=False),
    )
    base = args.api_url or EFI_API_URLS["sandbox" if args.sandbox else "prod"]
    return EfiClient(base, credentials, ca=args.api_ca)


def _run_efi(args: argparse.Namespace, action: Callable[[EfiClient], Awaitable[T]]) -> T:
    async def run() -> T:
        async with _efi_client(args) as client:
            return await action(client)

    return asyncio.run(run())


def _efi_webhook_set(args: argparse.Namespace) -> int:
    checked_url(args.webhook_url)
    if args.probe_ca is not None:
        client_context(_readable(args.probe_ca, "--probe-ca"))
    if not args.no_precheck and not _precheck(args):
        return EXIT_FAILURE
    answer = _run_efi(args, lambda efi: efi.set_webhook(args.chave, args.webhook_url, args.skip_mtls))
    print(f"registered: {json.dumps(answer, ensure_ascii=False)}")
    return 0


def _precheck(args: argparse.Namespace) -> bool:
    """What Efí will see at registration, checked from here first."""
    url = checked_url(args.webhook_url)
    if args.skip_mtls:
        if "hmac=" not in url:
            print(
                "WARNING: a skip-mTLS URL should carry a secret (…?hmac=SECRET&ignorar=):"
                " mtls-receiver efi hmac-url"
            )
        return True
    result = asyncio.run(probe_without_certificate(url, args.probe_ca))
    print(f"precheck: {result.line()}")
    if result.ok:
        print(
            "precheck: Efí's first request (without a certificate) will be refused, as it must be;"
            " its test notification then needs the base path to answer 2xx"
        )
        return True
    if result.detail.startswith("cannot connect"):
        print(
            "precheck: the URL is not reachable from here;"
            " registering anyway (Efí connects from the internet)"
        )
        return True
    print(
        "precheck: Efí will refuse this registration"
        ' ("A autenticação de TLS mútuo não está configurada na URL'
        ' informada" or a TLS failure). Fix the server, or register with --skip-mtls and an hmac URL;'
        " --no-precheck registers anyway."
    )
    return False


def _efi_webhook_get(args: argparse.Namespace) -> int:
    print(json.dumps(_run_efi(args, lambda efi: efi.get_webhook(args.chave)), ensure_ascii=False))
    return 0


def _efi_webhook_list(args: argparse.Namespace) -> int:
    async def collect(efi: EfiClient) -> list[dict[str, object]]:
        return [webhook async for webhook in efi.list_webhooks(args.inicio, args.fim)]

    for webhook in _run_efi(args, collect):
        print(json.dumps(webhook, ensure_ascii=False))
    return 0


def _efi_webhook_delete(args: argparse.Namespace) -> int:
    _run_efi(args, lambda efi: efi.delete_webhook(args.chave))
    print(f"deleted the webhook of {args.chave}")
    return 0


def _efi_webhook_resend(args: argparse.Namespace) -> int:
    answer = _run_efi(args, lambda efi: efi.resend(args.tipo, args.e2eids))
    print(f"resend requested: {json.dumps(answer, ensure_ascii=False) if answer else 'accepted'}")
    return 0


def _fetch_efi(args: argparse.Namespace) -> int:
    try:  # before the download: a DIR that cannot be made is said at once
        make_directories(args.directory)
    except OSError as exc:
        raise ReceiverError(f"DIR {args.directory}: cannot create it: {exc.strerror or exc}") from None
    target = fetch_efi_chain(args.directory, sandbox=args.sandbox)
    print(f"wrote {target}")
    for cert in read_certificates(target):
        print(f"  {cert.line()}")
    print(f'point a listener at it: client_ca = "{target}"')
    return 0
