"""The company's solutions: renamed or deleted while no dossier names them yet."""

from __future__ import annotations

from pydantic import ValidationError
from starlette.responses import Response

from .. import schemas as sc
from .common import attempt, read_or_raise, validation_messages
from .core import Flash, Rq


def solutions(rq: Rq) -> Response:
    svc, me = rq.web.service, rq.user_required().principal
    own = read_or_raise(svc.list_solutions, me, mine=True)
    return rq.render("solutions.html", title="Solutions de la structure", solutions=own)


def solution_rename(rq: Rq) -> Response:
    svc, me = rq.web.service, rq.user_required().principal
    try:
        data = sc.SolutionUpdateIn(version=int(rq.f("version") or 0), name=rq.f("name"))
    except (ValidationError, ValueError) as exc:
        details = validation_messages(exc) if isinstance(exc, ValidationError) else []
        return rq.redirect(rq.url("solutions"), Flash("error", "Solution non renommée :", details))
    out, err = attempt(svc.rename_solution, me, rq.int_param("sid"), data)
    if err is not None or out is None:
        return rq.redirect(rq.url("solutions"), err)
    return rq.redirect(rq.url("solutions"), Flash("ok", f"Solution renommée : « {out.name} »."))


def solution_delete(rq: Rq) -> Response:
    svc, me = rq.web.service, rq.user_required().principal
    try:
        version = int(rq.f("version") or 0)
    except ValueError:
        version = 0
    _, err = attempt(svc.delete_solution, me, rq.int_param("sid"), version)
    if err is not None:
        return rq.redirect(rq.url("solutions"), err)
    return rq.redirect(rq.url("solutions"), Flash("ok", "Solution supprimée."))
