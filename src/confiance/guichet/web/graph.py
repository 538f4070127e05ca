"""The dependency graph of an organisation's habilitations, drawn as accessible inline SVG.

Pure function of the data (no I/O): columns follow the "s'appuie sur" chain — ELP on the
left, ELU and OSP in the middle, OSU on the right — so the picture reads in the order the
guichet opens (editors first, then operators). At-risk and invalid nodes are drawn with
a distinct colour *and* a text badge and dashed border, so the state never relies on
colour alone (WCAG 1.4.1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

COLUMNS = {"ELP": 0, "ELU": 1, "OSP": 1, "OSU": 2}
NODE_W, NODE_H, COL_GAP, ROW_GAP, PAD = 220, 74, 90, 26, 20

STATE_STYLE = {
    # state: (fill, stroke, badge text, dashed)
    "valide": ("#e6f4ea", "#1e6b34", "valide", False),
    "a_risque": ("#fff4e0", "#8a4b00", "À RISQUE", True),
    "suspendue": ("#fde8e8", "#9b1c1c", "suspendue", True),
    "retiree": ("#fde8e8", "#9b1c1c", "retirée", True),
    "expiree": ("#eeeeee", "#4a4a4a", "expirée", True),
    "externe": ("#eef2fb", "#1f3d7a", "autre structure", False),
}


@dataclass(frozen=True)
class Node:
    id: int
    role: str
    title: str  # solution name / holder
    state: str  # a key of STATE_STYLE
    subtitle: str = ""
    relies_on: tuple[int, ...] = field(default_factory=tuple)
    href: str | None = None


def _pos(nodes: Sequence[Node]) -> dict[int, tuple[float, float]]:
    rows = [0, 0, 0]
    pos: dict[int, tuple[float, float]] = {}
    for n in sorted(nodes, key=lambda n: (COLUMNS.get(n.role, 0), n.role, n.title, n.id)):
        col = COLUMNS.get(n.role, 0)
        x = PAD + col * (NODE_W + COL_GAP)
        y = PAD + 28 + rows[col] * (NODE_H + ROW_GAP)
        rows[col] += 1
        pos[n.id] = (x, y)
    return pos


def render_svg(nodes: Sequence[Node], *, caption: str = "Graphe des dépendances des habilitations") -> str:
    """Inline SVG markup (safe to embed: every text is escaped)."""
    if not nodes:
        return ""
    pos = _pos(nodes)
    by_id = {n.id: n for n in nodes}
    max_y = max(y for _, y in pos.values()) + NODE_H + PAD
    width = PAD * 2 + 3 * NODE_W + 2 * COL_GAP
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="depgraph" viewBox="0 0 {width} {max_y:.0f}" '
        f'role="img" aria-labelledby="depgraph-title" width="100%">',
        f'<title id="depgraph-title">{escape(caption)}</title>',
        "<defs>"
        + "".join(
            f'<marker id="{mid}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" '
            f'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{colour}"/></marker>'
            for mid, colour in (("arrow", "#3b3b3b"), ("arrow-bad", "#9b1c1c"))
        )
        + "</defs>",
    ]
    for col, label in enumerate(("Éditeurs de proxy (ELP)", "ELU / OSP", "Opérateurs de service (OSU)")):
        x = PAD + col * (NODE_W + COL_GAP) + NODE_W / 2
        parts.append(f'<text x="{x:.0f}" y="{PAD + 8}" text-anchor="middle" class="col-label">{escape(label)}</text>')
    # Edges first so nodes are drawn over them: from the dependent to what it relies on.
    for n in nodes:
        for dep in n.relies_on:
            if dep not in pos:
                continue
            x1, y1 = pos[n.id]
            x2, y2 = pos[dep]
            target_state = by_id[dep].state
            broken = target_state not in ("valide", "externe")
            sx, ex = (x1, x2 + NODE_W) if x1 > x2 else (x1 + NODE_W, x2)
            stroke = "#9b1c1c" if broken else "#3b3b3b"
            dash = ' stroke-dasharray="6 4"' if broken else ""
            parts.append(
                f'<line x1="{sx:.0f}" y1="{y1 + NODE_H / 2:.0f}" x2="{ex:.0f}" y2="{y2 + NODE_H / 2:.0f}" '
                f'stroke="{stroke}" stroke-width="2"{dash} marker-end="url(#{"arrow-bad" if broken else "arrow"})">'
                f"<title>{escape(n.role)} s'appuie sur {escape(by_id[dep].role)}</title></line>"
            )
    for n in nodes:
        x, y = pos[n.id]
        fill, stroke, badge, dashed = STATE_STYLE.get(n.state, STATE_STYLE["valide"])
        dash = ' stroke-dasharray="5 3"' if dashed else ""
        cls = f"node state-{escape(n.state)}"
        inner = [
            f'<rect x="{x:.0f}" y="{y:.0f}" width="{NODE_W}" height="{NODE_H}" rx="8" fill="{fill}" '
            f'stroke="{stroke}" stroke-width="{3 if dashed else 2}"{dash}/>',
            f'<text x="{x + 12:.0f}" y="{y + 22:.0f}" class="node-role">{escape(n.role)} #{n.id}</text>',
            f'<text x="{x + NODE_W - 10:.0f}" y="{y + 22:.0f}" text-anchor="end" class="node-badge" '
            f'fill="{stroke}">{escape(badge)}</text>',
            f'<text x="{x + 12:.0f}" y="{y + 44:.0f}" class="node-title">{escape(_clip(n.title, 26))}</text>',
            f'<text x="{x + 12:.0f}" y="{y + 62:.0f}" class="node-sub">{escape(_clip(n.subtitle, 30))}</text>',
        ]
        label = f"{n.role} {n.title} : {badge}"
        body = "".join(inner)
        if n.href:
            parts.append(
                f'<a href="{escape(n.href)}" class="{cls}" aria-label="{escape(label)}"><title>{escape(label)}</title>{body}</a>'
            )
        else:
            parts.append(f'<g class="{cls}"><title>{escape(label)}</title>{body}</g>')
    parts.append("</svg>")
    return "".join(parts)


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"
