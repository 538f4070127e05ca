"""The versioned référentiel (catalogue of requirements), its adoption by dossiers, and
the PASSI registry the pentest check trusts."""

from __future__ import annotations

import yaml
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .. import audit
from .. import schemas as sc
from ..db import (
    Candidature,
    ChapterRow,
    PassiProvider,
    ReferentielVersion,
)
from ..domain import workflow as wf
from ..domain.errors import IllegalTransition
from ..domain.model import (
    AnsRole,
    Level,
    Role,
)
from ..domain.referentiel import Catalogue, diff_for
from . import base, dossier, lookups, outputs
from .base import (
    SYSTEM,
    Principal,
    ServiceCore,
    conflict,
)


def initialize(svc: ServiceCore) -> None:
    """Migrate the schema and seed the référentiel and PASSI registry on first start."""
    svc.db.migrate()
    with svc.db.transaction() as s:
        if s.scalar(select(func.count()).select_from(ReferentielVersion)) == 0:
            cat = Catalogue.from_yaml(base.load_text("referentiel.yaml"))
            s.add(ReferentielVersion(version=cat.version, content=cat.as_dict(), created_at=svc.clock()))
            audit.append(
                s,
                at=svc.clock(),
                actor=SYSTEM,
                action="referentiel.initialiser",
                target=f"referentiel:{cat.version}",
            )
        if s.scalar(select(func.count()).select_from(PassiProvider)) == 0:
            for p in yaml.safe_load(base.load_text("passi.yaml"))["providers"]:
                s.add(PassiProvider(name=p["name"], reference=p.get("reference", ""), active=True))
            audit.append(s, at=svc.clock(), actor=SYSTEM, action="passi.initialiser", target="passi")


def current_referentiel(svc: ServiceCore) -> sc.ReferentielOut:
    def op(s: Session) -> sc.ReferentielOut:
        return outputs.ref_out(
            svc, s.execute(select(ReferentielVersion).order_by(ReferentielVersion.id.desc()).limit(1)).scalar_one()
        )

    return svc.read(op)


def list_referentiel_versions(svc: ServiceCore) -> list[str]:
    return svc.read(
        lambda s: list(s.execute(select(ReferentielVersion.version).order_by(ReferentielVersion.id)).scalars())
    )


def publish_referentiel(svc: ServiceCore, actor: Principal, data: sc.ReferentielIn) -> sc.ReferentielOut:
    """Administrators publish a new catalogue version; existing dossiers see what changed for them."""

    def op(s: Session) -> sc.ReferentielOut:
        base.require_ans(actor, AnsRole.ADMIN)
        cat = Catalogue.parse(data.model_dump())
        if s.scalar(select(ReferentielVersion.id).where(ReferentielVersion.version == cat.version)) is not None:
            raise conflict(f"la version {cat.version} du référentiel existe déjà", code="version_existante")
        prev = lookups.catalogue(svc, s)
        row = ReferentielVersion(
            version=cat.version, content=cat.as_dict(), created_at=svc.clock(), created_by=actor.account_id
        )
        s.add(row)
        s.flush()
        svc.audit(
            s,
            actor,
            "referentiel.publier",
            f"referentiel:{cat.version}",
            before={"version": prev.version},
            after=cat.as_dict(),
        )
        active = sorted(st.value for st in wf.IN_PROGRESS)
        for c in s.execute(select(Candidature).where(Candidature.status.in_(active))).scalars():
            d = diff_for(
                lookups.catalogue(svc, s, c.referentiel_version),
                cat,
                Role(c.role),
                Level(c.level),
                lookups.solution_needs_cnda(svc, s, c.solution_id),
            )
            if not d.empty:
                svc.notify(
                    s,
                    "referentiel_modifie",
                    f"Candidature n° {c.id} : le référentiel {cat.version} modifie vos exigences",
                    f"{len(d.added)} ajoutée(s), {len(d.removed)} retirée(s), {len(d.changed)} modifiée(s)",
                    org_id=c.organisation_id,
                    candidature_id=c.id,
                )
        return outputs.ref_out(svc, row)

    return svc.run(op)


def referentiel_changes(svc: ServiceCore, actor: Principal, cid: int) -> sc.ReferentielDiffOut:
    def op(s: Session) -> sc.ReferentielDiffOut:
        c = lookups.cand_for_read(svc, s, actor, cid)
        new = lookups.catalogue(svc, s)
        d = diff_for(
            lookups.catalogue(svc, s, c.referentiel_version),
            new,
            Role(c.role),
            Level(c.level),
            lookups.solution_needs_cnda(svc, s, c.solution_id),
        )
        return sc.ReferentielDiffOut(
            candidature_id=c.id,
            from_version=d.from_version,
            to_version=d.to_version,
            added=[outputs.req_out(r) for r in d.added],
            removed=[outputs.req_out(r) for r in d.removed],
            changed=[
                sc.RequirementChangeOut(before=outputs.req_out(a), after=outputs.req_out(b)) for a, b in d.changed
            ],
            up_to_date=c.referentiel_version == new.version,
        )

    return svc.read(op)


def adopt_referentiel(svc: ServiceCore, actor: Principal, cid: int, data: sc.ActionIn) -> sc.CandidatureDetail:
    """Move a dossier to the current catalogue: chapters are recomputed, changed ones reviewed again."""

    def op(s: Session) -> sc.CandidatureDetail:
        c = lookups.cand_for_candidate(svc, s, actor, cid)
        base.check_version(c.row_version, data.version, "la candidature")
        if c.status in (
            wf.CandidatureStatus.GRANTED.value,
            wf.CandidatureStatus.REFUSED.value,
            wf.CandidatureStatus.ABANDONED.value,
        ):
            raise IllegalTransition("candidature_close", "candidature close : le référentiel n'y est plus appliqué")
        cat = lookups.catalogue(svc, s)
        if cat.version == c.referentiel_version:
            raise conflict("la candidature suit déjà la dernière version du référentiel", code="deja_a_jour")
        before = c.referentiel_version
        c.referentiel_version = cat.version
        c.updated_at = svc.clock()
        dossier.sync_chapters(svc, s, c, cat)
        if c.status == wf.CandidatureStatus.COLLEGE.value:
            chapters = list(s.execute(select(ChapterRow).where(ChapterRow.candidature_id == c.id)).scalars())
            if not all(x.status == wf.ChapterStatus.ACCEPTED.value for x in chapters):
                dossier.transition(
                    svc, s, None, c, "rouvrir_preuves", wf.Actor.SYSTEM, f"nouveau référentiel {cat.version}"
                )
        svc.audit(
            s,
            actor,
            "candidature.adopter_referentiel",
            f"candidature:{c.id}",
            before={"referentiel": before},
            after={"referentiel": cat.version},
        )
        return outputs.detail(svc, s, c)

    return svc.run(op)


def list_passi(svc: ServiceCore) -> list[sc.PassiOut]:
    return svc.read(
        lambda s: [
            sc.PassiOut.model_validate(p) for p in s.execute(select(PassiProvider).order_by(PassiProvider.id)).scalars()
        ]
    )


def add_passi(svc: ServiceCore, actor: Principal, data: sc.PassiIn) -> sc.PassiOut:
    def op(s: Session) -> sc.PassiOut:
        base.require_ans(actor, AnsRole.ADMIN)
        if s.scalar(select(PassiProvider.id).where(PassiProvider.name == data.name.strip())) is not None:
            raise conflict("prestataire déjà inscrit", code="passi_existant")
        p = PassiProvider(name=data.name.strip(), reference=data.reference, active=True)
        s.add(p)
        s.flush()
        svc.audit(s, actor, "passi.ajouter", f"passi:{p.id}", after={"name": p.name, "reference": p.reference})
        return sc.PassiOut.model_validate(p)

    return svc.run(op)


def set_passi_active(svc: ServiceCore, actor: Principal, pid: int, active: bool) -> sc.PassiOut:
    def op(s: Session) -> sc.PassiOut:
        base.require_ans(actor, AnsRole.ADMIN)
        p = lookups.get(svc, s, PassiProvider, pid, "prestataire PASSI")
        before = p.active
        p.active = active
        svc.audit(
            s,
            actor,
            "passi.activer" if active else "passi.retirer",
            f"passi:{p.id}",
            before={"active": before},
            after={"active": active},
        )
        return sc.PassiOut.model_validate(p)

    return svc.run(op)
