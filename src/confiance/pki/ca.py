"""The test IGC-Santé: a root and an intermediate CA, server and ORG AUTH_CLI certificates, CRL.

Real IGC-Santé certificates are ordered on ANS's platform; for a trust space on a laptop we
issue look-alikes from a chain whose every name says TEST, so nobody mistakes them for the
real thing. The on-disk layout is a plain directory so any tool (openssl, nginx, curl) can
use it directly.
"""

from __future__ import annotations

import builtins
import datetime as dt
import fcntl
import ipaddress
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from confiance.core.errors import ConfianceError
from confiance.core.files import write_atomic

from .thumbprint import subject_dn, x5t_s256

ROOT_CN = "TEST AC RACINE IGC-SANTE ELEMENTAIRE"
INTERMEDIATE_CN = "TEST AC IGC-SANTE ELEMENTAIRE ORGANISATIONS"
CA_ORG = "CONFIANCE - IGC-SANTE DE TEST"
CA_OU = "TEST - NE PAS UTILISER EN PRODUCTION"
# The référentiel admits actors and authentication means for three years at most.
MAX_LEAF_DAYS = 3 * 365
CRL_VALIDITY_DAYS = 7
# struct_IdNat: one-digit type prefix (1 = FINESS, 3 = SIRET, …) then the identifier.
STRUCT_ID_RE = re.compile(r"^[0-9][0-9A-Za-z]{8,20}$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


class PkiError(ConfianceError, ValueError):
    """A PKI request that cannot be honoured (bad name, unknown certificate, …)."""

    code = "pki_error"


@dataclass(frozen=True)
class IssuedCertificate:
    name: str
    kind: str  # "server" | "client"
    serial: int
    subject_dn: str
    x5t_s256: str
    not_after: str
    cert_path: str
    key_path: str
    revoked_at: str | None = None
    revocation_reason: str | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _new_key(key_type: str = "rsa") -> PrivateKey:
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _ca_name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, CA_ORG),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, CA_OU),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


class Pki:
    """A test IGC-Santé living in one directory.

    Layout: ``root.{cert,key}.pem``, ``intermediate.{cert,key}.pem``, ``ca-bundle.pem``
    (intermediate + root, what servers and clients trust), ``crl.pem`` (CRLs of both CAs),
    ``issued/NAME.{cert,key}.pem`` and ``registry.json``.
    """

    def __init__(self, directory: Path | str) -> None:
        # Absolute, because issued paths go into other components' config files (read from elsewhere).
        self.dir = Path(directory).resolve()
        if not (self.dir / "intermediate.cert.pem").exists():
            raise PkiError(f"no PKI in {self.dir} (run `confiance pki init`)")
        self._inter_cert = x509.load_pem_x509_certificate((self.dir / "intermediate.cert.pem").read_bytes())
        self._root_cert = x509.load_pem_x509_certificate((self.dir / "root.cert.pem").read_bytes())

    # ----- creation -----
    @classmethod
    def init(cls, directory: Path | str) -> Pki:
        """Create the chain if absent; an existing chain is kept (idempotent, as `up` needs)."""
        d = Path(directory)
        if (d / "intermediate.cert.pem").exists():
            return cls(d)
        d.mkdir(parents=True, exist_ok=True)
        (d / "issued").mkdir(exist_ok=True)
        now = _now()
        root_key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
        root_name = _ca_name(ROOT_CN)
        root = (
            x509.CertificateBuilder()
            .subject_name(root_name)
            .issuer_name(root_name)
            .public_key(root_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=20 * 365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(_ca_key_usage(), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False)
            .sign(root_key, hashes.SHA256())
        )
        inter_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        inter = (
            x509.CertificateBuilder()
            .subject_name(_ca_name(INTERMEDIATE_CN))
            .issuer_name(root_name)
            .public_key(inter_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=10 * 365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_ca_key_usage(), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(inter_key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False)
            .sign(root_key, hashes.SHA256())
        )
        _write_secret(d / "root.key.pem", _key_pem(root_key))
        (d / "root.cert.pem").write_bytes(_cert_pem(root))
        _write_secret(d / "intermediate.key.pem", _key_pem(inter_key))
        (d / "intermediate.cert.pem").write_bytes(_cert_pem(inter))
        (d / "ca-bundle.pem").write_bytes(_cert_pem(inter) + _cert_pem(root))
        (d / "registry.json").write_text("[]\n")
        pki = cls(d)
        pki._write_crl([])
        return pki

    # ----- paths -----
    @property
    def ca_bundle(self) -> Path:
        return self.dir / "ca-bundle.pem"

    @property
    def crl_path(self) -> Path:
        return self.dir / "crl.pem"

    @property
    def root_cert(self) -> x509.Certificate:
        return self._root_cert

    @property
    def intermediate_cert(self) -> x509.Certificate:
        return self._inter_cert

    # ----- issuance -----
    def issue_server(
        self,
        name: str,
        dns: list[str] | None = None,
        ips: list[str] | None = None,
        days: int = 825,
        key_type: str = "rsa",
    ) -> IssuedCertificate:
        """A TLS server certificate; SANs default to localhost and 127.0.0.1."""
        dns = ["localhost"] if dns is None else dns
        ips = ["127.0.0.1"] if ips is None else ips
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        try:
            sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        except ValueError as exc:
            raise PkiError(f"adresse IP invalide: {exc}") from exc
        if not sans:
            raise PkiError("a server certificate needs at least one DNS name or IP address")
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, CA_ORG),
                x509.NameAttribute(NameOID.COMMON_NAME, (dns or ips)[0]),
            ]
        )
        return self._issue(
            name,
            "server",
            subject,
            days,
            key_type,
            extensions=[
                (x509.SubjectAlternativeName(sans), False),
                (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
            ],
        )

    def issue_client(
        self,
        struct_id: str,
        cn: str,
        organization: str | None = None,
        name: str | None = None,
        days: int = MAX_LEAF_DAYS,
        key_type: str = "rsa",
        public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey | None = None,
    ) -> IssuedCertificate:
        """An "ORG AUTH_CLI" certificate: OU = struct_IdNat, CN = service name, clientAuth EKU.

        With ``public_key`` (from a CSR) the key pair stays with the requester: no key is
        generated and ``key_path`` is empty."""
        if not STRUCT_ID_RE.match(struct_id):
            raise PkiError(
                f"identifiant de structure invalide {struct_id!r}: attendu un préfixe d'un chiffre "
                "suivi du SIRET ou du FINESS"
            )
        if not cn or len(cn) > 64 or any(c in cn for c in ',+=\\\n\r<>#;"'):
            raise PkiError(f"CN invalide {cn!r}")
        attrs = [x509.NameAttribute(NameOID.COUNTRY_NAME, "FR")]
        if organization:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
        attrs += [
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, struct_id),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
        return self._issue(
            name or f"{struct_id}-{cn}",
            "client",
            x509.Name(attrs),
            days,
            key_type,
            extensions=[(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)],
            public_key=public_key,
        )

    def _issue(
        self,
        name: str,
        kind: str,
        subject: x509.Name,
        days: int,
        key_type: str,
        extensions: list[tuple[x509.ExtensionType, bool]],
        public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey | None = None,
    ) -> IssuedCertificate:
        if not NAME_RE.match(name):
            raise PkiError(f"nom de fichier de certificat invalide {name!r}")
        if not 1 <= days <= MAX_LEAF_DAYS:
            raise PkiError(f"durée de validité {days} j hors de [1, {MAX_LEAF_DAYS}] (3 ans au plus)")
        inter_key = self._inter_key()
        key: PrivateKey | None = None
        if public_key is None:
            key = _new_key(key_type)
            public_key = key.public_key()
        pub = public_key
        now = _now()
        not_after = min(now + dt.timedelta(days=days), self._inter_cert.not_valid_after_utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._inter_cert.subject)
            .public_key(pub)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=isinstance(pub, rsa.RSAPublicKey),
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(inter_key.public_key()), critical=False)
        )
        for ext, critical in extensions:
            builder = builder.add_extension(ext, critical=critical)
        cert = builder.sign(inter_key, hashes.SHA256())
        with self._locked_registry() as registry:
            if any(r["name"] == name and not r.get("revoked_at") for r in registry):
                raise PkiError(f"un certificat valide nommé {name!r} existe déjà (révoquez-le d'abord)")
            cert_path = self.dir / "issued" / f"{name}.cert.pem"
            key_path = self.dir / "issued" / f"{name}.key.pem"
            if key is not None:
                _write_secret(key_path, _key_pem(key))
            cert_path.write_bytes(_cert_pem(cert))
            issued = IssuedCertificate(
                name=name,
                kind=kind,
                serial=cert.serial_number,
                subject_dn=subject_dn(cert),
                x5t_s256=x5t_s256(cert),
                not_after=not_after.isoformat(),
                cert_path=str(cert_path),
                key_path=str(key_path) if key is not None else "",
            )
            registry.append(asdict(issued))
        return issued

    # ----- lookup -----
    def issued(self) -> list[IssuedCertificate]:
        return [IssuedCertificate(**r) for r in json.loads((self.dir / "registry.json").read_text())]

    def get(self, name: str) -> IssuedCertificate:
        """The latest certificate issued under ``name``."""
        matches = [c for c in self.issued() if c.name == name]
        if not matches:
            raise PkiError(f"aucun certificat nommé {name!r}")
        return matches[-1]

    def ensure_server(self, name: str, dns: list[str] | None = None, ips: list[str] | None = None) -> IssuedCertificate:
        try:
            current = self.get(name)
            if not current.revoked:
                return current
        except PkiError:
            pass
        return self.issue_server(name, dns=dns, ips=ips)

    def ensure_client(self, name: str, struct_id: str, cn: str, organization: str | None = None) -> IssuedCertificate:
        try:
            current = self.get(name)
            if not current.revoked:
                return current
        except PkiError:
            pass
        return self.issue_client(struct_id, cn, organization=organization, name=name)

    # ----- revocation -----
    def revoke(self, what: str | int, reason: str = "unspecified") -> IssuedCertificate:
        """Revoke by name, serial (decimal or 0x-hex) or certificate path, and rewrite the CRL."""
        serial = self._resolve_serial(what)
        with self._locked_registry() as registry:
            for r in registry:
                if r["serial"] == serial:
                    if r.get("revoked_at"):
                        raise PkiError(f"certificat {r['name']!r} déjà révoqué")
                    r["revoked_at"] = _now().isoformat()
                    r["revocation_reason"] = reason
                    found = IssuedCertificate(**r)
                    break
            else:
                raise PkiError(f"certificat inconnu: {what}")
            self._write_crl(registry)
        return found

    def is_revoked(self, serial: int) -> bool:
        return any(c.serial == serial and c.revoked for c in self.issued())

    def _resolve_serial(self, what: str | int) -> int:
        if isinstance(what, int):
            return what
        p = Path(what)
        if p.suffix == ".pem" and p.exists():
            return x509.load_pem_x509_certificate(p.read_bytes()).serial_number
        try:
            return int(what, 16) if what.lower().startswith("0x") else int(what)
        except ValueError:
            return self.get(what).serial

    def _write_crl(self, registry: builtins.list[dict]) -> None:
        now = _now()
        inter_key = self._inter_key()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self._inter_cert.subject)
            .last_update(now - dt.timedelta(minutes=1))
            .next_update(now + dt.timedelta(days=CRL_VALIDITY_DAYS))
            .add_extension(x509.CRLNumber(int(now.timestamp() * 1000)), critical=False)
        )
        for r in registry:
            if r.get("revoked_at"):
                builder = builder.add_revoked_certificate(
                    x509.RevokedCertificateBuilder()
                    .serial_number(r["serial"])
                    .revocation_date(dt.datetime.fromisoformat(r["revoked_at"]))
                    .build()
                )
        inter_crl = builder.sign(inter_key, hashes.SHA256())
        root_key = serialization.load_pem_private_key((self.dir / "root.key.pem").read_bytes(), None)
        assert isinstance(root_key, rsa.RSAPrivateKey)
        root_crl = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self._root_cert.subject)
            .last_update(now - dt.timedelta(minutes=1))
            .next_update(now + dt.timedelta(days=CRL_VALIDITY_DAYS))
            .add_extension(x509.CRLNumber(int(now.timestamp() * 1000)), critical=False)
            .sign(root_key, hashes.SHA256())
        )
        # atomic: servers reloading the CRL never read half a file
        write_atomic(
            self.crl_path,
            inter_crl.public_bytes(serialization.Encoding.PEM) + root_crl.public_bytes(serialization.Encoding.PEM),
        )

    # ----- export -----
    def export_pkcs12(self, name: str, password: str | None = None) -> bytes:
        issued = self.get(name)
        cert = x509.load_pem_x509_certificate(Path(issued.cert_path).read_bytes())
        key = serialization.load_pem_private_key(Path(issued.key_path).read_bytes(), None)
        assert isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
        enc: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password.encode()) if password else serialization.NoEncryption()
        )
        return pkcs12.serialize_key_and_certificates(name.encode(), key, cert, [self._inter_cert, self._root_cert], enc)

    # ----- internals -----
    def _inter_key(self) -> rsa.RSAPrivateKey:
        key = serialization.load_pem_private_key((self.dir / "intermediate.key.pem").read_bytes(), None)
        assert isinstance(key, rsa.RSAPrivateKey)
        return key

    @contextmanager
    def _locked_registry(self) -> Iterator[builtins.list[dict]]:
        """Serialise registry updates across processes (`up`, the guichet and the CLI share it)."""
        with open(self.dir / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                path = self.dir / "registry.json"
                registry = json.loads(path.read_text())
                yield registry
                write_atomic(path, json.dumps(registry, indent=1) + "\n")
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _write_secret(path: Path, data: bytes) -> None:
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_bytes(data)


def describe(cert_pem: bytes) -> dict[str, str]:
    """What `confiance pki show` prints."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        usages = ",".join(u._name for u in eku)
    except x509.ExtensionNotFound:
        usages = ""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = ",".join(str(v.value) for v in san)
    except x509.ExtensionNotFound:
        sans = ""
    return {
        "subject": subject_dn(cert),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": hex(cert.serial_number),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "x5t#S256": x5t_s256(cert),
        "extended_key_usage": usages,
        "subject_alt_names": sans,
    }
