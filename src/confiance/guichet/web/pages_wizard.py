"""The candidature wizard (stage 1, the administrative form).

Every problem of the form is reported at once, each beside its field (and listed, linked,
at the top), with what was typed kept — like registration. The checks are the schemas'
and the domain's own (``CandidatureIn``, ``SolutionIn``, ``dependencies.needs_for``), run
field by field here so one error does not hide the next; what only the service can judge
(existing habilitations, duplicates) comes after, on the field it concerns when there is one.
Nothing is written unless the whole form is accepted (one transaction in the service)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from starlette.responses import Response

from .. import schemas as sc
from ..domain import dependencies
from ..domain.errors import DomainError
from ..domain.model import ComponentKind, Role, SolutionKind
from ..services import ServiceError
from .common import COMMITMENTS, COMPONENT_KINDS, MATURITY, PATHS, ROLE_LABELS_STR, attempt, field_errors, read_or_raise
from .core import Flash, NotFound, Rq
from .pages_candidate import _int, slug

# model location -> form field name
WIZARD_FIELDS: dict[tuple[str, ...], str] = {
    ("role",): "role",
    ("level",): "level",
    ("path",): "path",
    ("solution_id",): "solution_id",
    ("new_solution", "name"): "solution_name",
    ("new_solution", "components"): "component_kind",
    ("proxy_solution_id",): "proxy_solution_id",
    ("osp_habilitation_id",): "osp_habilitation_id",
    ("software_name",): "software_name",
    ("software_version",): "software_version",
    ("description",): "description",
    ("nru_numbers",): "nru_numbers",
    ("maturity",): "maturity",
}
# the label each field carries on the page (for the linked summary)
WIZARD_LABELS: dict[str, str] = {
    "role": "Profil demandé",
    "level": "Niveau",
    "path": "Parcours de raccordement",
    "solution_id": "Solution",
    "solution_name": "Nom de la nouvelle solution",
    "component_kind": "Composants",
    "proxy_solution_id": "Proxy e-Santé utilisé",
    "osp_habilitation_id": "Opérateur de proxy (habilitation OSP)",
    "software_name": "Nom du logiciel",
    "software_version": "Version candidate",
    "description": "Description courte",
    "nru_numbers": "Numéros NRU",
    "maturity": "Prérequis de maturité",
    **{f"component_name_{k}": f"Nom du composant {k}" for k, _ in COMPONENT_KINDS},
}
# the element each field's error is attached to (summary links point there)
WIZARD_ANCHORS: dict[str, str] = {
    "role": "f-role",
    "level": "f-level",
    "path": "f-path",
    "solution_id": "f-solution",
    "solution_name": "f-sol-name",
    "component_kind": "f-components",
    "proxy_solution_id": "f-proxy",
    "osp_habilitation_id": "f-osp",
    "software_name": "f-software_name",
    "software_version": "f-software_version",
    "description": "f-description",
    "nru_numbers": "f-nru",
    "maturity": "f-maturity",
    **{f"component_name_{k}": f"f-comp-{k}" for k, _ in COMPONENT_KINDS},
}
# the service's refusals, by the field they are about
WIZARD_CODES = {
    "solution_incoherente": "solution_id",
    "candidature_existante": "solution_id",
    "proxy_invalide": "proxy_solution_id",
    "proxy_requis": "proxy_solution_id",
    "osp_requis": "osp_habilitation_id",
}
_TEXT_FIELDS = (
    "renews_habilitation_id",
    "role",
    "level",
    "path",
    "solution_id",
    "solution_name",
    "software_name",
    "software_version",
    "description",
    "nru_numbers",
    "proxy_solution_id",
    "osp_habilitation_id",
)


def _ctx(rq: Rq, values: dict[str, Any], fe: dict[str, str]) -> dict[str, Any]:
    svc, me = rq.web.service, rq.user_required().principal
    habs = svc.list_habilitations(me, only_valid=True)
    q = rq.query.get("q", "")[:200]
    # operators rely on habilitated solutions of any company, found by editor, name or version
    found = svc.list_habilitations(me, only_valid=True, q=q) if q else habs
    return {
        "q": q,
        "habilitated_proxies": [h for h in found if h.role == Role.ELP],
        "habilitated_software": [h for h in found if h.role == Role.ELU],
        "title": "Nouvelle candidature",
        "v": values,
        "fe": fe,
        "wizard_labels": WIZARD_LABELS,
        "wizard_anchors": WIZARD_ANCHORS,
        "roles": [(r.value, ROLE_LABELS_STR[r.value]) for r in Role],
        "paths": PATHS,
        "solutions": svc.list_solutions(me, mine=True),
        "component_kinds": COMPONENT_KINDS,
        "maturity_items": MATURITY,
        "commitments": COMMITMENTS,
        "elp_habs": [h for h in habs if h.role == Role.ELP],
        "osp_habs": [h for h in habs if h.role == Role.OSP],
    }


def wizard_form(rq: Rq) -> Response:
    values: dict[str, Any] = {
        "role": rq.query.get("role", ""),
        "component_kinds": [],
        "maturity": [],
        "commitments": [],
    }
    renew = _int(rq.query.get("renouvelle", ""))
    if renew is not None:
        # Renewal is a new candidature for the same profile and solution (current evidence).
        me = rq.user_required().principal
        h = read_or_raise(rq.web.service.get_habilitation, me, renew)
        if h.organisation_id != me.organisation_id:
            raise NotFound
        values.update(
            role=h.role.value,
            solution_id=str(h.solution_id),
            renews_habilitation_id=str(h.id),
            software_name=h.solution_name,
        )
    return rq.render("wizard.html", **_ctx(rq, values, {}))


def _read(rq: Rq) -> dict[str, Any]:
    v: dict[str, Any] = {k: rq.f(k) for k in _TEXT_FIELDS}
    v["component_kinds"] = rq.flist("component_kind")
    v["maturity"] = rq.flist("maturity")
    v["commitments"] = rq.flist("commitment")
    for kind, _ in COMPONENT_KINDS:
        v["component_name_" + kind] = rq.f("component_name_" + kind)
    return v


def _new_solution(v: dict[str, Any], role: Role | None, fe: dict[str, str]) -> dict[str, Any]:
    """The solution declared with the candidature, each component checked on its own line."""
    comps: list[dict[str, Any]] = []
    for k in v["component_kinds"]:
        try:
            ck = ComponentKind(k)
        except ValueError:
            fe.setdefault("component_kind", "valeur non proposée")
            continue
        comp = {"kind": ck, "name": v["component_name_" + k] or slug(v["solution_name"] or v["software_name"], k)}
        try:
            sc.ComponentIn.model_validate(comp)
        except ValidationError as exc:
            fe.update(field_errors(exc, {("name",): f"component_name_{k}"}))
            continue
        comps.append(comp)
    if not v["component_kinds"]:
        fe.setdefault("component_kind", "cochez au moins un composant")
    kind = SolutionKind.PROXY if role is not None and role.is_proxy else SolutionKind.USER
    return {"name": v["solution_name"] or v["software_name"], "kind": kind, "components": comps}


def _check(rq: Rq, v: dict[str, Any]) -> tuple[sc.CandidatureIn | None, dict[str, str]]:
    """Every field's problem at once (empty dict: the form is valid as typed)."""
    fe: dict[str, str] = {}
    try:
        role: Role | None = Role(v["role"])
    except ValueError:
        role = None
        fe["role"] = "choisissez le profil demandé (ELU, ELP, OSU ou OSP)"
    new = v["solution_id"] in ("", "new")
    raw: dict[str, Any] = {
        "role": role or Role.ELP,  # a stand-in so the other fields are still checked
        "level": v["level"] or "edc",
        "path": v["path"] or "trust_space",
        "solution_id": None if new else (_int(v["solution_id"]) or 0),
        "new_solution": _new_solution(v, role, fe) if new else None,
        "proxy_solution_id": _int(v["proxy_solution_id"]) if role is Role.ELU else None,
        "osp_habilitation_id": _int(v["osp_habilitation_id"]) if role is Role.OSU else None,
        "software_name": v["software_name"],
        "software_version": v["software_version"],
        "description": v["description"],
        "nru_numbers": [x.strip() for x in v["nru_numbers"].splitlines() if x.strip()],
        "maturity": {k: True for k, _ in MATURITY if k in v["maturity"]},
        "renews_habilitation_id": _int(v["renews_habilitation_id"]),
    }
    data: sc.CandidatureIn | None = None
    try:
        data = sc.CandidatureIn.model_validate(raw)
    except ValidationError as exc:
        for name, msg in field_errors(exc, WIZARD_FIELDS).items():
            fe.setdefault(name, msg)
    if role is not None:
        try:  # what the profile requires it to name (ELU: its proxy, OSU: its OSP)
            dependencies.needs_for(
                role, 0, raw["proxy_solution_id"], raw["osp_habilitation_id"], rq.web.service.parcours.dependencies
            )
        except DomainError as exc:
            fe.setdefault(WIZARD_CODES.get(exc.code, "_form"), exc.message)
    return (data if not fe and role is not None else None), fe


def wizard_submit(rq: Rq) -> Response:
    svc, me = rq.web.service, rq.user_required().principal
    v = _read(rq)
    data, fe = _check(rq, v)
    cand = None
    if data is not None:
        try:
            cand = svc.create_candidature(me, data)
        except ServiceError as exc:
            fe[WIZARD_CODES.get(exc.code, "_form")] = exc.message
    if cand is None:
        return rq.render("wizard.html", status=422, **_ctx(rq, v, fe or {"_form": "candidature refusée"}))
    if rq.f("intent") == "submit":
        if set(v["commitments"]) != {k for k, _ in COMMITMENTS}:
            return rq.redirect(
                rq.url("candidature", cid=cand.id),
                Flash(
                    "info",
                    f"Brouillon n° {cand.id} enregistré. Acceptez les trois engagements pour soumettre le formulaire.",
                ),
            )
        _, err = attempt(
            svc.submit_form,
            me,
            cand.id,
            sc.CommitmentsIn(
                version=cand.version,
                respect_referentiels_cgu=True,
                exactitude_informations=True,
                acceptation_audits=True,
            ),
        )
        if err is not None:
            return rq.redirect(rq.url("candidature", cid=cand.id), err)
        return rq.redirect(
            rq.url("candidature", cid=cand.id),
            Flash("ok", f"Candidature n° {cand.id} soumise à l'ANS : un vérificateur va examiner le formulaire."),
        )
    return rq.redirect(
        rq.url("candidature", cid=cand.id), Flash("ok", f"Brouillon de candidature n° {cand.id} enregistré.")
    )
