"""The sandbox-only admin API (``/sandbox/admin/…``, ``Authorization: Bearer <admin_token>``).

What a test or an editor's tooling drives: identities, clients, the simulated e-CPS,
pending CIBA requests, lifetimes, key rotation, sessions and the trust-list view. PSC has
no such API; it stands for the ANS portal and the professional's phone.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from confiance.core.config import format_validation_error

from .config import ClientConfig, EcpsPolicy
from .errors import AccessDeniedError, InvalidRequestError, InvalidTokenError
from .http import json_response, read_json
from .identities import Identity
from .store import CibaRequest

if TYPE_CHECKING:
    from .app import Handler, PscSandbox

PREFIX = "/sandbox/admin"
MAX_OUTAGE = 600.0  # an outage always ends by itself, even if whoever started it never comes back


class AdminApi:
    """Handlers of the admin API for one sandbox."""

    def __init__(self, sandbox: PscSandbox) -> None:
        self.sb = sandbox

    def _check(self, request: Request) -> None:
        expected = self.sb.config.admin_token
        if not expected:
            raise AccessDeniedError("API d'administration désactivée (admin_token absent)", 403)
        auth = request.headers.get("authorization", "")
        given = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise InvalidTokenError("jeton d'administration invalide")
        self.sb.shared.sync(force=True)  # show and change what every worker sees

    async def _json(self, request: Request) -> Any:
        return await read_json(request, self.sb.config.max_body_bytes)

    async def identities(self, request: Request) -> Response:
        self._check(request)
        provider = self.sb.provider
        if request.method == "GET":
            return json_response([i.summary() for i in provider.identities.values()])
        data = await self._json(request)
        try:
            ident = Identity.model_validate(data)
        except ValidationError as exc:
            raise InvalidRequestError(format_validation_error(exc, "identité")) from None
        if ident.national_id in provider.identities:
            raise InvalidRequestError("identifiant national déjà utilisé", 409)
        self.sb.register_identity(ident)
        return json_response(ident.summary(), 201)

    async def identity(self, request: Request) -> Response:
        self._check(request)
        nid = request.path_params["national_id"]
        ident = self.sb.provider.identities.get(nid)
        if ident is None:
            raise InvalidRequestError("identité inconnue", 404)
        effective = self.sb.provider.policy_for(nid).model_dump()
        return json_response({**ident.model_dump(exclude_none=True), "ecps_effective": effective})

    async def ecps(self, request: Request) -> Response:
        self._check(request)
        data = await self._json(request)
        nid = request.path_params.get("national_id")
        try:
            policy = EcpsPolicy.model_validate(data)
            self.sb.set_ecps(policy.mode, policy.delay_ms, nid)
        except ValidationError as exc:
            raise InvalidRequestError(format_validation_error(exc, "politique e-CPS")) from None
        except KeyError:
            raise InvalidRequestError("identité inconnue", 404) from None
        return json_response(policy.model_dump())

    async def clients(self, request: Request) -> Response:
        self._check(request)
        if request.method == "GET":
            return json_response([c.describe() for c in self.sb.provider.clients.values()])
        data = await self._json(request)
        try:
            cfg = ClientConfig.model_validate(data)
        except ValidationError as exc:
            raise InvalidRequestError(format_validation_error(exc, "client")) from None
        if cfg.client_id in self.sb.provider.clients:
            raise InvalidRequestError("client_id déjà enregistré", 409)
        return json_response(self.sb.register_client(cfg).describe(), 201)

    async def trust_list(self, request: Request) -> Response:
        """The trust-space check as it stands: the guichet's list this sandbox enforces, which
        clients it applies to, and (``?x5t=<x5t#S256>``) whether one certificate would be
        admitted, with the reason a refusal gives. Why: when CIBA or a token is refused with
        ``unauthorized_client``, the operator sees here what the sandbox knows."""
        self._check(request)
        settings = self.sb.config.trust_list
        trust = self.sb.trust
        if trust is None or settings is None:
            return json_response({"enforced": False})
        out: dict[str, Any] = {"enforced": True, "enforce": settings.enforce, **trust.status()}
        out["clients"] = [
            {"client_id": c.client_id, "checked": settings.applies_to(c.trust_list_required)}
            for c in self.sb.provider.clients.values()
        ]
        x5t = request.query_params.get("x5t")
        if x5t is not None:
            admission = trust.admit(x5t.strip())
            out["certificate"] = {"x5t#S256": x5t.strip(), "admitted": admission.admitted, "reason": admission.reason}
        return json_response(out)

    async def ciba(self, request: Request) -> Response:
        self._check(request)
        provider = self.sb.provider
        pending = provider.pending_ciba(self.sb.clock())
        return json_response([ciba_view(r, provider.identities.get(r.national_id)) for r in pending])

    async def ciba_decide(self, request: Request) -> Response:
        self._check(request)
        if request.path_params["action"] not in ("approve", "deny"):
            raise InvalidRequestError("action inconnue (approve ou deny)", 404)
        approve = request.path_params["action"] == "approve"
        req = self.sb.provider.ciba_decide(request.path_params["rid"], approve, self.sb.clock())
        return json_response({"auth_req_id": req.id, "decision": req.decision})

    async def lifetimes(self, request: Request) -> Response:
        self._check(request)
        if request.method == "GET":
            return json_response(self.sb.provider.lifetimes.model_dump())
        data = await self._json(request)
        if not isinstance(data, dict):
            raise InvalidRequestError("objet JSON attendu")
        try:
            return json_response(self.sb.set_lifetimes(**data).model_dump())
        except ValidationError as exc:
            raise InvalidRequestError(format_validation_error(exc, "durées")) from None

    async def rotate(self, request: Request) -> Response:
        self._check(request)
        self.sb.rotate_keys()
        return json_response({"keys": [k["kid"] for k in self.sb.keys.jwks()["keys"]]})

    async def end_session(self, request: Request) -> Response:
        self._check(request)
        ended = self.sb.provider.end_session(request.path_params["sid"])
        return json_response({"ended": ended}, 200 if ended else 404)

    async def outage(self, request: Request) -> Response:
        """``POST {"seconds": N, "mode": "503"}``: the protocol endpoints (``/auth/…``: CIBA,
        token, introspection, end-session, discovery, JWKS) answer 503 for N seconds, or until
        ``DELETE``; ``GET`` tells whether one is in force. Why: a conformity tool must see how a
        proxy answers when PSC is down without taking the proxy's PSC away."""
        self._check(request)
        if request.method == "DELETE":
            self.sb.end_outage()
        elif request.method == "POST":
            data = await self._json(request)
            if not isinstance(data, dict):
                raise InvalidRequestError("objet JSON attendu")
            seconds, mode = data.get("seconds"), data.get("mode", "503")
            if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 < seconds <= MAX_OUTAGE:
                raise InvalidRequestError(f"seconds : durée en secondes attendue, entre 0 et {MAX_OUTAGE:.0f}")
            if mode != "503":
                raise InvalidRequestError("mode : seul « 503 » est proposé")
            return json_response(self.sb.set_outage(float(seconds), mode))
        return json_response(self.sb.outage_view())

    def routes(self) -> list[tuple[str, Handler, list[str]]]:
        p = PREFIX
        return [
            (f"{p}/identities", self.identities, ["GET", "POST"]),
            (f"{p}/identities/{{national_id}}", self.identity, ["GET"]),
            (f"{p}/identities/{{national_id}}/ecps", self.ecps, ["PUT"]),
            (f"{p}/ecps", self.ecps, ["PUT"]),
            (f"{p}/clients", self.clients, ["GET", "POST"]),
            (f"{p}/trust-list", self.trust_list, ["GET"]),
            (f"{p}/ciba", self.ciba, ["GET"]),
            (f"{p}/ciba/{{rid}}/{{action:str}}", self.ciba_decide, ["POST"]),
            (f"{p}/lifetimes", self.lifetimes, ["GET", "PUT"]),
            (f"{p}/keys/rotate", self.rotate, ["POST"]),
            (f"{p}/sessions/{{sid}}/end", self.end_session, ["POST"]),
            (f"{p}/outage", self.outage, ["GET", "POST", "DELETE"]),
        ]


def ciba_view(r: CibaRequest, ident: Identity | None) -> dict[str, Any]:
    return {
        "auth_req_id": r.id,
        "client_id": r.client_id,
        "national_id": r.national_id,
        "name": f"{ident.given_name} {ident.family_name}" if ident else None,
        "binding_message": r.binding_message,
        "channel": r.channel,
        "scope": r.scope,
        "expires_at": r.expires_at,
        "mode": r.mode,
    }
