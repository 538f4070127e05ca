"""``endpoints.json``: how tools and tests find a running trust space (docs/endpoints.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .files import write_atomic

FILENAME = "endpoints.json"


def write(state_dir: Path, data: dict[str, Any]) -> Path:
    path = state_dir / FILENAME
    # 0600: it holds admin tokens and the demo LPS secret.
    write_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n", mode=0o600)
    return path


def read(state_dir: Path | str = ".confiance") -> dict[str, Any]:
    path = Path(state_dir) / FILENAME
    if not path.exists():
        raise FileNotFoundError(f"{path} absent: lancez d'abord `make up` (ou `confiance up`)")
    data: dict[str, Any] = json.loads(path.read_text())
    return data
