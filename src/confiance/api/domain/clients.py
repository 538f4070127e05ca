"""Who is calling the AS: the client registry and RFC 8705 ``tls_client_auth`` (or a sandbox secret)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from confiance.core.oauth_errors import (
    InvalidClientError,
    InvalidRequestError,
)
from confiance.pki import normalize_dn

from ..config import ApiClient


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
