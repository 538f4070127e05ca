"""Hook used by `confiance guichet serve`: mount the web UI into the guichet's ASGI app."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from confiance.core.files import write_atomic

from ..config import GuichetConfig
from ..services import GuichetService
from . import WebSettings, web_routes


def _secret(data_dir: Path) -> str:
    """A per-installation key kept in the data dir, shared by every process using it."""
    path = data_dir / "web-secret.key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(path, secrets.token_urlsafe(48), mode=0o600)
    return path.read_text().strip()


def settings_for(cfg: GuichetConfig) -> WebSettings:
    # Secure cookies always: on plain HTTP the guichet only listens on loopback by default,
    # and browsers treat http://127.0.0.1 and http://localhost as secure for cookies.
    return WebSettings(secret_key=_secret(cfg.data_dir))


def mount(app: Any, service: GuichetService, cfg: GuichetConfig) -> None:
    """Add the HTML pages and /static to the FastAPI app (the JSON API stays under /api)."""
    app.router.routes.extend(web_routes(service, settings_for(cfg)))
