"""The harness around the proxy: PSC sandbox admin API and API Pro Santé Connectée, over HTTPS.

The tool controls the sandbox (e-CPS policies, lifetimes) and reads what the sandbox and
the API saw, only through their public and admin HTTP endpoints. When an endpoint the
tool needs is not exposed (or no admin credential was given), methods raise
:class:`~confiance.conformity.model.Unverifiable` with the reason: the check then says
"non vérifiable" instead of guessing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from .http import Recorder
from .model import Evidence, Unverifiable


@dataclass
class PscSandbox:
    """Admin client of the Confiance PSC sandbox (``/sandbox/admin/*``, Bearer admin token)."""

    recorder: Recorder | None
    admin_token: str | None

    def _call(self, ev: Evidence | None, method: str, path: str, body: Any = None, label: str = "") -> httpx.Response:
        if self.recorder is None:
            raise Unverifiable("URL du bac à sable PSC inconnue (--psc-url ou endpoints.json)")
        if not self.admin_token:
            raise Unverifiable("jeton d'administration du bac à sable PSC absent (--psc-admin-token ou endpoints.json)")
        try:
            resp = self.recorder.request(
                ev,
                method,
                path,
                json_body=body,
                headers={"Authorization": f"Bearer {self.admin_token}"},
                label=label or f"bac à sable : {method} {path}",
            )
        except httpx.HTTPError as exc:
            raise Unverifiable(f"bac à sable PSC injoignable : {exc}") from exc
        if resp.status_code in (401, 403):
            raise Unverifiable(f"bac à sable PSC : accès administrateur refusé ({resp.status_code})")
        if resp.status_code in (404, 405) and path.startswith("/sandbox/admin/sessions") and method == "GET":
            raise Unverifiable(
                "le bac à sable n'expose pas la consultation des sessions PSC (GET /sandbox/admin/sessions)"
            )
        return resp

    def lifetimes(self, ev: Evidence | None) -> dict[str, Any]:
        resp = self._call(ev, "GET", "/sandbox/admin/lifetimes", label="bac à sable : durées de vie actuelles")
        if resp.status_code != 200:
            raise Unverifiable(f"bac à sable : lecture des durées impossible ({resp.status_code})")
        data: dict[str, Any] = resp.json()
        return data

    def set_lifetimes(self, ev: Evidence | None, **values: float) -> dict[str, Any]:
        resp = self._call(ev, "PUT", "/sandbox/admin/lifetimes", values, label="bac à sable : raccourcir les durées")
        if resp.status_code != 200:
            raise Unverifiable(f"bac à sable : modification des durées refusée ({resp.status_code})")
        data: dict[str, Any] = resp.json()
        return data

    def ecps_policy(self, ev: Evidence | None, national_id: str) -> dict[str, Any]:
        # The identity record is large and says nothing about the proxy: keep only the policy.
        resp = self._call(None, "GET", f"/sandbox/admin/identities/{national_id}")
        if resp.status_code != 200:
            raise Unverifiable(f"bac à sable : identité {national_id} introuvable ({resp.status_code})")
        eff: dict[str, Any] = resp.json().get("ecps_effective") or {"mode": "approve", "delay_ms": 0}
        if ev is not None:
            ev.note(f"bac à sable : politique e-CPS de {national_id} avant le scénario : {eff.get('mode')}")
        return eff

    def set_ecps(self, ev: Evidence | None, national_id: str, mode: str, delay_ms: int = 0) -> None:
        resp = self._call(
            ev,
            "PUT",
            f"/sandbox/admin/identities/{national_id}/ecps",
            {"mode": mode, "delay_ms": delay_ms},
            label=f"bac à sable : e-CPS de {national_id} → {mode}",
        )
        if resp.status_code != 200:
            raise Unverifiable(f"bac à sable : politique e-CPS refusée ({resp.status_code})")

    def outage(self, ev: Evidence | None, seconds: float) -> None:
        """Make the sandbox's protocol endpoints answer 503 for ``seconds`` (it ends by itself)."""
        resp = self._call(
            ev, "POST", "/sandbox/admin/outage", {"seconds": seconds, "mode": "503"}, label="bac à sable : panne de PSC"
        )
        if resp.status_code in (404, 405):
            raise Unverifiable("le bac à sable ne sait pas simuler une panne (POST /sandbox/admin/outage)")
        if resp.status_code != 200 or not resp.json().get("active"):
            raise Unverifiable(f"bac à sable : panne simulée refusée ({resp.status_code})")

    def end_outage(self, ev: Evidence | None) -> None:
        resp = self._call(ev, "DELETE", "/sandbox/admin/outage", label="bac à sable : fin de la panne de PSC")
        if resp.status_code != 200 or resp.json().get("active"):
            raise Unverifiable(f"bac à sable : la panne simulée n'a pas pu être levée ({resp.status_code})")

    def pending_ciba(self, ev: Evidence | None) -> list[dict[str, Any]]:
        resp = self._call(ev, "GET", "/sandbox/admin/ciba", label="bac à sable : demandes CIBA en attente")
        if resp.status_code != 200:
            raise Unverifiable(f"bac à sable : liste CIBA indisponible ({resp.status_code})")
        data = resp.json()
        return data if isinstance(data, list) else []

    def decide_ciba(self, ev: Evidence | None, auth_req_id: str, approve: bool) -> None:
        action = "approve" if approve else "deny"
        self._call(ev, "POST", f"/sandbox/admin/ciba/{auth_req_id}/{action}", label=f"bac à sable : {action}")

    def session(self, ev: Evidence | None, session_state: str) -> dict[str, Any] | None:
        """The sandbox's view of one PSC session, or None when unknown."""
        resp = self._call(ev, "GET", f"/sandbox/admin/sessions/{session_state}", label="bac à sable : session PSC")
        if resp.status_code == 404:
            try:
                body = resp.json()
            except ValueError:
                body = {}
            if isinstance(body, dict) and body.get("error") == "invalid_request":
                return None
            raise Unverifiable("le bac à sable n'expose pas la consultation des sessions PSC")
        if resp.status_code != 200:
            raise Unverifiable(f"bac à sable : session illisible ({resp.status_code})")
        data: dict[str, Any] = resp.json()
        return data

    def end_session_probe(self, ev: Evidence | None, session_state: str) -> bool:
        """Ask the sandbox to end a session: True if it was still active (it is ended now).

        Used only after the proxy was told to disconnect: an active session at that point
        means the proxy did not call PSC end-session.
        """
        resp = self._call(
            ev, "POST", f"/sandbox/admin/sessions/{session_state}/end", label="bac à sable : sonde fin de session"
        )
        if resp.status_code == 200:
            return True
        if resp.status_code == 404:
            return False
        raise Unverifiable(f"bac à sable : sonde de fin de session impossible ({resp.status_code})")


@dataclass
class ApiServices:
    """The API Pro Santé Connectée: the signsessiondata JWKS and (admin) access log."""

    recorder: Recorder | None
    jwks_url: str | None
    access_log_url: str | None
    admin_token: str | None
    inline_jwks: dict[str, Any] | None = None

    def jwks(self, ev: Evidence | None) -> dict[str, Any]:
        if (self.recorder is None or not self.jwks_url) and self.inline_jwks is not None:
            if ev is not None:
                ev.note("JWKS de l'API lu dans endpoints.json")
            return self.inline_jwks
        if self.recorder is None or not self.jwks_url:
            raise Unverifiable("JWKS du service signsessiondata inconnu (--api-jwks ou endpoints.json)")
        try:
            resp = self.recorder.request(ev, "GET", self.jwks_url, label="API : JWKS de signsessiondata")
        except httpx.HTTPError as exc:
            raise Unverifiable(f"JWKS de l'API injoignable : {exc}") from exc
        if resp.status_code != 200:
            raise Unverifiable(f"JWKS de l'API indisponible ({resp.status_code})")
        data: dict[str, Any] = resp.json()
        return data

    def access_records(self, ev: Evidence | None, proxy_session_id: str) -> list[dict[str, Any]]:
        """What the resource service logged for calls carrying this proxy session.

        Needs an admin read endpoint on the resource service returning, per call, the
        presented certificate (``dn``, ``x5t#S256``), the token's ``cnf`` and ``client_id``.
        """
        if self.recorder is None or not self.access_log_url:
            raise Unverifiable(
                "l'API n'expose pas le journal des accès (certificat présenté, cnf du jeton) : "
                "GET /admin/access-log?proxy_session_id=… attendu sur le service de ressources"
            )
        headers = {"Authorization": f"Bearer {self.admin_token}"} if self.admin_token else {}
        try:
            resp = self.recorder.request(
                ev,
                "GET",
                self.access_log_url,
                params={"proxy_session_id": proxy_session_id},
                headers=headers,
                label="API : journal des accès",
            )
        except httpx.HTTPError as exc:
            raise Unverifiable(f"journal des accès de l'API injoignable : {exc}") from exc
        if resp.status_code != 200:
            raise Unverifiable(f"journal des accès de l'API indisponible ({resp.status_code})")
        data = resp.json()
        records = data.get("records", data) if isinstance(data, dict) else data
        return [r for r in records if isinstance(r, dict)] if isinstance(records, list) else []
