"""The LPS side of the proxy contract: connect a professional, send requests, disconnect.

The session handle (the ``proxy_session_id`` cookie) is kept in a small JSON file so that
separate CLI invocations behave like one running LPS.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from confiance.core.files import write_atomic
from confiance.core.tls import ClientIdentity, client_context

COOKIE = "proxy_session_id"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any

    @classmethod
    def of(cls, r: httpx.Response) -> Answer:
        try:
            body: Any = r.json() if r.content else None
        except ValueError:
            body = r.text
        return cls(r.status_code, dict(r.headers), body)


class LpsClient:
    """Talks to one proxy; ``session_file`` remembers the cookie between invocations."""

    def __init__(
        self,
        proxy_url: str,
        ca_bundle: Path | str | None,
        session_file: Path,
        identity: ClientIdentity | None = None,
        timeout: float = 200.0,
    ) -> None:
        self.proxy_url = proxy_url.rstrip("/")
        self.session_file = session_file
        self.http = httpx.Client(base_url=self.proxy_url, verify=client_context(ca_bundle, identity), timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> LpsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def binding_message() -> str:
        """Two random digits the user compares on the LPS screen and on e-CPS."""
        return f"{secrets.randbelow(100):02d}"

    def saved_session(self) -> dict[str, Any] | None:
        if not self.session_file.exists():
            return None
        data: dict[str, Any] = json.loads(self.session_file.read_text())
        return data

    def _save(self, data: dict[str, Any] | None) -> None:
        if data is None:
            self.session_file.unlink(missing_ok=True)
            return
        self.session_file.parent.mkdir(parents=True, exist_ok=True)
        # owner-only from the first byte: the file holds the professional's session handle
        write_atomic(self.session_file, json.dumps(data, indent=2), mode=0o600)

    def connect(self, national_id: str, client_id: str, channel: str = "CARD", binding: str | None = None) -> Answer:
        # The saved cookie goes along: the proxy answers 304 only to the holder of a live session.
        cookies = self._cookies()
        r = self.http.post(
            "/connect",
            headers={"Cookie": f"{COOKIE}={cookies[COOKIE]}"} if cookies else {},
            json={
                "nationalId": national_id,
                "bindingMessage": binding or self.binding_message(),
                "clientId": client_id,
                "channel": channel,
            },
        )
        ans = Answer.of(r)
        if r.status_code == 200 and isinstance(ans.body, dict):
            self._save({**ans.body, "national_id": national_id, "client_id": client_id, "proxy": self.proxy_url})
        return ans

    def _cookies(self) -> dict[str, str]:
        s = self.saved_session()
        return {COOKIE: s["proxy_session_id"]} if s else {}

    def send(
        self, method: str, service: str, path: str, body: Any = None, params: dict[str, str] | None = None
    ) -> Answer:
        url = f"/send/{service}/{path.lstrip('/')}"
        cookies = self._cookies()
        headers = {"Cookie": f"{COOKIE}={cookies[COOKIE]}"} if cookies else {}
        r = self.http.request(method.upper(), url, json=body, params=params, headers=headers)
        return Answer.of(r)

    def disconnect(self) -> Answer:
        cookies = self._cookies()
        headers = {"Cookie": f"{COOKIE}={cookies[COOKIE]}"} if cookies else {}
        r = self.http.delete("/disconnect", headers=headers)
        if r.status_code in (200, 401):
            self._save(None)
        return Answer.of(r)
