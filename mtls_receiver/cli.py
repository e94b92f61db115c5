"""The ``mtls-receiver`` command line."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import logging
import os
import pwd
import resource
import secrets
import signal
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn, cast

from . import __version__, inbox
from .config import Config, RouteConfig, load_config
from .devcerts import dev_config_text, make_dev_certs, write_dev_signing_keys
from .errors import EXIT_BUG, EXIT_CONFIG, EXIT_FAILURE, ConfigError, ConfigErrors, ReceiverError
from .forwarder import resolve_handlers
from .lifecycle import Receiver, expiry_warnings, serve_forever
from .logs import JsonFormatter, TextFormatter
from .providers import PROVIDER_NAMES, dev_route, provider
from .sendtest import SendTestError, send_test
from .times import parse_time, store_time
from .tls import create_ssl_context, read_certificates
from .workers import serve_worker, supervise, worker_spec

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # workers are started with the same arguments
    handler = logging.StreamHandler(sys.stderr)  # stderr: journald takes it as it is
    handler.setFormatter(JsonFormatter() if args.log_format == "json" else TextFormatter())
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), handlers=[handler], force=True)
    try:
        return int(args.func(args) or 0)
    except ReceiverError as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:  # ConfigErrors: one problem a line
            print(f"mtls-receiver: {line}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
    except OSError as exc:  # a file or a connection the command was pointed at, not a bug
        print(f"mtls-receiver: {_os_error(exc)}", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as exc:  # noqa: BLE001 - the last resort: a bug, said in one line, traceback on demand
        print(
            f"mtls-receiver: internal error: {type(exc).__name__}: {str(exc)[:300]}"
            " (a bug: please report it; --log-level debug shows where)",
            file=sys.stderr,
        )
        if args.log_level == "debug":
            traceback.print_exc()
        return EXIT_BUG


def _os_error(exc: OSError) -> str:
    """``PATH: what went wrong``, as the file system said it."""
    where = f"{exc.filename}: " if exc.filename is not None else ""
    return f"{where}{exc.strerror or exc}"


class _Parser(argparse.ArgumentParser):
    """A usage error is one line naming the command and the problem (``--help`` shows the usage)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_CONFIG, f"{self.prog}: {message} (see --help)\n")


def _since(text: str) -> str:
    """``--since``: a time as the store writes it (UTC); an offset is honoured, none means UTC."""
    try:
        return store_time(parse_time(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _status(text: str) -> int:
    if not (text.isascii() and text.isdigit() and 100 <= int(text) <= 599):
        raise argparse.ArgumentTypeError(f"not an HTTP status: {text[:20]!r} (e.g. 401)")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mtls-receiver", description="Webhook receiver for Brazilian PSPs.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="text (default) or one JSON object per line",
    )
    # every subcommand's parser is a _Parser too (argparse makes them of the parent's class)
    commands = cast(
        "argparse._SubParsersAction[argparse.ArgumentParser]",
        parser.add_subparsers(dest="command", required=True, metavar="COMMAND"),
    )

    serve = commands.add_parser("serve", help="run the receiver")
    source = serve.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, help="TOML configuration file")
    source.add_argument(
        "--dev", action="store_true", help="embedded default: dev certificates, SQLite, port 8443"
    )
    serve.add_argument(
        "--state-dir", type=Path, default=None, help="with --dev: where certificates and inbox live"
    )
    serve.add_argument(
        "--port",
        type=int,
        default=None,
        help="with --dev: port to listen on (default 8443); with --config the file's address rules",
    )
    serve.set_defaults(func=_serve)

    check = commands.add_parser("check-config", help="validate a configuration and print a summary")
    check.add_argument("--config", type=Path, required=True)
    check.set_defaults(func=_check_config)

    dev = commands.add_parser("dev-certs", help="write throwaway certificates and a config.toml into DIR")
    dev.add_argument("directory", type=Path, metavar="DIR")
    dev.add_argument("--port", type=int, default=8443)
    dev.add_argument("--force", action="store_true", help="replace the keys and certificates already in DIR")
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
    listing.set_defaults(func=inbox.events_list)
    old_audit = events.add_parser("audit", help="the audit trail: same as `audit list`")
    _add_audit_filters(old_audit)
    old_audit.set_defaults(func=inbox.audit_list)
    show = events.add_parser("show", help="one event: payload and delivery attempts")
    show.add_argument("event_id", metavar="ID")
    show.add_argument("--config", type=Path, required=True)
    show.set_defaults(func=inbox.events_show)
    replay = events.add_parser("replay", help="queue events for delivery again")
    replay.add_argument("event_ids", metavar="ID", nargs="*")
    replay.add_argument("--dead", action="store_true", help="every dead event (see --since)")
    replay.add_argument(
        "--stored",
        action="store_true",
        help="every event never queued (stored before forwarding was configured; see --since)",
    )
    replay.add_argument(
        "--since", type=_since, help="with --dead/--stored: only events received at or after this time"
    )
    replay.add_argument("--config", type=Path, required=True)
    replay.set_defaults(func=inbox.events_replay)

    audit = commands.add_parser("audit", help="the audit trail: every request answered").add_subparsers(
        dest="audit", required=True
    )
    audit_list = audit.add_parser("list", help="audit rows, newest first")
    _add_audit_filters(audit_list)
    audit_list.set_defaults(func=inbox.audit_list)
    summary = audit.add_parser("summary", help="requests counted by route, status and reason")
    _add_audit_filters(summary, limit=False)
    summary.set_defaults(func=inbox.audit_summary)

    database = commands.add_parser("db", help="the inbox database").add_subparsers(dest="db", required=True)
    migrate = database.add_parser("migrate", help="create or upgrade the schema (also done at start)")
    migrate.add_argument("--config", type=Path, required=True)
    migrate.set_defaults(func=inbox.db_migrate)

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


def _add_audit_filters(command: argparse.ArgumentParser, limit: bool = True) -> None:
    command.add_argument("--config", type=Path, required=True)
    command.add_argument("--route", help="only requests to this route path ('-': matched no route)")
    command.add_argument("--status", type=_status, help="only requests answered with this HTTP status")
    command.add_argument("--reason", help="only requests whose reason contains this text (any case)")
    command.add_argument("--peer", help="only requests from this client address")
    command.add_argument("--since", type=_since, help="only requests at or after this time")
    command.add_argument("--json", action="store_true", help="one JSON object per line")
    if limit:
        command.add_argument("--limit", type=int, default=50)


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
    if not args.dev and (args.port is not None or args.state_dir is not None):
        option = "--port" if args.port is not None else "--state-dir"
        print(
            f"mtls-receiver serve: {option} goes with --dev; with --config the listeners' addresses"
            f" and [store] are the file's",
            file=sys.stderr,
        )
        return EXIT_CONFIG
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
    if not (directory / "server.key").exists():
        make_dev_certs(directory, 8443 if port is None else port)
        print(f"made dev certificates in {directory}", file=sys.stderr)
    else:
        write_dev_signing_keys(directory)  # a directory made before they existed
        if port is not None or not config.exists():
            config.write_text(dev_config_text(8443 if port is None else port), encoding="utf-8")
    return config


def _self_command() -> str:
    """How to run this program again from any shell: the path it was started by (a venv's script
    works without activating the venv), or ``python -m`` with this interpreter."""
    started = Path(sys.argv[0])
    if started.name == "mtls-receiver" and started.is_file():
        return str(started.absolute())
    return f"{sys.executable} -m mtls_receiver"


def _announce_dev(receiver: Receiver) -> None:
    directory = receiver.config.source.parent
    url = f"https://localhost:{receiver.port()}{receiver.config.routes[0].path}"
    print(
        f"\nmtls-receiver (dev) is listening on {url}  (certificates and inbox in {directory})\n"
        f"{dev_route().try_it(url, directory)}"
        f"Then: {_self_command()} events list --config {receiver.config.source}\n",
        flush=True,
    )


def _check_config(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    problems: list[ConfigError] = []
    for listener in config.listeners:
        try:  # proves cert, key and CA bundle load together
            create_ssl_context(listener, str(config.source), config.listener_key(listener.name))
        except ConfigError as exc:
            problems.append(exc)
    try:
        resolve_handlers(config)  # forward handlers import
    except ConfigError as exc:
        problems.append(exc)
    store_problem = _store_not_writable(config)
    if store_problem is not None:
        problems.append(ConfigError(str(config.source), "store.path", store_problem))
    if problems:
        raise problems[0] if len(problems) == 1 else ConfigErrors(problems)
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
        print(f"  allowlist    {_allowlist(route)}")
    writable = f" (writable by {_user()})" if config.store.path is not None else ""
    print(f"store: {config.store.description}{writable}")
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


def _allowlist(route: RouteConfig) -> str:
    """The addresses a route takes requests from, as in force (its own or its sender's default)."""
    if not route.allow_ips:
        return "any address"
    own = route.allow_ips != route.options.sender_ips(route.mode)
    return f"{', '.join(map(str, route.allow_ips))} ({'allow_ips' if own else 'the sender default'})"


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def _store_not_writable(config: Config) -> str | None:
    """Why this user could not write the SQLite inbox (the file, or the directory that will hold it)."""
    path = config.store.path
    if path is None:  # PostgreSQL: the database's grants decide; `db migrate` tries them
        return None
    if not path.exists():
        parent = next(parent for parent in path.parents if parent.exists())
        if not parent.is_dir():
            return f"{parent} is not a directory (the inbox {path} would be created in it)"
        if not os.access(parent, os.W_OK | os.X_OK):
            return f"{parent} (where the inbox {path} would be created) is not writable by {_user()}"
        return None
    if not os.access(path, os.R_OK | os.W_OK):
        return f"the inbox {path} is not writable by {_user()}"
    if not os.access(path.parent, os.W_OK | os.X_OK):
        return f"{path.parent} is not writable by {_user()} (SQLite writes the inbox's -wal file there)"
    return None


def _dev_certs(args: argparse.Namespace) -> int:
    certs = make_dev_certs(args.directory, args.port, force=args.force)
    admin = load_config(certs.config, read_secrets=False).admin
    print(f"wrote dev certificates and {certs.config} into {certs.directory}")
    print(f"admin port (metrics, health): http://{admin.host}:{admin.port}")
    print(f"run: {_self_command()} serve --config {certs.config}")
    return 0


def _forward_new_secret(args: argparse.Namespace) -> int:
    print("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
