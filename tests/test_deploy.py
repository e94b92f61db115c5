"""deploy/: the systemd units pass systemd's own checks; the certbot hook copies and reloads."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
ANALYZE = shutil.which("systemd-analyze")
needs_systemd = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is not installed (.ci/run installs it)"
)


@pytest.fixture
def units(tmp_path: Path) -> Path:
    """The units as installed, with ExecStart pointing at this environment's mtls-receiver."""
    executable = shutil.which("mtls-receiver") or str(Path(os.sys.executable).parent / "mtls-receiver")
    assert Path(executable).exists(), "mtls-receiver is not installed in this environment"
    service = (DEPLOY / "mtls-receiver.service").read_text(encoding="utf-8")
    assert "ExecStart=/opt/mtls-receiver/venv/bin/mtls-receiver " in service
    (tmp_path / "mtls-receiver.service").write_text(
        service.replace("/opt/mtls-receiver/venv/bin/mtls-receiver", executable), encoding="utf-8"
    )
    shutil.copy(DEPLOY / "mtls-receiver.socket", tmp_path)
    return tmp_path


@needs_systemd
def test_units_verify_without_any_output(units: Path) -> None:
    result = subprocess.run(
        [ANALYZE, "verify", "mtls-receiver.service", "mtls-receiver.socket"],  # type: ignore[list-item]
        cwd=units,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        "",
        "",
    )  # it exits 0 on typos: any output fails


@needs_systemd
def test_security_exposure_is_ok_or_better(units: Path) -> None:
    result = subprocess.run(
        [ANALYZE, "security", "--offline=true", str(units / "mtls-receiver.service")],  # type: ignore[list-item]
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for mtls-receiver\.service: ([\d.]+) (\w+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert match.group(2) in ("SAFE", "OK") and float(match.group(1)) < 2.5, match.group(0)


def test_unit_has_what_the_service_relies_on() -> None:
    service = (DEPLOY / "mtls-receiver.service").read_text(encoding="utf-8")
    for line in (
        "Type=notify",
        "WatchdogSec=",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "StateDirectory=mtls-receiver",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "SystemCallFilter=@system-service",
        "RestrictAddressFamilies=",
    ):
        assert line in service, line
    socket_unit = (DEPLOY / "mtls-receiver.socket").read_text(encoding="utf-8")
    assert "FileDescriptorName=public" in socket_unit
    example = (DEPLOY / "config.example.toml").read_text(encoding="utf-8")
    assert 'name = "public"' in example  # the socket's FileDescriptorName names this listener


def test_certbot_hook_copies_atomically_and_reloads(tmp_path: Path) -> None:
    lineage = tmp_path / "live" / "pix.example.com.br"
    lineage.mkdir(parents=True)
    (lineage / "fullchain.pem").write_text("CHAIN")
    (lineage / "privkey.pem").write_text("KEY")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/systemctl.log\n')
    (bin_dir / "systemctl").chmod(0o755)
    target = tmp_path / "tls"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "RENEWED_LINEAGE": str(lineage),
        "RENEWED_DOMAINS": "pix.example.com.br www.example.com.br",
        "MTLS_RECEIVER_DOMAIN": "pix.example.com.br",
        "MTLS_RECEIVER_TLS_DIR": str(target),
        "MTLS_RECEIVER_GROUP": str(os.getgid()),
    }
    hook = DEPLOY / "certbot-deploy-hook"
    subprocess.run(["sh", str(hook)], env=env, check=True, timeout=30)
    assert (target / "fullchain.pem").read_text() == "CHAIN" and (target / "privkey.pem").read_text() == "KEY"
    assert (target / "privkey.pem").stat().st_mode & 0o777 == 0o640
    assert not list(target.glob(".*.new"))
    assert (tmp_path / "systemctl.log").read_text() == "reload mtls-receiver.service\n"
    other = {**env, "RENEWED_DOMAINS": "another.example.com"}
    (lineage / "privkey.pem").write_text("NEW KEY")
    subprocess.run(["sh", str(hook)], env=other, check=True, timeout=30)
    assert (target / "privkey.pem").read_text() == "KEY"  # another certificate: nothing touched
