"""The connection paths (``parcours.yaml``) and the rules derived from it.

The YAML is data so ANS can change a step or a threshold without a code change: it drives
the parcours checklist, the habilitation dependencies, the validity period and the pentest
eligibility thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import yaml

from .errors import DomainError
from .model import Role


class Applicability(StrEnum):
    ALL = "all"
    EDITORS = "editors"
    PROXY_EDITORS = "proxy_editors"
    OPERATORS = "operators"


# Steps the guichet completes itself; the others are declared done by the candidate.
PLATFORM_STEPS = frozenset(
    {
        "guichet_registration",
        "evidence_deposit",
        "test_certificate",
        "production_certificate",
    }
)


@dataclass(frozen=True)
class Step:
    id: str
    label: str
    applies: dict[str, Applicability]  # path -> applicability (absent: not concerned)
    after_grant: bool = False  # follows the grant; every other step precedes it

    def applies_to(self, path: str, role: Role) -> bool:
        a = self.applies.get(path)
        if a is None:
            return False
        if a is Applicability.ALL:
            return True
        if a is Applicability.EDITORS:
            return role.is_editor
        if a is Applicability.PROXY_EDITORS:
            return role is Role.ELP
        return role.is_operator


@dataclass(frozen=True)
class PentestRules:
    max_age_days: int
    high_ko_allowed: int
    medium_ko_below: int
    medium_tolerance_applies_to: frozenset[Role]


@dataclass(frozen=True)
class Parcours:
    paths: dict[str, str]
    steps: tuple[Step, ...]
    dependencies: dict[Role, tuple[Role, ...]]
    validity_years: int
    pentest: PentestRules

    @classmethod
    def from_yaml(cls, text: str) -> Parcours:
        data: dict[str, Any] = yaml.safe_load(text)
        paths = dict(data["paths"])
        steps = []
        for raw in data["steps"]:
            applies = {p: Applicability(raw[p]) for p in paths if p in raw}
            steps.append(Step(raw["id"], raw["label"], applies, bool(raw.get("after_grant", False))))
        deps = {Role(k): tuple(Role(r) for r in v) for k, v in data["dependencies"].items()}
        pt = data["pentest"]
        rules = PentestRules(
            max_age_days=int(pt["max_age_days"]),
            high_ko_allowed=int(pt["high_ko_allowed"]),
            medium_ko_below=int(pt["medium_ko_below"]),
            medium_tolerance_applies_to=frozenset(Role(r) for r in pt["medium_tolerance_applies_to"]),
        )
        return cls(paths, tuple(steps), deps, int(data["validity_years"]), rules)

    def steps_for(self, path: str, role: Role) -> list[Step]:
        if path not in self.paths:
            raise DomainError("parcours_inconnu", f"parcours inconnu : {path}")
        return [s for s in self.steps if s.applies_to(path, role)]

    def step(self, step_id: str) -> Step:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise DomainError("etape_inconnue", f"étape inconnue : {step_id}")


class StepStatus(StrEnum):
    TODO = "a_faire"
    DONE = "fait"


@dataclass(frozen=True)
class ChecklistItem:
    id: str
    label: str
    status: StepStatus
    by_platform: bool
    reachable: bool  # every earlier step is done
    after_grant: bool = False


def checklist(parcours: Parcours, path: str, role: Role, done: set[str]) -> list[ChecklistItem]:
    """The steps a candidature's path and role require, in order, with their status."""
    items: list[ChecklistItem] = []
    all_before_done = True
    for s in parcours.steps_for(path, role):
        is_done = s.id in done
        items.append(
            ChecklistItem(
                s.id,
                s.label,
                StepStatus.DONE if is_done else StepStatus.TODO,
                s.id in PLATFORM_STEPS,
                all_before_done,
                s.after_grant,
            )
        )
        all_before_done = all_before_done and is_done
    return items


def missing_before_grant(parcours: Parcours, path: str, role: Role, done: set[str]) -> list[str]:
    """The labels of the steps the college waits for: every step of the path not yet done,
    except those that follow the grant."""
    return [s.label for s in parcours.steps_for(path, role) if not s.after_grant and s.id not in done]


def require_reachable(parcours: Parcours, path: str, role: Role, done: set[str], step_id: str) -> None:
    """Refuse to complete a step before every earlier step of the path is done."""
    items = checklist(parcours, path, role, done)
    for item in items:
        if item.id == step_id:
            if not item.reachable:
                missing = [i.label for i in items[: items.index(item)] if i.status is StepStatus.TODO]
                raise DomainError(
                    "etape_non_atteinte",
                    f"l'étape « {item.label} » n'est pas encore atteinte ; restent à faire : " + " ; ".join(missing),
                )
            return
    raise DomainError("etape_non_concernee", f"l'étape {step_id} ne concerne pas ce parcours ({path}, {role.value})")
