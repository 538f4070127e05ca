"""`confiance proxy serve` as a process: the JSON start-up line, SIGHUP reloading the server
certificate under a connected client, SIGTERM refusing new connections at once while the
trace keeper still runs, files with personal data created 0600, endpoints.json 0600."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from confiance.core import endpoints
from confiance.core.config import dump_toml
from confiance.pki import IssuedCertificate, Pki


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _peer_serial(port: int, ca: Path) -> int:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.check_hostname = False
    with socket.create_connection(("127.0.0.1", port), timeout=20) as raw, ctx.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def _get(tls: ssl.SSLSocket, path: str) -> bytes:
    tls.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = tls.recv(65536)
        assert chunk, "connection closed"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    )
    while len(body) < length:
        body += tls.recv(65536)
    return head.split(b"\r\n")[0] + b" " + body


def _wait(predicate: Any, what: str, proc: subprocess.Popen[bytes], log: Path, limit: float = 90) -> None:
    deadline = time.monotonic() + limit  # a bound for a dead process, not a speed assertion
    while not predicate():
        assert proc.poll() is None, f"proxy exited: {log.read_text(errors='replace')[-3000:]}"
        assert time.monotonic() < deadline, f"{what}: {log.read_text(errors='replace')[-3000:]}"
        time.sleep(0.05)


def _copy(cert: IssuedCertificate, dest: Path) -> None:
    shutil.copyfile(cert.cert_path, dest / "server.pem")
    shutil.copyfile(cert.key_path, dest / "server.key")


def test_sighup_reloads_certificate_and_sigterm_stops_accepting(tmp_path: Path) -> None:
    pki = Pki.init(tmp_path / "pki")
    first, second = pki.issue_server("first"), pki.issue_server("second")
    lps = pki.issue_client("31234567890009", "lps-life", name="lps-life")
    _copy(first, tmp_path)
    port = _free_port()
    cfg = {
        "server": {"port": port, "cert": "server.pem", "key": "server.key", "graceful_timeout": 5},
        "outbound": {"ca_bundle": str(pki.ca_bundle)},
        "psc": {"discovery_url": "https://127.0.0.1:9/.well-known/openid-configuration"},
        "lps_clients": [{"client_id": "lps", "auth": "mtls", "cert": lps.cert_path, "key": lps.key_path}],
        "traces": {"url": f"sqlite:///{tmp_path}/traces.db"},
    }
    path = tmp_path / "proxy.toml"
    path.write_text(dump_toml(cfg))
    log = tmp_path / "proxy.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "confiance", "proxy", "serve", "--config", str(path)], stdout=out, stderr=out
        )
    try:

        def lines() -> list[dict[str, Any]]:
            return [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]

        def answers() -> bool:
            try:
                return _peer_serial(port, pki.ca_bundle) > 0
            except OSError:
                return False

        _wait(answers, "proxy did not start", proc, log)
        started = next(x for x in lines() if x["message"].startswith("proxy starting"))
        assert started["listen"] == [f"127.0.0.1:{port}"] and started["trace_store"].startswith("sqlite:///")
        assert started["session_store"] == "memory" and started["level"] == "INFO"
        assert _peer_serial(port, pki.ca_bundle) == first.serial
        # 0600: the trace database holds national ids
        assert (tmp_path / "traces.db").stat().st_mode & 0o777 == 0o600

        # A client connected before the reload keeps its connection.
        ctx = ssl.create_default_context(cafile=str(pki.ca_bundle))
        ctx.check_hostname = False
        kept = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=20))
        assert _get(kept, "/healthz").startswith(b"HTTP/1.1 200")

        _copy(second, tmp_path)
        os.kill(proc.pid, signal.SIGHUP)
        _wait(lambda: any(x["message"].startswith("reloaded") for x in lines()), "no reload line", proc, log)
        assert _peer_serial(port, pki.ca_bundle) == second.serial  # new handshakes: the new certificate
        assert _get(kept, "/healthz").startswith(b"HTTP/1.1 200")  # not dropped
        kept.close()

        # A broken pair on disk: the reload is refused and the certificate in use is kept.
        shutil.copyfile(first.key_path, tmp_path / "server.key")
        os.kill(proc.pid, signal.SIGHUP)
        _wait(lambda: any(x["message"].startswith("reload refused") for x in lines()), "no refusal", proc, log)
        assert _peer_serial(port, pki.ca_bundle) == second.serial
        access = [x for x in lines() if x["message"] == "access"]
        assert any(x["route"] == "healthz" and x["status"] == 200 for x in access)

        keeper = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert keeper, "the trace keeper runs as a child"
        # The keeper must not hold the listening socket (it did: connections hung, then reset).
        inode = next(
            os.readlink(f"/proc/{proc.pid}/fd/{fd}")
            for fd in os.listdir(f"/proc/{proc.pid}/fd")
            if _is_listener(proc.pid, fd, port)
        )
        for child in keeper:
            fds = {os.readlink(f"/proc/{child}/fd/{fd}") for fd in os.listdir(f"/proc/{child}/fd")}
            assert inode not in fds
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _is_listener(pid: int, fd: str, port: int) -> bool:
    """True when this descriptor of ``pid`` is the socket listening on ``port``."""
    target = os.readlink(f"/proc/{pid}/fd/{fd}")
    if not target.startswith("socket:["):
        return False
    inode = target[len("socket:[") : -1]
    with open("/proc/net/tcp") as f:
        for row in f.read().splitlines()[1:]:
            cols = row.split()
            if cols[9] == inode and cols[3] == "0A" and int(cols[1].split(":")[1], 16) == port:
                return True
    return False


def test_endpoints_json_is_0600(tmp_path: Path) -> None:
    path = endpoints.write(tmp_path, {"services": {"proxy": {"traces_auth": {"token": "x"}}}})
    assert path.stat().st_mode & 0o777 == 0o600
    assert endpoints.read(tmp_path)["services"]["proxy"]["traces_auth"]["token"] == "x"
