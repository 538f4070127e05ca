"""deploy/: the nginx-in-front example run with Debian's real nginx (TLS and the client
certificate end at nginx, RFC 9440 Client-Cert and X-Forwarded-For reach the proxy, what
the caller forges does not), the systemd unit, and the wheel's dependency ranges."""

from __future__ import annotations

import http.server
import os
import re
import signal
import socket
import ssl
import subprocess
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from confiance.core.clientcert import encode_header, from_header
from confiance.core.tls import ServerTLS, client_context, server_context
from confiance.pki import Pki

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
NGINX = Path("/usr/sbin/nginx")
NJS = Path("/usr/lib/nginx/modules/ngx_http_js_module.so")


def _need_nginx() -> None:
    missing = [str(p) for p in (NGINX, NJS) if not p.exists()]
    if missing:
        why = f"nginx absent ({', '.join(missing)}): apt-get install nginx libnginx-mod-http-js (make test does)"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    pki = Pki.init(tmp_path_factory.mktemp("pki-deploy"))
    return {
        "pki": pki,
        "nginx": pki.issue_server("deploy-nginx"),
        "proxy": pki.issue_server("deploy-proxy"),
        "lps": pki.issue_client("31234567890077", "lps-deploy", name="deploy-lps"),
    }


def _site(certs: dict[str, Any], listen: int, upstream: int) -> str:
    """The shipped example, with this test's ports and files in place of /etc paths."""
    text = (DEPLOY / "nginx" / "confiance-proxy.conf").read_text()
    pki = certs["pki"]
    for old, new in {
        '"/etc/nginx/njs/"': f'"{DEPLOY / "nginx"}/"',
        "/etc/confiance/nginx/server.pem": certs["nginx"].cert_path,
        "/etc/confiance/nginx/server.key": certs["nginx"].key_path,
        "/etc/confiance/ca-bundle.pem": str(pki.ca_bundle),
        "listen 443 ssl;": f"listen 127.0.0.1:{listen} ssl;",
        "server 127.0.0.1:8443;": f"server 127.0.0.1:{upstream};",
    }.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


@pytest.fixture
def nginx(tmp_path: Path, certs: dict[str, Any]) -> Iterator[Any]:
    _need_nginx()
    procs: list[subprocess.Popen[bytes]] = []

    def start(upstream: int) -> int:
        port = _free_port()
        (tmp_path / "site.conf").write_text(_site(certs, port, upstream))
        user = "user root;" if os.geteuid() == 0 else ""
        temp = "\n".join(f"{k}_temp_path {tmp_path}/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        (tmp_path / "nginx.conf").write_text(
            f"load_module {NJS};\n{user}\ndaemon off;\nworker_processes 1;\npid {tmp_path}/nginx.pid;\n"
            f"error_log {tmp_path}/error.log warn;\nevents {{}}\n"
            f"http {{\naccess_log off;\n{temp}\ninclude {tmp_path}/site.conf;\n}}\n"
        )
        check = subprocess.run([str(NGINX), "-t", "-c", str(tmp_path / "nginx.conf")], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        proc = subprocess.Popen([str(NGINX), "-c", str(tmp_path / "nginx.conf")])
        procs.append(proc)
        deadline = time.monotonic() + 30  # a bound for a dead nginx, not a speed check
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return port
            except OSError:
                assert proc.poll() is None, (tmp_path / "error.log").read_text()
                assert time.monotonic() < deadline
                time.sleep(0.05)

    yield start
    for proc in procs:
        proc.send_signal(signal.SIGQUIT)
        proc.wait(timeout=30)


class _Echo(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list[dict[str, str]]] = []

    def do_GET(self) -> None:
        _Echo.seen.append({k.lower(): v for k, v in self.headers.items()})
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


def test_nginx_passes_client_cert_and_address_and_drops_forgeries(nginx: Any, certs: dict[str, Any]) -> None:
    """What the proxy receives from nginx, seen by an upstream that records it."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    tls = server_context(ServerTLS(cert=Path(certs["proxy"].cert_path), key=Path(certs["proxy"].key_path)))
    srv.socket = tls.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        port = nginx(srv.server_address[1])
        pki, lps = certs["pki"], certs["lps"]
        forged = {"X-Forwarded-For": "6.6.6.6", "Client-Cert": encode_header(b"forged")}
        with httpx.Client(verify=client_context(pki.ca_bundle), timeout=20) as anonymous:
            assert anonymous.get(f"https://127.0.0.1:{port}/x", headers=forged).status_code == 200
        with httpx.Client(verify=ssl_with_cert(pki.ca_bundle, lps), timeout=20) as with_cert:
            assert with_cert.get(f"https://127.0.0.1:{port}/y", headers=forged).status_code == 200
    finally:
        srv.shutdown()
    anonymous_seen, cert_seen = _Echo.seen[-2:]
    assert anonymous_seen["x-forwarded-for"] == "127.0.0.1"  # replaced, not appended
    assert "client-cert" not in anonymous_seen  # a forged header never passes
    assert cert_seen["x-forwarded-for"] == "127.0.0.1"
    der = from_header(cert_seen["client-cert"])
    assert der == ssl.PEM_cert_to_DER_cert(Path(lps.cert_path).read_text())


def ssl_with_cert(ca: Path, cert: Any) -> ssl.SSLContext:
    ctx = client_context(ca)
    ctx.load_cert_chain(cert.cert_path, cert.key_path)
    return ctx


def test_proxy_behind_nginx(nginx: Any, certs: dict[str, Any], tmp_path: Path) -> None:
    """The real proxy behind the real nginx: routes, ANS errors, access line with nginx's peer."""
    from confiance.proxy.config import ProxyConfig
    from tests.proxy.harness import start_proxy

    pki, proxy_cert, lps = certs["pki"], certs["proxy"], certs["lps"]
    cfg = ProxyConfig.model_validate(
        {
            "server": {
                "port": 0,
                "cert": proxy_cert.cert_path,
                "key": proxy_cert.key_path,
                "trusted_proxies": ["127.0.0.1/32"],
            },
            "outbound": {"ca_bundle": str(pki.ca_bundle)},
            "psc": {"discovery_url": "https://127.0.0.1:9/.well-known/openid-configuration"},
            "lps_clients": [{"client_id": "lps", "auth": "mtls", "cert": lps.cert_path, "key": lps.key_path}],
            "traces": {"url": f"sqlite:///{tmp_path}/traces.db"},
        }
    )
    proxy = start_proxy(cfg, pki)
    try:
        port = nginx(proxy.server.port)
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=client_context(pki.ca_bundle), timeout=20) as c:
            health = c.get("/healthz")
            assert health.status_code == 200 and health.json()["status"] == "ok"
            refused = c.get("/send/dmp/x")
            assert refused.status_code == 401 and refused.json()["code"] == "SESSION_NOT_FOUND"
            assert "proxy_requests_total" in c.get("/metrics").text
    finally:
        proxy.stop()


def test_systemd_unit_runs_check_config_and_reloads_with_sighup() -> None:
    unit = (DEPLOY / "systemd" / "confiance-proxy.service").read_text()
    assert re.search(r"^ExecStart=\S+ proxy serve --config ", unit, re.M)
    assert re.search(r"^ExecStartPre=\S+ proxy check-config --config ", unit, re.M)
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit
    assert "UMask=0077" in unit and "KillSignal=SIGTERM" in unit
    if Path("/usr/bin/systemd-analyze").exists():
        # Syntax only (the paths it names do not exist on a test machine).
        out = subprocess.run(
            ["systemd-analyze", "verify", str(DEPLOY / "systemd" / "confiance-proxy.service")],
            capture_output=True,
            text=True,
        )
        assert "Unknown key" not in out.stderr and "Invalid" not in out.stderr, out.stderr


def test_wheel_declares_ranges_and_the_lock_satisfies_them() -> None:
    from packaging.requirements import Requirement

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = [*meta["dependencies"], *meta["optional-dependencies"]["dev"]]
    lock = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, _, version = line.partition("==")
            lock[re.sub(r"[-_.]+", "-", name.split("[")[0]).lower()] = version.strip()
    for dep in deps:
        req = Requirement(dep)
        assert not any(s.operator == "==" for s in req.specifier), f"{dep}: a pin, not a range"
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        assert name in lock, f"{name} missing from requirements.lock"
        assert req.specifier.contains(lock[name]), f"{name}=={lock[name]} outside {req.specifier}"
