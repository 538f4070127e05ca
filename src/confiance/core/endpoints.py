"""``endpoints.json``: how tools and tests find a running trust space (docs/endpoints.md)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

FILENAME = "endpoints.json"


def write(state_dir: Path, data: dict[str, Any]) -> Path:
    path = state_dir / FILENAME
    tmp = path.with_suffix(".tmp")
    # 0600 from creation: it holds admin tokens and the demo LPS secret.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    return path


def read(state_dir: Path | str = ".confiance") -> dict[str, Any]:
    path = Path(state_dir) / FILENAME
    if not path.exists():
        raise FileNotFoundError(f"{path} absent: lancez d'abord `make up` (ou `confiance up`)")
    data: dict[str, Any] = json.loads(path.read_text())
    return data
