"""Dependencies between habilitations ("s'appuie sur") and the at-risk cascade.

ELU relies on ELP (the proxy its software uses), OSP on ELP (the proxy software it
operates), OSU on ELU and OSP. A habilitation may only be granted while what it relies on
is valid; when one stops being valid, everything relying on it — directly or through
another habilitation — is flagged at risk.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from .errors import DomainError
from .labels import label
from .model import HabilitationStatus, Role


@dataclass(frozen=True)
class HabView:
    """What the rules need to know about one habilitation."""

    id: int
    role: Role
    solution_id: int
    organisation_id: int
    status: HabilitationStatus
    valid_until: datetime
    relies_on: tuple[int, ...] = ()

    def is_valid(self, now: datetime) -> bool:
        return self.status is HabilitationStatus.VALID and now < self.valid_until


@dataclass(frozen=True)
class DependencyNeed:
    role: Role
    solution_id: int | None  # editor habilitations are found by solution
    habilitation_id: int | None  # an OSP is named explicitly by an OSU
    label: str


def needs_for(
    role: Role,
    solution_id: int,
    proxy_solution_id: int | None,
    osp_habilitation_id: int | None,
    deps: Mapping[Role, tuple[Role, ...]],
) -> list[DependencyNeed]:
    """The habilitations a candidature relies on, from its declaration."""
    needs: list[DependencyNeed] = []
    for dep in deps.get(role, ()):
        if role is Role.ELU and dep is Role.ELP:
            if proxy_solution_id is None:
                raise DomainError("proxy_requis", "une candidature ELU doit nommer le Proxy e-Santé utilisé")
            needs.append(DependencyNeed(Role.ELP, proxy_solution_id, None, "habilitation ELP du proxy nommé"))
        elif role is Role.OSP and dep is Role.ELP:
            needs.append(DependencyNeed(Role.ELP, solution_id, None, "habilitation ELP du proxy opéré"))
        elif role is Role.OSU and dep is Role.ELU:
            needs.append(DependencyNeed(Role.ELU, solution_id, None, "habilitation ELU du logiciel opéré"))
        elif role is Role.OSU and dep is Role.OSP:
            if osp_habilitation_id is None:
                raise DomainError(
                    "osp_requis", "une candidature OSU doit nommer l'habilitation OSP de son opérateur de proxy"
                )
            needs.append(
                DependencyNeed(Role.OSP, None, osp_habilitation_id, "habilitation OSP de l'opérateur de proxy")
            )
        else:
            needs.append(DependencyNeed(dep, solution_id, None, f"habilitation {dep.value}"))
    return needs


def resolve(needs: Iterable[DependencyNeed], habs: Iterable[HabView], now: datetime) -> tuple[list[int], list[str]]:
    """Find a valid habilitation for each need; return (ids found, French problems)."""
    pool = list(habs)
    found: list[int] = []
    problems: list[str] = []
    for need in needs:
        match = [
            h
            for h in pool
            if h.role is need.role
            and (need.solution_id is None or h.solution_id == need.solution_id)
            and (need.habilitation_id is None or h.id == need.habilitation_id)
        ]
        valid = [h for h in match if h.is_valid(now)]
        if valid:
            found.append(max(valid, key=lambda h: h.valid_until).id)
        elif match:
            problems.append(f"{need.label} : elle n'est pas valide (statut {label(match[-1].status)} ou expirée)")
        else:
            problems.append(f"{need.label} : aucune habilitation {need.role.value} n'existe")
    return found, problems


def broken(needs: Iterable[DependencyNeed], habs: Iterable[HabView], now: datetime) -> list[str]:
    """The relied-on habilitations that exist but are no longer valid (suspended, withdrawn,
    expired): nothing more may be issued on their strength. A need with no habilitation at
    all is not "broken" (an editor may test before the proxy it names is habilitated)."""
    pool = list(habs)
    out: list[str] = []
    for need in needs:
        match = [
            h
            for h in pool
            if h.role is need.role
            and (need.solution_id is None or h.solution_id == need.solution_id)
            and (need.habilitation_id is None or h.id == need.habilitation_id)
        ]
        if match and not any(h.is_valid(now) for h in match):
            worst = max(match, key=lambda h: h.valid_until)
            shown = HabilitationStatus.EXPIRED if worst.status is HabilitationStatus.VALID else worst.status
            out.append(f"{need.label} n° {worst.id} : {label(shown)}")
    return out


def dependents_closure(root_ids: Iterable[int], habs: Iterable[HabView]) -> set[int]:
    """Every habilitation relying on one of ``root_ids``, directly or transitively."""
    pool = list(habs)
    hit: set[int] = set()
    frontier = set(root_ids)
    while frontier:
        nxt = {h.id for h in pool if h.id not in hit and set(h.relies_on) & frontier}
        hit |= nxt
        frontier = nxt
    return hit


def still_at_risk(hab: HabView, by_id: Mapping[int, HabView], now: datetime) -> bool:
    """A flagged habilitation stays at risk while anything it relies on (transitively) is not valid."""
    seen: set[int] = set()
    stack = list(hab.relies_on)
    while stack:
        i = stack.pop()
        if i in seen:
            continue
        seen.add(i)
        dep = by_id.get(i)
        if dep is None or not dep.is_valid(now):
            return True
        stack.extend(dep.relies_on)
    return False
