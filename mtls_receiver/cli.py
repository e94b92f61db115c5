"""The ``mtls-receiver`` command line."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import logging
import os
import resource
import secrets
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

from . import __version__
from .config import Config, load_config
from .devcerts import dev_config_text, make_dev_certs, write_dev_signing_keys
from .errors import ReceiverError
from .events import AuditRecord, StoredEvent
from .forwarder import resolve_handlers
from .lifecycle import Receiver, expiry_warnings, serve_forever
from .logs import JsonFormatter, TextFormatter, client_fields, escape, json_line, render_fields, render_value
from .providers import PROVIDER_NAMES, dev_route, provider
from .sendtest import SendTestError, send_test
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
    parser = argparse.ArgumentParser(prog="mtls-receiver", description="Webhook receiver for Brazilian PSPs.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="text (default) or one JSON object per line",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the receiver")
    source = serve.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, help="TOML configuration file")
    source.add_argument(
        "--dev", action="store_true", help="embedded default: dev certificates, SQLite, port 8443"
    )
    serve.add_argument(
        "--state-dir", type=Path, default=None, help="with --dev: where certificates and inbox live"
    )
    serve.add_argument("--port", type=int, default=None, help="with --dev: port to listen on (default 8443)")
    serve.set_defaults(func=_serve)

    check = commands.add_parser("check-config", help="validate a configuration and print a summary")
    check.add_argument("--config", type=Path, required=True)
    check.set_defaults(func=_check_config)

    dev = commands.add_parser("dev-certs", help="write throwaway certificates and a config.toml into DIR")
    dev.add_argument("directory", type=Path, metavar="DIR")
    dev.add_argument("--port", type=int, default=8443)
    dev.set_defaults(func=_dev_certs)

    _add_send_test(commands)

    events = commands.add_parser("events", help="inspect the inbox").add_subparsers(
        dest="events", required=True
    )
    listing = events.add_parser("list", help="list stored events, newest first")
    listing.add_argument("--config", type=Path, required=True)
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument(
        "--status",
        choices=["stored", "pending", "delivered", "dead"],
        help="delivery status (stored: not forwarded anywhere)",
    )
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

    forward = commands.add_parser("forward", help="forwarding helpers").add_subparsers(
        dest="forward", required=True
    )
    new_secret = forward.add_parser(
        "new-secret", help="print a new Standard Webhooks signing secret (whsec_...)"
    )
    new_secret.set_defaults(func=_forward_new_secret)

    certs = commands.add_parser("certs", help="certificate helpers").add_subparsers(
        dest="certs", required=True
    )
    for name in PROVIDER_NAMES:  # each sender's own commands, e.g. its registration helpers
        add_commands = provider(name).add_commands
        if add_commands is not None:
            add_commands(commands, {"certs": certs})
    return parser


def _add_send_test(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    send = commands.add_parser(
        "send-test", help="post a route's sample event to the running receiver, as its sender would"
    )
    send.add_argument(
        "route", metavar="ROUTE", help="the route's path as in the config (/webhook) or its index"
    )
    send.add_argument("--config", type=Path, required=True, metavar="FILE")
    send.add_argument("--event", metavar="TYPE", help="the event type to send (default: the sender's usual)")
    send.add_argument("--url", help="where to send (default: the route's listener address and path)")
    send.add_argument(
        "--ca",
        type=Path,
        metavar="FILE",
        help="CA bundle for the server certificate (default: server-ca.pem"
        " beside the listener's certificate, else public CAs)",
    )
    send.add_argument(
        "--cert",
        type=Path,
        metavar="FILE",
        help="client certificate PEM (default for mTLS routes: client.pem beside the listener's certificate)",
    )
    send.add_argument("--key", type=Path, metavar="FILE", help="client private key, if not inside --cert")
    send.add_argument("--timeout", type=float, default=15.0, metavar="S", help="seconds (default 15)")
    send.set_defaults(func=_send_test)


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
    else:
        write_dev_signing_keys(directory)  # a directory made before they existed
        if port is not None:
            config.write_text(dev_config_text(port), encoding="utf-8")
    return config


def _announce_dev(receiver: Receiver) -> None:
    directory = receiver.config.source.parent
    url = f"https://localhost:{receiver.port()}{receiver.config.routes[0].path}"
    print(
        f"\nmtls-receiver (dev) is listening on {url}  (certificates and inbox in {directory})\n"
        f"{dev_route().try_it(url, directory)}"
        f"Then: mtls-receiver events list --config {receiver.config.source}\n",
        flush=True,
    )


def _check_config(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    for listener in config.listeners:
        create_ssl_context(
            listener, str(config.source), config.listener_key(listener.name)
        )  # proves cert, key and CA bundle load together
    resolve_handlers(config)  # forward handlers import
    _print_summary(config)
    for route in config.routes:
        for warning in route.options.warnings():
            print(f"WARNING: route {route.path}: {warning}")
    for warning in expiry_warnings(config):
        print(f"WARNING: {warning}")
    return 0


def _print_summary(config: Config) -> None:
    print(f"{config.source}: OK")
    for listener in config.listeners:
        print(
            f"listener {listener.name!r} on {listener.address}: client certs {listener.client_certs},"
            f" TLS >= {listener.min_tls}"
        )
        for cert in read_certificates(listener.cert):
            print(f"  server cert  {cert.line()}")
        if listener.client_ca is not None and listener.client_certs != "none":
            for cert in read_certificates(listener.client_ca):
                print(f"  client CA    {cert.line()}")
    for route in config.routes:
        pinned = f"client pin: {route.client_pin.describe()}" if route.client_pin else ""
        extra = "".join(f", {part}" for part in (route.options.describe(), pinned) if part)
        print(
            f"route {route.path} on {route.listener!r}: provider {route.provider}, mode {route.mode}{extra}"
        )
    print(f"store: {config.store.description}")
    if config.forward.default is not None:
        print(f"forward: {config.forward.default.describe()} (up to {config.forward.max_attempts} attempts)")
    for route in config.routes:
        if route.forward is not None:
            print(f"forward {route.path}: {route.forward.describe()}")


def _send_test(args: argparse.Namespace) -> int:
    config = load_config(args.config)  # secrets resolved: the sample is signed with them
    try:
        return send_test(
            config,
            args.route,
            event=args.event,
            url=args.url,
            ca=args.ca,
            cert=args.cert,
            key=args.key,
            timeout=args.timeout,
        )
    except SendTestError as exc:
        print(f"mtls-receiver: send-test: {exc}", file=sys.stderr)
        return exc.code


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
        "id": event.id,
        "provider": event.provider,
        "route": event.route,
        "kind": event.kind,
        "dedup_key": event.dedup_key,
        "received_at": event.received_at,
        "peer": event.peer,
        "verified_by": event.verified_by,
        "status": event.status,
        "attempts": event.attempts,
        "client_subject": event.client.subject if event.client else None,
        "client_fingerprint": event.client.fingerprint if event.client else None,
        "payload": event.payload,
    }


def _events_list(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    events = _with_store(
        config, Access.READ, lambda store: store.list_events(args.limit, args.status, args.route)
    )
    for event in events:
        if args.json:
            print(json_line(_event_json(event)))
        else:  # what a sender wrote is escaped: a dedup key or subject cannot drive the terminal
            client = escape(event.client.subject) if event.client else "-"
            print(
                f"{event.received_at}  {event.id}  {event.status:<9}  {event.provider}/{event.kind}"
                f"  {event.route}  {escape(event.dedup_key)}  {client}"
            )
    return 0


def _audit_json(audit: AuditRecord) -> dict[str, object]:
    return {
        "at": audit.at,
        "last_at": audit.last_at,
        "count": audit.count,
        "listener": audit.listener,
        "route": audit.route,
        "method": audit.method,
        "path": audit.path,
        "peer": audit.peer,
        "status": audit.status,
        "reason": audit.reason,
        **client_fields(audit.client),
    }


def _events_audit(args: argparse.Namespace) -> int:
    """Repeats of one refusal are one row: ``xN`` and the time of the last (store/audit.py)."""
    config = load_config(args.config)
    for audit in _with_store(config, Access.READ, lambda store: store.list_audit(args.limit)):
        if args.json:
            print(json_line(_audit_json(audit)))
            continue
        repeats = f"  x{audit.count} until {audit.last_at}" if audit.count > 1 else ""
        fields = {
            "listener": audit.listener,
            "peer": audit.peer,
            "reason": audit.reason,
            "subject": audit.client.subject if audit.client else None,
        }
        print(
            f"{audit.at}  {audit.status}  {render_value(audit.method)} {render_value(audit.path)}"
            f"  {render_fields(fields)}{repeats}"
        )
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
    count = _with_store(
        config, Access.WRITE, lambda store: store.replay(args.event_ids, args.since, all_dead=args.dead)
    )
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


if __name__ == "__main__":
    sys.exit(main())
