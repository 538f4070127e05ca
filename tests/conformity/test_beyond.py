"""Beyond ANS's tool: refresh, idle expiry, CIBA without answer, legacy TLS — each with a broken double."""

from __future__ import annotations

import socket
import ssl
import threading
import warnings
from collections.abc import Iterator

import pytest

from confiance.pki import IssuedCertificate, Pki
from tests.conformity.harness import SLOW, ManualClock, double_config, explain, run_against, start_double, statuses
from tests.fixtures_api import ApiHandle
from tests.fixtures_psc import PscHandle

ONLY = SLOW | {"connect.ciba"}


def test_correct_double_survives_refresh_and_expires_when_idle(
    pki: Pki, server_cert: IssuedCertificate, psc_sandbox: PscHandle, api_services: ApiHandle
) -> None:
    clock = ManualClock()
    cfg = double_config(psc_sandbox, api_services, idle_ttl=4.0, absolute_ttl=10.0, clock=clock)
    server = start_double(pki, server_cert, cfg)
    try:
        results = run_against(
            server.url, psc_sandbox, api_services, only=ONLY, idle_timeout=4.0, absolute_timeout=10.0, wait=clock.wait
        )
    finally:
        server.stop()
    assert set(statuses(results).values()) == {"pass"}, explain(results)
    idle = next(r for r in results if r.id == "session.idle_timeout")
    assert "POST /send après 5 s d'inactivité" in str(idle.evidence.items)  # the proxy-own idle variant ran


@pytest.mark.parametrize(
    ("defect", "expected"),
    [("no_refresh", {"beyond.refresh", "beyond.idle_expiry"}), ("keeps_dead_sessions", {"beyond.idle_expiry"})],
)
def test_refresh_and_idle_defects(
    defect: str,
    expected: set[str],
    pki: Pki,
    server_cert: IssuedCertificate,
    psc_sandbox: PscHandle,
    api_services: ApiHandle,
) -> None:
    server = start_double(pki, server_cert, double_config(psc_sandbox, api_services, [defect]))
    try:
        results = run_against(server.url, psc_sandbox, api_services, only=ONLY - {"connect.no_answer"})
    finally:
        server.stop()
    assert {k for k, v in statuses(results).items() if v == "fail"} == expected, explain(results)


@pytest.fixture
def legacy_tls_server(server_cert: IssuedCertificate) -> Iterator[str]:
    """A TLS endpoint that (wrongly) accepts TLS 1.0 and 1.1."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.load_cert_chain(server_cert.cert_path, server_cert.key_path)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            try:
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{sock.getsockname()[1]}"
    stop.set()
    thread.join(timeout=2)
    sock.close()


def test_legacy_tls_is_detected(legacy_tls_server: str, psc_sandbox: PscHandle, api_services: ApiHandle) -> None:
    results = run_against(legacy_tls_server, psc_sandbox, api_services, only={"tls.legacy_refused"})
    assert results[0].status.value == "fail", explain(results)
    assert "TLSv1" in results[0].reason and "TLSv1_1" in results[0].reason
