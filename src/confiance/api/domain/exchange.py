"""RFC 8693 token exchange as the CI-SIS volet describes it: targets, the PSC subject, the API token.

Each step is a pure function of what the edge read (form, client, catalog, clock), so the
AS chains them (``AuthorizationServerApp._exchange``) and tests call each one directly.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from confiance.core.oauth_errors import (
    InvalidRequestError,
    InvalidScopeError,
    InvalidTargetError,
)

from ..config import ApiClient
from .form import SUBJECT_ISSUERS, SUBJECT_TOKEN_TYPES, TT_ACCESS_TOKEN, TT_JWT, one, split_scope


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
