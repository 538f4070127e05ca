"""``/healthz`` and ``/readyz`` for every Starlette service.

Two questions, two URLs (the Kubernetes convention operators know):

- ``/healthz`` — is the process serving? Always 200 while it answers; a supervisor
  restarts the process when it stops answering.
- ``/readyz`` — can it do its job now? 200 when every named readiness check passes, 503
  otherwise, naming what fails: ``{"status": "ok"|"unavailable", "checks": {name: {"ok",
  "detail"}}}``. A load balancer stops sending traffic while it is 503, without a restart.

A readiness check is a named callable (sync or async) returning a ``CheckResult``, a bool,
or raising (a failure whose detail is the exception's message). Checks should read state
the service already has (keys loaded, last trust-list fetch, queue depth): they run on
every probe. An async check that does not answer within ``timeout`` fails.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

log = logging.getLogger("confiance.health")

NO_STORE = {"Cache-Control": "no-store"}


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    detail: str = ""


CheckOutcome = CheckResult | bool
ReadinessCheck = Callable[[], CheckOutcome | Awaitable[CheckOutcome]]


class Health:
    """Liveness and readiness of one service; ``routes()`` gives the Starlette routes."""

    def __init__(
        self, component: str, checks: Mapping[str, ReadinessCheck] | None = None, *, timeout: float = 2.0
    ) -> None:
        self.component = component
        self.checks: dict[str, ReadinessCheck] = dict(checks or {})
        self.timeout = timeout

    def add(self, name: str, check: ReadinessCheck) -> None:
        self.checks[name] = check

    async def _run(self, name: str, check: ReadinessCheck) -> CheckResult:
        try:
            outcome = check()
            if inspect.isawaitable(outcome):
                outcome = await asyncio.wait_for(outcome, self.timeout)
        except TimeoutError:
            return CheckResult(False, f"pas de réponse en {self.timeout:g} s")
        except Exception as exc:  # a failing check is a finding, not a crash of the probe
            log.warning("readiness check %s failed: %s", name, exc)
            return CheckResult(False, str(exc) or type(exc).__name__)
        if isinstance(outcome, CheckResult):
            return outcome
        return CheckResult(bool(outcome), "" if outcome else "échec")

    async def readiness(self) -> tuple[bool, dict[str, CheckResult]]:
        names = list(self.checks)
        results = await asyncio.gather(*(self._run(n, self.checks[n]) for n in names))
        by_name = dict(zip(names, results, strict=True))
        return all(r.ok for r in results), by_name

    async def live(self, _request: Request) -> Response:
        return JSONResponse({"status": "ok", "component": self.component}, headers=NO_STORE)

    async def ready(self, _request: Request) -> Response:
        ok, results = await self.readiness()
        body: dict[str, Any] = {
            "status": "ok" if ok else "unavailable",
            "component": self.component,
            "checks": {name: {"ok": r.ok, "detail": r.detail} for name, r in results.items()},
        }
        return JSONResponse(body, status_code=200 if ok else 503, headers=NO_STORE)

    def routes(self, aliases: Iterable[str] = ()) -> list[Route]:
        """``/healthz``, ``/readyz``, and liveness under each older URL in ``aliases`` (e.g. ``/health``)."""
        live = [Route(path, self.live, methods=["GET", "HEAD"]) for path in ("/healthz", *aliases)]
        return [*live, Route("/readyz", self.ready, methods=["GET", "HEAD"])]


__all__ = ["CheckResult", "Health", "ReadinessCheck"]
