"""What verifying one request costs, per registered sender: the provider's pure ``verify`` alone.

One config (TOML in a temporary directory, loaded by the real config reader) holds a route per
sender and mode worth showing; secrets come from environment variables this script sets, the
asymmetric senders' routes trust a public key file holding the public half of a local dev signing
key (``devcerts.write_dev_signing_keys``) and name that key as ``dev_signing_key``, so the route's
own ``sample`` signs and the signature matches the first key tried, as a sender's would. For each
route the sample request is built once, checked to be accepted, then verified ``--iterations``
times per repetition (``--repeat`` repetitions, round-robin over the routes so that a slow spell of
the shared machine falls on all of them alike). Reported: the median wall time per verification,
the process CPU time per verification and verifications per CPU-second. No sockets, no TLS, no
store: the whole request's cost is in bench/run.py's sections of BENCHMARKS.md.

    python bench/verifiers.py [--iterations 2000] [--repeat 5] [--no-write] [--output FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import platform
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import cryptography
from cryptography import x509
from cryptography.hazmat.backends.openssl.backend import backend as openssl_backend
from cryptography.hazmat.primitives import serialization

from mtls_receiver.config import RouteConfig, load_config
from mtls_receiver.devcerts import DevCerts, make_dev_certs
from mtls_receiver.errors import Refusal
from mtls_receiver.events import IncomingRequest, Peer
from mtls_receiver.providers import PROVIDER_NAMES, provider
from mtls_receiver.publickeys import PublicKey, load_private_key, sign
from mtls_receiver.publickeys import verify as verify_signature
from mtls_receiver.tls import client_identity

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BEGIN = "<!-- bench/verifiers.py writes from here to its end marker; keep notes outside it. -->"
END = "<!-- bench/verifiers.py: end -->"
ANY_PEER = "203.0.113.10"  # a documentation address: routes without an allowlist accept any

#: the secrets the routes read, as environment variables (throwaway values, never real ones)
SECRETS = {
    "BENCH_EFI_HMAC": "bench-efi-url-hmac-0123456789abcdef",
    "BENCH_INFI_SECRET": "bench-infi-secret-0123456789abcdef",
    "BENCH_POMELO_SECRET": "YmVuY2gtcG9tZWxvLWFwaS1zZWNyZXQtMDEyMzQ1Njc4OQ==",
    "BENCH_FIRE_SECRET": "bench-firebanking-secret-0123456789",
    "BENCH_FIRE_HEADER": "bench-firebanking-header-0123456789",
    "BENCH_HMAC_SECRET": "bench-generic-hmac-secret-0123456789",
    "BENCH_TOKEN": "bench-static-token-0123456789abcdef",
    "BENCH_MP_SECRET": "bench-mercadopago-secret-0123456789",
    "BENCH_ASAAS_TOKEN": "bench-asaas-token-0123456789abcdefghij",
    "BENCH_PAGBANK_TOKEN": "bench-pagbank-token-0123456789abcdef",
    "BENCH_PAGARME_KEY": "ak_test_bench0123456789abcdef",
    "BENCH_KIWIFY_TOKEN": "bench-kiwify-token-0123456789",
    "BENCH_CELCOIN_TOKEN": "bench-celcoin-token-0123456789abcdef",
    "BENCH_BS2_TOKEN": "bench-bs2-token-0123456789abcdef",
    "BENCH_STRIPE_SECRET": "whsec_bench_stripe_endpoint_secret",
    "BENCH_SW_SECRET": "whsec_YmVuY2gtc3RhbmRhcmQtd2ViaG9va3Mta2V5IQ==",
}

#: the public halves of the dev signing keys (devcerts.DEV_SIGNING_KEYS), written beside them
PUBLIC_KEYS = {
    "dev-signing-ecdsa-secp256k1.pem": "public-ecdsa-secp256k1.pem",
    "dev-signing-rsa.pem": "public-rsa.pem",
    "dev-signing-ed25519.pem": "public-ed25519.pem",
}


@dataclass(frozen=True)
class Bench:
    """One route of the config: what it is called in the table, what it checks, its TOML keys."""

    label: str  # "pagarme (v5)"
    scheme: str  # what verification costs: "HMAC-SHA256", "Ed25519", "client certificate (TLS)"
    keys: str  # the route's keys after path and listener
    listener: str = "signed"


def _keyed(name: str, private: str, extra: str = "") -> str:
    """A route that trusts the public half of a dev key (first tried) and signs samples with it."""
    return f'public_key_file = "{PUBLIC_KEYS[private]}"\ndev_signing_key = "{private}"\n{extra}'


RSA, ECDSA, ED25519 = "dev-signing-rsa.pem", "dev-signing-ecdsa-secp256k1.pem", "dev-signing-ed25519.pem"

BENCHES = (
    Bench(
        "efi (mtls)",
        "client certificate (checked by TLS) + Pix keys",
        'provider = "efi"\npix_keys = ["12345678000199"]\n',
        listener="mtls",
    ),
    Bench(
        "efi (skip-mtls)",
        "allowlist + URL secret (constant-time compare)",
        'provider = "efi"\nmode = "skip-mtls"\nhmac_secrets = [{ env = "BENCH_EFI_HMAC" }]\n',
    ),
    Bench(
        "pix",
        "client certificate (checked by TLS) + Pix keys",
        'provider = "pix"\npix_keys = ["12345678000199"]\n',
        listener="mtls",
    ),
    Bench("infi", "HMAC-SHA256", 'provider = "infi"\nsecrets = [{ env = "BENCH_INFI_SECRET" }]\n'),
    Bench(
        "pomelo (notifications)",
        "allowlist + HMAC-SHA256",
        'provider = "pomelo"\n'
        'api_keys = [{ key = "bench-api-key", secret = { env = "BENCH_POMELO_SECRET" } }]\n',
    ),
    Bench(
        "firebanking (hmac)",
        "HMAC-SHA256",
        'provider = "firebanking"\nsecrets = [{ env = "BENCH_FIRE_SECRET" }]\nfamilies = ["pix"]\n',
    ),
    Bench(
        "firebanking (headers)",
        "static header (constant-time compare)",
        'provider = "firebanking"\nmode = "headers"\n'
        'headers = [{ name = "X-Webhook-Secret", value = { env = "BENCH_FIRE_HEADER" } }]\n',
    ),
    Bench(
        "hmac (generic)",
        "HMAC-SHA256",
        'provider = "hmac"\nsecrets = [{ env = "BENCH_HMAC_SECRET" }]\ndedup = ["/id"]\nevent = "/type"\n'
        '[routes.signature]\nheader = "X-Signature"\nsignature_field = "v1"\ntimestamp_field = "t"\n'
        'algorithm = "sha256"\nencoding = "hex"\nsigned = ["timestamp", "literal:.", "body"]\n',
    ),
    Bench(
        "token (header)",
        "static header (constant-time compare)",
        'provider = "token"\nmode = "header"\nheader = "X-Webhook-Token"\n'
        'secrets = [{ env = "BENCH_TOKEN" }]\ndedup = ["/id"]\n',
    ),
    Bench(
        "allowlist",
        "client address only",
        'provider = "allowlist"\nunsigned_allowlist_only = true\nallow_ips = ["198.51.100.7/32"]\n'
        'dedup = ["/id"]\n',
    ),
    Bench(
        "mercadopago",
        "HMAC-SHA256",
        'provider = "mercadopago"\nsecrets = [{ env = "BENCH_MP_SECRET" }]\n',
    ),
    Bench(
        "asaas",
        "allowlist + static header",
        'provider = "asaas"\nsecrets = [{ env = "BENCH_ASAAS_TOKEN" }]\n',
    ),
    Bench(
        "pagbank",
        "SHA-256 of token-body",
        'provider = "pagbank"\nsecrets = [{ env = "BENCH_PAGBANK_TOKEN" }]\n',
    ),
    Bench(
        "pagarme (postback)",
        "HMAC-SHA1 (form body)",
        'provider = "pagarme"\nmode = "postback"\nsecrets = [{ env = "BENCH_PAGARME_KEY" }]\n',
    ),
    Bench("pagarme (v5)", "RSA-2048 PKCS#1 v1.5", 'provider = "pagarme"\nmode = "v5"\n' + _keyed("v5", RSA)),
    Bench(
        "kiwify (sales)",
        "HMAC-SHA1",
        'provider = "kiwify"\nmode = "sales"\nsecrets = [{ env = "BENCH_KIWIFY_TOKEN" }]\n',
    ),
    Bench(
        "kiwify (banking)",
        "Ed25519",
        'provider = "kiwify"\nmode = "banking"\n' + _keyed("banking", ED25519),
    ),
    Bench(
        "iugu",
        "client address only",
        'provider = "iugu"\nunsigned_allowlist_only = true\n',
    ),
    Bench(
        "celcoin (bearer)",
        "Bearer token (constant-time compare)",
        'provider = "celcoin"\nmode = "bearer"\nsecrets = [{ env = "BENCH_CELCOIN_TOKEN" }]\n',
    ),
    Bench(
        "bs2 (bearer)",
        "Bearer token (constant-time compare)",
        'provider = "bs2"\nmode = "bearer"\nsecrets = [{ env = "BENCH_BS2_TOKEN" }]\n',
    ),
    Bench("stripe", "HMAC-SHA256", 'provider = "stripe"\nsecrets = [{ env = "BENCH_STRIPE_SECRET" }]\n'),
    Bench(
        "standard-webhooks (v1)",
        "HMAC-SHA256",
        'provider = "standard-webhooks"\nsecrets = [{ env = "BENCH_SW_SECRET" }]\n',
    ),
    Bench(
        "public-key (ed25519)",
        "Ed25519",
        'provider = "public-key"\n'
        + _keyed(
            "ed25519",
            ED25519,
            '[routes.signature]\nalgorithm = "ed25519"\nheader = "X-Signature"\nencoding = "base64url"\n',
        ),
    ),
    Bench(
        "public-key (rsa)",
        "RSA-2048 PKCS#1 v1.5",
        'provider = "public-key"\n'
        + _keyed(
            "rsa", RSA, '[routes.signature]\nalgorithm = "rsa-pkcs1v15-sha256"\nheader = "X-Signature"\n'
        ),
    ),
    Bench("starkbank", "ECDSA secp256k1", 'provider = "starkbank"\n' + _keyed("starkbank", ECDSA)),
    Bench("woovi", "RSA-2048 PKCS#1 v1.5", 'provider = "woovi"\n' + _keyed("woovi", RSA)),
)


#: the signature checks alone, per dev key: (label, algorithm, private key file)
PRIMITIVES = (
    ("RSA-2048 PKCS#1 v1.5", "rsa-pkcs1v15-sha256", RSA),
    ("Ed25519", "ed25519", ED25519),
    ("ECDSA secp256k1", "ecdsa-secp256k1-sha256", ECDSA),
)
PRIMITIVE_MESSAGE = b"x" * 200  # about a webhook body's size


@dataclass(frozen=True)
class Prepared:
    """A route, the request its sample makes, and the verifier to time."""

    bench: Bench
    route: RouteConfig
    request: IncomingRequest
    verify: Callable[[RouteConfig, IncomingRequest], object]


@dataclass(frozen=True)
class Result:
    bench: Bench
    body_bytes: int
    wall_us: float  # median over the repetitions, per verification
    cpu_us: float  # process CPU time per verification, median over the repetitions
    wall_low: float
    wall_high: float

    @property
    def per_cpu_second(self) -> float:
        return 1e6 / self.cpu_us if self.cpu_us > 0 else float("inf")


def config_text(certs: DevCerts) -> str:
    """Two listeners (plain TLS for signed senders, mTLS for the certificate ones) and every route."""
    head = f"""workers = 1

[[listeners]]
name = "signed"
address = "127.0.0.1:0"
cert = "{certs.server_cert}"
key = "{certs.server_key}"
client_certs = "none"

[[listeners]]
name = "mtls"
address = "127.0.0.1:0"
cert = "{certs.server_cert}"
key = "{certs.server_key}"
client_certs = "required"
client_ca = "{certs.client_ca}"

[store]
path = "inbox.db"
"""
    routes = [
        f'\n[[routes]]\npath = "/bench/{i}"\nlistener = "{bench.listener}"\n{bench.keys}'
        for i, bench in enumerate(BENCHES)
    ]
    return head + "".join(routes)


def write_public_halves(directory: Path) -> None:
    for private, public in PUBLIC_KEYS.items():
        key = load_private_key((directory / private).read_bytes()).public_key()
        pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        (directory / public).write_bytes(pem)


def peer_for(route: RouteConfig, certs: DevCerts) -> Peer:
    """An address inside the route's allowlist (any when it has none); the dev client's identity on
    an mTLS listener, as the TLS layer would have verified and described it."""
    address = ANY_PEER
    if route.allow_ips:
        network = route.allow_ips[0]
        address = str(next(iter(network.hosts()), network.network_address))
    identity = None
    if route.listener == "mtls":
        certificate = x509.load_pem_x509_certificates(certs.client.read_bytes())[0]
        identity = client_identity(certificate.public_bytes(serialization.Encoding.DER))
    return Peer(address, identity)


def prepare(bench: Bench, route: RouteConfig, certs: DevCerts, now: float) -> Prepared:
    """The sample request, built once; refused or unbuildable fails loudly, naming the route."""
    chosen = provider(route.provider)
    if chosen.sample is None:
        raise SystemExit(f"{bench.label}: provider {route.provider!r} has no sample request")
    sample = chosen.sample(route, None, now)
    target = route.path + sample.path
    path, _, query = target.partition("?")
    request = IncomingRequest(
        method="POST",
        path=path,
        query_string=query,
        headers=dict(sample.headers),
        body=sample.body,
        peer=peer_for(route, certs),
        now=now,
        raw_target=target,
    )
    try:
        chosen.verify(route, request)
    except Refusal as refusal:
        raise SystemExit(
            f"{bench.label}: its own sample was refused: {refusal.status} {refusal.reason}"
        ) from None
    return Prepared(bench, route, request, chosen.verify)


def time_once(prepared: Prepared, iterations: int) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of ``iterations`` verifications of the same request."""
    verify, route, request = prepared.verify, prepared.route, prepared.request
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(iterations):
        verify(route, request)
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(prepared: list[Prepared], iterations: int, repeat: int) -> list[Result]:
    """Every route once per repetition, round-robin; per route the median of its repetitions."""
    for item in prepared:
        time_once(item, max(1, iterations // 10))  # warm up: caches, lazily built key objects
    walls: list[list[float]] = [[] for _ in prepared]
    cpus: list[list[float]] = [[] for _ in prepared]
    for _ in range(repeat):
        for i, item in enumerate(prepared):
            wall, cpu = time_once(item, iterations)
            walls[i].append(wall * 1e6 / iterations)
            cpus[i].append(cpu * 1e6 / iterations)
    return [
        Result(
            item.bench,
            len(item.request.body),
            statistics.median(walls[i]),
            statistics.median(cpus[i]),
            min(walls[i]),
            max(walls[i]),
        )
        for i, item in enumerate(prepared)
    ]


def cpu_us(check: Callable[[], object], iterations: int, repeat: int) -> float:
    """Median process CPU µs of one ``check()`` over ``repeat`` runs of ``iterations``."""
    runs = []
    for _ in range(repeat):
        start = time.process_time()
        for _ in range(iterations):
            check()
        runs.append((time.process_time() - start) * 1e6 / iterations)
    return statistics.median(runs)


def primitives(directory: Path, iterations: int, repeat: int) -> list[tuple[str, float]]:
    """What the signature check alone costs (mtls_receiver.publickeys.verify, the dev keys), and one
    HMAC-SHA256 with its constant-time comparison: how much of a route's cost is the cryptography."""
    found = []
    for label, algorithm, private in PRIMITIVES:
        key = load_private_key((directory / private).read_bytes())
        signature, public = sign(algorithm, key, PRIMITIVE_MESSAGE), key.public_key()

        def check(
            algorithm: str = algorithm, public: PublicKey = public, signature: bytes = signature
        ) -> None:
            assert verify_signature(algorithm, public, signature, PRIMITIVE_MESSAGE)

        found.append((label, cpu_us(check, iterations, repeat)))
    secret, expected = b"k" * 32, hmac.new(b"k" * 32, PRIMITIVE_MESSAGE, hashlib.sha256).hexdigest()

    def mac() -> None:
        assert hmac.compare_digest(hmac.new(secret, PRIMITIVE_MESSAGE, hashlib.sha256).hexdigest(), expected)

    found.append(("HMAC-SHA256 + compare_digest", cpu_us(mac, iterations, repeat)))
    return found


def run(iterations: int, repeat: int) -> tuple[list[Result], list[tuple[str, float]]]:
    os.environ.update(SECRETS)
    with tempfile.TemporaryDirectory(prefix="bench-verifiers-") as name:
        directory = Path(name)
        certs = make_dev_certs(directory, 0)
        write_public_halves(directory)
        config_path = directory / "bench.toml"
        config_path.write_text(config_text(certs), encoding="utf-8")
        config = load_config(config_path)
        missing = set(PROVIDER_NAMES) - {route.provider for route in config.routes}
        if missing:
            raise SystemExit(f"no route for provider(s) {', '.join(sorted(missing))}: add them to BENCHES")
        now = time.time()
        prepared = [
            prepare(bench, route, certs, now) for bench, route in zip(BENCHES, config.routes, strict=True)
        ]
        return measure(prepared, iterations, repeat), primitives(directory, iterations, repeat)


def table(results: list[Result]) -> list[str]:
    lines = [
        "| sender (mode) | what is verified | body bytes | µs per verification (range) | CPU µs"
        " | verifications per CPU-s |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in sorted(results, key=lambda r: r.cpu_us):
        lines.append(
            f"| {r.bench.label} | {r.bench.scheme} | {r.body_bytes} | {r.wall_us:.1f}"
            f" ({r.wall_low:.1f}–{r.wall_high:.1f}) | {r.cpu_us:.1f} | {r.per_cpu_second:,.0f} |"
        )
    return lines


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


def command_line() -> str:
    return ("python bench/verifiers.py " + " ".join(sys.argv[1:])).strip()


ASYMMETRIC = ("RSA", "Ed25519", "ECDSA")  # how a Bench.scheme names a public-key signature


def spread(values: list[float]) -> str:
    return f"{min(values):.0f}–{max(values):.0f} µs" if values else "none"


def summary(results: list[Result], primitive: list[tuple[str, float]]) -> list[str]:
    """What dominates, from this run's numbers: the public-key check where there is one."""
    asymmetric = [r.cpu_us for r in results if r.bench.scheme.startswith(ASYMMETRIC)]
    others = [r.cpu_us for r in results if not r.bench.scheme.startswith(ASYMMETRIC)]
    alone = "; ".join(f"{label} {cost:.1f} µs" for label, cost in primitive)
    public_key = sorted((cost, label) for label, cost in primitive if label.startswith(ASYMMETRIC))
    ordered = ", then ".join(label for _, label in reversed(public_key))
    return [
        f"The signature check alone (CPU per check, same keys, a 200-byte message): {alone}.",
        "",
        f"What dominates: on the routes that verify a public-key signature ({spread(asymmetric)} of CPU"
        f" per request here) it is that check: {ordered} (RSA-2048 verification is cheap, its public"
        f" exponent is small). On every other route ({spread(others)}) the HMAC or the constant-time"
        " comparison is a few µs: the rest is Python (reading headers, parsing the JSON body, building"
        " the event and its dedup key), so there the body's shape matters more than the scheme."
        " Standard Webhooks v1a (Ed25519) has no row: the provider's sample signs v1 only (it has no"
        " dev_signing_key); its cost is an Ed25519 row's. This is verification only: the whole request"
        " (TLS, HTTP, the durable store) is in the sections above: run.py's table of 2026-11-30 has the"
        " receiver spending about 80–110 µs of server CPU per stored Efí request with keep-alive, and"
        " about 1.2 ms with a fresh mTLS handshake per request. So with keep-alive a public-key sender"
        " costs noticeably more per request than an HMAC one; next to a handshake the difference is small.",
    ]


def section(args: argparse.Namespace, results: list[Result], primitive: list[tuple[str, float]]) -> list[str]:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    versions = (
        f"Python {platform.python_version()}, {ssl.OPENSSL_VERSION} (the ssl module),"
        f" cryptography {cryptography.__version__} with {openssl_backend.openssl_version_text()}"
        " (what checks the signatures)"
    )
    return [
        BEGIN,
        "",
        f"## Verifying one request, per sender, {stamp}",
        "",
        f"{machine()}; shared: 2 cores with other work running meanwhile, so single numbers move by"
        f" 10–30 % between runs (CPU time moves less than wall time). {versions}."
        f" Command: `{command_line()}` ({args.iterations} verifications of the same request per"
        f" repetition, {args.repeat} repetition(s) round-robin over the routes; median per route, wall"
        " range in brackets; CPU = this process's user+sys).",
        "",
        "Only the provider's pure `verify(route, request)`: the route's sample request (its own"
        " `send-test` request, built once and checked to be accepted) verified again and again, no"
        " sockets, no TLS, no storing. The public-key routes trust the public half of a local dev"
        " signing key (the first key tried, as a sender's key would be); mTLS routes get the dev"
        " client's identity as the TLS layer hands it (the certificate chain itself is checked in the"
        " handshake, not here); allowlist routes a peer address inside the allowlist.",
        "",
        *table(results),
        "",
        *summary(results, primitive),
        "",
        END,
    ]


def write_report(output: Path, lines: list[str]) -> None:
    """Replace this script's section between its markers, or append it; the rest is kept."""
    text = output.read_text(encoding="utf-8") if output.exists() else "# Benchmarks\n"
    block = "\n".join(lines)
    if BEGIN in text and END in text:
        before, _, rest = text.partition(BEGIN)
        _, _, after = rest.partition(END)
        text = before + block + after
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    output.write_text(text, encoding="utf-8")
    print(f"wrote {output}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iterations", type=int, default=2000, help="verifications per repetition")
    parser.add_argument("--repeat", type=int, default=5, help="repetitions; the median is reported")
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    if args.iterations < 1 or args.repeat < 1:
        parser.error("--iterations and --repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    results, primitive = run(args.iterations, args.repeat)
    print("\n".join(table(results)), flush=True)
    print("\n".join(summary(results, primitive)), flush=True)
    if not args.no_write:
        write_report(args.output, section(args, results, primitive))


if __name__ == "__main__":
    main()
