"""The ``mtls-receiver`` command line."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import os
import resource
import secrets
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from . import __version__
from .config import MIN_HMAC_SECRET_LENGTH, Config, load_config
from .devcerts import dev_config_text, make_dev_certs
from .efi_api import EFI_API_URLS, RESEND_TYPES, EfiClient, EfiCredentials, p12_to_pem
from .efi_certs import fetch_efi_chain
from .errors import ReceiverError
from .files import write_private
from .forwarder import resolve_handlers
from .logs import JsonFormatter, TextFormatter, client_fields, escape, json_line, render_fields, render_value
from .probe import probe, probe_without_certificate, sample_pix
from .providers.efi import registration_url
from .lifecycle import Receiver, expiry_warnings, serve_forever
from .events import AuditRecord, StoredEvent
from .store import Access, Store, open_store
from .tls import create_ssl_context, read_certificates
from .workers import serve_worker, supervise, worker_spec

__all__ = ["main"]

EXIT_FAILURE, EXIT_CONFIG = 1, 2
T = TypeVar("T")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # workers are started with the same arguments
    handler = logging.StreamHandler(sys.stderr)  # stderr: journald takes it as it is
    handler.setFormatter(JsonFormatter() if args.log_format == "json" else TextFormatter())
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), handlers=[handler], force=True)
    try:
        return int(args.func(args) or 0)
    except ReceiverError as exc:
        print(f"mtls-receiver: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mtls-receiver", description="Webhook receiver for Brazilian PSPs (Efí mTLS).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--log-format", default="text", choices=["text", "json"],
                        help="text (default) or one JSON object per line")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the receiver")
    source = serve.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, help="TOML configuration file")
    source.add_argument("--dev", action="store_true", help="embedded default: dev certificates, SQLite, port 8443")
    serve.add_argument("--state-dir", type=Path, default=None, help="with --dev: where certificates and inbox live")
    serve.add_argument("--port", type=int, default=None, help="with --dev: port to listen on (default 8443)")
    serve.set_defaults(func=_serve)

    check = commands.add_parser("check-config", help="validate a configuration and print a summary")
    check.add_argument("--config", type=Path, required=True)
    check.set_defaults(func=_check_config)

    dev = commands.add_parser("dev-certs", help="write throwaway certificates and a config.toml into DIR")
    dev.add_argument("directory", type=Path, metavar="DIR")
    dev.add_argument("--port", type=int, default=8443)
    dev.set_defaults(func=_dev_certs)

    events = commands.add_parser("events", help="inspect the inbox").add_subparsers(dest="events", required=True)
    listing = events.add_parser("list", help="list stored events, newest first")
    listing.add_argument("--config", type=Path, required=True)
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--status", choices=["stored", "pending", "delivered", "dead"],
                         help="delivery status (stored: not forwarded anywhere)")
    listing.add_argument("--route", help="only events received on this route path")
    listing.set_defaults(func=_events_list)
    audit = events.add_parser("audit", help="the audit trail (every request answered), newest first")
    audit.add_argument("--config", type=Path, required=True)
    audit.add_argument("--json", action="store_true", help="one JSON object per line")
    audit.add_argument("--limit", type=int, default=50)
    audit.set_defaults(func=_events_audit)
    show = events.add_parser("show", help="one event: payload and delivery attempts")
    show.add_argument("event_id", metavar="ID")
    show.add_argument("--config", type=Path, required=True)
    show.set_defaults(func=_events_show)
    replay = events.add_parser("replay", help="queue events for delivery again")
    replay.add_argument("event_ids", metavar="ID", nargs="*")
    replay.add_argument("--dead", action="store_true", help="every dead event (see --since)")
    replay.add_argument("--since", help="with --dead: only events received at or after this ISO time")
    replay.add_argument("--config", type=Path, required=True)
    replay.set_defaults(func=_events_replay)

    database = commands.add_parser("db", help="the inbox database").add_subparsers(dest="db", required=True)
    migrate = database.add_parser("migrate", help="create or upgrade the schema (also done at start)")
    migrate.add_argument("--config", type=Path, required=True)
    migrate.set_defaults(func=_db_migrate)

    forward = commands.add_parser("forward", help="forwarding helpers").add_subparsers(dest="forward", required=True)
    new_secret = forward.add_parser("new-secret", help="print a new Standard Webhooks signing secret (whsec_...)")
    new_secret.set_defaults(func=_forward_new_secret)

    check_url = commands.add_parser("probe", help="check a receiver URL the way Efí does at registration")
    check_url.add_argument("url")
    check_url.add_argument("--ca", type=Path, help="CA bundle that signed the server certificate (default: public CAs)")
    check_url.add_argument("--cert", type=Path, help="client certificate PEM (with its key, or see --key)")
    check_url.add_argument("--key", type=Path, help="client private key, if not inside --cert")
    check_url.add_argument("--pix-key", help="chave to put in the sample Pix (for routes with pix_keys)")
    check_url.add_argument("--timeout", type=float, default=15.0)
    check_url.set_defaults(func=_probe)

    efi = commands.add_parser("efi", help="Efí helpers").add_subparsers(dest="efi", required=True)
    hmac_url = efi.add_parser("hmac-url", help="make a skip-mTLS secret and print the URL to register")
    hmac_url.add_argument("base_url", metavar="BASE_URL", help="e.g. https://pix.example.com.br/webhook")
    hmac_url.add_argument("--secret-file", type=Path,
                          help="use the secret in FILE, or write a new one there (mode 0600) if FILE does not exist")
    hmac_url.set_defaults(func=_efi_hmac_url)
    convert = efi.add_parser("convert-p12", help="convert the account's .p12 to PEM (key + certificate), 0600")
    convert.add_argument("source", type=Path, metavar="IN.p12")
    convert.add_argument("target", type=Path, metavar="OUT.pem")
    convert.add_argument("--password-file", type=Path, help="the .p12 password (else $EFI_CERT_PASSWORD, else none)")
    convert.set_defaults(func=_efi_convert_p12)

    account = argparse.ArgumentParser(add_help=False)
    account.add_argument("--sandbox", action="store_true", help="Efí's sandbox (homologação) API")
    account.add_argument("--api-url", help="the API base URL (default: Efí's production or sandbox)")
    account.add_argument("--api-ca", type=Path, help="CA bundle for the API's certificate (default: public CAs)")
    account.add_argument("--client-id", help="OAuth client id (default $EFI_CLIENT_ID)")
    account.add_argument("--client-secret-file", type=Path, help="file with the client secret (default $EFI_CLIENT_SECRET)")
    account.add_argument("--cert", type=Path, help="the account certificate, .p12 or PEM with key (default $EFI_CERT)")
    account.add_argument("--cert-password-file", type=Path, help="the .p12 password (default $EFI_CERT_PASSWORD)")
    webhook = efi.add_parser("webhook", help="register and manage Pix webhooks through Efí's API")
    hooks = webhook.add_subparsers(dest="webhook", required=True)
    register = hooks.add_parser("set", parents=[account], help="PUT /v2/webhook/:chave")
    register.add_argument("chave")
    register.add_argument("webhook_url", metavar="URL")
    register.add_argument("--skip-mtls", action="store_true", help="register with x-skip-mtls-checking: true")
    register.add_argument("--no-precheck", action="store_true", help="do not check the URL before registering")
    register.add_argument("--probe-ca", type=Path, help="CA of the receiver's server certificate, for the precheck")
    register.set_defaults(func=_efi_webhook_set)
    show = hooks.add_parser("get", parents=[account], help="GET /v2/webhook/:chave")
    show.add_argument("chave")
    show.set_defaults(func=_efi_webhook_get)
    listing = hooks.add_parser("list", parents=[account], help="GET /v2/webhook (every page)")
    listing.add_argument("--inicio", required=True, help="RFC 3339, e.g. 2026-01-01T00:00:00Z")
    listing.add_argument("--fim", required=True)
    listing.set_defaults(func=_efi_webhook_list)
    remove = hooks.add_parser("delete", parents=[account], help="DELETE /v2/webhook/:chave")
    remove.add_argument("chave")
    remove.set_defaults(func=_efi_webhook_delete)
    resend = hooks.add_parser("resend", parents=[account], help="POST /v2/gn/webhook/reenviar")
    resend.add_argument("--tipo", required=True, choices=RESEND_TYPES)
    resend.add_argument("e2eids", nargs="+", metavar="E2EID")
    resend.set_defaults(func=_efi_webhook_resend)

    certs = commands.add_parser("certs", help="certificate helpers").add_subparsers(dest="certs", required=True)
    fetch = certs.add_parser("fetch-efi", help="download Efí's webhook CA chain into DIR")
    fetch.add_argument("directory", type=Path, metavar="DIR")
    fetch.add_argument("--sandbox", action="store_true", help="the sandbox (homologação) chain")
    fetch.set_defaults(func=_fetch_efi)
    return parser


def _serve(args: argparse.Namespace) -> int:
    spec = worker_spec()
    if spec is not None:  # started by a supervisor (workers > 1): its configuration, not the file's
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the event loop handles it: a reload, not an exit
        _prepare_process()
        asyncio.run(serve_worker(spec.read_config(), spec))
        return 0
    if args.dev:
        directory = args.state_dir or _default_state_dir()
        config = load_config(_ensure_dev_config(directory, args.port))
        announce = _announce_dev
    else:
        config = load_config(args.config)
        announce = None
    _prepare_process()
    if config.workers > 1 and not args.dev:  # the dev server is one process
        asyncio.run(supervise(config, [sys.executable, "-m", "mtls_receiver", *args.argv]))
    else:
        asyncio.run(serve_forever(config, announce))
    return 0


def _prepare_process() -> None:
    # A write past RLIMIT_FSIZE (a quota, a full disk) must fail as an error the store answers
    # with 503, not kill the process.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    _raise_open_files_limit()


def _raise_open_files_limit() -> None:
    """Each connection is a file descriptor: take the hard limit, not the default soft 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "mtls-receiver" / "dev"


def _ensure_dev_config(directory: Path, port: int | None) -> Path:
    config = directory / "config.toml"
    if not config.exists():
        make_dev_certs(directory, 8443 if port is None else port)
        print(f"made dev certificates in {directory}", file=sys.stderr)
    elif port is not None:
        config.write_text(dev_config_text(port), encoding="utf-8")
    return config


def _announce_dev(receiver: Receiver) -> None:
    directory = receiver.config.source.parent
    url = f"https://localhost:{receiver.port()}{receiver.config.routes[0].path}"
    body = json.dumps(sample_pix(), separators=(",", ":"))
    print(
        f"\nmtls-receiver (dev) is listening on {url}  (certificates and inbox in {directory})\n"
        f"Send a sample Pix with the Efí-like dev client certificate:\n\n"
        f"  curl --cacert {directory / 'server-ca.pem'} --cert {directory / 'client.pem'} \\\n"
        f"       -H 'Content-Type: application/json' --data '{body}' {url}/pix\n\n"
        f"Then: mtls-receiver events list --config {receiver.config.source}\n",
        flush=True,
    )


def _check_config(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    for listener in config.listeners:
        create_ssl_context(listener, str(config.source), config.listener_key(listener.name))  # proves cert, key and CA bundle load together
    resolve_handlers(config)  # forward handlers import
    _print_summary(config)
    for warning in expiry_warnings(config):
        print(f"WARNING: {warning}")
    return 0


def _print_summary(config: Config) -> None:
    print(f"{config.source}: OK")
    for listener in config.listeners:
        print(f"listener {listener.name!r} on {listener.address}: client certs {listener.client_certs}, TLS >= {listener.min_tls}")
        for cert in read_certificates(listener.cert):
            print(f"  server cert  {cert.line()}")
        if listener.client_ca is not None and listener.client_certs != "none":
            for cert in read_certificates(listener.client_ca):
                print(f"  client CA    {cert.line()}")
    for route in config.routes:
        keys = f", pix_keys: {', '.join(route.pix_keys)}" if route.pix_keys else ""
        print(f"route {route.path} on {route.listener!r}: provider {route.provider}, mode {route.mode}{keys}")
    print(f"store: {config.store.description}")
    if config.forward.default is not None:
        print(f"forward: {config.forward.default.describe()} (up to {config.forward.max_attempts} attempts)")
    for route in config.routes:
        if route.forward is not None:
            print(f"forward {route.path}: {route.forward.describe()}")


def _dev_certs(args: argparse.Namespace) -> int:
    certs = make_dev_certs(args.directory, args.port)
    print(f"wrote dev certificates and {certs.config} into {certs.directory}")
    print(f"run: mtls-receiver serve --config {certs.config}")
    return 0


def _with_store(config: Config, access: Access, action: Callable[[Store], Awaitable[T]]) -> T:
    """Run one operator action against the configured store (also while the server runs).

    None of them owns the inbox: looking opens it read-only, and no command touches the leases
    of deliveries in flight (releasing one made the forwarder deliver a Pix twice, out of order).
    """

    async def run() -> T:
        store = open_store(config.store, access)
        await store.open()
        try:
            return await action(store)
        finally:
            await store.close()

    return asyncio.run(run())


def _event_json(event: StoredEvent) -> dict[str, object]:
    return {
        "id": event.id, "provider": event.provider, "route": event.route, "kind": event.kind,
        "dedup_key": event.dedup_key, "received_at": event.received_at, "peer": event.peer,
        "verified_by": event.verified_by, "status": event.status, "attempts": event.attempts,
        "client_subject": event.client.subject if event.client else None,
        "client_fingerprint": event.client.fingerprint if event.client else None,
        "payload": event.payload,
    }


def _events_list(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    events = _with_store(config, Access.READ,
                         lambda store: store.list_events(args.limit, args.status, args.route))
    for event in events:
        if args.json:
            print(json_line(_event_json(event)))
        else:  # what a sender wrote is escaped: a dedup key or subject cannot drive the terminal
            client = escape(event.client.subject) if event.client else "-"
            print(f"{event.received_at}  {event.id}  {event.status:<9}  {event.provider}/{event.kind}  {event.route}"
                  f"  {escape(event.dedup_key)}  {client}")
    return 0


def _audit_json(audit: AuditRecord) -> dict[str, object]:
    return {
        "at": audit.at, "last_at": audit.last_at, "count": audit.count, "listener": audit.listener,
        "route": audit.route, "method": audit.method, "path": audit.path, "peer": audit.peer,
        "status": audit.status, "reason": audit.reason, **client_fields(audit.client),
    }


def _events_audit(args: argparse.Namespace) -> int:
    """Repeats of one refusal are one row: ``xN`` and the time of the last (store/audit.py)."""
    config = load_config(args.config)
    for audit in _with_store(config, Access.READ, lambda store: store.list_audit(args.limit)):
        if args.json:
            print(json_line(_audit_json(audit)))
            continue
        repeats = f"  x{audit.count} until {audit.last_at}" if audit.count > 1 else ""
        fields = {"listener": audit.listener, "peer": audit.peer, "reason": audit.reason,
                  "subject": audit.client.subject if audit.client else None}
        print(f"{audit.at}  {audit.status}  {render_value(audit.method)} {render_value(audit.path)}"
              f"  {render_fields(fields)}{repeats}")
    return 0


def _events_show(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    found = _with_store(config, Access.READ, lambda store: store.get_event(args.event_id))
    if found is None:
        print(f"mtls-receiver: no event {args.event_id}", file=sys.stderr)
        return EXIT_FAILURE
    event, attempts = found
    print(json_line(_event_json(event), indent=2))
    print(f"delivery attempts: {len(attempts)}")
    for attempt in attempts:
        outcome = f"HTTP {attempt.status_code}" if attempt.status_code is not None else "no HTTP answer"
        error = f"  {attempt.error}" if attempt.error and attempt.status_code is None else ""
        print(f"  #{attempt.number}  {attempt.at}  {outcome}  {attempt.duration_ms} ms{error}")
    return 0


def _events_replay(args: argparse.Namespace) -> int:
    if bool(args.event_ids) == bool(args.dead) or (args.since and not args.dead):
        print("mtls-receiver: give event IDs, or --dead [--since T]", file=sys.stderr)
        return EXIT_CONFIG
    config = load_config(args.config)
    count = _with_store(config, Access.WRITE,
                        lambda store: store.replay(args.event_ids, args.since, all_dead=args.dead))
    print(f"queued {count} event(s) for delivery")
    if not args.dead and count < len(args.event_ids):
        print(f"mtls-receiver: {len(args.event_ids) - count} ID(s) not found", file=sys.stderr)
        return EXIT_FAILURE
    return 0


def _db_migrate(args: argparse.Namespace) -> int:
    config = load_config(args.config)

    async def touch(store: Store) -> None:  # opening a store applies the missing migrations
        return None

    _with_store(config, Access.SERVE, touch)
    print(f"{config.store.description}: schema is current")
    return 0


def _forward_new_secret(args: argparse.Namespace) -> int:
    print("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())
    return 0


def _probe(args: argparse.Namespace) -> int:
    results = asyncio.run(probe(args.url, args.ca, args.cert, args.key, args.pix_key, args.timeout))
    for result in results:
        print(result.line())
    return EXIT_FAILURE if any(result.ok is False for result in results) else 0


def _efi_hmac_url(args: argparse.Namespace) -> int:
    file: Path | None = args.secret_file
    if file is not None and file.exists():
        secret = file.read_text(encoding="utf-8").strip()
        if len(secret) < MIN_HMAC_SECRET_LENGTH:
            raise ReceiverError(f"{file}: the secret is shorter than {MIN_HMAC_SECRET_LENGTH} characters")
    else:
        secret = secrets.token_urlsafe(32)
        if file is not None:
            write_private(file, secret.encode() + b"\n")
    reference = f'{{ file = "{file.resolve()}" }}' if file else '{ env = "EFI_WEBHOOK_HMAC" }'
    path = urlsplit(args.base_url).path.rstrip("/") or "/"
    print(f"Register this URL with Efí (PUT /v2/webhook/:chave, header x-skip-mtls-checking: true):\n\n"
          f"  {registration_url(args.base_url, secret)}\n")
    if file is None:
        print(f"Keep the secret out of the config file, e.g. export EFI_WEBHOOK_HMAC='{secret}'\n")
    print("Add to the config (on a listener with client_certs = \"optional\", or \"none\" behind a proxy):\n\n"
          f'[[routes]]\npath = "{path}"\nprovider = "efi"\nmode = "skip-mtls"\n'
          f'allow_ips = ["34.193.116.226/32"]   # Efí\'s sender address\nhmac_secrets = [{reference}]')
    return 0


def _efi_convert_p12(args: argparse.Namespace) -> int:
    password = _secret_from(args.password_file, "EFI_CERT_PASSWORD", required=False)
    write_private(args.target, p12_to_pem(args.source.read_bytes(), password))
    print(f"wrote {args.target} (mode 0600): private key, certificate and chain")
    return 0


def _secret_from(file: Path | None, variable: str, required: bool = True) -> str | None:
    """A secret from a file or the environment: never from the command line itself."""
    if file is not None:
        return file.read_text(encoding="utf-8").strip()
    value = os.environ.get(variable)
    if value is None and required:
        raise ReceiverError(f"set {variable} or pass the matching --...-file option")
    return value


def _efi_client(args: argparse.Namespace) -> EfiClient:
    certificate = args.cert or (Path(os.environ["EFI_CERT"]) if os.environ.get("EFI_CERT") else None)
    client_id = args.client_id or os.environ.get("EFI_CLIENT_ID")
    if certificate is None or not client_id:
        raise ReceiverError("give the account certificate (--cert or $EFI_CERT) and --client-id (or $EFI_CLIENT_ID)")
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
    if not args.no_precheck and not _precheck(args):
        return EXIT_FAILURE
    answer = _run_efi(args, lambda efi: efi.set_webhook(args.chave, args.webhook_url, args.skip_mtls))
    print(f"registered: {json.dumps(answer, ensure_ascii=False)}")
    return 0


def _precheck(args: argparse.Namespace) -> bool:
    """What Efí will see at registration, checked from here first."""
    url = args.webhook_url
    if args.skip_mtls:
        if "hmac=" not in url:
            print("WARNING: a skip-mTLS URL should carry a secret (…?hmac=SECRET&ignorar=): mtls-receiver efi hmac-url")
        return True
    result = asyncio.run(probe_without_certificate(url, args.probe_ca))
    print(f"precheck: {result.line()}")
    if result.ok:
        print("precheck: Efí's first request (without a certificate) will be refused, as it must be;"
              " its test notification then needs the base path to answer 2xx")
        return True
    if result.detail.startswith("cannot connect"):
        print("precheck: the URL is not reachable from here; registering anyway (Efí connects from the internet)")
        return True
    print("precheck: Efí will refuse this registration (\"A autenticação de TLS mútuo não está configurada na URL"
          " informada\" or a TLS failure). Fix the server, or register with --skip-mtls and an hmac URL;"
          " --no-precheck registers anyway.")
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
    target = fetch_efi_chain(args.directory, sandbox=args.sandbox)
    print(f"wrote {target}")
    for cert in read_certificates(target):
        print(f"  {cert.line()}")
    print(f'point a listener at it: client_ca = "{target}"')
    return 0


if __name__ == "__main__":
    sys.exit(main())
