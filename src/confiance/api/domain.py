"""The rules of the API Pro Santé Connectée, free of I/O.

Everything a decision depends on (request fields, the caller's certificate, the registry,
the clock) is passed in, so each rule is unit-tested directly and the HTTP edges only
translate between the wire and these functions.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

from confiance.core.errors import ConfianceError
from confiance.core.files import write_atomic
from confiance.core.oauth_errors import (
    InvalidClientError,
    InvalidRequestError,
    InvalidScopeError,
    InvalidTargetError,
)
from confiance.pki import normalize_dn

from .config import ApiClient

GRANT_TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
GRANT_REFRESH = "refresh_token"
TT_ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
TT_JWT = "urn:ietf:params:oauth:token-type:jwt"
TT_REFRESH = "urn:ietf:params:oauth:token-type:refresh_token"
SUBJECT_TOKEN_TYPES = (TT_ACCESS_TOKEN, TT_JWT)
# ANS's example request names PSC as the subject token's issuer this way.
SUBJECT_ISSUERS = ("psc",)
# Parameters RFC 8693 lets a client repeat; every other one must appear at most once (RFC 6749 §3.2).
REPEATABLE = frozenset({"audience", "resource"})


class AccessDenied(ConfianceError):
    """A resource request refused (RFC 6750): 401 invalid_token or 403 insufficient_scope."""

    def __init__(self, message: str, *, status: int = 401, error: str = "invalid_token", reason: str = "") -> None:
        super().__init__(message, code=error)
        self.status = status
        self.error = error
        self.reason = reason or error
        self.claims: Mapping[str, Any] | None = None  # the verified token's claims, when known


# ----------------------------------------------------------------------------- form parsing
def parse_form(body: bytes, content_type: str | None, max_bytes: int) -> dict[str, list[str]]:
    """Strict ``application/x-www-form-urlencoded`` parsing.

    Duplicated parameters are refused (RFC 6749 §3.2) except those RFC 8693 allows to repeat;
    a body we cannot read is an ``invalid_request``, never an exception escaping as a 500.
    """
    if len(body) > max_bytes:
        raise InvalidRequestError(f"requête trop volumineuse (> {max_bytes} octets)", 413)
    ctype = (content_type or "").split(";", 1)[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise InvalidRequestError("Content-Type attendu : application/x-www-form-urlencoded")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequestError("corps de requête illisible (UTF-8 attendu)") from exc
    form: dict[str, list[str]] = {}
    pairs = text.split("&") if text else []
    if len(pairs) > 64:
        raise InvalidRequestError("trop de paramètres")
    for pair in pairs:
        if not pair:
            continue
        name, _, value = pair.partition("=")
        # JWTs and most values contain no escapes: unquote only when needed (a 1 kB
        # subject_token through unquote_plus costs more than the rest of the parsing).
        if "%" in name or "+" in name:
            name = unquote_plus(name)
        if "%" in value or "+" in value:
            value = unquote_plus(value)
        if name in form and name not in REPEATABLE:
            raise InvalidRequestError(f"paramètre répété : {name[:40]}")
        form.setdefault(name, []).append(value)
    return form


def one(form: Mapping[str, list[str]], name: str, *, required: bool = False, max_len: int = 8192) -> str | None:
    values = form.get(name)
    if not values or values[0] == "":
        if required:
            raise InvalidRequestError(f"paramètre manquant : {name}")
        return None
    value = values[0]
    if len(value) > max_len:
        raise InvalidRequestError(f"paramètre trop long : {name}")
    return value


def split_scope(value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    scopes = tuple(dict.fromkeys(value.split()))
    for s in scopes:
        if len(s) > 128 or not all(c.isalnum() or c in "._:/-" for c in s):
            raise InvalidScopeError(f"scope mal formé : {s[:40]!r}")
    return scopes


# ----------------------------------------------------------------------------- clients
@dataclass(frozen=True)
class Caller:
    """What the edge knows about who is calling: TLS certificate and presented credentials."""

    cert_dn: str | None
    cert_x5t: str | None
    client_id: str | None = None
    secret: str | None = None
    basic_client_id: str | None = None


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def generate_secret() -> tuple[str, str]:
    """A fresh client secret and the SHA-256 the registry stores."""
    s = secrets.token_urlsafe(32)
    return s, secret_hash(s)


class ClientRegistry:
    """Registered API clients, looked up by ``Client_ID_AS`` or by certificate DN.

    Replaced wholesale (``replace``) when the clients file changes, so readers on the
    event loop never see a half-updated registry.
    """

    def __init__(self, clients: Iterable[ApiClient] = ()) -> None:
        self._lock = threading.Lock()
        self._by_id: dict[str, ApiClient] = {}
        self._by_dn: dict[str, list[ApiClient]] = {}
        self.replace(clients)

    def replace(self, clients: Iterable[ApiClient]) -> None:
        by_id: dict[str, ApiClient] = {}
        by_dn: dict[str, list[ApiClient]] = {}
        for c in clients:
            by_id[c.client_id] = c
            by_dn.setdefault(c.dn, []).append(c)
        with self._lock:
            self._by_id, self._by_dn = by_id, by_dn

    def add(self, client: ApiClient) -> None:
        with self._lock:
            clients = [c for c in self._by_id.values() if c.client_id != client.client_id]
        self.replace([*clients, client])

    def get(self, client_id: str) -> ApiClient | None:
        return self._by_id.get(client_id)

    def by_dn(self, dn: str) -> list[ApiClient]:
        return self._by_dn.get(normalize_dn(dn), [])

    def all(self) -> list[ApiClient]:
        return list(self._by_id.values())


def authenticate_client(registry: ClientRegistry, caller: Caller) -> ApiClient:
    """RFC 8705 ``tls_client_auth`` (certificate DN ↔ registered ``Client_ID_AS``), or a
    client secret for clients registered at the sandbox level only.

    The certificate is always required: it is what the issued token is bound to.
    """
    if caller.cert_dn is None or caller.cert_x5t is None:
        raise InvalidClientError("certificat client TLS requis")
    if caller.basic_client_id and caller.client_id and caller.basic_client_id != caller.client_id:
        raise InvalidRequestError("client_id différent dans l'en-tête Authorization et le corps")
    client_id = caller.basic_client_id or caller.client_id
    if client_id is None:
        matches = registry.by_dn(caller.cert_dn)
        if len(matches) != 1:
            raise InvalidClientError(
                "certificat client inconnu : aucun Client_ID_AS enregistré pour ce DN"
                if not matches
                else "plusieurs clients pour ce DN : client_id requis"
            )
        client = matches[0]
    else:
        found = registry.get(client_id)
        if found is None:
            raise InvalidClientError("client inconnu")
        client = found
    if caller.secret is not None:
        if client.level != "sandbox" or client.secret_sha256 is None:
            raise InvalidClientError(
                "authentification par secret refusée : ce client est de niveau Espace de Confiance (mTLS obligatoire)"
            )
        if not hmac.compare_digest(secret_hash(caller.secret), client.secret_sha256):
            raise InvalidClientError("secret client invalide")
        return client
    if caller.cert_dn != client.dn and normalize_dn(caller.cert_dn) != client.dn:
        raise InvalidClientError("le DN du certificat client ne correspond pas au Client_ID_AS enregistré")
    return client


# ----------------------------------------------------------------------------- services
@dataclass(frozen=True)
class Service:
    name: str
    url: str  # base URL on the resource server
    audience: str
    scopes: tuple[str, ...]


@dataclass(frozen=True)
class Catalog:
    """The resource services the AS issues tokens for."""

    services: tuple[Service, ...]

    def by_target(self, value: str) -> Service | None:
        """``audience`` may name a service by audience id, base URL or name; ``resource`` by URL."""
        for s in self.services:
            if value in (s.audience, s.url, s.url.rstrip("/"), s.name):
                return s
        return None

    def owners(self, scope: str) -> list[Service]:
        return [s for s in self.services if scope in s.scopes]


def resolve_targets(
    client: ApiClient, catalog: Catalog, scopes: tuple[str, ...], targets: Iterable[str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Decide the token's ``scope`` and ``aud`` from the request and the client's rights.

    Without ``scope``, the client gets its allowed scopes (restricted to the requested
    audiences if any); every scope must be allowed to the client and belong to one of the
    target services, so a token never carries a right no audience would honour.
    """
    requested: list[Service] = []
    for t in targets:
        svc = catalog.by_target(t)
        if svc is None:
            raise InvalidTargetError(f"audience ou ressource inconnue : {t[:200]}")
        if svc not in requested:
            requested.append(svc)
    allowed = set(client.scopes)
    if not scopes:
        pool = [sc for s in requested for sc in s.scopes] if requested else list(client.scopes)
        scopes = tuple(dict.fromkeys(sc for sc in pool if sc in allowed))
        if not scopes:
            raise InvalidScopeError("aucun scope autorisé pour ce client sur la cible demandée")
    for sc in scopes:
        if not catalog.owners(sc):
            raise InvalidScopeError(f"scope inconnu : {sc}")
        if sc not in allowed:
            raise InvalidScopeError(f"scope non autorisé pour le client {client.client_id} : {sc}")
    if requested:
        for sc in scopes:
            if not any(sc in s.scopes for s in requested):
                raise InvalidScopeError(f"le scope {sc} n'appartient à aucune audience demandée")
        audiences = tuple(s.audience for s in requested)
    else:
        audiences = tuple(dict.fromkeys(s.audience for sc in scopes for s in catalog.owners(sc)))
    return scopes, audiences


# ----------------------------------------------------------------------------- exchange
@dataclass(frozen=True)
class ExchangeRequest:
    subject_token: str
    subject_token_type: str
    scopes: tuple[str, ...]
    targets: tuple[str, ...]


def parse_exchange(form: Mapping[str, list[str]]) -> ExchangeRequest:
    """Validate an RFC 8693 token-exchange request as the CI-SIS volet describes it."""
    subject_token = one(form, "subject_token", required=True, max_len=16384)
    stt = one(form, "subject_token_type", required=True)
    assert subject_token is not None and stt is not None
    if stt not in SUBJECT_TOKEN_TYPES:
        raise InvalidRequestError(f"subject_token_type non pris en charge : {stt[:100]}")
    issuer = one(form, "subject_issuer")
    if issuer is not None and issuer not in SUBJECT_ISSUERS:
        raise InvalidRequestError(f"subject_issuer non pris en charge : {issuer[:100]} (attendu : psc)")
    if one(form, "actor_token") is not None or one(form, "actor_token_type") is not None:
        raise InvalidRequestError("la délégation (actor_token) n'est pas prise en charge")
    rtt = one(form, "requested_token_type")
    if rtt is not None and rtt not in (TT_ACCESS_TOKEN, TT_JWT):
        raise InvalidRequestError(f"requested_token_type non pris en charge : {rtt[:100]}")
    resources = tuple(form.get("resource", ()))
    for r in resources:
        if not r.startswith("https://") or "#" in r:
            raise InvalidTargetError("resource doit être une URI https absolue sans fragment")
    targets = tuple(v for v in (*form.get("audience", ()), *resources) if v)
    return ExchangeRequest(subject_token, stt, split_scope(one(form, "scope", max_len=2048)), targets)


@dataclass(frozen=True)
class Subject:
    """The professional behind a validated PSC access token."""

    sub: str
    national_id: str
    session_state: str | None
    psc_client_id: str | None
    exp: float
    issuer: str


def subject_from_claims(claims: Mapping[str, Any], issuer: str, now: float) -> Subject:
    """Turn PSC introspection output (or verified JWT claims) into a Subject, or refuse.

    Refuses inactive tokens, tokens of another issuer, expired ones, and anything that is
    not an access token (a PSC refresh or ID token must not be exchangeable).
    """
    if claims.get("active") is False:
        raise InvalidRequestError("subject_token inactif (expiré, révoqué ou session PSC terminée)")
    iss = claims.get("iss")
    if iss is not None and iss != issuer:
        raise InvalidRequestError("subject_token émis par un autre fournisseur que PSC")
    typ = claims.get("typ")
    if typ is not None and str(typ).lower() != "bearer":
        raise InvalidRequestError(f"subject_token n'est pas un jeton d'accès PSC (typ={str(typ)[:20]})")
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or exp <= now:
        raise InvalidRequestError("subject_token expiré")
    national_id = claims.get("SubjectNameID") or claims.get("preferred_username")
    if not isinstance(national_id, str) or not national_id:
        raise InvalidRequestError("subject_token sans identifiant national (SubjectNameID)")
    sub = claims.get("sub")
    session_state = claims.get("session_state") or claims.get("sid")
    azp = claims.get("azp") or claims.get("client_id")
    return Subject(
        sub=str(sub) if sub else national_id,
        national_id=national_id,
        session_state=str(session_state) if session_state else None,
        psc_client_id=str(azp) if azp else None,
        exp=float(exp),
        issuer=issuer,
    )


def access_token_claims(
    *,
    issuer: str,
    subject: Subject,
    client: ApiClient,
    cert_x5t: str,
    scopes: tuple[str, ...],
    audiences: tuple[str, ...],
    now: float,
    lifetime: int,
    jti: str | None = None,
) -> dict[str, Any]:
    """The API access token (CI-SIS volet): bound to the client certificate by ``cnf``."""
    iat = int(now)
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": subject.sub,
        "aud": audiences[0] if len(audiences) == 1 else list(audiences),
        "exp": iat + lifetime,
        "iat": iat,
        "jti": jti or secrets.token_urlsafe(16),
        "scope": " ".join(scopes),
        "client_id": client.client_id,
        "SubjectNameID": subject.national_id,
        "cnf": {"x5t#S256": cert_x5t},
    }
    if subject.session_state:
        claims["session_state"] = subject.session_state
    if subject.psc_client_id:
        claims["psc_client_id"] = subject.psc_client_id
    return claims


def exchange_response(access_token: str, claims: Mapping[str, Any], refresh_token: str | None) -> dict[str, Any]:
    """RFC 8693 §2.2.1 answer."""
    body: dict[str, Any] = {
        "access_token": access_token,
        "issued_token_type": TT_ACCESS_TOKEN,
        "token_type": "Bearer",
        "expires_in": int(claims["exp"]) - int(claims["iat"]),
        "scope": claims["scope"],
    }
    if refresh_token is not None:
        body["refresh_token"] = refresh_token
    return body


# ----------------------------------------------------------------------------- revocation
class RevocationList:
    """Revoked ``jti`` values, each kept until the token it names would have expired anyway.

    The AS and the resource services share one instance (same process, see docs/api.md):
    a revocation is effective on the next resource request, with no polling window. With a
    ``path``, each revocation is appended to a JSON-lines file and reloaded at start, so a
    restart does not bring revoked tokens back to life.
    """

    def __init__(self, path: Path | None = None, now: float | None = None) -> None:
        self._revoked: dict[str, float] = {}
        self._lock = threading.Lock()
        self.path = path
        if path is not None and path.exists():
            current = time.time() if now is None else now
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    item = json.loads(line)
                    jti, exp = str(item["jti"]), float(item["exp"])
                except (ValueError, KeyError, TypeError):
                    continue  # a torn last line after a crash: skip it
                if exp > current:
                    self._revoked[jti] = exp
            self._rewrite()

    def _rewrite(self) -> None:
        assert self.path is not None
        write_atomic(self.path, "".join(json.dumps({"jti": j, "exp": e}) + "\n" for j, e in self._revoked.items()))

    def revoke(self, jti: str, exp: float) -> None:
        with self._lock:
            self._revoked[jti] = exp
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps({"jti": jti, "exp": exp}) + "\n")

    def is_revoked(self, jti: str) -> bool:
        return jti in self._revoked

    def prune(self, now: float) -> int:
        with self._lock:
            dead = [j for j, exp in self._revoked.items() if exp <= now]
            for j in dead:
                del self._revoked[j]
            if dead and self.path is not None:
                self._rewrite()
        return len(dead)

    def __len__(self) -> int:
        return len(self._revoked)


@dataclass
class RefreshGrant:
    """What an API refresh token stands for; bound to the same client and certificate."""

    client_id: str
    cert_x5t: str
    subject: Subject
    scopes: tuple[str, ...]
    audiences: tuple[str, ...]
    expires_at: float
    access_jtis: list[tuple[str, float]] = field(default_factory=list)


class RefreshStore:
    """Opaque, rotating refresh tokens (stored hashed: a memory dump yields no usable token)."""

    def __init__(self) -> None:
        self._grants: dict[str, RefreshGrant] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    def issue(self, grant: RefreshGrant) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._grants[self._key(token)] = grant
        return token

    def take(self, token: str) -> RefreshGrant | None:
        """Remove and return the grant (rotation: a refresh token works once)."""
        with self._lock:
            return self._grants.pop(self._key(token), None)

    def peek(self, token: str) -> RefreshGrant | None:
        return self._grants.get(self._key(token))

    def prune(self, now: float) -> None:
        with self._lock:
            for k in [k for k, g in self._grants.items() if g.expires_at <= now]:
                del self._grants[k]


# ----------------------------------------------------------------------------- resource side
def check_access(
    claims: Mapping[str, Any],
    *,
    audience: str,
    scopes: tuple[str, ...],
    cert_x5t: str | None,
    revocations: RevocationList,
    now: float,
) -> None:
    """Every check a resource service makes on an already signature-verified API token."""
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or exp <= now:
        raise AccessDenied("jeton expiré", reason="expired")
    aud = claims.get("aud")
    auds = aud if isinstance(aud, list) else [aud]
    if audience not in auds:
        raise AccessDenied("jeton émis pour une autre audience", reason="audience")
    jti = claims.get("jti")
    if not isinstance(jti, str) or revocations.is_revoked(jti):
        raise AccessDenied("jeton révoqué", reason="revoked")
    cnf = claims.get("cnf")
    bound = cnf.get("x5t#S256") if isinstance(cnf, dict) else None
    if not bound:
        raise AccessDenied("jeton non lié à un certificat (cnf absent)", reason="cnf_missing")
    if cert_x5t is None:
        raise AccessDenied("certificat client TLS requis", reason="no_certificate")
    if not hmac.compare_digest(str(bound), cert_x5t):
        raise AccessDenied(
            "le certificat client TLS ne correspond pas à celui auquel le jeton est lié (cnf x5t#S256)",
            reason="cnf_mismatch",
        )
    granted = str(claims.get("scope", "")).split()
    if not any(s in granted for s in scopes):
        raise AccessDenied(
            f"scope requis : {' ou '.join(scopes)}", status=403, error="insufficient_scope", reason="scope"
        )


SESSION_FIELDS = ("nationalId", "clientID", "proxy_session_id", "session_state")


def parse_session_data(body: bytes) -> dict[str, str]:
    """ANS ``SessionData``: four required strings; anything else is a 400 naming the field."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("corps JSON invalide") from exc
    if not isinstance(data, dict):
        raise ValueError("objet JSON attendu")
    out: dict[str, str] = {}
    for name in SESSION_FIELDS:
        value = data.get(name)
        if not isinstance(value, str) or not value:
            raise ValueError(f"champ manquant ou invalide : {name}")
        if len(value) > 512:
            raise ValueError(f"champ trop long : {name}")
        out[name] = value
    return out


def check_session_data(data: Mapping[str, str], claims: Mapping[str, Any]) -> str | None:
    """Why the session data does not match the API token, or None.

    Only a proxy that maps user + LPS → proxy session → PSC session correctly sends the
    nationalId, session_state (and LPS clientID) of the professional its token names.
    """
    if data["nationalId"] != claims.get("SubjectNameID"):
        return "nationalId ne correspond pas au professionnel du jeton"
    if data["session_state"] != claims.get("session_state"):
        return "session_state ne correspond pas à la session PSC du jeton"
    psc_client = claims.get("psc_client_id")
    if psc_client is not None and data["clientID"] != psc_client:
        return "clientID ne correspond pas au client PSC (LPS) de la session"
    return None


def canonical_json(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
