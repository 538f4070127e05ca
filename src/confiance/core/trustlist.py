"""Enforcing the guichet's signed trust list ("trust space" mode of PSC and API servers).

The guichet publishes, as a signed JWT, the habilitations currently valid and the
certificates of their components. A server of the trust space admits a client certificate
only if it belongs to a valid habilitation for the server's environment (BAS admits
editors' test certificates, production admits operators' production certificates), and
only while every habilitation it relies on is still valid. The list is refreshed
periodically; when the guichet is unreachable the last good copy keeps being used (until
its own ``exp``), so a guichet outage does not stop the trust space, while a withdrawal
stops new token issuance within one refresh period.

The admission rule is a pure function (``admit``) so it is unit-tested without I/O;
``TrustListClient`` is the thin edge that fetches and verifies.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import Field

from confiance.core.config import StrictModel
from confiance.core.encoding import b64url_decode
from confiance.core.files import write_atomic
from confiance.core.jose import TokenError, verify_jwt
from confiance.core.trustlist_contract import (
    HabilitationEntry,
    TrustList,
    roles_for,
)

log = logging.getLogger("confiance.trustlist")

# The list grows with the registry (≈ 1 KiB per habilitation); 8 MiB leaves room for thousands.
MAX_TRUST_LIST_BYTES = 8 * 1024 * 1024


def _same_env(a: str, b: str) -> bool:
    return a.strip().lower() == b.strip().lower()


@dataclass(frozen=True)
class Admission:
    admitted: bool
    reason: str
    habilitation_id: int | None = None
    role: str | None = None
    holder: str | None = None


def admit(
    claims: TrustList | Mapping[str, Any], x5t_s256: str, environment: str, now: float | None = None
) -> Admission:
    """Whether the certificate ``x5t_s256`` may obtain tokens in ``environment``; the reason either way.

    A certificate is admitted when it is the certificate of a component of a habilitation
    that is valid for this environment, not expired, not flagged at risk and whose every
    dependency is itself present and valid in the list. Refusals name the habilitation
    that is missing, so the editor or operator knows what to obtain at the guichet.
    """
    now = time.time() if now is None else now
    tl = TrustList.from_claims(claims)
    by_id = tl.by_id()
    wanted = roles_for(environment)
    holders = [h for h in tl.habilitations if h.holds(x5t_s256)]
    if not holders:
        for access in tl.test_access:
            if _same_env(access.environment, environment) and access.holds(x5t_s256):
                return Admission(
                    True,
                    f"certificat de test de la candidature {access.role} n° {access.candidature_id} "
                    f"({access.holder}) en cours d'instruction",
                    role=access.role,
                    holder=access.holder,
                )
        return Admission(
            False,
            f"aucune habilitation {'/'.join(wanted)} valide en {environment} ne comprend ce certificat "
            f"(x5t#S256 {x5t_s256}) : obtenez l'habilitation au guichet EDC PSC",
        )
    reasons = []
    for h in holders:
        label = f"habilitation {h.role} n° {h.id} ({h.holder.name})"
        if not _same_env(h.environment, environment):
            reasons.append(f"{label} valable en {h.environment}, pas en {environment}")
            continue
        if h.role not in wanted:
            reasons.append(f"{label} : le rôle {h.role} n'est pas admis en {environment}")
            continue
        if h.expires_at() <= now:
            reasons.append(f"{label} expirée")
            continue
        missing = [dep for dep in h.relies_on if not _dep_valid(by_id.get(dep), now)]
        if missing:
            reasons.append(
                f"{label} s'appuie sur l'habilitation n° {', '.join(str(m) for m in missing)} "
                "qui n'est plus valide (retirée, suspendue ou expirée)"
            )
            continue
        if h.at_risk:
            reasons.append(f"{label} signalée à risque : {h.at_risk_reason or 'dépendance invalide'}")
            continue
        return Admission(True, f"{label} valide", habilitation_id=h.id, role=h.role, holder=h.holder.name)
    return Admission(False, "; ".join(reasons))


def _dep_valid(h: HabilitationEntry | None, now: float) -> bool:
    return h is not None and h.expires_at() > now and not h.at_risk


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat()


class TrustListSettings(StrictModel):
    """The ``[trust_list]`` section shared by the PSC sandbox and the API authorization server.

    ``enforce = "all"`` is the trust space proper: every client certificate must belong to
    a valid habilitation. ``"flagged"`` enforces it only for clients registered with
    ``trust_list_required`` — how `confiance up` keeps its ready-made demo clients working
    while the clients onboarded through the guichet are held to their habilitations.
    """

    url: str
    jwks_url: str
    environment: Literal["BAS", "production"] = "BAS"
    refresh_seconds: float = Field(30.0, ge=0.2, le=86_400)
    cache_path: Path | None = None
    issuer: str | None = None
    enforce: Literal["all", "flagged"] = "all"

    def client(self, ca_bundle: Path | None) -> TrustListClient:
        return TrustListClient(
            TrustListConfig(
                url=self.url,
                jwks_url=self.jwks_url,
                environment=self.environment,
                refresh_seconds=self.refresh_seconds,
                cache_path=self.cache_path,
                ca_bundle=ca_bundle,
                issuer=self.issuer,
            )
        )

    def applies_to(self, flagged: bool) -> bool:
        return self.enforce == "all" or flagged


class TrustListUnavailable(RuntimeError):
    """No verified trust list has ever been obtained (fail closed)."""


@dataclass
class TrustListConfig:
    url: str
    jwks_url: str
    environment: str = "BAS"
    refresh_seconds: float = 30.0
    cache_path: Path | None = None
    ca_bundle: Path | None = None
    issuer: str | None = None


class TrustListClient:
    """Fetches, verifies and caches the trust list; ``admit`` never blocks on the network for long.

    ``start()`` fetches once, then a daemon thread refreshes every ``refresh_seconds``;
    ``admit`` only reads the last verified copy, so request handlers never wait on the
    guichet. Nothing ever fetched means refusal (fail closed). The last good copy is
    persisted so a restart during a guichet outage still enforces the list it had.
    """

    def __init__(self, cfg: TrustListConfig, clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.clock = clock
        self._claims: dict[str, Any] | None = None
        self._list: TrustList | None = None
        self._fetched_at = 0.0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self._jwks: dict[str, Any] | None = None
        self.last_error: str | None = None
        if cfg.cache_path is not None and cfg.cache_path.exists():
            try:
                cached = json.loads(cfg.cache_path.read_text())
                claims = cached["claims"]
                self._list, self._claims = TrustList.from_claims(claims), claims
                self._fetched_at = float(cached["fetched_at"])
            except (ValueError, KeyError, TypeError):
                log.warning("copie locale de la liste de confiance illisible, ignorée")

    def _http(self) -> httpx.Client:
        verify: Any = ssl.create_default_context(cafile=str(self.cfg.ca_bundle)) if self.cfg.ca_bundle else True
        return httpx.Client(verify=verify, timeout=5.0)

    def refresh(self) -> None:
        """Fetch and verify now; keep the previous copy on any failure."""
        try:
            with self._http() as client:
                token = client.get(self.cfg.url).raise_for_status().text.strip()
                if self._jwks is None or not self._kid_known(token):
                    self._jwks = client.get(self.cfg.jwks_url).raise_for_status().json()
            assert self._jwks is not None
            claims = verify_jwt(token, self._jwks, issuer=self.cfg.issuer, leeway=5, max_length=MAX_TRUST_LIST_BYTES)
            typed = TrustList.from_claims(claims)  # a list that breaks the contract is refused
        except (httpx.HTTPError, TokenError, ValueError) as exc:
            self.last_error = f"liste de confiance non rafraîchie : {exc}"
            log.warning(self.last_error)
            return
        with self._lock:
            self._claims, self._list, self._fetched_at = claims, typed, self.clock()
            self.last_error = None
        if self.cfg.cache_path is not None:
            write_atomic(self.cfg.cache_path, json.dumps({"claims": claims, "fetched_at": self._fetched_at}))

    def _kid_known(self, token: str) -> bool:
        try:
            header = json.loads(b64url_decode(token.split(".")[0]))
        except ValueError:
            return False
        return any(k.get("kid") == header.get("kid") for k in (self._jwks or {}).get("keys", []))

    def start(self) -> None:
        """First fetch now (startup may block), then refresh every ``refresh_seconds`` in a daemon thread."""
        self.refresh()
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, daemon=True, name="trust-list-refresh")
            self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def _loop(self) -> None:
        while not self._stopped.wait(self.cfg.refresh_seconds):
            self.refresh()

    def claims(self) -> dict[str, Any]:
        """The last verified list as signed (JSON claims); never touches the network."""
        with self._lock:
            claims = self._claims
        self.trust_list()
        assert claims is not None
        return claims

    def trust_list(self) -> TrustList:
        """The last verified list, typed; never touches the network (request handlers call this)."""
        with self._lock:
            typed = self._list
        if typed is None:
            raise TrustListUnavailable(self.last_error or "liste de confiance pas encore obtenue du guichet")
        if typed.exp is not None and typed.exp < self.clock():
            raise TrustListUnavailable("la dernière liste de confiance connue a expiré et le guichet est injoignable")
        return typed

    def status(self) -> dict[str, Any]:
        """What is enforced now, for an operator: where the list comes from, when it was
        last verified, whether it is usable, the last refresh error, and the entries
        themselves (habilitations and test accesses, as the guichet publishes them)."""
        with self._lock:
            claims, fetched_at, error = self._claims, self._fetched_at, self.last_error
        try:
            self.trust_list()
            usable, why = True, None
        except TrustListUnavailable as exc:
            usable, why = False, str(exc)
        exp = (claims or {}).get("exp")
        return {
            "source": self.cfg.url,
            "environment": self.cfg.environment,
            "usable": usable,
            "unusable_reason": why,
            "fetched_at": _iso(fetched_at) if claims is not None else None,
            "expires_at": _iso(exp) if isinstance(exp, int | float) else None,
            "last_error": error,
            "habilitations": list((claims or {}).get("habilitations", [])),
            "test_access": list((claims or {}).get("test_access", [])),
        }

    def admit(self, x5t_s256: str) -> Admission:
        try:
            typed = self.trust_list()
        except TrustListUnavailable as exc:
            return Admission(False, str(exc))
        return admit(typed, x5t_s256, self.cfg.environment, self.clock())
