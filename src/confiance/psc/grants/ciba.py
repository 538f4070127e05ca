"""CIBA poll grant (``urn:openid:params:grant-type:ciba``, CIBA §10.1–§11).

The e-CPS answer is computed lazily from the request's policy snapshot (``ciba_status``),
so polling is all it takes for a decision to surface; ``slow_down`` when polled faster
than ``interval``; the ``auth_req_id`` is single-use.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..clients import Client
from ..errors import (
    AccessDeniedError,
    AuthorizationPendingError,
    ExpiredTokenError,
    InvalidGrantError,
    InvalidRequestError,
    SlowDownError,
)

if TYPE_CHECKING:
    from ..domain import Provider


def exchange(p: Provider, client: Client, params: Mapping[str, str], now: float) -> dict[str, Any]:
    rid = params.get("auth_req_id")
    if not rid:
        raise InvalidRequestError("auth_req_id obligatoire")
    req = p.store.ciba(rid)
    if req is None or req.client_id != client.client_id:
        raise InvalidGrantError("auth_req_id inconnu")
    if req.consumed:
        raise InvalidGrantError("auth_req_id déjà utilisé")
    status = p.ciba_status(req, now)
    if status == "expired":
        raise ExpiredTokenError("la demande d'authentification a expiré")
    if status == "denied":
        if not p.store.consume_ciba(req.id, req.expires_at):
            raise InvalidGrantError("auth_req_id déjà utilisé")
        raise AccessDeniedError("authentification refusée par le professionnel")
    if status == "pending":
        too_fast = req.last_poll is not None and now - req.last_poll < req.interval
        req.last_poll = now
        p.store.put_ciba(req)
        if too_fast:
            raise SlowDownError("interrogation trop fréquente : respecter l'intervalle")
        raise AuthorizationPendingError("authentification en attente de l'utilisateur")
    if not p.store.consume_ciba(req.id, req.expires_at):
        raise InvalidGrantError("auth_req_id déjà utilisé")  # another poll won the race
    if req.national_id not in p.identities:
        raise InvalidGrantError("identité supprimée")
    session = p.new_session(req.national_id, req.channel, now, req.acr)
    grant = p.new_grant(client, session, req.scope, None, now)
    return p.issue(client, grant, session, now, fresh=True)
