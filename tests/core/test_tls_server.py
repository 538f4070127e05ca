"""The TLS plumbing: protocol versions, client certificates exposed to the app, CRL, RFC 9440."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from confiance.core.clientcert import CertificateVerifier, client_certificate, encode_header, parse_networks
from confiance.core.http import ClientFactory
from confiance.core.tls import ClientAuth, ClientIdentity
from confiance.pki import Pki
from confiance.pki.thumbprint import x5t_s256
from tests.support import start_https


def _whoami_app(trusted: tuple = (), verifier: CertificateVerifier | None = None) -> Starlette:
    async def whoami(request: Request) -> JSONResponse:
        cc = client_certificate(request.scope, trusted, verifier)
        tls = request.scope.get("extensions", {}).get("tls", {})
        return JSONResponse(
            {
                "dn": cc.subject_dn if cc else None,
                "x5t#S256": cc.x5t_s256 if cc else None,
                "source": cc.source if cc else None,
                "tls_version": tls.get("tls_version"),
            }
        )

    return Starlette(routes=[Route("/whoami", whoami)])


@pytest.fixture(scope="module")
def client_cert(pki: Pki):
    return pki.issue_client("3123456789", "my-lps", name="tls-test-lps")


@pytest.fixture(scope="module")
def mtls_server(pki, server_cert):
    srv = start_https(_whoami_app(), pki, server_cert, ClientAuth.REQUIRED)
    yield srv
    srv.stop()


def _raw_handshake(port: int, version: ssl.TLSVersion, ca: Path, identity=None) -> str:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # OpenSSL 3 refuses TLS 1.0/1.1 at its default level: lower it so the *server* decides.
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.minimum_version = version
    ctx.maximum_version = version
    ctx.load_verify_locations(str(ca))
    if identity:
        ctx.load_cert_chain(identity.cert_path, identity.key_path)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(b"GET /whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := tls.recv(4096):
            data += chunk
        status_line = data.split(b"\r\n", 1)[0].decode()
        return f"{tls.version()} {status_line}"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_tls11_refused_tls12_and_13_accepted(mtls_server, pki, client_cert):
    with pytest.raises(ssl.SSLError):
        _raw_handshake(mtls_server.port, ssl.TLSVersion.TLSv1_1, pki.ca_bundle, client_cert)
    with pytest.raises(ssl.SSLError):
        _raw_handshake(mtls_server.port, ssl.TLSVersion.TLSv1, pki.ca_bundle, client_cert)
    assert _raw_handshake(mtls_server.port, ssl.TLSVersion.TLSv1_2, pki.ca_bundle, client_cert).startswith(
        "TLSv1.2 HTTP/1.1 200"
    )
    assert _raw_handshake(mtls_server.port, ssl.TLSVersion.TLSv1_3, pki.ca_bundle, client_cert).startswith(
        "TLSv1.3 HTTP/1.1 200"
    )


def test_app_reads_subject_dn_and_thumbprint(mtls_server, pki, client_cert):
    factory = ClientFactory(pki.ca_bundle)
    ident = ClientIdentity(Path(client_cert.cert_path), Path(client_cert.key_path))
    r = factory.httpx_sync(ident).get(mtls_server.url + "/whoami")
    body = r.json()
    assert body["dn"] == "CN=my-lps,OU=3123456789,C=FR"
    expected = x5t_s256(Path(client_cert.cert_path).read_bytes() and _der(client_cert.cert_path))
    assert body["x5t#S256"] == expected
    assert body["source"] == "tls"


def _der(path: str) -> bytes:
    return ssl.PEM_cert_to_DER_cert(Path(path).read_text())


def test_required_client_cert_missing_is_refused(mtls_server, pki):
    with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
        httpx.get(mtls_server.url + "/whoami", verify=ssl.create_default_context(cafile=str(pki.ca_bundle)))


def test_foreign_ca_client_cert_is_refused(mtls_server, pki, tmp_path):
    other = Pki.init(tmp_path / "other")
    foreign = other.issue_client("3123456789", "my-lps")
    ctx = ssl.create_default_context(cafile=str(pki.ca_bundle))
    ctx.load_cert_chain(foreign.cert_path, foreign.key_path)
    with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
        httpx.get(mtls_server.url + "/whoami", verify=ctx)


def test_revoked_certificate_refused_by_running_server(pki, server_cert):
    victim = pki.issue_client("3123456789", "to-revoke", name="tls-revoked")
    srv = start_https(_whoami_app(), pki, server_cert, ClientAuth.REQUIRED)
    try:
        ctx = ssl.create_default_context(cafile=str(pki.ca_bundle))
        ctx.load_cert_chain(victim.cert_path, victim.key_path)
        assert httpx.get(srv.url + "/whoami", verify=ctx).status_code == 200
        pki.revoke("tls-revoked", "keyCompromise")
        ctx2 = ssl.create_default_context(cafile=str(pki.ca_bundle))
        ctx2.load_cert_chain(victim.cert_path, victim.key_path)
        with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
            httpx.get(srv.url + "/whoami", verify=ctx2)
    finally:
        srv.stop()


def test_optional_client_auth_serves_anonymous(pki, server_cert):
    srv = start_https(_whoami_app(), pki, server_cert, ClientAuth.OPTIONAL)
    try:
        r = httpx.get(srv.url + "/whoami", verify=ssl.create_default_context(cafile=str(pki.ca_bundle)))
        assert r.status_code == 200 and r.json()["dn"] is None
    finally:
        srv.stop()


def test_client_cert_header_only_from_trusted_proxy(pki, server_cert, client_cert):
    der = _der(client_cert.cert_path)
    header = {"Client-Cert": encode_header(der)}
    verifier = CertificateVerifier(pki.ca_bundle, pki.crl_path)
    trusting = start_https(
        _whoami_app(parse_networks(["127.0.0.1/32"]), verifier), pki, server_cert, ClientAuth.OPTIONAL
    )
    distrusting = start_https(
        _whoami_app(parse_networks(["10.9.9.9/32"]), verifier), pki, server_cert, ClientAuth.OPTIONAL
    )
    verify = ssl.create_default_context(cafile=str(pki.ca_bundle))
    try:
        r = httpx.get(trusting.url + "/whoami", headers=header, verify=verify).json()
        assert r["dn"] == "CN=my-lps,OU=3123456789,C=FR" and r["source"] == "header"
        r = httpx.get(distrusting.url + "/whoami", headers=header, verify=verify).json()
        assert r["dn"] is None
        # a garbage header from the trusted proxy yields no identity, not an error
        r = httpx.get(trusting.url + "/whoami", headers={"Client-Cert": ":bm9wZQ==:"}, verify=verify)
        assert r.status_code == 200 and r.json()["dn"] is None
    finally:
        trusting.stop()
        distrusting.stop()


def test_header_cert_from_foreign_ca_is_ignored(pki, server_cert, tmp_path):
    other = Pki.init(tmp_path / "other2")
    foreign = other.issue_client("3123456789", "intruder")
    verifier = CertificateVerifier(pki.ca_bundle, pki.crl_path)
    srv = start_https(_whoami_app(parse_networks(["127.0.0.0/8"]), verifier), pki, server_cert, ClientAuth.OPTIONAL)
    try:
        r = httpx.get(
            srv.url + "/whoami",
            headers={"Client-Cert": encode_header(_der(foreign.cert_path))},
            verify=ssl.create_default_context(cafile=str(pki.ca_bundle)),
        )
        assert r.json()["dn"] is None
    finally:
        srv.stop()


def test_outbound_client_refuses_tls11_only_server(pki, server_cert):
    """The client factory never negotiates below TLS 1.2."""
    factory = ClientFactory(pki.ca_bundle)
    assert factory.ssl_context().minimum_version == ssl.TLSVersion.TLSv1_2


def test_outbound_clients_present_identity_and_verify_server(mtls_server, pki, client_cert, tmp_path):
    """aiohttp (hot path) and httpx both send the identity's certificate and refuse unknown servers."""
    import asyncio

    ident = ClientIdentity(Path(client_cert.cert_path), Path(client_cert.key_path))

    async def run() -> tuple[int, dict]:
        factory = ClientFactory(pki.ca_bundle)
        try:
            async with factory.aiohttp(ident).get(mtls_server.url + "/whoami") as resp:
                return resp.status, await resp.json()
        finally:
            await factory.aclose()

    status, body = asyncio.run(run())
    assert status == 200 and body["dn"] == "CN=my-lps,OU=3123456789,C=FR"

    other = Pki.init(tmp_path / "untrusted")
    stranger = ClientFactory(other.ca_bundle)
    with pytest.raises(httpx.ConnectError):
        stranger.httpx_sync(ident).get(mtls_server.url + "/whoami")
