"""The PSC référentiel as data: requirements, and what a candidature must prove.

A catalogue version lists chapters and requirements (id, text, the actors it applies to,
its level, the evidence expected, an optional condition). ``Communauté`` requirements
apply to every candidature; ``EDC`` ones only to Espace de Confiance candidatures. A
candidature's evidence chapters are derived from the requirements that apply to its
profile, and comparing two versions for that profile tells a dossier what changed for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from .errors import DomainError
from .model import EvidenceKind, Level, Role

CONDITIONS = {"cnda": "seulement si la solution comporte un LPS ou un module métier (EAI)"}


@dataclass(frozen=True)
class Requirement:
    id: str
    chapter: str
    text: str
    actors: frozenset[Role]
    level: Level
    evidence: tuple[EvidenceKind, ...]
    condition: str | None = None

    def applies(self, role: Role, level: Level, needs_cnda: bool) -> bool:
        if role not in self.actors:
            return False
        if self.level is Level.EDC and level is not Level.EDC:
            return False
        return not (self.condition == "cnda" and not needs_cnda)

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id,
            "chapter": self.chapter,
            "text": self.text,
            "actors": sorted(a.value for a in self.actors),
            "level": self.level.value,
            "evidence": [e.value for e in self.evidence],
        }
        if self.condition:
            d["condition"] = self.condition
        return d


@dataclass(frozen=True)
class Chapter:
    id: str
    title: str


@dataclass(frozen=True)
class Catalogue:
    version: str
    chapters: tuple[Chapter, ...]
    requirements: tuple[Requirement, ...]
    by_id: dict[str, Requirement] = field(default_factory=dict, compare=False)

    @classmethod
    def parse(cls, data: Any) -> Catalogue:
        """Validate a catalogue (from YAML or an admin's JSON); French errors name the bad entry."""
        if not isinstance(data, dict):
            raise DomainError("referentiel_invalide", "le référentiel doit être un objet")
        version = data.get("version")
        if not isinstance(version, str) or not version.strip() or len(version) > 40:
            raise DomainError(
                "referentiel_invalide", "le référentiel doit avoir une « version » texte (40 caractères au plus)"
            )
        raw_chapters = data.get("chapters")
        raw_reqs = data.get("requirements")
        if not isinstance(raw_chapters, list) or not isinstance(raw_reqs, list) or not raw_reqs:
            raise DomainError("referentiel_invalide", "le référentiel doit lister « chapters » et « requirements »")
        chapters: list[Chapter] = []
        for c in raw_chapters:
            if not isinstance(c, dict) or not isinstance(c.get("id"), str) or not isinstance(c.get("title"), str):
                raise DomainError("referentiel_invalide", f"chapitre mal formé : {c!r:.80}")
            chapters.append(Chapter(c["id"], c["title"]))
        chapter_ids = {c.id for c in chapters}
        if len(chapter_ids) != len(chapters):
            raise DomainError("referentiel_invalide", "identifiant de chapitre en double")
        reqs: list[Requirement] = []
        for r in raw_reqs:
            reqs.append(_parse_requirement(r, chapter_ids))
        ids = [r.id for r in reqs]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise DomainError("referentiel_invalide", f"exigence(s) en double : {', '.join(sorted(dup))}")
        return cls(version.strip(), tuple(chapters), tuple(reqs), {r.id: r for r in reqs})

    @classmethod
    def from_yaml(cls, text: str) -> Catalogue:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise DomainError("referentiel_invalide", f"YAML illisible : {exc}") from exc
        return cls.parse(data)

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "chapters": [{"id": c.id, "title": c.title} for c in self.chapters],
            "requirements": [r.as_dict() for r in self.requirements],
        }

    def applicable(self, role: Role, level: Level, needs_cnda: bool) -> list[Requirement]:
        return [r for r in self.requirements if r.applies(role, level, needs_cnda)]

    def chapters_for(self, role: Role, level: Level, needs_cnda: bool) -> list[tuple[Chapter, list[Requirement]]]:
        """The evidence chapters of a candidature, in catalogue order, each with its requirements."""
        reqs = self.applicable(role, level, needs_cnda)
        out = []
        for c in self.chapters:
            mine = [r for r in reqs if r.chapter == c.id]
            if mine:
                out.append((c, mine))
        return out


def _parse_requirement(r: Any, chapter_ids: set[str]) -> Requirement:
    if not isinstance(r, dict):
        raise DomainError("referentiel_invalide", f"exigence mal formée : {r!r:.80}")
    rid = r.get("id")
    if not isinstance(rid, str) or not rid.strip():
        raise DomainError("referentiel_invalide", "chaque exigence doit avoir un « id »")
    try:
        actors = frozenset(Role(a) for a in r.get("actors", []))
        level = Level(str(r.get("level")))
        evidence = tuple(EvidenceKind(e) for e in r.get("evidence", []))
    except (ValueError, TypeError) as exc:
        raise DomainError("referentiel_invalide", f"exigence {rid} : acteur, niveau ou preuve inconnu ({exc})") from exc
    if not actors or not evidence:
        raise DomainError("referentiel_invalide", f"exigence {rid} : « actors » et « evidence » ne peuvent être vides")
    if r.get("chapter") not in chapter_ids:
        raise DomainError("referentiel_invalide", f"exigence {rid} : chapitre inconnu {r.get('chapter')!r}")
    text = r.get("text")
    if not isinstance(text, str) or not text.strip():
        raise DomainError("referentiel_invalide", f"exigence {rid} : « text » manquant")
    cond = r.get("condition")
    if cond is not None and cond not in CONDITIONS:
        raise DomainError("referentiel_invalide", f"exigence {rid} : condition inconnue {cond!r}")
    return Requirement(rid, r["chapter"], text, actors, level, evidence, cond)


@dataclass(frozen=True)
class CatalogueDiff:
    from_version: str
    to_version: str
    added: tuple[Requirement, ...]
    removed: tuple[Requirement, ...]
    changed: tuple[tuple[Requirement, Requirement], ...]

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)


def diff_for(old: Catalogue, new: Catalogue, role: Role, level: Level, needs_cnda: bool) -> CatalogueDiff:
    """What changed between two versions for one profile (only the requirements it is subject to)."""
    a = {r.id: r for r in old.applicable(role, level, needs_cnda)}
    b = {r.id: r for r in new.applicable(role, level, needs_cnda)}
    added = tuple(b[i] for i in b if i not in a)
    removed = tuple(a[i] for i in a if i not in b)
    changed = tuple((a[i], b[i]) for i in b if i in a and a[i].as_dict() != b[i].as_dict())
    return CatalogueDiff(old.version, new.version, added, removed, changed)
