"""Readable, self-contained HTML report (French), rendered with Jinja2 autoescaping."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from jinja2 import Environment, PackageLoader, Undefined, select_autoescape

from .model import STATUS_LABELS_FR, Status

_env = Environment(
    loader=PackageLoader("confiance.conformity", "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _pretty(value: Any) -> str:
    if value is None or isinstance(value, Undefined):
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, indent=2)


_env.filters["pretty"] = _pretty


def render_html(report: Mapping[str, Any], signed: bool = True) -> str:
    labels = {s.value: label for s, label in STATUS_LABELS_FR.items()}
    return _env.get_template("report.html").render(report=report, labels=labels, signed=signed, Status=Status)
