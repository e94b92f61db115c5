"""Side-by-side benchmark on loopback: mtls-receiver vs nginx vs the seed's Flask recipe.

One command (see bench/README.md). Each server is started alone, warmed up, then measured on two
workloads — a fresh mTLS connection per request (how PSPs deliver) and keep-alive — with the same
certificates and Pix-shaped bodies (each request a new endToEndId). Server CPU is the user+sys
time of the server's whole process tree from /proc (the receiver's worker processes included), so
the load generator's CPU does not count; the load generator's own CPU is reported next to it, to
show whether it, not the server, was what ran out of cores. Results are printed and written to
BENCHMARKS.md.

Two sender modes (``--mode``): "pipelined", the load generator's cheapest way of writing (each
request in one ``send``, with a fresh connection's last handshake flight; TCP_NODELAY), which the
floors of issue #7 are measured with; and "psp", written like the HTTP clients PSPs deliver with
(``loadgen.py --psp``: a fresh connection, Nagle on, head and body in separate writes, TLS 1.2 and
1.3), for the receiver and nginx. ``--logging on`` adds both with logging as shipped: the
receiver's per-request log line (the default ``--log-level info``, to a file) and nginx's
``access_log`` (to a file, as Debian's nginx.conf has it) — what an operator runs, not the
logs-off setup the floors are measured in.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import trustme

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TICKS = os.sysconf("SC_CLK_TCK")
RECEIVER_WORKERS = 2  # the receiver's default (one per core) on the 2-core machine the floors are for


@dataclass(frozen=True)
class Workload:
    """How a row's requests are sent: its label in the report and what the load generator is told."""

    label: str
    fresh: bool  # a new connection per request
    connections: int  # per load-generator process
    flags: tuple[str, ...] = ()  # more loadgen.py options, e.g. the PSP client's

    @property
    def psp(self) -> bool:
        return "--psp" in self.flags


Row = tuple[str, str, dict]  # (target, workload label, result)


@dataclass
class Target:
    name: str
    path: str  # request path the load generator posts to
    processes: list[subprocess.Popen[bytes]]  # the server: their CPU is measured
    port: int
    helpers: tuple[
        subprocess.Popen[bytes], ...
    ] = ()  # e.g. the merchant's application: stopped, not measured
    admin: int | None = (
        None  # the receiver's admin port: with forwarding, its CPU is counted until the outbox drains
    )


Starter = Callable[[], Target]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"{' '.join(map(str, process.args))} exited with code {process.returncode}"
                f" before listening on {port}"
            )
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def tree(pid: int) -> list[int]:
    """A process and all its descendants."""
    found, frontier = [pid], [pid]
    while frontier:
        parent = frontier.pop()
        for child in Path(f"/proc/{parent}/task").glob("*/children"):
            kids = [int(k) for k in child.read_text().split()]
            found += kids
            frontier += kids
    return found


def cpu_seconds(target: Target) -> float:
    total = 0
    for process in target.processes:
        for pid in tree(process.pid):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except FileNotFoundError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / TICKS


def rss_mib(target: Target) -> float:
    total = 0
    for process in target.processes:
        for pid in tree(process.pid):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


class Certificates:
    def __init__(self, directory: Path) -> None:
        server_ca = trustme.CA()
        server = server_ca.issue_cert("localhost", "127.0.0.1")
        root = trustme.CA(organization_name="Efi-like root")
        intermediate = root.create_child_ca()
        client = intermediate.issue_cert(common_name="efi-like client")
        self.server_ca = directory / "server-ca.pem"
        self.server_cert = directory / "server.pem"
        self.server_key = directory / "server.key"
        self.client_ca = directory / "client-ca.pem"
        self.client = directory / "client.pem"
        server_ca.cert_pem.write_to_path(str(self.server_ca))
        self.server_cert.write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
        server.private_key_pem.write_to_path(str(self.server_key))
        self.client_ca.write_bytes(root.cert_pem.bytes() + intermediate.cert_pem.bytes())
        client.private_key_and_cert_chain_pem.write_to_path(str(self.client))


def receiver_name(forward: bool, workers: int) -> str:
    if forward:
        return "mtls-receiver + forwarding"
    return (
        "mtls-receiver"
        if workers == RECEIVER_WORKERS
        else f"mtls-receiver ({workers} worker{'s' * (workers != 1)})"
    )


GUNICORN = "nginx -> gunicorn/Flask (seed)"
SCALING = (
    receiver_name(False, RECEIVER_WORKERS),
    receiver_name(False, 1),
)  # the receivers whose throughput is compared
SCALING_FLOOR = 1.6  # issue #7: the first's keep-alive req/s over the second's
SATURATED = SCALING + (GUNICORN,)  # the targets that also get the saturating keep-alive row
NGINX_200, NGINX_BODY = "nginx answering 200 itself", "nginx reading the body, then 200"
NGINX_ANSWERS = {  # the nginx references: name -> what the server block answers with
    # `return` answers as soon as the head is read, and discards the body after
    NGINX_200: 'location / { return 200 "200"; }',
    # the echo module (which Debian's nginx-light brings) reads the whole body first, as a receiver must
    NGINX_BODY: 'location / { echo_read_request_body; echo -n "200"; }',
}
ECHO_MODULE = Path("/usr/lib/nginx/modules/ngx_http_echo_module.so")
RECEIVER_LOGGED = SCALING[0] + " (log lines on)"
NGINX_LOGGED, NGINX_BODY_LOGGED = NGINX_200 + " (access_log on)", NGINX_BODY + " (access_log on)"
# logging as shipped -> the same server with logs off
LOGGING_ON = {RECEIVER_LOGGED: SCALING[0], NGINX_LOGGED: NGINX_200, NGINX_BODY_LOGGED: NGINX_BODY}
PSP_TARGETS = (SCALING[0], NGINX_200, NGINX_BODY, *LOGGING_ON)  # the targets that get the PSP-client rows
PSP_ONLY = (NGINX_BODY, NGINX_BODY_LOGGED)  # with the pipelined sender the body is there with the head
TLS_VERSIONS = ("1.2", "1.3")
IDLE = "1000 idle connections"  # the label of the idle-connection RSS "row"
FRESH_TLS12 = "fresh connection, TLS 1.2"  # the pipelined sender, pinned to TLS 1.2 (it negotiates 1.3)


def start_receiver(
    work: Path, certs: Certificates, forward: bool, workers: int, python: str, logged: bool = False
) -> Target:
    """The receiver with ``workers`` processes (1 = a single process, no fork), run by ``python``.

    ``python`` may be another checkout's interpreter (``--receiver-python``), so that one script
    measures the code before and after a change alike. ``logged``: its log lines as shipped (the
    default level, a line per request) go to a file, as journald would take them; otherwise only
    warnings are logged, and dropped.
    """
    port, admin = free_port(), free_port()
    config = work / f"receiver-{port}.toml"
    text = f"""workers = {workers}

[[listeners]]
address = "127.0.0.1:{port}"
cert = "{certs.server_cert}"
key = "{certs.server_key}"
client_certs = "required"
client_ca = "{certs.client_ca}"
limits = {{ max_connections = 5000, max_connections_per_ip = 5000 }}

[[routes]]
path = "/webhook"
provider = "efi"

[store]
path = "{work / f"inbox-{port}.db"}"

[admin]
address = "127.0.0.1:{admin}"
"""
    helpers = []
    if forward:
        sink = free_port()
        helpers.append(subprocess.Popen([sys.executable, str(HERE / "sink.py"), str(sink)]))
        text += (
            f'\n[forward]\nurl = "http://127.0.0.1:{sink}/events"\n'
            'secrets = [{ env = "BENCH_FORWARD_SECRET" }]\n'
        )
    config.write_text(text, encoding="utf-8")
    env = {**os.environ, "BENCH_FORWARD_SECRET": "whsec_" + "YmVuY2htYXJrLWZvcndhcmRpbmctc2VjcmV0LTMyYg=="}
    level = "info" if logged else "warning"
    with open(work / f"receiver-{port}.log", "wb") if logged else open(os.devnull, "wb") as log:
        # cwd: `-m` puts the working directory first on sys.path, which would import this checkout's
        # mtls_receiver whatever ``python`` is
        receiver = subprocess.Popen(
            [python, "-m", "mtls_receiver", "--log-level", level, "serve", "--config", str(config)],
            env=env,
            stderr=log,
            cwd=work,
        )
    # only the receiver's CPU counts (its workers are its children): the sink stands for the
    # merchant's application
    name = RECEIVER_LOGGED if logged else receiver_name(forward, workers)
    target = Target(name, "/webhook/pix", [receiver], port, tuple(helpers), admin if forward else None)
    try:
        wait_for_port(port, process=receiver)
    except RuntimeError:
        stop(target)
        raise
    return target


NGINX = """{modules}
worker_processes {workers};
pid {work}/nginx-{port}.pid;
error_log {work}/nginx-{port}.log;
events {{ worker_connections 8192; }}
http {{
  access_log {access_log};
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_client_certificate {client_ca};
    ssl_verify_client on;
    ssl_verify_depth 3;
    ssl_protocols TLSv1.2 TLSv1.3;
    keepalive_requests 100000;
    {location}
  }}
}}
"""


def start_nginx(
    work: Path,
    certs: Certificates,
    location: str,
    workers: int,
    name: str,
    path: str,
    extra: list[subprocess.Popen[bytes]] | None = None,
    access_log: bool = False,
) -> Target:
    """nginx with this ``location``; ``access_log``: a line per request to a file, Debian's default."""
    port = free_port()
    conf = work / f"nginx-{port}.conf"
    log = f"{work}/nginx-{port}-access.log" if access_log else "off"
    modules = ""
    if "echo_" in location:
        if not ECHO_MODULE.exists():
            raise SystemExit(
                f"{name}: nginx's echo module is needed ({ECHO_MODULE}; Debian: "
                "apt-get install -y libnginx-mod-http-echo, which nginx-light brings)"
            )
        modules = f"load_module {ECHO_MODULE};"
    conf.write_text(
        NGINX.format(
            modules=modules,
            workers=workers,
            work=work,
            port=port,
            access_log=log,
            cert=certs.server_cert,
            key=certs.server_key,
            client_ca=certs.client_ca,
            location=location,
        )
    )
    # -e: its error log from the start, not the compiled-in /var/log/nginx/error.log
    master = subprocess.Popen(
        [nginx_binary(), "-e", f"{work}/nginx-{port}.log", "-c", str(conf), "-g", "daemon off;"],
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port, process=master)
    return Target(name, path, [master, *(extra or [])], port)


def nginx_binary() -> str:
    """nginx from PATH or /usr/sbin (not on a non-root user's PATH on Debian); exits if there is none."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    if found is None:
        raise SystemExit("nginx is needed (Debian: apt-get update && apt-get install -y nginx-light)")
    return found


def start_gunicorn_behind_nginx(work: Path, certs: Certificates) -> Target:
    app_port = free_port()
    env = {**os.environ, "SEED_DATA": str(work / "gunicorn-data.txt")}
    gunicorn = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-w",
            str(os.cpu_count() or 2),
            "-b",
            f"127.0.0.1:{app_port}",
            "--chdir",
            str(HERE),
            "seed_app:app",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(app_port)
    location = f"location /webhook/ {{ proxy_pass http://127.0.0.1:{app_port}/; proxy_http_version 1.1; }}"
    return start_nginx(work, certs, location, 1, GUNICORN, "/webhook/pix", [gunicorn])


def start_flask_seed(work: Path, certs: Certificates) -> Target:
    port = free_port()
    env = {
        **os.environ,
        "SEED_CERT": str(certs.server_cert),
        "SEED_KEY": str(certs.server_key),
        "SEED_CLIENT_CA": str(certs.client_ca),
        "SEED_PORT": str(port),
        "SEED_DATA": str(work / "flask-data.txt"),
    }
    flask = subprocess.Popen(
        [sys.executable, str(HERE / "seed_app.py")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port)
    return Target("Flask app.run (seed, as written)", "/pix", [flask], port)


def stop(target: Target) -> None:
    everything = [*target.processes, *target.helpers]
    for process in everything:
        process.send_signal(signal.SIGTERM)
    for process in everything:
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()


def load(target: Target, certs: Certificates, requests: int, workload: Workload, processes: int) -> dict:
    command = [
        sys.executable,
        str(HERE / "loadgen.py"),
        "--port",
        str(target.port),
        "--path",
        target.path,
        "--ca",
        str(certs.server_ca),
        "--cert",
        str(certs.client),
        "--requests",
        str(requests),
        "--connections",
        str(workload.connections),
        "--processes",
        str(processes),
        *workload.flags,
    ]
    if workload.fresh:
        command.append("--fresh")
    output = subprocess.run(command, capture_output=True, text=True, check=True, timeout=900)
    return json.loads(output.stdout)


def measure(target: Target, certs: Certificates, requests: int, workload: Workload, processes: int) -> dict:
    load(target, certs, max(50, requests // 20), workload, processes)  # warm-up
    before = cpu_seconds(target)
    result = load(target, certs, requests, workload, processes)
    if target.admin is not None:
        wait_for_outbox(target.admin)  # forwarding's CPU counts in full, not just what fit in the window
    result["cpu"] = cpu_seconds(target) - before
    result["per_cpu"] = result["ok"] / result["cpu"] if result["cpu"] else float("inf")
    return result


def wait_for_outbox(admin: int, timeout: float = 300) -> None:
    """Until the receiver has delivered every event (its /metrics shows nothing pending)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=10) as response:
            text = response.read().decode()
        pending = re.search(r'^mtls_receiver_outbox_events\{status="pending"\} (\S+)$', text, re.M)
        if pending is None or float(pending.group(1)) == 0:
            return
        time.sleep(0.5)  # each look costs the receiver a little CPU too
    raise RuntimeError(f"the outbox did not drain within {timeout:g}s")


def idle_connections_rss(target: Target, certs: Certificates, count: int) -> float:
    """RSS of the server with ``count`` open, idle, handshaken mTLS connections."""
    context = ssl.create_default_context(cafile=str(certs.server_ca))
    context.load_cert_chain(certs.client)
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    held = []
    try:
        for _ in range(count):
            raw = socket.create_connection(("127.0.0.1", target.port), timeout=10)
            held.append(context.wrap_socket(raw, server_hostname="localhost"))
        time.sleep(1)
        return rss_mib(target)
    finally:
        for sock in held:
            sock.close()


def versions(receiver: str) -> dict[str, str]:
    nginx = subprocess.run([nginx_binary(), "-v"], capture_output=True, text=True).stderr.strip()
    found = {
        "python": platform.python_version(),
        "openssl": ssl.OPENSSL_VERSION,
        "nginx": nginx.split("/")[-1],
        "mtls-receiver": receiver,
    }
    for package in ("aiohttp", "flask", "gunicorn"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def receiver_version(python: str) -> str:
    """The version and checkout (``git describe``) of the mtls-receiver ``python`` runs.

    So that a report says which code it measured: a before/after comparison runs this script
    twice, with ``--receiver-python`` naming the other checkout's interpreter. Exits with one line
    if that interpreter cannot import mtls_receiver.
    """
    code = (
        "import importlib.metadata as m, mtls_receiver as r\n"
        "print(m.version('mtls-receiver')); print(r.__file__)"
    )
    try:
        found = subprocess.run(
            [python, "-c", code], capture_output=True, text=True, timeout=60, cwd=tempfile.gettempdir()
        )  # not this checkout, which `-c` would import
    except OSError as exc:
        raise SystemExit(f"--receiver-python {python}: {exc.strerror}") from None
    if found.returncode != 0:
        last = (found.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"--receiver-python {python}: cannot import mtls_receiver ({last})")
    version, source = found.stdout.split("\n")[:2]
    checkout = Path(source).resolve().parent.parent
    described = subprocess.run(
        ["git", "-C", str(checkout), "describe", "--always", "--dirty"], capture_output=True, text=True
    )
    commit = f", {described.stdout.strip()}" if described.returncode == 0 else ""
    return f"{version} ({checkout}{commit})"


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return f"{os.cpu_count()} cores, {model}, Linux {platform.release()}"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=3000, help="per target, fresh-connection rows")
    parser.add_argument(
        "--psp-requests",
        type=int,
        default=1000,
        help="per target, PSP-client rows (each waits out delayed ACKs: mostly idle time)",
    )
    parser.add_argument(
        "--keepalive-requests",
        type=int,
        default=20000,
        help="per target, keep-alive rows (seconds long, not a blip); the seed's app.run gets --requests",
    )
    parser.add_argument("--connections", type=int, default=16, help="per load-generator process")
    parser.add_argument(
        "--scaling-connections",
        type=int,
        default=64,
        help="per load-generator process, for the extra keep-alive rows of the 2- and 1-worker receiver"
        " that compare their throughput: enough for one worker to use a whole core",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per row; the row reports the median")
    parser.add_argument("--loadgen-processes", type=int, default=2, help="load-generator processes")
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--only", action="append", help="run only targets whose name contains this")
    parser.add_argument(
        "--mode",
        choices=["both", "pipelined", "psp"],
        default="both",
        help="pipelined: today's rows (and the floors); psp: the receiver and nginx with "
        "a client that writes like the PSPs' HTTP clients, TLS 1.2 and 1.3; both "
        "(default)",
    )
    parser.add_argument(
        "--logging",
        choices=["both", "off", "on"],
        default="both",
        help="off: logs off (the floors' setup); on: the receiver's per-request log line and "
        "nginx's access_log, as shipped, on; both (default)",
    )
    parser.add_argument(
        "--receiver-python",
        default=sys.executable,
        help="the interpreter that runs mtls-receiver, e.g. another checkout's "
        ".venv/bin/python (default: this one)",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    nginx_binary()  # exits at once, with what to install, if there is none
    receiver = receiver_version(args.receiver_python)
    work = Path(tempfile.mkdtemp(prefix="mtls-bench-"))
    certs = Certificates(work)
    targets: list[Target] = []
    try:
        for name, start in starters(args, work, certs):
            if wanted(args, name):  # a target filtered out is not even started
                targets.append(start())
        rows = measure_rounds(args, targets, certs)
        for target in targets:
            if target.name == SCALING[0] and args.mode != "psp":
                rss = idle_connections_rss(target, certs, 1000)
                print(f"{target.name}: RSS with 1000 idle mTLS connections: {rss:.0f} MiB", flush=True)
                rows.append((target.name, IDLE, {"rss": rss}))
    finally:
        for target in targets:
            stop(target)
    write_report(args, rows, receiver)
    shutil.rmtree(work, ignore_errors=True)


def starters(args: argparse.Namespace, work: Path, certs: Certificates) -> list[tuple[str, Starter]]:
    """(name, start) of every target this script knows."""
    python = args.receiver_python

    def nginx(name: str) -> Starter:
        logged = name in LOGGING_ON
        answer = NGINX_ANSWERS[LOGGING_ON.get(name, name)]
        return lambda: start_nginx(work, certs, answer, 1, name, "/webhook/pix", access_log=logged)

    return [
        (SCALING[0], lambda: start_receiver(work, certs, False, RECEIVER_WORKERS, python)),
        (SCALING[1], lambda: start_receiver(work, certs, False, 1, python)),
        (
            receiver_name(True, RECEIVER_WORKERS),
            lambda: start_receiver(work, certs, True, RECEIVER_WORKERS, python),
        ),
        (NGINX_200, nginx(NGINX_200)),
        (GUNICORN, lambda: start_gunicorn_behind_nginx(work, certs)),
        ("Flask app.run (seed, as written)", lambda: start_flask_seed(work, certs)),
        (NGINX_BODY, nginx(NGINX_BODY)),
        (RECEIVER_LOGGED, lambda: start_receiver(work, certs, False, RECEIVER_WORKERS, python, logged=True)),
        (NGINX_LOGGED, nginx(NGINX_LOGGED)),
        (NGINX_BODY_LOGGED, nginx(NGINX_BODY_LOGGED)),
    ]


def wanted(args: argparse.Namespace, name: str) -> bool:
    """Whether --only, --logging and --mode leave the target ``name`` anything to measure."""
    if args.only and not any(part in name for part in args.only):
        return False
    if args.logging != "both" and (name in LOGGING_ON) != (args.logging == "on"):
        return False
    return bool(workloads(args, name))


def measure_rounds(args: argparse.Namespace, targets: list[Target], certs: Certificates) -> list[Row]:
    """Every (target, workload) row, measured ``--repeat`` times: each row's median run."""
    runs: dict[tuple[str, str], list[dict]] = {}
    for _ in range(args.repeat):  # round-robin: a slow spell of the machine falls on every target alike
        for target in targets:
            for workload in workloads(args, target.name):
                requests = requests_for(args, target.name, workload)
                result = measure(target, certs, requests, workload, args.loadgen_processes)
                runs.setdefault((target.name, workload.label), []).append(result)
                report_run(target.name, workload.label, result)
    return [(name, workload, median_run(results)) for (name, workload), results in runs.items()]


def requests_for(args: argparse.Namespace, name: str, workload: Workload) -> int:
    if workload.psp:
        return args.psp_requests
    return args.requests if workload.fresh or "app.run" in name else args.keepalive_requests


def workloads(args: argparse.Namespace, name: str) -> list[Workload]:
    """What to measure for the target ``name`` in this --mode.

    The logging-on targets get the fresh and keep-alive rows, not the saturating one, which is
    there for the floors (measured with logs off).
    """
    found = []
    if args.mode != "psp" and name not in PSP_ONLY:
        found += pipelined_workloads(args, name)
    if args.mode != "pipelined" and name in PSP_TARGETS:
        found += psp_workloads(args, name)
    return found


def pipelined_workloads(args: argparse.Namespace, name: str) -> list[Workload]:
    """The rows a run had before the PSP client: the floors are computed from them."""
    found = [
        Workload("fresh connection", True, args.connections),
        Workload("keep-alive", False, args.connections),
    ]
    if name in SATURATED:
        found.append(Workload(saturating(args), False, args.scaling_connections))
    return found


def psp_workloads(args: argparse.Namespace, name: str) -> list[Workload]:
    """The PSP client in TLS 1.2 and 1.3 and, with logs off, the pipelined sender pinned to TLS 1.2.

    The pipelined fresh row negotiates TLS 1.3; its TLS 1.2 twin separates what the protocol version
    changes (nginx's TLS 1.2 handshake is cheaper than its 1.3 one) from what the PSP client's writing does.
    """
    found = (
        []
        if name in LOGGING_ON or name in PSP_ONLY
        else [Workload(FRESH_TLS12, True, args.connections, ("--tls", "1.2"))]
    )
    return found + [
        Workload(psp_label(version), True, args.connections, ("--psp", "--tls", version))
        for version in TLS_VERSIONS
    ]


def psp_label(version: str) -> str:
    return f"PSP client, TLS {version}"


def report_run(name: str, workload: str, result: dict) -> None:
    print(
        f"{name:36} {workload:17} {result['rps']:8.0f} req/s  p50 {result['p50_ms']:6.1f} ms"
        f"  p99 {result['p99_ms']:7.1f} ms  errors {result['errors'] + result['non2xx']:4d}"
        f"  {result['per_cpu']:8.0f} req/CPU-s  server CPU {result['cpu']:6.2f} s"
        f"  loadgen CPU {result['client_cpu_s']:6.2f} s",
        flush=True,
    )
    if result.get("first_error"):
        print(f"{'':36} first error: {result['first_error']}", flush=True)


def median_run(runs: list[dict]) -> dict:
    """The run with the median req per server CPU-s; every run's req/s and req/CPU-s kept for the range."""
    ordered = sorted(runs, key=lambda run: run["per_cpu"])
    median = dict(ordered[len(ordered) // 2])
    median["per_cpu_runs"] = [run["per_cpu"] for run in runs]
    median["rps_runs"] = [run["rps"] for run in runs]
    return median


def floors(args: argparse.Namespace, rows: list[tuple[str, str, dict]]) -> list[tuple[str, float, float]]:
    """(label, measured, floor) for each floor whose rows were measured in this run.

    The keep-alive floors are computed at the saturating load, where every server has the work to
    keep its processes busy, and also at the standard load, where the receiver's clients wait on
    its durable commits (smaller group commits, so more CPU per stored event).
    """
    found = {(name, workload): result for name, workload, result in rows}
    saturated = saturating(args)
    at_saturation = saturated.removeprefix("keep-alive, ")
    standard = f"{args.loadgen_processes}×{args.connections} connections"

    def get(name: str, workload: str, key: str) -> float | None:
        result = found.get((name, workload))
        return result[key] if result else None

    checks = [
        (
            "fresh: req/CPU-s vs nginx answering 200 (>= 0.8x)",
            "fresh connection",
            "per_cpu",
            "nginx answering 200 itself",
            0.8,
        ),
        (
            "fresh: req/CPU-s vs Flask app.run seed (>= 2x)",
            "fresh connection",
            "per_cpu",
            "Flask app.run (seed, as written)",
            2.0,
        ),
        (
            f"keep-alive: req/s vs nginx -> gunicorn/Flask, {at_saturation} (>= 3x)",
            saturated,
            "rps",
            GUNICORN,
            3.0,
        ),
        (
            f"keep-alive: req/s vs nginx -> gunicorn/Flask, {standard} (>= 3x)",
            "keep-alive",
            "rps",
            GUNICORN,
            3.0,
        ),
    ]
    out = []
    for receiver in SCALING:
        suffix = "" if receiver == SCALING[0] else " — 1 worker"
        for label, workload, key, other, floor in checks:
            mine, theirs = get(receiver, workload, key), get(other, workload, key)
            if mine is not None and theirs:
                out.append((label + suffix, mine / theirs, floor))
        for workload, load in ((saturated, at_saturation), ("keep-alive", standard)):
            stored = get(receiver, workload, "per_cpu")
            if stored is not None:
                out.append(
                    (
                        f"keep-alive: stored Pix per server CPU-s, {load} (>= 5000), in thousands" + suffix,
                        stored / 1000,
                        5.0,
                    )
                )
    two, one = get(SCALING[0], saturated, "rps"), get(SCALING[1], saturated, "rps")
    if two is not None and one:
        out.append(
            (
                f"keep-alive: {RECEIVER_WORKERS} workers vs 1 worker req/s, {at_saturation}"
                f" (>= {SCALING_FLOOR}x)",
                two / one,
                SCALING_FLOOR,
            )
        )
    return out


def saturating(args: argparse.Namespace) -> str:
    return f"keep-alive, {args.loadgen_processes}×{args.scaling_connections} connections"


def cpu_budget(args: argparse.Namespace, rows: list[tuple[str, str, dict]]) -> list[str]:
    """Where the 2-worker receiver's throughput goes here: its cores, the load generator's, the ceiling.

    With both cores full, req/s can be at most cores ÷ (server + load-generator CPU per request):
    over the 1-worker req/s, that is the best ratio this machine allows with this load generator.
    The second bound assumes perfect scaling (workers as cheap per request as 1): what is left
    is the load generator's share.
    """
    workload = saturating(args)
    found = {name: result for name, load, result in rows if load == workload}
    two, one = found.get(SCALING[0]), found.get(SCALING[1])
    if not (two and one):
        return []
    lines = []
    for name, result in ((SCALING[0], two), (SCALING[1], one)):
        seconds = result["seconds"]
        lines.append(
            f"- {name}, {workload}: {result['rps']:.0f} req/s using {result['cpu'] / seconds:.2f} "
            f"cores, the load generator {result['client_cpu_s'] / seconds:.2f} cores"
        )
    cores = os.cpu_count() or 1
    server, client = two["cpu"] / two["ok"], two["client_cpu_s"] / two["ok"]  # CPU-seconds per request
    ceiling = cores / (server + client)
    lines.append(
        f"- with {cores} cores full, {SCALING[0]} plus this load generator could reach at most "
        f"{ceiling:.0f} req/s ({server * 1e6:.0f} µs server + {client * 1e6:.0f} µs load-generator CPU "
        f"per request): {ceiling / one['rps']:.2f}× the 1-worker req/s"
        + (
            f" — below {SCALING_FLOOR}×: on this machine the load generator's share of the cores is the "
            "bottleneck"
            if ceiling / one["rps"] < SCALING_FLOOR
            else ""
        )
    )
    single = one["cpu"] / one["ok"]
    ideal = cores / (single + client)
    lines.append(
        f"- even if {RECEIVER_WORKERS} workers cost no more per request than 1 ({single * 1e6:.0f} µs) and "
        f"kept both cores full: at most {ideal:.0f} req/s, {ideal / one['rps']:.2f}× the 1-worker req/s"
    )
    return lines


TABLE_HEAD = (
    "| server | workload | req/s | p50 ms | p99 ms | errors | server CPU s | req per server CPU-s |"
    " loadgen CPU s |"
)
NOTES_MARKER = "<!-- bench/run.py writes all above this line; notes below it are kept when it runs. -->"


def write_report(args: argparse.Namespace, rows: list[Row], receiver: str) -> None:
    """The report: today's rows and floors, then the PSP-client and logging-on rows; kept notes last."""
    pipelined = [row for row in rows if in_floors_table(args, *row[:2])]
    others = [row for row in rows if not in_floors_table(args, *row[:2])]
    lines = report_head(args, receiver)
    if pipelined:
        lines += pipelined_section(args, pipelined)
    if others:
        lines += ["", *sender_section(args, rows, others)]
    notes = kept_notes(args.output)
    lines += ["", NOTES_MARKER] + (["", *notes] if notes else [])
    args.output.write_text("\n".join(lines).rstrip("\n") + "\n", encoding="utf-8")
    print(f"wrote {args.output}")


def in_floors_table(args: argparse.Namespace, name: str, workload: str) -> bool:
    """Whether a row is one of today's (pipelined, logs off): the first table, which the floors read."""
    return name not in LOGGING_ON and workload in [IDLE] + [w.label for w in pipelined_workloads(args, name)]


def command_line() -> str:
    return ("python bench/run.py " + " ".join(sys.argv[1:])).strip()


def report_head(args: argparse.Namespace, receiver: str) -> list[str]:
    return [
        "# Benchmarks",
        "",
        f"Run on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {machine()}.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions(receiver).items()) + ".",
        "",
        f"Command: `{command_line()}` ({args.requests} requests per fresh-connection row, "
        f"{args.keepalive_requests} "
        f"per keep-alive row but {args.requests} for Flask app.run, {args.loadgen_processes} load-generator "
        f"processes × {args.connections} connections ({args.scaling_connections} in the saturating "
        "rows), loopback "
        "only; every request a new Pix `endToEndId`; "
        f"mtls-receiver stores each one durably before answering, with {RECEIVER_WORKERS} worker "
        "processes unless "
        "the row says otherwise; server CPU = user+sys of the server's process tree; loadgen CPU = "
        "user+sys of "
        "the load generator's processes while measuring, on the same cores: where server + loadgen "
        "CPU s come "
        f"close to {os.cpu_count()} cores × the row's seconds (requests ÷ req/s), the cores were "
        "saturated and the "
        "load generator's share is CPU the server did not get).",
        "",
        f"Each row is the median of {args.repeat} runs by req per server CPU-s (the range of all runs "
        "in brackets): "
        "on this shared 2-core virtual machine one run's CPU-seconds vary by 10–20 %.",
    ]


Ratio = Callable[[str, str], "float | None"]  # (target, workload) -> its req per server CPU-s over another's


def table(rows: list[Row], ratios: dict[str, Ratio] | None = None) -> list[str]:
    """The rows as a Markdown table, with a column more for each of ``ratios`` (header -> ratio)."""
    head, rule = TABLE_HEAD, "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    for label in ratios or {}:
        head, rule = head + f" ÷ {label} |", rule + " ---: |"
    lines = [head, rule]
    for name, workload, result in rows:
        spread = (
            f" ({min(result['per_cpu_runs']):.0f}–{max(result['per_cpu_runs']):.0f})"
            if len(result["per_cpu_runs"]) > 1
            else ""
        )
        line = (
            f"| {name} | {workload} | {result['rps']:.0f} | {result['p50_ms']:.1f} | {result['p99_ms']:.1f} |"
            f" {result['errors'] + result['non2xx']} | {result['cpu']:.2f} |"
            f" {result['per_cpu']:.0f}{spread} |"
            f" {result['client_cpu_s']:.2f} |"
        )
        lines.append(line + "".join(f" {cell(ratio(name, workload))} |" for ratio in (ratios or {}).values()))
    return lines


def cell(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def pipelined_section(args: argparse.Namespace, rows: list[Row]) -> list[str]:
    """Today's rows (pipelined sender, logs off), the idle-connection RSS, the floors, the scaling bounds."""
    lines = ["", *table([row for row in rows if "rss" not in row[2]])]
    lines += [""] + [
        f"- {name}: RSS with 1000 idle open mTLS connections: {r['rss']:.0f} MiB"
        for name, _, r in rows
        if "rss" in r
    ]
    measured = floors(args, rows)
    if measured:
        lines += [
            "",
            "Floors (issue #7), from the rows above:",
            "",
            "| floor | measured | met |",
            "| --- | ---: | --- |",
        ]
        lines += [
            f"| {label} | {value:.3f} | {'yes' if value >= floor else 'no'} |"
            for label, value, floor in measured
        ]
    budget = cpu_budget(args, rows)
    if budget:
        lines += [
            "",
            "Scaling, from the saturating keep-alive rows (enough connections to keep a worker busy; "
            "server and load generator share the machine's cores):",
            "",
        ] + budget
    if any(value < floor for _, value, floor in measured):
        lines += [
            "",
            "Where a floor is not met, the profile's top items (where the CPU goes, what was tried) are in "
            "[bench/README.md](bench/README.md#where-the-time-goes-profile).",
        ]
    return lines


def sender_section(args: argparse.Namespace, rows: list[Row], shown: list[Row]) -> list[str]:
    """The PSP-client and logging-on rows, each one's req per server CPU-s over the nginx references'.

    Two references, because the PSP client writes the body after the head: nginx's `return 200`
    answers on the head alone (and its answer acknowledges the head, so the client's Nagle lets the
    body go at once), while a receiver, like the echo-module nginx, must wait for the body first.
    The issue's 0.64× (logging on) and 0.72× (off) are ratios to an nginx answering 200.
    """
    per_cpu = {(name, workload): result["per_cpu"] for name, workload, result in rows if "per_cpu" in result}
    logged = {off: on for on, off in LOGGING_ON.items()}

    def over(reference: str) -> Ratio:
        """A row's req per server CPU-s over ``reference``'s, with the same logging, same workload."""
        return lambda name, workload: quotient(
            per_cpu, (name, workload), (logged[reference] if name in LOGGING_ON else reference, workload)
        )

    references = {"nginx answering 200": over(NGINX_200), "nginx reading the body": over(NGINX_BODY)}
    lines = [
        "## A client like the PSPs', and logging as shipped",
        "",
        f'Same command (`{command_line()}`), same run. "{psp_label("1.2")}" and "{psp_label("1.3")}": '
        "`loadgen.py --psp`, written like the HTTP clients PSPs deliver with (Java/OkHttp, Go): a "
        "fresh connection and full mTLS handshake per request, Nagle on (no TCP_NODELAY), the last "
        "handshake flight, the request head and the body each in a send of their own, the client closing "
        f"after the answer; the TLS version pinned; {args.psp_requests} requests per row, "
        f'{args.loadgen_processes} × {args.connections} connections. "{FRESH_TLS12}": the pipelined '
        "sender pinned to TLS 1.2 (the fresh-connection rows negotiate 1.3), to tell what the protocol "
        f'version changes from what the PSP client\'s writing does. "{NGINX_200}" answers as soon as '
        f'it has the head (`return 200`); "{NGINX_BODY}" reads the whole body first '
        '(`echo_read_request_body`), as a receiver must. "(log lines on)": the receiver\'s default log '
        'level, a line per request, to a file; "(access_log on)": Debian\'s default `access_log` '
        "(combined format, to a file). The last columns are the row's req per server CPU-s over each "
        "nginx's, in the same workload, with the same logging.",
        "",
        *table(shown, references),
    ]
    summary = []
    measured = dict.fromkeys(row[1] for row in shown)
    order = [w.label for w in pipelined_workloads(args, SCALING[0]) + psp_workloads(args, SCALING[0])]
    for workload in [w for w in order if w in measured] + [w for w in measured if w not in order]:
        cells = [
            ratio(receiver, workload)
            for ratio in references.values()
            for receiver in (SCALING[0], RECEIVER_LOGGED)
        ]
        cells += [
            quotient(per_cpu, (logged[name], workload), (name, workload)) for name in (SCALING[0], NGINX_200)
        ]
        if any(value is not None for value in cells):
            summary.append(f"| {workload} | " + " | ".join(cell(value) for value in cells) + " |")
    if summary:
        lines += [
            "",
            "mtls-receiver's req per server CPU-s over nginx's, logging off and on, and what logging costs:",
            "",
            "| workload | ÷ nginx answering 200, logs off | logs on | ÷ nginx reading the body, logs off |"
            " logs on | mtls-receiver, logs on ÷ off | nginx answering 200, logs on ÷ off |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
            *summary,
        ]
    return lines


def quotient(
    per_cpu: dict[tuple[str, str], float], row: tuple[str, str], other: tuple[str, str]
) -> float | None:
    """Req per server CPU-s of ``row`` over ``other``'s (each (target, workload)); None if one is missing."""
    mine, theirs = per_cpu.get(row), per_cpu.get(other)
    return mine / theirs if mine is not None and theirs else None


def kept_notes(output: Path) -> list[str]:
    """The hand-written notes below NOTES_MARKER in the report being replaced (run history, …)."""
    try:
        text = output.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    _, marker, notes = text.partition(NOTES_MARKER)
    return notes.strip("\n").split("\n") if marker and notes.strip() else []


if __name__ == "__main__":
    main()
