"""What the LPS side receives: session cookies locked down, PSC tokens never.

These checks run last and read every response the proxy gave during the campaign (the
proxy recorder keeps them in memory), so a defect on any route is seen, not only on the
route a scenario happened to look at.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from ..http import COOKIE_NAME
from ..model import Evidence, Unverifiable, require
from .campaign import Campaign

_JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_TOKEN_KEYS = {"access_token", "id_token", "refresh_token", "accesstoken", "idtoken", "refreshtoken"}


def check_cookie_attributes(c: Campaign, ev: Evidence) -> None:
    seen = 0
    wrong: list[str] = []
    for label, resp in c.proxy.seen:
        for raw in resp.headers.get_list("set-cookie"):
            name = raw.split("=", 1)[0].strip()
            if name != COOKIE_NAME:
                continue
            seen += 1
            attrs = {a.strip().split("=", 1)[0].lower() for a in raw.split(";")[1:]}
            missing = [a for a in ("secure", "httponly") if a not in attrs]
            if missing:
                wrong.append(f"{label} : {', '.join(missing)} absent(s)")
    if not seen:
        raise Unverifiable("aucun cookie proxy_session_id reçu pendant la campagne")
    require(not wrong, "cookie de session sans Secure/HttpOnly : " + " ; ".join(sorted(set(wrong))))
    ev.note(f"{seen} en-têtes Set-Cookie proxy_session_id, tous Secure et HttpOnly")


def _jwt_claims(token: str) -> dict[str, Any] | None:
    try:
        part = token.split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (ValueError, IndexError):
        return None
    return data if isinstance(data, dict) else None


def _token_keys(value: Any, path: str = "") -> list[str]:
    if isinstance(value, dict):
        out = []
        for k, v in value.items():
            if str(k).lower().replace("-", "_") in _TOKEN_KEYS:
                out.append(f"{path}{k}")
            out += _token_keys(v, f"{path}{k}.")
        return out
    if isinstance(value, list):
        return [p for item in value for p in _token_keys(item, path)]
    return []


def check_psc_tokens(c: Campaign, ev: Evidence) -> None:
    """PSC's access, ID and refresh tokens stay in the proxy: the LPS only gets its session."""
    issuer = (c.cfg.psc_url or "").rstrip("/")
    leaks: list[str] = []
    for label, resp in c.proxy.seen:
        text = " ".join(f"{k}: {v}" for k, v in resp.headers.multi_items()) + "\n" + resp.text
        for token in _JWT.findall(text):
            claims = _jwt_claims(token) or {}
            iss = str(claims.get("iss", ""))
            if (issuer and iss.startswith(issuer)) or claims.get("typ") in ("Bearer", "ID", "Refresh"):
                leaks.append(f"{label} : jeton émis par {iss or 'PSC'}")
        try:
            body = resp.json()
        except ValueError:
            body = None
        leaks += [f"{label} : champ « {k} »" for k in _token_keys(body)]
    require(not leaks, "jetons PSC transmis au LPS : " + " ; ".join(sorted(set(leaks))))
    ev.note(f"{len(c.proxy.seen)} réponses du proxy examinées : aucun jeton PSC (accès, ID, rafraîchissement)")
