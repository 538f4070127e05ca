"""The guichet's JSON API (FastAPI; OpenAPI at ``/openapi.json``).

Authentication: ``Authorization: Bearer cgt_…`` API tokens, one or more per account,
obtained with ``POST /api/auth/token`` (email + password) or ``confiance guichet admin
token``; stored as SHA-256 digests, expiring, revocable. Every route declares who may call
it, and the service re-checks the actor's rights on the object itself (a company never sees
another one's dossiers). Public routes: health, trust list and its JWKS, référentiel, PASSI
registry, registration and login. The JSON API lives under ``/api`` so the web UI can own
``/``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import text as sa_text
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from confiance.core.health import CheckResult, Health

from . import schemas as sc
from .domain.model import Role, SolutionKind
from .domain.workflow import CandidatureStatus
from .services import GuichetService, Principal, ServiceError

log = logging.getLogger("confiance.guichet.api")

IdPath = Annotated[int, Path(ge=1, le=2**31 - 1)]
SlugPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
JWT_MEDIA = "application/jwt"
UPLOAD_TYPES = ["application/pdf", "image/png", "image/jpeg", "application/json", "application/jose", "text/plain"]

bearer = HTTPBearer(auto_error=False, description="Jeton d'API du guichet (cgt_…)")


def principal(request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Principal:
    """Resolve the bearer token to the acting account (401 otherwise)."""
    if creds is None or creds.scheme.lower() != "bearer":
        raise ServiceError(401, "authentification_requise", "jeton d'API requis (Authorization: Bearer …)")
    service: GuichetService = request.app.state.service
    p = service.authenticate(creds.credentials)
    if p is None:
        raise ServiceError(401, "jeton_invalide", "jeton d'API inconnu, expiré ou révoqué")
    return p


Actor = Annotated[Principal, Depends(principal)]


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    return JSONResponse(
        jsonable_encoder({"code": code, "message": message, **extra}), status_code=status, headers=headers
    )


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "jeton absent ou invalide"},
    403: {"description": "action non autorisée"},
    404: {"description": "introuvable"},
    409: {"description": "transition impossible ou conflit de version"},
    422: {"description": "données refusées"},
}


def create_app(
    service: GuichetService, *, sweep_interval: float | None = None, max_upload_bytes: int | None = None
) -> FastAPI:
    """The ASGI app; ``sweep_interval`` runs the service's periodic job (``tick``: expiry,
    notices, renewal reminders) on its schedule while the app runs."""
    upload_limit = max_upload_bytes or service.settings.max_upload_bytes

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        schedule = service.start_schedule(sweep_interval) if sweep_interval else None
        yield
        if schedule is not None:
            await run_in_threadpool(schedule.stop)

    app = FastAPI(
        title="Guichet EDC PSC",
        version="1.0",
        description="Registre des habilitations de l'Espace de Confiance Pro Santé Connect (API JSON).",
        lifespan=lifespan,
        responses=ERRORS,
    )
    app.state.service = service

    @app.exception_handler(ServiceError)
    async def _service_error(_r: Request, exc: ServiceError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        if exc.status == 429:
            headers = {"Retry-After": str(exc.extra.get("retry_after", 60))}
        return _error(exc.status, exc.code, exc.message, headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(_r: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", ""))} for e in exc.errors()][:20]
        return _error(422, "requete_invalide", "requête invalide : vérifiez les champs signalés", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_r: Request, exc: StarletteHTTPException) -> JSONResponse:
        messages = {404: "ressource introuvable", 405: "méthode non autorisée"}
        return _error(
            exc.status_code,
            "http_" + str(exc.status_code),
            messages.get(exc.status_code, str(exc.detail)),
            getattr(exc, "headers", None),
        )

    svc = service

    # ------------------------------------------------------------- public
    @app.get("/health", tags=["public"])
    def health() -> dict[str, str]:
        return {"status": "ok"}

    # /healthz (alive) and /readyz (database answers, trust-list key usable), as every service
    def database() -> CheckResult:
        with service.db.read() as s:
            s.execute(sa_text("SELECT 1"))
        return CheckResult(True)

    async def database_ok() -> CheckResult:
        result: CheckResult = await run_in_threadpool(database)
        return result

    def signing_key() -> CheckResult:
        keys = service.jwks().get("keys") or []
        return CheckResult(bool(keys), "" if keys else "aucune clé de signature de la liste de confiance")

    probes = Health("guichet", {"database": database_ok, "trust_list_key": signing_key})
    app.router.routes.extend(probes.routes())

    @app.get(
        "/trust-list",
        tags=["public"],
        response_class=Response,
        responses={
            200: {
                "content": {JWT_MEDIA: {"schema": {"type": "string"}}},
                "description": "liste de confiance signée (JWS compact)",
            }
        },
    )
    def trust_list() -> Response:
        """Currently valid habilitations, signed (JWS, verify with ``/trust-list/jwks``)."""
        return Response(svc.signed_trust_list(), media_type=JWT_MEDIA, headers={"Cache-Control": "no-cache"})

    @app.get("/trust-list/jwks", tags=["public"])
    def trust_list_jwks() -> dict[str, Any]:
        return svc.jwks()

    @app.get("/.well-known/jwks.json", tags=["public"], include_in_schema=False)
    def well_known_jwks() -> dict[str, Any]:
        return svc.jwks()

    api = APIRouter(prefix="/api")

    @api.post("/auth/register", tags=["comptes"], status_code=201)
    def register(body: sc.RegisterIn) -> sc.AccountOut:
        """A company's mandataire registers it; ANS validates the account before it can act."""
        return svc.register(body)

    @api.post("/auth/token", tags=["comptes"])
    def login(body: sc.LoginIn) -> sc.TokenOut:
        return svc.login(body)

    @api.delete("/auth/token", tags=["comptes"], status_code=204)
    def logout(_a: Actor, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Response:
        if creds is not None:
            svc.revoke_token(creds.credentials)
        return Response(status_code=204)

    @api.get("/referentiel", tags=["référentiel"])
    def referentiel() -> sc.ReferentielOut:
        return svc.current_referentiel()

    @api.get("/referentiel/versions", tags=["référentiel"])
    def referentiel_versions() -> list[str]:
        return svc.list_referentiel_versions()

    @api.post("/referentiel", tags=["référentiel"], status_code=201)
    def publish_referentiel(a: Actor, body: sc.ReferentielIn) -> sc.ReferentielOut:
        """Administrators: publish a new catalogue version."""
        return svc.publish_referentiel(a, body)

    @api.get("/passi", tags=["référentiel"])
    def passi() -> list[sc.PassiOut]:
        return svc.list_passi()

    @api.post("/passi", tags=["référentiel"], status_code=201)
    def add_passi(a: Actor, body: sc.PassiIn) -> sc.PassiOut:
        return svc.add_passi(a, body)

    @api.post("/passi/{pid}/deactivate", tags=["référentiel"])
    def deactivate_passi(a: Actor, pid: IdPath) -> sc.PassiOut:
        return svc.set_passi_active(a, pid, False)

    @api.post("/passi/{pid}/activate", tags=["référentiel"])
    def activate_passi(a: Actor, pid: IdPath) -> sc.PassiOut:
        return svc.set_passi_active(a, pid, True)

    # ------------------------------------------------------------- accounts
    @api.get("/me", tags=["comptes"])
    def me(a: Actor) -> sc.AccountOut:
        return svc.me(a)

    @api.get("/accounts", tags=["comptes"])
    def accounts(a: Actor) -> list[sc.AccountOut]:
        return svc.list_accounts(a)

    @api.post("/accounts", tags=["comptes"], status_code=201)
    def create_account(a: Actor, body: sc.AccountIn) -> sc.AccountOut:
        return svc.create_account(a, body)

    @api.post("/accounts/{aid}/validate", tags=["comptes"])
    def validate_account(a: Actor, aid: IdPath) -> sc.AccountOut:
        return svc.validate_account(a, aid)

    @api.get("/organisations", tags=["comptes"])
    def organisations(a: Actor) -> list[sc.OrganisationOut]:
        return svc.list_organisations(a)

    @api.get("/organisations/{oid}", tags=["comptes"])
    def organisation(a: Actor, oid: IdPath) -> sc.OrganisationOut:
        return svc.get_organisation(a, oid)

    # ------------------------------------------------------------- solutions
    @api.post("/solutions", tags=["solutions"], status_code=201)
    def create_solution(a: Actor, body: sc.SolutionIn) -> sc.SolutionOut:
        return svc.create_solution(a, body)

    @api.get("/solutions", tags=["solutions"])
    def solutions(a: Actor, kind: SolutionKind | None = None, mine: bool = False) -> list[sc.SolutionOut]:
        return svc.list_solutions(a, kind, mine)

    @api.get("/solutions/{sid}", tags=["solutions"])
    def solution(a: Actor, sid: IdPath) -> sc.SolutionOut:
        return svc.get_solution(a, sid)

    @api.patch("/solutions/{sid}", tags=["solutions"])
    def rename_solution(a: Actor, sid: IdPath, body: sc.SolutionUpdateIn) -> sc.SolutionOut:
        return svc.rename_solution(a, sid, body)

    @api.delete("/solutions/{sid}", tags=["solutions"], status_code=204)
    def delete_solution(a: Actor, sid: IdPath, version: int | None = None) -> None:
        svc.delete_solution(a, sid, version)

    @api.put("/solutions/{sid}/components", tags=["solutions"])
    def update_components(a: Actor, sid: IdPath, body: sc.ComponentsUpdateIn) -> sc.SolutionOut:
        return svc.update_components(a, sid, body)

    # ------------------------------------------------------------- candidatures
    @api.post("/candidatures", tags=["candidatures"], status_code=201)
    def create_candidature(a: Actor, body: sc.CandidatureIn) -> sc.CandidatureOut:
        return svc.create_candidature(a, body)

    @api.get("/candidatures", tags=["candidatures"])
    def candidatures(a: Actor, status: CandidatureStatus | None = None) -> list[sc.CandidatureOut]:
        return svc.list_candidatures(a, status)

    @api.get("/candidatures/{cid}", tags=["candidatures"])
    def candidature(a: Actor, cid: IdPath) -> sc.CandidatureDetail:
        return svc.get_candidature(a, cid)

    @api.patch("/candidatures/{cid}", tags=["candidatures"])
    def update_form(a: Actor, cid: IdPath, body: sc.FormUpdateIn) -> sc.CandidatureOut:
        """Edit the declaration; send the ``version`` you read (409 if someone changed it since)."""
        return svc.update_form(a, cid, body)

    @api.post("/candidatures/{cid}/submit", tags=["candidatures"])
    def submit_form(a: Actor, cid: IdPath, body: sc.CommitmentsIn) -> sc.CandidatureOut:
        return svc.submit_form(a, cid, body)

    @api.post("/candidatures/{cid}/validate", tags=["instruction"])
    def validate_form(a: Actor, cid: IdPath, body: sc.ActionIn) -> sc.CandidatureOut:
        return svc.validate_form(a, cid, body)

    @api.post("/candidatures/{cid}/return", tags=["instruction"])
    def return_form(a: Actor, cid: IdPath, body: sc.ReasonIn) -> sc.CandidatureOut:
        return svc.return_form(a, cid, body)

    @api.post("/candidatures/{cid}/abandon", tags=["candidatures"])
    def abandon(a: Actor, cid: IdPath, body: sc.ActionIn) -> sc.CandidatureOut:
        return svc.abandon(a, cid, body)

    @api.post("/candidatures/{cid}/collaborators", tags=["candidatures"])
    def add_collaborator(a: Actor, cid: IdPath, body: sc.CollaboratorIn) -> sc.CandidatureOut:
        return svc.add_collaborator(a, cid, body)

    @api.post("/candidatures/{cid}/decision", tags=["collège"])
    def decide(a: Actor, cid: IdPath, body: sc.DecisionIn) -> sc.CandidatureOut:
        return svc.decide(a, cid, body)

    @api.get("/candidatures/{cid}/parcours", tags=["candidatures"])
    def parcours(a: Actor, cid: IdPath) -> list[sc.StepOut]:
        return svc.parcours_checklist(a, cid)

    @api.post("/candidatures/{cid}/parcours/{step_id}", tags=["candidatures"])
    def declare_step(a: Actor, cid: IdPath, step_id: SlugPath) -> list[sc.StepOut]:
        return svc.declare_step(a, cid, step_id)

    @api.post("/candidatures/{cid}/evidence", tags=["preuves"], status_code=201)
    def deposit(a: Actor, cid: IdPath, body: sc.EvidenceIn) -> sc.EvidenceOut:
        return svc.deposit_evidence(a, cid, body)

    @api.post("/candidatures/{cid}/chapters/{chapter_id}/submit", tags=["preuves"])
    def submit_chapter(a: Actor, cid: IdPath, chapter_id: SlugPath, body: sc.ActionIn) -> sc.ChapterOut:
        return svc.submit_chapter(a, cid, chapter_id, body)

    @api.post("/candidatures/{cid}/chapters/{chapter_id}/review", tags=["instruction"])
    def review_chapter(a: Actor, cid: IdPath, chapter_id: SlugPath, body: sc.ChapterReviewIn) -> sc.ChapterOut:
        return svc.review_chapter(a, cid, chapter_id, body)

    @api.post("/candidatures/{cid}/certificates", tags=["preuves"], status_code=201)
    def order_certificate(a: Actor, cid: IdPath, body: sc.CertificateOrderIn) -> sc.IssuedCertificateOut:
        """Order the IGC-Santé certificate of a component: from a CSR (the key never leaves the
        operator; required in production), or, in the sandbox only, with a generated key
        returned once."""
        return svc.order_certificate(a, cid, body.component_id, body.csr_pem)

    @api.post("/candidatures/{cid}/certificates/{cert_id}/renew", tags=["preuves"], status_code=201)
    def renew_certificate(
        a: Actor, cid: IdPath, cert_id: IdPath, body: sc.CertificateRenewIn
    ) -> sc.IssuedCertificateOut:
        """A new certificate for the same component; the previous one is revoked (superseded)."""
        return svc.renew_certificate(a, cid, cert_id, body.csr_pem)

    @api.get("/candidatures/{cid}/referentiel-changes", tags=["référentiel"])
    def referentiel_changes(a: Actor, cid: IdPath) -> sc.ReferentielDiffOut:
        return svc.referentiel_changes(a, cid)

    @api.post("/candidatures/{cid}/referentiel/adopt", tags=["référentiel"])
    def adopt_referentiel(a: Actor, cid: IdPath, body: sc.ActionIn) -> sc.CandidatureDetail:
        return svc.adopt_referentiel(a, cid, body)

    @api.get("/candidatures/{cid}/audit", tags=["audit"])
    def candidature_audit(a: Actor, cid: IdPath) -> list[sc.AuditOut]:
        return svc.audit_entries(a, f"candidature:{cid}")

    # ------------------------------------------------------------- files
    @api.post(
        "/files",
        tags=["preuves"],
        status_code=201,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in UPLOAD_TYPES},
            }
        },
    )
    async def upload(a: Actor, request: Request) -> sc.FileOut:
        """Upload the raw bytes of a file (Content-Type: its type); returns its SHA-256."""
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > upload_limit):
            raise ServiceError(413, "fichier_trop_gros", f"fichier trop volumineux (maximum {upload_limit} octets)")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > upload_limit:
                raise ServiceError(413, "fichier_trop_gros", f"fichier trop volumineux (maximum {upload_limit} octets)")
            chunks.append(chunk)
        return await run_in_threadpool(svc.upload_file, a, b"".join(chunks), request.headers.get("content-type", ""))

    @api.get("/files/{sha256}", tags=["preuves"], response_class=Response)
    def download(a: Actor, sha256: Annotated[str, Path(pattern=r"^[0-9a-f]{64}$")]) -> Response:
        data, ctype = svc.read_file(a, sha256)
        return Response(
            data, media_type=ctype, headers={"Content-Disposition": "attachment", "X-Content-Type-Options": "nosniff"}
        )

    # ------------------------------------------------------------- habilitations
    @api.get("/habilitations", tags=["habilitations"])
    def habilitations(
        a: Actor,
        valid: bool = False,
        role: Role | None = None,
        q: Annotated[str | None, Query(max_length=200)] = None,
    ) -> list[sc.HabilitationOut]:
        """Every habilitation (``valid=true``: only valid ones), by profile and by editor,
        solution or version (``q``): operators find here the solutions they rely on."""
        return svc.list_habilitations(a, valid, role, q)

    @api.get("/habilitations/{hid}", tags=["habilitations"])
    def habilitation(a: Actor, hid: IdPath) -> sc.HabilitationOut:
        return svc.get_habilitation(a, hid)

    @api.post("/habilitations/{hid}/suspend", tags=["habilitations"])
    def suspend(a: Actor, hid: IdPath, body: sc.ReasonIn) -> sc.HabilitationOut:
        return svc.suspend(a, hid, body)

    @api.post("/habilitations/{hid}/reinstate", tags=["habilitations"])
    def reinstate(a: Actor, hid: IdPath, body: sc.ReasonIn) -> sc.HabilitationOut:
        return svc.reinstate(a, hid, body)

    @api.post("/habilitations/{hid}/withdraw", tags=["habilitations"])
    def withdraw(a: Actor, hid: IdPath, body: sc.ReasonIn) -> sc.HabilitationOut:
        return svc.withdraw(a, hid, body)

    # ------------------------------------------------------------- audit, notifications, admin
    @api.get("/audit", tags=["audit"])
    def audit_log(
        a: Actor,
        target: Annotated[str | None, Query(max_length=100)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> list[sc.AuditOut]:
        return svc.audit_entries(a, target, limit)

    @api.get("/audit/verify", tags=["audit"])
    def audit_verify(a: Actor) -> sc.AuditCheckOut:
        return svc.verify_audit(a)

    @api.get("/notifications", tags=["notifications"])
    def notifications(a: Actor, limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> list[sc.NotificationOut]:
        return svc.notifications(a, limit)

    @api.post("/admin/tick", tags=["habilitations"])
    @api.post("/admin/sweep", tags=["habilitations"], include_in_schema=False)
    def tick(a: Actor) -> sc.SweepOut:
        """Run the periodic job now (administrators): expiry, notices at 90 and 30 days,
        renewal reminders. Idempotent. No date parameter here: moving time is for the host's
        operator (``confiance guichet tick --at``), not for a web client."""
        return svc.tick(a)

    app.include_router(api)
    return app
