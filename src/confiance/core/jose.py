"""Signing keys with rotation, and strict JWT verification.

Every issuer (PSC sandbox, API authorization server, guichet trust list, conformity tool)
keeps its keys in a JSON file so restarts keep verifiers working. Rotation adds a new
current key and keeps the old ones published until every token they signed has expired.
Verification names the accepted algorithms explicitly: ``none`` and HMAC are never
accepted for tokens signed with public keys (the "HS256 with the public key" attack).
"""

from __future__ import annotations

import fcntl
import json
import secrets
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, RSAKey

from .config import ConfigError
from .errors import ConfianceError
from .files import write_atomic

ASYMMETRIC_ALGS = ("RS256", "PS256", "ES256")

Key = RSAKey | ECKey


class TokenError(ConfianceError, ValueError):
    """A token that must be refused; ``reason`` is safe to show the caller."""

    code = "invalid_token"


def generate_key(alg: str = "RS256", kid: str | None = None) -> Key:
    kid = kid or secrets.token_urlsafe(12)
    params: Any = {"kid": kid, "use": "sig", "alg": alg}
    if alg == "ES256":
        return ECKey.generate_key("P-256", parameters=params)
    if alg in ("RS256", "PS256"):
        return RSAKey.generate_key(2048, parameters=params)
    raise ValueError(f"unsupported signing algorithm {alg}")


@dataclass
class _Entry:
    key: Key
    created: float
    retired_at: float | None = None  # when it stopped signing
    drop_after: float | None = None  # when verifiers may forget it


class KeyStore:
    """Current signing key per algorithm plus retired keys still published in the JWKS."""

    def __init__(self, path: Path | None = None, algs: Collection[str] = ("RS256",)) -> None:
        self.path = path
        self.algs = tuple(algs)
        self._entries: list[_Entry] = []
        if path is not None and path.exists():
            self._load()
        for alg in self.algs:
            if self._current(alg) is None:
                self._entries.append(_Entry(generate_key(alg), time.time()))
        self._save()
        self._refresh_cache()

    # ----- persistence -----
    def _load(self) -> None:
        assert self.path is not None
        try:
            data = json.loads(self.path.read_text())
            for item in data["keys"]:
                jwk = item["jwk"]
                key: Key = ECKey.import_key(jwk) if jwk["kty"] == "EC" else RSAKey.import_key(jwk)
                self._entries.append(_Entry(key, item["created"], item.get("retired_at"), item.get("drop_after")))
        except (ValueError, KeyError, TypeError, JoseError) as exc:
            # never regenerate over it: tokens signed with the lost keys would stop verifying unseen
            raise ConfigError(f"fichier de clés illisible : {self.path} ({type(exc).__name__}: {exc})") from None

    def _save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "keys": [
                {
                    "jwk": e.key.as_dict(private=True),
                    "created": e.created,
                    "retired_at": e.retired_at,
                    "drop_after": e.drop_after,
                }
                for e in self._entries
            ]
        }
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            write_atomic(self.path, json.dumps(data), mode=0o600)

    def _refresh_cache(self) -> None:
        now = time.time()
        self._entries = [e for e in self._entries if e.drop_after is None or e.drop_after > now]
        self._keyset = KeySet([e.key for e in self._entries])
        self._jwks = {"keys": [e.key.as_dict(private=False) for e in self._entries]}

    # ----- use -----
    def _current(self, alg: str) -> _Entry | None:
        for e in reversed(self._entries):
            if e.retired_at is None and e.key.alg == alg:
                return e
        return None

    def signing_key(self, alg: str | None = None) -> Key:
        """The current key for ``alg`` (default: the store's first algorithm)."""
        alg = alg or self.algs[0]
        entry = self._current(alg)
        if entry is None:
            raise ValueError(f"no signing key for {alg}")
        return entry.key

    def rotate(self, keep_for_seconds: float, alg: str | None = None) -> Key:
        """Start signing with a new key; the old one stays in the JWKS ``keep_for_seconds``."""
        now = time.time()
        new_key: Key | None = None
        for a in [alg] if alg else self.algs:
            old = self._current(a)
            if old is not None:
                old.retired_at = now
                old.drop_after = now + keep_for_seconds
            entry = _Entry(generate_key(a), now)
            self._entries.append(entry)
            new_key = entry.key
        self._save()
        self._refresh_cache()
        assert new_key is not None
        return new_key

    def jwks(self) -> dict[str, Any]:
        """The public JWKS (current and not-yet-dropped retired keys)."""
        if any(e.drop_after is not None and e.drop_after <= time.time() for e in self._entries):
            self._refresh_cache()
        return self._jwks

    @property
    def keyset(self) -> KeySet:
        return self._keyset

    def sign(self, claims: Mapping[str, Any], alg: str | None = None, typ: str = "JWT", **header: Any) -> str:
        alg = alg or self.algs[0]
        key = self.signing_key(alg)
        return jwt.encode({"alg": alg, "kid": key.kid, "typ": typ, **header}, dict(claims), key, algorithms=[alg])

    def sign_bytes(self, payload: bytes, alg: str | None = None, **header: Any) -> str:
        """A compact JWS over arbitrary bytes (reports, trust lists, session data)."""
        alg = alg or self.algs[0]
        key = self.signing_key(alg)
        return jws.serialize_compact({"alg": alg, "kid": key.kid, **header}, payload, key, algorithms=[alg])


def verify_jwt(
    token: str,
    keys: KeySet | Mapping[str, Any],
    *,
    algorithms: Collection[str] = ASYMMETRIC_ALGS,
    issuer: str | None = None,
    audience: str | Collection[str] | None = None,
    leeway: int = 0,
    now: float | None = None,
    require: Collection[str] = ("exp", "iat"),
    max_length: int = 16384,
) -> dict[str, Any]:
    """Verify signature, algorithm, ``kid``, ``exp``/``nbf``, ``iss`` and ``aud``; return claims.

    ``max_length`` bounds what is parsed at all: 16 KiB suits access and ID tokens; signed
    documents such as the guichet's trust list grow with the registry and pass a larger bound.
    """
    keyset = keys if isinstance(keys, KeySet) else KeySet.import_key_set(dict(keys))  # type: ignore[arg-type]
    if not isinstance(token, str) or token.count(".") != 2 or len(token) > max_length:
        raise TokenError(
            "jeton mal formé" if isinstance(token, str) and len(token) <= max_length else "jeton trop long"
        )
    registry = None
    if max_length > 16384:  # joserfc's default bound is 128 KB of payload
        registry = jws.JWSRegistry(algorithms=list(algorithms))
        registry.max_payload_length = max_length
    try:
        header = jws.extract_compact(token.encode(), registry=registry).protected
    except (JoseError, ValueError) as exc:
        raise TokenError("jeton mal formé") from exc
    alg = header.get("alg")
    if alg not in algorithms:
        raise TokenError(f"algorithme refusé: {alg}")
    kid = header.get("kid")
    if kid is None or not any(k.kid == kid for k in keyset.keys):
        raise TokenError("clé de signature inconnue (kid)")
    try:
        tok = jwt.decode(token, keyset, algorithms=list(algorithms), registry=registry)
    except (JoseError, ValueError) as exc:
        raise TokenError("signature invalide") from exc
    claims = dict(tok.claims)
    options: dict[str, Any] = {name: {"essential": True} for name in require}
    if issuer is not None:
        options["iss"] = {"essential": True, "value": issuer}
    if audience is not None:
        if isinstance(audience, str):
            options["aud"] = {"essential": True, "value": audience}
        else:
            options["aud"] = {"essential": True, "values": list(audience)}
    claims_registry = jwt.JWTClaimsRegistry(now=int(now if now is not None else time.time()), leeway=leeway, **options)
    try:
        claims_registry.validate(claims)
    except JoseError as exc:
        raise TokenError(_claim_reason(exc)) from exc
    return claims


def _claim_reason(exc: JoseError) -> str:
    name = type(exc).__name__
    if name == "ExpiredTokenError":
        return "jeton expiré"
    if name == "InvalidTokenError":
        return "jeton pas encore valide"
    return f"revendication invalide: {exc.description if hasattr(exc, 'description') else exc}"


def verify_jws(token: str, keys: KeySet | Mapping[str, Any], algorithms: Collection[str] = ASYMMETRIC_ALGS) -> bytes:
    """Verify a compact JWS over bytes; return the payload."""
    keyset = keys if isinstance(keys, KeySet) else KeySet.import_key_set(dict(keys))  # type: ignore[arg-type]
    try:
        header = jws.extract_compact(token.encode()).protected
        if header.get("alg") not in algorithms:
            raise TokenError(f"algorithme refusé: {header.get('alg')}")
        obj = jws.deserialize_compact(token, keyset, algorithms=list(algorithms))
    except (JoseError, ValueError) as exc:
        raise TokenError("signature invalide") from exc
    return obj.payload
