"""Run a campaign: every check in order, each isolated, then clean up what was opened."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from confiance.core.tls import client_context

from . import preconditions
from .checks import CHECKS, Campaign, CheckDef
from .config import RunConfig
from .http import Recorder, no_cookie_jar
from .model import CheckFailed, CheckResult, Evidence, NotApplicable, Status, Unverifiable
from .services import ApiServices, PscSandbox

Progress = Callable[[CheckDef, CheckResult | None], None]


def selected(cfg: RunConfig) -> list[CheckDef]:
    return [c for c in CHECKS if (cfg.only is None or c.id in cfg.only) and c.id not in cfg.skip]


def run_check(defn: CheckDef, campaign: Campaign) -> CheckResult:
    """Run one check; any exception becomes its verdict, never the campaign's end."""
    ev = Evidence()
    started = time.monotonic()
    status, reason = Status.PASS, ""
    try:
        defn.fn(campaign, ev)
    except CheckFailed as exc:
        status, reason = Status.FAIL, str(exc)
    except Unverifiable as exc:
        status, reason = Status.UNVERIFIABLE, str(exc)
    except NotApplicable as exc:
        status, reason = Status.NOT_APPLICABLE, str(exc)
    except httpx.TimeoutException as exc:
        status, reason = Status.FAIL, f"délai dépassé : {exc or type(exc).__name__}"
    except httpx.HTTPError as exc:
        status, reason = Status.FAIL, f"erreur HTTP(S) : {exc or type(exc).__name__}"
    except Exception as exc:  # a proxy answering nonsense must not crash the campaign
        status, reason = Status.FAIL, f"réponse inexploitable ({type(exc).__name__}: {exc})"
    return CheckResult(
        id=defn.id,
        name=defn.name,
        requirement=defn.requirement,
        status=status,
        reason=reason,
        evidence=ev,
        duration_ms=int((time.monotonic() - started) * 1000),
        mandatory=defn.mandatory,
    )


def _client(cfg: RunConfig, identity: Any = None) -> httpx.Client:
    ctx = client_context(cfg.ca_bundle, identity)
    return httpx.Client(verify=ctx, timeout=httpx.Timeout(30.0, connect=5.0), cookies=no_cookie_jar())


def proxy_version(recorder: Recorder) -> str | None:
    """The proxy's declared version, from its health/version endpoint when it has one."""
    for path in ("/version", "/healthz", "/health"):
        try:
            resp = recorder.request(None, "GET", path, timeout=5.0)
        except httpx.HTTPError:
            continue
        if resp.status_code == 200:
            with contextlib.suppress(ValueError):
                data = resp.json()
                if isinstance(data, dict) and data.get("version"):
                    return str(data["version"])
    return None


def _main_identity_approves(campaign: Campaign) -> dict[str, Any] | None:
    """Make the campaign's identity approve on its simulated e-CPS; return the policy to restore.

    Seeded identities may deny or never answer by design (they serve other demos); the
    main scenario needs one that approves. Without sandbox admin access nothing changes.
    """
    try:
        policy = campaign.psc.ecps_policy(None, campaign.cfg.national_id)
        if policy.get("mode") == "approve":
            return None
        campaign.psc.set_ecps(None, campaign.cfg.national_id, "approve")
        return policy
    except (Unverifiable, httpx.HTTPError):
        return None


@dataclass
class RunResult:
    """A campaign's outcome: the verdicts, the proxy's declared version, what was observable."""

    results: list[CheckResult]
    version: str | None
    preconditions: dict[str, dict[str, Any]] = field(default_factory=dict)


def run(cfg: RunConfig, progress: Progress | None = None) -> RunResult:
    """Run the selected checks against ``cfg.proxy_url``, after establishing what can be observed."""
    proxy_http = _client(cfg, cfg.proxy_identity)
    psc_http = _client(cfg) if cfg.psc_url else None
    api_http = _client(cfg, cfg.api_identity) if cfg.api_jwks_url or cfg.api_access_log_url else None
    try:
        proxy = Recorder(proxy_http, cfg.proxy_url, keep=True)
        campaign = Campaign(
            cfg=cfg,
            proxy=proxy,
            psc=PscSandbox(Recorder(psc_http, cfg.psc_url) if psc_http and cfg.psc_url else None, cfg.psc_admin_token),
            api=ApiServices(
                Recorder(api_http, "") if api_http else None,
                cfg.api_jwks_url,
                cfg.api_access_log_url,
                cfg.api_admin_token,
                cfg.api_jwks,
            ),
            proxy_tls=client_context(cfg.ca_bundle, cfg.proxy_identity),
        )
        version = proxy_version(proxy)
        facts = preconditions.observe(campaign)
        results: list[CheckResult] = []
        restore = _main_identity_approves(campaign)
        try:
            for defn in selected(cfg):
                if progress:
                    progress(defn, None)
                result = run_check(defn, campaign)
                results.append(result)
                if progress:
                    progress(defn, result)
        finally:
            for psid in list(campaign.open_sessions):  # leave no session behind, even on Ctrl-C
                with contextlib.suppress(httpx.HTTPError):
                    campaign.disconnect(None, psid)
            if restore is not None:
                with contextlib.suppress(Unverifiable, httpx.HTTPError):
                    campaign.psc.set_ecps(None, cfg.national_id, str(restore["mode"]), int(restore.get("delay_ms", 0)))
        facts["psc_is_sandbox"] = preconditions.psc_fact(campaign)
        return RunResult(results, version, facts)
    finally:
        for client in (proxy_http, psc_http, api_http):
            if client is not None:
                client.close()
