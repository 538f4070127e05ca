"""The signed conformity report.

The report JSON is written as exact bytes (``report.json``) and signed as a compact JWS
whose payload is those same bytes (``report.json.jws``). The guichet verifies the JWS with
the tool's published JWKS (:func:`verify_report`); a person can still read the JSON file,
and :func:`verify_detached` proves the JSON file is byte-for-byte what was signed.

Base64url has spare bits in a segment's last character: a lenient decoder accepts two
spellings of the same bytes, so "editing one byte" of a JWS could go unnoticed. We refuse
any segment that is not in canonical form, which makes every byte of the file count.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey

from confiance import __version__
from confiance.core.errors import ConfianceError
from confiance.core.files import write_atomic
from confiance.core.jose import KeyStore

from . import TOOL_NAME
from .model import CheckResult, Status

REPORT_ALGS = ("ES256", "RS256")
REPORT_TYP = "confiance-conformity-report+jws"
REQUIRED_KEYS = ("tool", "proxy", "date", "checks", "summary")


class ReportError(ConfianceError, ValueError):
    """The report is not authentic or not well formed (message in French).

    Still a ``ValueError`` for callers that caught it as one before the common error family."""

    code = "invalid_report"


def summarize(checks: list[CheckResult]) -> dict[str, int]:
    counts = {s.value: 0 for s in Status}
    for c in checks:
        counts[c.status.value] += 1
    return {
        "total": len(checks),
        "passed": counts[Status.PASS.value],
        "failed": counts[Status.FAIL.value],
        "unverifiable": counts[Status.UNVERIFIABLE.value],
        "not_applicable": counts[Status.NOT_APPLICABLE.value],
    }


def build_report(
    checks: list[CheckResult],
    *,
    proxy_url: str,
    proxy_version: str | None,
    context: Mapping[str, Any] | None = None,
    date: dt.datetime | None = None,
    preconditions: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The report document (pure).

    ``conforme`` is true when every mandatory check passed (or is not applicable: an
    optional feature the proxy does not offer) and no check failed. An optional check the
    operator did not set up (``unverifiable``) does not block it; a fact the tool could not
    establish never counts as established.
    """
    summary = summarize(checks)
    mandatory_ok = all(c.status in (Status.PASS, Status.NOT_APPLICABLE) for c in checks if c.mandatory)
    return {
        "tool": {"name": TOOL_NAME, "version": __version__},
        "proxy": {"url": proxy_url, "version": proxy_version},
        "date": (date or dt.datetime.now(dt.UTC)).isoformat(timespec="seconds"),
        "context": dict(context or {}),
        "preconditions": dict(preconditions or {}),
        "conforme": summary["failed"] == 0 and mandatory_ok and summary["passed"] > 0,
        "checks": [c.as_dict() for c in checks],
        "summary": summary,
    }


def report_bytes(report: Mapping[str, Any]) -> bytes:
    """The exact bytes that are signed and written to the JSON file.

    Compact on purpose: people read the HTML report, and verifiers built on joserfc refuse
    compact JWS values over 128 KiB (indentation alone adds half the size).
    """
    return (json.dumps(report, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def sign_report(report: Mapping[str, Any], keys: KeyStore, alg: str = "ES256") -> tuple[bytes, str]:
    """Return ``(json_bytes, compact_jws)``; the JWS payload is exactly ``json_bytes``."""
    payload = report_bytes(report)
    return payload, keys.sign_bytes(payload, alg=alg, typ=REPORT_TYP, cty="application/json")


def _canonical_b64(segment: str) -> bytes:
    if not segment or any(c not in _B64_ALPHABET for c in segment):
        raise ReportError("signature invalide: encodage base64url incorrect")
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except ValueError as exc:  # binascii.Error is a ValueError
        raise ReportError("signature invalide: encodage base64url incorrect") from exc
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != segment:
        raise ReportError("signature invalide: encodage base64url non canonique")
    return raw


_B64_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def verify_report(jws_text: str, jwks: Mapping[str, Any]) -> dict[str, Any]:
    """Verify a signed report (compact JWS) with the tool's JWKS and return the report.

    Pure function (no I/O) so the guichet can call it on a deposited file. Raises
    :class:`ReportError` when any byte was changed, the key is unknown, or the document
    is not a conformity report.
    """
    if not isinstance(jws_text, str):
        raise ReportError("rapport signé attendu sous forme de texte JWS compact")
    parts = jws_text.split(".")
    if len(parts) != 3:
        raise ReportError("rapport signé mal formé: JWS compact attendu (trois segments)")
    header_raw = _canonical_b64(parts[0])
    _canonical_b64(parts[1])
    _canonical_b64(parts[2])
    try:
        header = json.loads(header_raw)
    except ValueError as exc:
        raise ReportError("en-tête JWS illisible") from exc
    if not isinstance(header, dict) or header.get("typ") != REPORT_TYP:
        raise ReportError("ce JWS n'est pas un rapport de conformité")
    if header.get("alg") not in REPORT_ALGS:
        raise ReportError(f"algorithme refusé: {header.get('alg')}")
    kids = {k.get("kid") for k in jwks.get("keys", []) if isinstance(k, Mapping)}
    if header.get("kid") not in kids:
        raise ReportError("clé de signature inconnue: ce rapport n'a pas été signé par cet outil")
    jwk = next(k for k in jwks.get("keys", []) if isinstance(k, Mapping) and k.get("kid") == header["kid"])
    if not _signature_ok(header["alg"], jwk, f"{parts[0]}.{parts[1]}".encode("ascii"), _canonical_b64(parts[2])):
        raise ReportError("signature invalide: le rapport a été modifié ou n'a pas été signé par cet outil")
    payload = _canonical_b64(parts[1])
    try:
        report = json.loads(payload)
    except ValueError as exc:
        raise ReportError("contenu du rapport illisible") from exc
    _check_shape(report)
    return report  # type: ignore[no-any-return]


def _signature_ok(alg: str, jwk: Mapping[str, Any], signing_input: bytes, signature: bytes) -> bool:
    """Verify one JWS signature with ``cryptography`` directly.

    joserfc refuses compact values above 128 KiB, and a report with its evidence can be
    larger; the check itself is the standard one (RFC 7515 §5.2, RFC 7518 §3.3/§3.4).
    """
    if jwk.get("alg") not in (None, alg) or jwk.get("use") not in (None, "sig"):
        return False
    try:
        if alg == "ES256":
            if jwk.get("kty") != "EC" or len(signature) != 64:
                return False
            ec_pub = ECKey.import_key(dict(jwk)).public_key
            assert isinstance(ec_pub, ec.EllipticCurvePublicKey)
            der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
            ec_pub.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
            return True
        if alg == "RS256":
            if jwk.get("kty") != "RSA":
                return False
            rsa_pub = RSAKey.import_key(dict(jwk)).public_key
            assert isinstance(rsa_pub, rsa.RSAPublicKey)
            rsa_pub.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
            return True
    except (InvalidSignature, ValueError, JoseError):
        return False
    return False


def verify_detached(json_bytes: bytes, jws_text: str, jwks: Mapping[str, Any]) -> dict[str, Any]:
    """Verify the readable JSON file against its JWS: same bytes, valid signature."""
    report = verify_report(jws_text, jwks)
    if report_bytes(report) != json_bytes or _payload(jws_text) != json_bytes:
        raise ReportError("le fichier JSON diffère du rapport signé")
    return report


def _payload(jws_text: str) -> bytes:
    return _canonical_b64(jws_text.split(".")[1])


def _check_shape(report: Any) -> None:
    if not isinstance(report, dict) or any(k not in report for k in REQUIRED_KEYS):
        raise ReportError("le contenu signé n'est pas un rapport de conformité")
    checks = report["checks"]
    if not isinstance(checks, list) or not all(isinstance(c, dict) for c in checks):
        raise ReportError("liste des vérifications invalide")
    passed = sum(1 for c in checks if c.get("status") == Status.PASS.value)
    failed = sum(1 for c in checks if c.get("status") == Status.FAIL.value)
    summary = report["summary"]
    if not isinstance(summary, dict) or summary.get("passed") != passed or summary.get("failed") != failed:
        raise ReportError("le résumé ne correspond pas aux vérifications")


# ----- the tool's key, kept in the state directory -----


def key_paths(state_dir: Path) -> tuple[Path, Path]:
    base = state_dir / "conformity"
    return base / "keys.json", base / "jwks.json"


def load_keys(state_dir: Path) -> KeyStore:
    """Load (or create) the tool's signing key and (re)publish its public JWKS file."""
    keys_path, jwks_path = key_paths(state_dir)
    store = KeyStore(keys_path, algs=("ES256",))
    publish_jwks(store, jwks_path)
    return store


def publish_jwks(store: KeyStore, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(store.jwks(), indent=2) + "\n")


def read_jwks(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ReportError(f"{path}: JWKS invalide")
    return data
