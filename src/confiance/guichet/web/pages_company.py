"""Company pages: habilitations with their dependency graph, and the company's accounts."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from starlette.responses import Response

from .. import schemas as sc
from ..domain.model import (
    HabilitationState,
    HabilitationStatus,
)
from . import graph
from .common import (
    attempt,
    read_or_raise,
    validation_messages,
)
from .core import Flash, Forbidden, Rq
from .pages_candidate import _principal, _svc


# ------------------------------------------------------------------ habilitations & graph
def node_state(h: Any, own_org: int | None) -> str:
    if not h.valid:  # a renewed one is drawn as expired: its successor carries on
        gone = (HabilitationStatus.SUSPENDED, HabilitationStatus.WITHDRAWN)
        return h.status if h.status in gone else HabilitationState.EXPIRED.value
    if h.at_risk:
        return HabilitationState.AT_RISK.value
    if own_org is not None and h.organisation_id != own_org:
        return "externe"
    return HabilitationState.VALID.value


def dependency_nodes(habs: list[Any], org_id: int | None, href: Any = None) -> list[graph.Node]:
    """The organisation's habilitations plus everything they rely on (transitively)."""
    by_id = {h.id: h for h in habs}
    wanted = {h.id for h in habs if org_id is None or h.organisation_id == org_id}
    stack = list(wanted)
    while stack:
        h = by_id.get(stack.pop())
        for dep in h.relies_on if h else []:
            if dep not in wanted and dep in by_id:
                wanted.add(dep)
                stack.append(dep)
    nodes = []
    for hid in sorted(wanted):
        h = by_id[hid]
        nodes.append(
            graph.Node(
                id=h.id,
                role=h.role.value if hasattr(h.role, "value") else str(h.role),
                title=h.solution_name,
                state=node_state(h, org_id),
                subtitle=f"{h.holder} · jusqu'au {h.valid_until:%d/%m/%Y}",
                relies_on=tuple(h.relies_on),
                href=href(h) if href else None,
            )
        )
    return nodes


def habilitations(rq: Rq) -> Response:
    svc, me = _svc(rq), _principal(rq)
    all_habs = read_or_raise(svc.list_habilitations, me)
    mine = [h for h in all_habs if h.organisation_id == me.organisation_id]
    rows = []
    for h in sorted(mine, key=lambda h: h.valid_until):
        days = (h.valid_until - rq.now).days
        rows.append({"h": h, "days": days, "state": node_state(h, me.organisation_id)})
    svg = graph.render_svg(
        dependency_nodes(all_habs, me.organisation_id, href=lambda h: f"#hab-{h.id}"),
        caption="Dépendances des habilitations de votre structure (ELP → ELU/OSP → OSU)",
    )
    return rq.render(
        "habilitations.html", title="Habilitations", rows=rows, svg=svg, expiring_days=rq.web.settings.expiring_days
    )


# ------------------------------------------------------------------ accounts
def accounts(rq: Rq) -> Response:
    svc, me = _svc(rq), _principal(rq)
    accs = read_or_raise(svc.list_accounts, me)
    can_create = (
        [("salarie", "salarié")]
        if me.org_role == "representant"
        else [("representant", "représentant"), ("salarie", "salarié")]
        if me.org_role == "mandataire"
        else []
    )
    return rq.render("accounts.html", title="Comptes de la structure", accounts=accs, can_create=can_create, me=me)


def account_create(rq: Rq) -> Response:
    svc, me = _svc(rq), _principal(rq)
    password = rq.form.get("password") if rq.form is not None else None
    try:
        data = sc.AccountIn.model_validate(
            {
                "email": rq.f("email").lower(),
                "name": rq.f("name"),
                "password": password if isinstance(password, str) else None,
                "org_role": rq.f("org_role") or None,
            }
        )
    except ValidationError as exc:
        return rq.redirect(rq.url("accounts"), Flash("error", "Compte non créé :", validation_messages(exc)))
    out, err = attempt(svc.create_account, me, data)
    if err is not None or out is None:
        return rq.redirect(rq.url("accounts"), err)
    return rq.redirect(
        rq.url("accounts"), Flash("ok", f"Compte {out.email} créé{'' if out.validated else ' : à valider'}.")
    )


def account_validate(rq: Rq) -> Response:
    aid = rq.int_param("aid")
    out, err = attempt(_svc(rq).validate_account, _principal(rq), aid)
    return rq.redirect(rq.url("accounts"), err or Flash("ok", f"Compte {out.email if out else aid} validé."))


def require_manager(rq: Rq) -> None:
    if rq.user is None or rq.user.org_role not in ("mandataire", "representant"):
        raise Forbidden
