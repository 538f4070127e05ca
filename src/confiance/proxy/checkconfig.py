"""Everything ``serve`` will rely on, checked before it does, every problem in one pass.

``confiance proxy check-config`` prints the report; ``serve`` refuses to start on an error
(one screen, no traceback); ``confiance proxy clients add`` applies the LPS checks to the
client it is about to add (a key that does not match its certificate was accepted, then
``/connect`` answered 500). Each problem names the configuration key and the file, URL or
``host:port`` involved, so the operator knows what to fix without reading code.

What is checked: the server certificate and key (parse, match, validity dates, serverAuth
usage); each LPS certificate and key (parse, match, validity dates, chain to
``outbound.ca_bundle``, the ORG AUTH_CLI usage: clientAuth, digital signature); the
inbound trust files; that the session and trace stores answer. Certificates that expire
within :data:`EXPIRY_WARNING` are warnings. ``now`` is injected: no check depends on the
date the test runs.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID

from confiance.core.logs import redact_url

from .config import LpsClient, ProxyConfig, load_clients_file

EXPIRY_WARNING = dt.timedelta(days=30)
Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    key: str  # the configuration key, e.g. "lps_clients.0.key"
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


def errors(problems: Iterable[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# ---------------------------------------------------------------------------- certificates
def _load_certs(path: Path, key: str, out: list[Problem]) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(path.read_bytes())
    except FileNotFoundError:
        out.append(Problem(key, f"fichier introuvable {path}"))
        return []
    except (OSError, ValueError) as exc:
        out.append(Problem(key, f"certificat PEM illisible {path} ({exc})"))
        return []
    if not certs:
        out.append(Problem(key, f"aucun certificat PEM dans {path}"))
    return certs


def _load_key(path: Path, key: str, out: list[Problem]) -> object | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        out.append(Problem(key, f"fichier introuvable {path}"))
        return None
    except OSError as exc:
        out.append(Problem(key, f"clé illisible {path} ({exc.strerror})"))
        return None
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        out.append(Problem(key, f"clé chiffrée par mot de passe {path} : non prise en charge"))
    except (ValueError, Exception) as exc:  # cryptography raises ValueError or UnsupportedAlgorithm
        out.append(Problem(key, f"clé privée PEM illisible {path} ({type(exc).__name__})"))
    return None


def _spki(public_key: object) -> bytes:
    return public_key.public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _pair(cert_path: Path, key_path: Path, where: str, out: list[Problem]) -> list[x509.Certificate]:
    """Certificate (with any chain in its file) and key: parse and match."""
    certs = _load_certs(cert_path, f"{where}.cert", out)
    priv = _load_key(key_path, f"{where}.key", out)
    if certs and priv is not None:
        pub = priv.public_key()  # type: ignore[attr-defined]
        if _spki(pub) != _spki(certs[0].public_key()):
            out.append(Problem(f"{where}.key", f"la clé {key_path} ne correspond pas au certificat {cert_path}"))
    return certs


def _dates(cert: x509.Certificate, key: str, path: Path, now: dt.datetime, out: list[Problem]) -> None:
    if cert.not_valid_before_utc > now:
        out.append(
            Problem(key, f"certificat {path} pas encore valide (à partir du {cert.not_valid_before_utc:%Y-%m-%d})")
        )
    elif cert.not_valid_after_utc <= now:
        out.append(Problem(key, f"certificat {path} expiré le {cert.not_valid_after_utc:%Y-%m-%d}"))
    elif cert.not_valid_after_utc - now <= EXPIRY_WARNING:
        out.append(
            Problem(
                key, f"certificat {path} expire le {cert.not_valid_after_utc:%Y-%m-%d} (moins de 30 jours)", "warning"
            )
        )


def _usage(cert: x509.Certificate, key: str, path: Path, wanted: x509.ObjectIdentifier, label: str) -> list[Problem]:
    out = []
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if wanted not in eku:
            out.append(Problem(key, f"certificat {path} sans l'usage {label} (extendedKeyUsage)"))
    except x509.ExtensionNotFound:
        out.append(Problem(key, f"certificat {path} sans extendedKeyUsage (attendu : {label})"))
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        if not ku.digital_signature:
            out.append(Problem(key, f"certificat {path} : keyUsage sans digitalSignature"))
    except x509.ExtensionNotFound:
        pass
    return out


def _chain(
    certs: list[x509.Certificate], bundle: list[x509.Certificate], key: str, path: Path, now: dt.datetime
) -> Problem | None:
    """The leaf chains to the bundle (intermediates from the certificate file allowed)."""
    if not bundle:
        return None
    # IGC-Santé ORG AUTH_CLI certificates name a structure in their subject and carry no
    # SAN, which the Web PKI default policy would require (same policy as core.clientcert).
    ee = verification.ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.SubjectAlternativeName, verification.Criticality.AGNOSTIC, None
    )
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store(bundle))
        .time(now)
        .extension_policies(ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee)
        .build_client_verifier()
    )
    try:
        verifier.verify(certs[0], certs[1:])
    except verification.VerificationError as exc:
        return Problem(key, f"certificat {path} : chaîne non vérifiée par le bundle CA ({exc})")
    return None


def check_lps_client(client: LpsClient, where: str, bundle: list[x509.Certificate], now: dt.datetime) -> list[Problem]:
    """One LPS's credentials, as PSC, the AS and the services will judge them."""
    out: list[Problem] = []
    if client.auth != "mtls" or client.cert is None or client.key is None:
        return out
    certs = _pair(client.cert, client.key, where, out)
    if certs:
        leaf = certs[0]
        _dates(leaf, f"{where}.cert", client.cert, now, out)
        out += _usage(leaf, f"{where}.cert", client.cert, ExtendedKeyUsageOID.CLIENT_AUTH, "clientAuth (ORG AUTH_CLI)")
        chain = _chain(certs, bundle, f"{where}.cert", client.cert, now)
        if chain is not None:
            out.append(chain)
    return out


def load_bundle(path: Path, key: str, out: list[Problem]) -> list[x509.Certificate]:
    return _load_certs(path, key, out)


# ---------------------------------------------------------------------------- stores
def _writable_dir(url: str, key: str) -> Problem | None:
    path = Path(url.removeprefix("sqlite:///"))
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        return Problem(key, f"dossier absent pour la base SQLite {path}")
    if not os.access(folder, os.W_OK):
        return Problem(key, f"dossier non accessible en écriture pour la base SQLite {path}")
    return None


def _redis(url: str, key: str) -> Problem | None:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        return Problem(key, f"Redis injoignable à {redact_url(url)} ({type(exc).__name__}: {exc})")
    finally:
        client.close()
    return None


def _database(url: str, key: str) -> Problem | None:
    import sqlalchemy as sa

    from confiance.core.storage import make_engine

    engine = make_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect():
            pass
    except sa.exc.SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0] if str(exc) else type(exc).__name__
        return Problem(key, f"base injoignable à {redact_url(url)} ({reason})")
    finally:
        engine.dispose()
    return None


def check_stores(cfg: ProxyConfig) -> list[Problem]:
    out: list[Problem | None] = []
    s = cfg.sessions
    if s.store == "redis" and s.url:
        out.append(_redis(s.url, "sessions.url"))
    elif s.store == "sqlite" and s.url:
        out.append(_writable_dir(s.url, "sessions.url"))
    t = cfg.traces.url
    out.append(_writable_dir(t, "traces.url") if t.startswith("sqlite:///") else _database(t, "traces.url"))
    return [p for p in out if p is not None]


# ---------------------------------------------------------------------------- checkpoints
def _creatable(path: Path) -> bool:
    """The file can be created: its nearest existing ancestor is a writable directory
    (the proxy creates missing parent directories)."""
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder.is_dir() and os.access(folder, os.W_OK)


def check_checkpoints(cfg: ProxyConfig, verify_witness: bool = False) -> list[Problem]:
    """The trace chain's signing key and witness (checkpoint.py): what ``serve`` will
    open, create or append to. A key nobody can read back or a witness that does not
    verify would only show at the first ``traces verify``, long after the fact.
    ``verify_witness`` checks every signature of the witness (``check-config``; not at
    each start: a witness grows by a line a minute)."""
    from .checkpoint import CheckpointError, FileWitness, load_jwks, read_witness, settings_for

    out: list[Problem] = []
    try:
        settings = settings_for(cfg.traces)
    except CheckpointError as exc:
        return [Problem("traces.checkpoint_key", str(exc))]
    key = Path(settings.key)
    jwks: dict[str, object] | None = None
    if key.exists():
        try:
            jwks = load_jwks(key)
        except (OSError, ValueError, KeyError, TypeError) as exc:  # CheckpointError is a ValueError
            out.append(Problem("traces.checkpoint_key", f"fichier de clés illisible {key} ({exc})"))
        else:
            if not jwks.get("keys"):
                out.append(Problem("traces.checkpoint_key", f"aucune clé ES256 dans {key}"))
                jwks = None
        mode = key.stat().st_mode & 0o777
        if mode & 0o077:
            out.append(
                Problem(
                    "traces.checkpoint_key",
                    f"clé de signature {key} lisible par d'autres que son propriétaire (mode {mode:o}) : chmod 600",
                    "warning",
                )
            )
    elif not _creatable(key):
        out.append(
            Problem("traces.checkpoint_key", f"impossible de créer la clé {key} : dossier non accessible en écriture")
        )
    if settings.witness is not None:
        witness = Path(settings.witness)
        if witness.exists():
            if not os.access(witness, os.W_OK):
                out.append(Problem("traces.witness", f"témoin {witness} non accessible en écriture"))
            elif jwks is not None and verify_witness:
                try:
                    read_witness(FileWitness(witness).lines(), jwks)
                except (OSError, UnicodeDecodeError, CheckpointError) as exc:
                    out.append(Problem("traces.witness", f"{witness} : {exc}"))
        elif not _creatable(witness):
            out.append(
                Problem(
                    "traces.witness", f"impossible de créer le témoin {witness} : dossier non accessible en écriture"
                )
            )
    command = settings.witness_command
    if command and shutil.which(command[0]) is None:
        out.append(Problem("traces.witness_command", f"commande introuvable : {command[0]}"))
    return out


# ---------------------------------------------------------------------------- the whole config
def check(
    cfg: ProxyConfig, now: Callable[[], dt.datetime] = utc_now, stores: bool = True, verify_witness: bool = False
) -> list[Problem]:
    """Every problem of a loaded configuration (errors and warnings), in one list."""
    at = now()
    out: list[Problem] = []
    s = cfg.server
    certs = _pair(s.cert, s.key, "server", out)
    if certs:
        _dates(certs[0], "server.cert", s.cert, at, out)
        out += _usage(certs[0], "server.cert", s.cert, ExtendedKeyUsageOID.SERVER_AUTH, "serverAuth")
    if s.ca_bundle is not None:
        load_bundle(s.ca_bundle, "server.ca_bundle", out)
    if s.crl is not None and s.crl.exists():
        try:
            x509.load_pem_x509_crl(s.crl.read_bytes())
        except ValueError as exc:
            out.append(Problem("server.crl", f"LCR illisible {s.crl} ({exc})"))
    bundle = load_bundle(cfg.outbound.ca_bundle, "outbound.ca_bundle", out)
    for i, c in enumerate(cfg.lps_clients):
        out += check_lps_client(c, f"lps_clients.{i}", bundle, at)
    if cfg.lps_clients_file is not None:
        from confiance.core.config import ConfigError

        try:
            extra = load_clients_file(cfg.lps_clients_file)
        except ConfigError as exc:
            out.append(Problem("lps_clients_file", str(exc)))
            extra = []
        for c in extra:
            out += check_lps_client(c, f"lps_clients_file[{c.client_id}]", bundle, at)
    out += check_checkpoints(cfg, verify_witness)
    if stores:
        out += check_stores(cfg)
    return out


def report(problems: list[Problem]) -> str:
    """The operator's screen: errors first, then warnings, one line each."""
    lines = []
    for p in sorted(problems, key=lambda p: p.severity != "error"):
        lines.append(f"  - {'erreur' if p.severity == 'error' else 'avertissement'} {p}")
    return "\n".join(lines)
