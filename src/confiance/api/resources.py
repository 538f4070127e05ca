"""The resource services' HTTP edge: signsessiondata (ANS conformity API), INSi-like, DMP-like.

Each request is authorized in the same order: TLS client certificate present, Bearer token
signed by our AS (signature checked once per token, then cached until its ``exp``), then on
every request: not expired, audience of this service, not revoked, bound to *this*
connection's certificate (``cnf`` x5t#S256), scope. Every decision is written to the
access log with the professional and the client.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from confiance.core.health import Health
from confiance.core.jose import TokenError, verify_jwt

from . import demo_data
from .config import TOKEN_ALGS
from .domain import AccessDenied, Service, check_access, check_session_data, parse_session_data
from .runtime import ApiRuntime, CallerCert

log = logging.getLogger("confiance.api.rs")
FHIR_JSON = "application/fhir+json"
OPENAPI_FILE = Path(__file__).with_name("ans-api-psc-conformite.openapi.json")


class VerifiedTokens:
    """Signature/issuer verification result per token string, kept until the token's exp.

    Verifying an RS256 signature costs ≈ 60 µs; a proxy reuses one API token for hours, so
    the per-request checks left are dictionary lookups and a string comparison.
    """

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._data: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def get(self, token: str) -> dict[str, Any] | None:
        return self._data.get(token)

    def put(self, token: str, claims: dict[str, Any], now: float) -> None:
        if self.max_entries <= 0:
            return
        while len(self._data) >= self.max_entries:  # oldest first, O(1); expired ones go in prune()
            self._data.popitem(last=False)
        self._data[token] = claims

    def prune(self, now: float) -> None:
        for k, c in list(self._data.items()):  # list(): a snapshot taken without releasing the GIL
            if c.get("exp", 0) <= now:
                self._data.pop(k, None)

    def clear(self) -> None:
        self._data.clear()


def _denied(exc: AccessDenied) -> Response:
    header = f'Bearer realm="api-psc", error="{exc.error}"'
    return JSONResponse(
        {"code": exc.error, "message": exc.message, "reason": exc.reason},
        status_code=exc.status,
        headers={"WWW-Authenticate": header, "Cache-Control": "no-store"},
    )


def _bad_request(code: str, message: str, status: int = 400) -> Response:
    return JSONResponse({"code": code, "message": message}, status_code=status)


class ResourceServerApp:
    def __init__(self, rt: ApiRuntime) -> None:
        self.rt = rt
        self.max_body = rt.cfg.resource_server.max_body_bytes
        self.verified = VerifiedTokens(rt.cfg.resource_server.verified_token_cache)
        self._signatures: dict[bytes, tuple[str, str]] = {}
        self._answers: OrderedDict[tuple[str, bytes], tuple[str, bytes, str]] = OrderedDict()
        rt.pruners.append(self.verified.prune)
        self.health = Health("api-rs", rt.readiness_checks("rs"))
        self.app = Starlette(
            routes=[
                *self.health.routes(aliases=("/health",)),
                Route("/hello", self.hello),
                Route("/.well-known/jwks.json", self.jwks),
                Route("/admin/access-log", self.access_log, methods=["GET"]),
                Route("/openapi.json", self.openapi),
                Route("/signsessiondata", self.signsessiondata, methods=["POST"]),
                Route("/insi/rechercher", self.insi_search, methods=["POST"]),
                Route("/dmp/fhir/DocumentReference", self.dmp_search, methods=["GET"]),
            ],
            exception_handlers={404: self._not_found, 405: self._not_allowed, Exception: self._crash},
        )

    @staticmethod
    async def _crash(request: Request, _exc: Exception) -> Response:
        log.exception("unexpected error on %s", request.scope.get("path"))
        return _bad_request("server_error", "erreur interne du service", 500)

    @staticmethod
    async def _not_found(_request: Request, _exc: Exception) -> Response:
        return _bad_request("not_found", "ressource inconnue", 404)

    @staticmethod
    async def _not_allowed(_request: Request, exc: Exception) -> Response:
        resp = _bad_request("method_not_allowed", "méthode non autorisée", 405)
        resp.headers.update(getattr(exc, "headers", None) or {})  # keeps Allow (RFC 9110 §15.5.6)
        return resp

    # ------------------------------------------------------------------ authorization
    def authorize(self, request: Request, service: Service) -> tuple[dict[str, Any], CallerCert]:
        """The verified claims of the request's token for ``service``, or AccessDenied."""
        cc = self.rt.caller_cert(request.scope)
        if cc is None:
            raise AccessDenied("certificat client TLS requis", reason="no_certificate")
        header = request.headers.get("authorization")
        if not header or header[:7].lower() != "bearer ":
            raise AccessDenied("jeton d'accès Bearer requis", reason="missing_token")
        token = header[7:].strip()
        now = time.time()
        claims = self.verified.get(token)
        if claims is None:
            try:
                claims = verify_jwt(
                    token, self.rt.as_keys.keyset, algorithms=TOKEN_ALGS, issuer=self.rt.issuer, now=now
                )
            except TokenError as exc:
                reason = "expired" if "expiré" in str(exc) else "signature"
                raise AccessDenied(f"jeton refusé : {exc}", reason=reason) from exc
            for name in ("jti", "scope"):
                if not isinstance(claims.get(name), str):
                    raise AccessDenied(f"jeton sans {name}", reason="claims")
            self.verified.put(token, claims, now)
        try:
            check_access(
                claims,
                audience=service.audience,
                scopes=service.scopes,
                cert_x5t=cc.x5t_s256,
                revocations=self.rt.revocations,
                now=now,
            )
        except AccessDenied as exc:
            exc.claims = claims
            raise
        return claims, cc

    async def _authorized(self, request: Request, name: str) -> tuple[dict[str, Any] | None, Response | None]:
        service = self.rt.service(name)
        try:
            claims, cc = self.authorize(request, service)
        except AccessDenied as exc:
            # Refusals are logged too: who tried (certificate, and token claims if signed by us).
            caller = self.rt.caller_cert(request.scope)
            known = exc.claims or {}
            self.rt.audit.record(
                service=service.name,
                path=request.scope["path"],
                outcome="refused",
                reason=exc.reason,
                professional=known.get("SubjectNameID"),
                client_id=known.get("client_id"),
                dn=caller.subject_dn if caller else None,
                jti=known.get("jti"),
            )
            return None, _denied(exc)
        request.state.caller_dn = cc.subject_dn
        request.state.caller_x5t = cc.x5t_s256
        return claims, None

    def _log_ok(self, request: Request, name: str, claims: dict[str, Any], status: int, **extra: Any) -> None:
        self.rt.audit.record(
            service=name,
            path=request.scope["path"],
            outcome="ok" if status < 400 else "error",
            status=status,
            professional=claims.get("SubjectNameID"),
            client_id=claims.get("client_id"),
            dn=request.state.caller_dn,
            # what a verifier needs to see the binding held: presented certificate vs token cnf
            cert_x5t=request.state.caller_x5t,
            cnf_x5t=(claims.get("cnf") or {}).get("x5t#S256"),
            jti=claims.get("jti"),
            # what the conformity tool checks the proxy kept to itself: the LPS's cookie and credentials
            received_cookie="cookie" in request.headers,
            query=request.scope.get("query_string", b"").decode("latin-1"),
            authorization_headers=len(request.headers.getlist("authorization")),
            **extra,
        )

    async def _body(self, request: Request) -> bytes | None:
        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit() or int(length) > self.max_body:
                return None
            return await request.body()  # the server enforces Content-Length
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.max_body:
                return None
        return body

    def _signature(self, payload: bytes) -> str:
        """JWS over the session data, reused for identical data while the signing key is current.

        A proxy presents the same session data for the life of a session; the answer is
        only produced after this request's token and data checks passed, so reusing the
        signature of identical bytes attests nothing new and saves the ECDSA operation.
        """
        kid = self.rt.rs_keys.signing_key(self.rt.session_signer.alg).kid
        cached = self._signatures.get(payload)
        if cached is not None and cached[0] == kid:
            return cached[1]
        jws = self.rt.session_signer.sign_bytes(payload)
        if len(self._signatures) >= 50_000:
            self._signatures.clear()
        self._signatures[payload] = (kid or "", jws)
        return jws

    # ------------------------------------------------------------------ routes
    async def hello(self, request: Request) -> Response:
        """Bare endpoint (certificate required, nothing else): the benchmark's ceiling."""
        if self.rt.caller_cert(request.scope) is None:
            return _denied(AccessDenied("certificat client TLS requis", reason="no_certificate"))
        return PlainTextResponse("hello")

    async def jwks(self, _request: Request) -> Response:
        """Keys that verify the ``signature`` of signsessiondata answers."""
        return JSONResponse(self.rt.rs_keys.jwks(), headers={"Cache-Control": "public, max-age=300"})

    async def openapi(self, _request: Request) -> Response:
        """ANS's OpenAPI of the conformity API (MIT licence), pointed at this server."""
        spec = json.loads(OPENAPI_FILE.read_text(encoding="utf-8"))
        server = [{"url": self.rt.service("signsessiondata").url, "description": "Confiance (bac à sable local)"}]
        spec["servers"] = server
        for item in spec.get("paths", {}).values():
            for op in item.values():
                if isinstance(op, dict) and "servers" in op:
                    op["servers"] = server
        return JSONResponse(spec)

    async def signsessiondata(self, request: Request) -> Response:
        claims, denied = await self._authorized(request, "signsessiondata")
        if denied is not None:
            return denied
        assert claims is not None
        body = await self._body(request)
        if body is None:
            self._log_ok(request, "signsessiondata", claims, 413)
            return _bad_request("payload_too_large", f"corps trop volumineux (> {self.max_body} octets)", 413)
        # The data checks below depend only on the body and on the (immutable, verified)
        # claims of this jti: the same token presenting the same bytes gets the same answer.
        # The token checks (exp, aud, revocation, cnf, scope) already ran for this request.
        kid = self.rt.rs_keys.signing_key(self.rt.session_signer.alg).kid or ""
        answer_key = (str(claims["jti"]), body)
        cached = self._answers.get(answer_key)
        if cached is not None and cached[0] == kid:
            self._log_ok(request, "signsessiondata", claims, 200, proxy_session_id=cached[2])
            return Response(cached[1], media_type="application/json")
        try:
            data = parse_session_data(body)
        except ValueError as exc:
            self._log_ok(request, "signsessiondata", claims, 400)
            return _bad_request("invalid_request", str(exc))
        mismatch = check_session_data(data, claims)
        if mismatch is not None:
            self._log_ok(request, "signsessiondata", claims, 400, mismatch=mismatch)
            return _bad_request("session_mismatch", mismatch)
        signature = self._signature(
            json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        )
        self._log_ok(request, "signsessiondata", claims, 200, proxy_session_id=data["proxy_session_id"])
        content = json.dumps({**data, "signature": signature}, ensure_ascii=False, separators=(",", ":")).encode()
        while len(self._answers) >= 50_000:
            self._answers.popitem(last=False)
        self._answers[answer_key] = (kid, content, data["proxy_session_id"])
        return Response(content, media_type="application/json")

    async def access_log(self, request: Request) -> Response:
        """Recent accesses (operators, conformity campaigns): admin bearer token required.

        Filtered by ``proxy_session_id`` (signsessiondata calls carry it) or ``client_id``;
        records hold certificate DN/thumbprint, the token's cnf and jti, never a token.
        """
        expected = self.rt.cfg.resource_server.admin_token
        given = request.headers.get("authorization", "")
        if not expected:
            return _bad_request("access_denied", "journal des accès désactivé (admin_token absent)", 403)
        if not hmac.compare_digest(given.encode(), f"Bearer {expected}".encode()):
            return _bad_request("invalid_token", "jeton d'administration invalide", 401)
        psid = request.query_params.get("proxy_session_id")
        cid = request.query_params.get("client_id")
        records = [
            r
            for r in list(self.rt.audit.recent)
            if (psid is None or r.get("proxy_session_id") == psid) and (cid is None or r.get("client_id") == cid)
        ]
        # Whether each token is revoked *now*: a proxy must revoke its API tokens at logout.
        out = [
            {**r, "revoked": self.rt.revocations.is_revoked(str(r["jti"]))} if r.get("jti") else r
            for r in records[-500:]
        ]
        return JSONResponse({"records": out})

    async def insi_search(self, request: Request) -> Response:
        """INSi-like: traits → INS. Codes as INSi: 00 found, 01 none, 02 several."""
        claims, denied = await self._authorized(request, "insi")
        if denied is not None:
            return denied
        assert claims is not None
        body = await self._body(request)
        try:
            data = json.loads(body or b"")
            if not isinstance(data, dict):
                raise ValueError
        except ValueError:
            self._log_ok(request, "insi", claims, 400)
            return _bad_request("invalid_request", "corps JSON invalide")
        fields = {}
        for name in ("nomNaissance", "prenom", "sexe", "dateNaissance"):
            value = data.get(name)
            if not isinstance(value, str) or not value.strip() or len(value) > 100:
                self._log_ok(request, "insi", claims, 400)
                return _bad_request("invalid_request", f"trait manquant ou invalide : {name}")
            fields[name] = value
        if fields["sexe"] not in ("M", "F"):
            self._log_ok(request, "insi", claims, 400)
            return _bad_request("invalid_request", "sexe attendu : M ou F")
        place = data.get("lieuNaissance")
        if place is not None and (not isinstance(place, str) or len(place) > 10):
            self._log_ok(request, "insi", claims, 400)
            return _bad_request("invalid_request", "lieuNaissance invalide")
        found = demo_data.find_patients(
            fields["nomNaissance"], fields["prenom"], fields["sexe"], fields["dateNaissance"], place
        )
        if not found:
            answer: dict[str, Any] = {"code": "01", "libelle": "Aucune identité trouvée"}
        elif len(found) > 1:
            answer = {"code": "02", "libelle": "Plusieurs identités trouvées : préciser le lieu de naissance"}
        else:
            answer = {"code": "00", "libelle": "Identité trouvée", "identite": found[0].identity()}
        self._log_ok(request, "insi", claims, 200, insi_code=answer["code"])
        return JSONResponse(answer)

    async def dmp_search(self, request: Request) -> Response:
        """DMP-like: FHIR R4 ``DocumentReference?patient.identifier=urn:oid:…|INS`` → searchset Bundle."""
        claims, denied = await self._authorized(request, "dmp")
        if denied is not None:
            return denied
        assert claims is not None
        raw = request.query_params.get("patient.identifier") or request.query_params.get("patient")
        if not raw:
            self._log_ok(request, "dmp", claims, 400)
            return _operation_outcome("required", "paramètre patient.identifier obligatoire", 400)
        system, sep, value = raw.rpartition("|")
        if sep and system != demo_data.INS_SYSTEM:
            self._log_ok(request, "dmp", claims, 400)
            return _operation_outcome("invalid", f"système d'identifiant attendu : {demo_data.INS_SYSTEM}", 400)
        patient = demo_data.patient_by_ins(value)
        base = self.rt.service("dmp").url + "/fhir"
        entries = []
        if patient is not None:
            for doc in demo_data.documents_of(patient):
                resource = demo_data.document_reference(doc, patient, base)
                entries.append({"fullUrl": f"{base}/DocumentReference/{doc.id}", "resource": resource})
        bundle = {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(entries),
            "entry": entries,
        }
        self._log_ok(request, "dmp", claims, 200, patient_found=patient is not None, documents=len(entries))
        return JSONResponse(bundle, media_type=FHIR_JSON)


def _operation_outcome(code: str, text: str, status: int) -> Response:
    return JSONResponse(
        {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": code, "diagnostics": text}],
            "code": "invalid_request",
            "message": text,
        },
        status_code=status,
        media_type=FHIR_JSON,
    )
