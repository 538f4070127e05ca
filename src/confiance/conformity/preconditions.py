"""What the tool can observe, established before the campaign (and the PSC fact after it).

A verdict is only as good as what the tool saw. Before the first check the tool records
which parts of the harness answer: the proxy, the sandbox's admin API, the API's JWKS and
access log, ``/traces`` with the credential it was given. The decisive fact, "the proxy's
PSC is the sandbox the tool drives", is established by the first observed ``/connect``
(:meth:`Campaign.observed_connect`) and added at the end. The report carries these facts
next to the verdicts, so a reader sees why a check is "non vérifiable".
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx

from . import traces as tr
from .checks import Campaign
from .model import Unverifiable


def _fact(established: bool | None, detail: str) -> dict[str, Any]:
    return {"established": established, "detail": detail}


def observe(c: Campaign) -> dict[str, dict[str, Any]]:
    """Probe each service the checks rely on; never raises (a probe failing is a fact)."""
    facts: dict[str, dict[str, Any]] = {}
    try:
        resp = c.proxy.request(None, "GET", "/traces", params={"start": tr.iso(dt.datetime.now(dt.UTC))}, timeout=10.0)
        facts["proxy"] = _fact(True, f"le proxy répond en HTTPS ({resp.status_code} sur /traces anonyme)")
    except httpx.HTTPError as exc:
        facts["proxy"] = _fact(False, f"proxy injoignable : {exc}")
        return facts
    headers = {"Authorization": c.cfg.traces_auth} if c.cfg.traces_auth else {}
    try:
        resp = c.proxy.request(
            None, "GET", "/traces", params={"start": tr.iso(c.started)}, headers=headers, timeout=10.0
        )
        readable = resp.status_code == 200 and tr.as_list(resp.json() if resp.content else None) is not None
        facts["traces"] = _fact(
            readable, f"GET /traces {'avec' if headers else 'sans'} jeton : HTTP {resp.status_code}"
        )
    except (httpx.HTTPError, ValueError) as exc:
        facts["traces"] = _fact(False, f"/traces illisible : {exc}")
    try:
        c.psc.lifetimes(None)
        facts["sandbox_admin"] = _fact(True, "API d'administration du bac à sable accessible")
    except (Unverifiable, httpx.HTTPError, ValueError) as exc:
        facts["sandbox_admin"] = _fact(False, str(exc))
    try:
        keys = c.api.jwks(None).get("keys")
        facts["api_jwks"] = _fact(bool(keys), "JWKS de signsessiondata lu" if keys else "JWKS vide")
    except (Unverifiable, httpx.HTTPError, ValueError) as exc:
        facts["api_jwks"] = _fact(False, str(exc))
    try:
        c.api.access_records(None, "precondition-sonde")
        facts["api_access_log"] = _fact(True, "journal des accès de l'API lisible")
    except (Unverifiable, httpx.HTTPError, ValueError) as exc:
        facts["api_access_log"] = _fact(False, str(exc))
    return facts


def psc_fact(c: Campaign) -> dict[str, Any]:
    """Whether the proxy's PSC is the sandbox, as the first observed /connect showed it."""
    if c.psc_is_sandbox:
        return _fact(True, "la demande CIBA du proxy est arrivée au bac à sable piloté par l'outil")
    return _fact(c.psc_is_sandbox, c.psc_reason)
