"""Readiness checks: named, sync or async, failures and exceptions reported by name."""

from __future__ import annotations

import asyncio

import httpx
from starlette.applications import Starlette

from confiance.core.health import CheckResult, Health


class _Client:
    """Requests to the health routes in-process (ASGI), one event loop per request."""

    def __init__(self, health: Health) -> None:
        self.app = Starlette(routes=health.routes(aliases=("/health",)))

    def get(self, path: str) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://svc") as c:
                return await c.get(path)

        return asyncio.run(go())

    def __enter__(self) -> _Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        return None


def _client(health: Health) -> _Client:
    return _Client(health)


def test_live_is_200_even_when_not_ready() -> None:
    h = Health("svc", {"db": lambda: False})
    with _client(h) as c:
        for path in ("/healthz", "/health"):
            r = c.get(path)
            assert r.status_code == 200 and r.json() == {"status": "ok", "component": "svc"}
        assert c.get("/readyz").status_code == 503


def test_ready_when_every_check_passes() -> None:
    async def queue() -> CheckResult:
        return CheckResult(True, "3 en attente")

    h = Health("svc", {"keys": lambda: CheckResult(True, "kid=a"), "queue": queue, "flag": lambda: True})
    with _client(h) as c:
        r = c.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {
        "status": "ok",
        "component": "svc",
        "checks": {
            "keys": {"ok": True, "detail": "kid=a"},
            "queue": {"ok": True, "detail": "3 en attente"},
            "flag": {"ok": True, "detail": ""},
        },
    }


def test_each_failure_is_named_with_its_detail() -> None:
    def broken() -> CheckResult:
        raise RuntimeError("base injoignable")

    async def hangs() -> bool:
        await asyncio.Event().wait()
        return True

    h = Health(
        "svc",
        {"ok": lambda: True, "broken": broken, "false": lambda: False, "hangs": hangs},
        timeout=0.05,
    )
    h.add("reason", lambda: CheckResult(False, "liste expirée"))
    with _client(h) as c:
        r = c.get("/readyz")
    assert r.status_code == 503
    checks = r.json()["checks"]
    assert r.json()["status"] == "unavailable"
    assert checks["ok"] == {"ok": True, "detail": ""}
    assert checks["broken"] == {"ok": False, "detail": "base injoignable"}
    assert checks["false"] == {"ok": False, "detail": "échec"}
    assert checks["hangs"]["ok"] is False and "pas de réponse" in checks["hangs"]["detail"]
    assert checks["reason"] == {"ok": False, "detail": "liste expirée"}


def test_no_checks_means_ready() -> None:
    with _client(Health("svc")) as c:
        assert c.get("/readyz").status_code == 200
