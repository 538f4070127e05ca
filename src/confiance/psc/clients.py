"""Registered clients and how a request proves it comes from one (RFC 6749 §2.3, RFC 8705).

Every failure is ``invalid_client`` (401): a caller learns nothing about which part of its
credentials was wrong.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from .errors import InvalidClientError, InvalidRequestError

CIBA_GRANT = "urn:openid:params:grant-type:ciba"
SUPPORTED_GRANTS = (CIBA_GRANT, "authorization_code", "refresh_token")


@dataclass
class Client:
    """A registered client as the domain sees it (built from ``ClientConfig``)."""

    client_id: str
    secret: str | None = None
    subject_dn: str | None = None
    espace_de_confiance: bool = False
    trust_list_required: bool = False
    redirect_uris: tuple[str, ...] = ()
    post_logout_redirect_uris: tuple[str, ...] = ()
    grant_types: tuple[str, ...] = SUPPORTED_GRANTS
    name: str = ""
    id_token_alg: str | None = None
    access_token_alg: str | None = None
    userinfo_alg: str | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "name": self.name,
            "espace_de_confiance": self.espace_de_confiance,
            "trust_list_required": self.trust_list_required,
            "tls_client_auth_subject_dn": self.subject_dn,
            "has_secret": self.secret is not None,
            "redirect_uris": list(self.redirect_uris),
            "post_logout_redirect_uris": list(self.post_logout_redirect_uris),
            "grant_types": list(self.grant_types),
        }


@dataclass(frozen=True)
class Credentials:
    """What the request carried to authenticate a client (extracted by the HTTP edge)."""

    client_id: str | None = None  # from the body
    basic: tuple[str, str] | None = None  # decoded Authorization: Basic
    basic_malformed: bool = False
    secret_post: str | None = None
    cert_dn: str | None = None  # RFC 4514 subject of the verified TLS client certificate


def parse_basic(header: str | None) -> tuple[tuple[str, str] | None, bool]:
    """RFC 6749 §2.3.1: ``Basic base64(urlencode(id):urlencode(secret))``; (creds, malformed)."""
    if not header:
        return None, False
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None, False
    try:
        raw = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None, True
    cid, sep, secret = raw.partition(":")
    if not sep or not cid:
        return None, True
    return (unquote(cid), unquote(secret)), False


def authenticate(clients: Mapping[str, Client], creds: Credentials) -> Client:
    """RFC 6749 §2.3 / RFC 8705 §2.1; every failure is ``invalid_client`` (401)."""
    if creds.basic_malformed:
        raise InvalidClientError("en-tête Authorization Basic mal formé")
    methods = sum(x is not None for x in (creds.basic, creds.secret_post))
    if methods > 1:
        raise InvalidRequestError("plusieurs méthodes d'authentification du client")
    cid = creds.basic[0] if creds.basic else creds.client_id
    if creds.basic and creds.client_id and creds.client_id != creds.basic[0]:
        raise InvalidClientError("client_id incohérent")
    if not cid:
        raise InvalidClientError("authentification du client requise")
    client = clients.get(cid)
    if client is None:
        raise InvalidClientError("client inconnu")
    secret = creds.basic[1] if creds.basic else creds.secret_post
    if secret is not None:
        if client.espace_de_confiance:
            raise InvalidClientError(
                "client de l'Espace de Confiance : authentification mTLS (tls_client_auth) obligatoire"
            )
        if client.secret is None or not hmac.compare_digest(secret.encode(), client.secret.encode()):
            raise InvalidClientError("secret du client invalide")
        return client
    # tls_client_auth: the certificate's subject DN must be the one registered.
    if client.subject_dn is None:
        raise InvalidClientError("authentification du client requise")
    if creds.cert_dn is None:
        raise InvalidClientError("certificat client (mTLS) absent")
    if creds.cert_dn != client.subject_dn:
        raise InvalidClientError("le DN du certificat client ne correspond pas au client")
    return client
