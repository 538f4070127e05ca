"""Test IGC-Santé: chain naming, ORG AUTH_CLI subjects, openssl interop, CRL, PKCS#12, CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from confiance.pki import Pki, PkiError
from confiance.pki.thumbprint import normalize_dn, x5t_s256


def _load(path: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(Path(path).read_bytes())


def test_chain_is_named_and_marked_test(pki: Pki):
    root, inter = pki.root_cert, pki.intermediate_cert
    assert "TEST" in root.subject.rfc4514_string() and "IGC-SANTE" in root.subject.rfc4514_string()
    assert "TEST" in inter.subject.rfc4514_string()
    assert inter.issuer == root.subject
    assert inter.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_init_is_idempotent(tmp_path: Path):
    a = Pki.init(tmp_path / "p")
    b = Pki.init(tmp_path / "p")
    assert a.intermediate_cert == b.intermediate_cert


def test_org_auth_cli_certificate(pki: Pki):
    issued = pki.issue_client("3123456789", "my-lps", name="pki-orgauth")
    cert = _load(issued.cert_path)
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "3123456789"
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "my-lps"
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert issued.x5t_s256 == x5t_s256(cert)
    assert issued.subject_dn == "CN=my-lps,OU=3123456789,C=FR"
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days <= 3 * 365 + 1
    assert Path(issued.key_path).stat().st_mode & 0o077 == 0


def test_openssl_verifies_client_and_server(pki: Pki):
    client = pki.issue_client("3123456789", "my-lps", name="pki-openssl-client")
    server = pki.issue_server("pki-openssl-server", dns=["localhost"], ips=["127.0.0.1"])
    for path in (client.cert_path, server.cert_path):
        out = subprocess.run(
            ["openssl", "verify", "-CAfile", str(pki.ca_bundle), path], capture_output=True, text=True, check=False
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip().endswith("OK")
    subject = subprocess.run(
        ["openssl", "x509", "-noout", "-subject", "-in", client.cert_path], capture_output=True, text=True, check=True
    ).stdout
    assert "OU=3123456789" in subject.replace(" = ", "=")


def test_revocation_appears_in_crl_and_openssl_refuses(pki: Pki, tmp_path: Path):
    issued = pki.issue_client("3123456789", "revoked-lps", name="pki-revoke-me")
    pki.revoke("pki-revoke-me", "keyCompromise")
    crl = x509.load_pem_x509_crl(
        pki.crl_path.read_bytes().split(b"-----END X509 CRL-----")[0] + b"-----END X509 CRL-----\n"
    )
    assert crl.get_revoked_certificate_by_serial_number(issued.serial) is not None
    both = tmp_path / "bundle+crl.pem"
    both.write_bytes(pki.ca_bundle.read_bytes() + pki.crl_path.read_bytes())
    out = subprocess.run(
        ["openssl", "verify", "-crl_check", "-CAfile", str(both), issued.cert_path],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode != 0 and "revoked" in (out.stdout + out.stderr)
    with pytest.raises(PkiError):
        pki.revoke("pki-revoke-me")
    assert pki.is_revoked(issued.serial)


@pytest.mark.parametrize("struct_id", ["", "abc", "3123", "3123456789;rm", "3" * 40])
def test_bad_struct_id_refused(pki: Pki, struct_id: str):
    before = len(pki.issued())
    with pytest.raises(PkiError):
        pki.issue_client(struct_id, "x")
    assert len(pki.issued()) == before


@pytest.mark.parametrize("cn", ["", "a,b", "a=b", "x" * 65])
def test_bad_cn_refused(pki: Pki, cn: str):
    with pytest.raises(PkiError):
        pki.issue_client("3123456789", cn)


def test_validity_capped_at_three_years(pki: Pki):
    with pytest.raises(PkiError):
        pki.issue_client("3123456789", "too-long", days=3 * 365 + 1)


def test_duplicate_live_name_refused(pki: Pki):
    pki.issue_client("3123456789", "dup", name="pki-dup")
    with pytest.raises(PkiError):
        pki.issue_client("3123456789", "dup", name="pki-dup")


def test_pkcs12_export_roundtrip(pki: Pki):
    issued = pki.issue_client("3123456789", "p12", name="pki-p12")
    data = pki.export_pkcs12("pki-p12", "secret")
    key, cert, extra = pkcs12.load_key_and_certificates(data, b"secret")
    assert cert is not None and x5t_s256(cert) == issued.x5t_s256
    assert key is not None and len(extra) == 2


def test_normalize_dn():
    assert normalize_dn("cn=my-lps, ou=3123456789 ,C=FR") == "CN=my-lps,OU=3123456789,C=FR"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "confiance", "pki", *args],
        capture_output=True,
        text=True,
        check=False,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )


def test_cli_init_issue_show_revoke(tmp_path: Path):
    d = str(tmp_path / "clipki")
    assert _cli("init", "--dir", d).returncode == 0
    r = _cli("issue-client", "--struct-id", "3123456789", "--cn", "my-lps", "--name", "lps", "--dir", d)
    assert r.returncode == 0, r.stdout + r.stderr
    cert = Path(d) / "issued" / "lps.cert.pem"
    shown = _cli("show", str(cert))
    assert "OU=3123456789" in shown.stdout and "x5t#S256" in shown.stdout
    assert _cli("issue-server", "srv", "--dir", d).returncode == 0
    assert _cli("revoke", "lps", "--dir", d).returncode == 0
    again = _cli("revoke", "lps", "--dir", d)
    assert again.returncode == 2 and "déjà révoqué" in again.stderr  # refusals on stderr (issue 17)
    bad = _cli("issue-client", "--struct-id", "nope", "--cn", "x", "--dir", d)
    assert bad.returncode == 2 and "invalide" in bad.stderr
    missing = _cli("list", "--dir", str(tmp_path / "none"))
    assert missing.returncode == 2


def test_relative_directory_gives_absolute_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """`up` runs with `.confiance` relative to the cwd; issued paths go into other services' configs."""
    monkeypatch.chdir(tmp_path)
    pki = Pki.init(Path("rel-pki"))
    issued = pki.issue_client("3123456789", "rel", name="rel")
    assert Path(issued.cert_path).is_absolute() and Path(issued.key_path).is_absolute()
    assert pki.ca_bundle.is_absolute() and pki.crl_path.is_absolute()
