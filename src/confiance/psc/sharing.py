"""What the worker processes of one sandbox share besides live records.

Admin changes (clients, identities, e-CPS policies, lifetimes) are written to the store as
entries, and every change moves the store's version on. Each worker compares that version
with the one it last loaded and reloads when it moved. ``sync`` is cheap (one read) and is
called at the start of requests, at most every ``interval`` seconds on the token paths;
where a stale view would give a wrong answer it is forced: the admin API, a CIBA request
(it snapshots the e-CPS policy and lifetimes), the login page, and a client or identity
this worker does not know yet. So "register a client on one worker, use it on another"
needs no waiting.

The configuration file (clients, identities file, lifetimes, e-CPS default) is the base;
entries overlay it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .clients import SUPPORTED_GRANTS, Client
from .config import ClientConfig, EcpsPolicy, Lifetimes, PscConfig
from .domain import Provider
from .identities import Identity
from .store import StateStore


def client_from_config(c: ClientConfig) -> Client:
    return Client(
        client_id=c.client_id,
        secret=c.secret,
        subject_dn=c.tls_client_auth_subject_dn,
        espace_de_confiance=c.espace_de_confiance,
        trust_list_required=c.trust_list_required,
        redirect_uris=tuple(c.redirect_uris),
        post_logout_redirect_uris=tuple(c.post_logout_redirect_uris),
        grant_types=tuple(g for g in c.grant_types if g in SUPPORTED_GRANTS),
        name=c.name,
        id_token_alg=c.id_token_signed_response_alg,
        access_token_alg=c.access_token_signed_response_alg,
        userinfo_alg=c.userinfo_signed_response_alg,
    )


@dataclass
class SharedSettings:
    """Keeps a provider in step with the admin changes every worker writes to the store."""

    store: StateStore
    provider: Provider
    config: PscConfig
    on_keys: Callable[[], None] | None = None  # another worker rotated the signing keys
    interval: float = 0.25
    monotonic: Callable[[], float] = time.monotonic
    _version: int = -1
    _checked: float = field(default=float("-inf"))
    _base_clients: dict[str, Client] = field(default_factory=dict)
    _base_identities: dict[str, Identity] = field(default_factory=dict)
    _keys_generation: int = 0
    outage: dict[str, Any] | None = None  # {"until": epoch seconds, "mode": "503"} while PSC plays down

    def __post_init__(self) -> None:
        self._base_clients = dict(self.provider.clients)
        self._base_identities = dict(self.provider.identities)

    # ----- writes (any worker)
    def add_client(self, cfg: ClientConfig) -> Client:
        client = client_from_config(cfg)
        self.provider.add_client(client)
        self.store.put_entry("client", cfg.client_id, cfg.model_dump(mode="json"))
        return client

    def add_identity(self, ident: Identity) -> None:
        self.provider.add_identity(ident)
        self.store.put_entry("identity", ident.national_id, ident.model_dump(mode="json", exclude_none=True))

    def set_lifetimes(self, lifetimes: Lifetimes) -> None:
        self.provider.lifetimes = lifetimes
        self.store.put_entry("settings", "lifetimes", lifetimes.model_dump())

    def set_ecps_default(self, policy: EcpsPolicy) -> None:
        self.provider.ecps_default = policy
        self.store.put_entry("settings", "ecps_default", policy.model_dump())

    def set_ecps_overrides(self, overrides: dict[str, EcpsPolicy]) -> None:
        self.provider.ecps_overrides = dict(overrides)
        data = {nid: p.model_dump() for nid, p in overrides.items()}
        self.store.put_entry("settings", "ecps_overrides", data)

    def set_outage(self, outage: dict[str, Any] | None) -> None:
        self.outage = outage
        self.store.put_entry("settings", "outage", outage or {})

    def keys_rotated(self) -> None:
        self._keys_generation = self._keys_generation + 1
        self.store.put_entry("settings", "keys", {"generation": self._keys_generation})

    # ----- reads
    def sync(self, force: bool = False) -> None:
        """Reload admin changes if the store's version moved (at most every ``interval`` unless forced)."""
        now = self.monotonic()
        if not force and now - self._checked < self.interval:
            return
        self._checked = now
        version = self.store.version()
        if version == self._version:
            return
        self._version = version
        self._reload()

    def _reload(self) -> None:
        p = self.provider
        clients = dict(self._base_clients)
        for data in self.store.entries("client").values():
            cfg = ClientConfig.model_validate(data)
            clients[cfg.client_id] = client_from_config(cfg)
        p.clients = clients
        for nid, data in self.store.entries("identity").items():
            known = p.identities.get(nid)
            ident = Identity.model_validate(data)
            if known is None or known != ident:
                p.add_identity(ident)
        settings: dict[str, Any] = self.store.entries("settings")
        if "lifetimes" in settings:
            p.lifetimes = Lifetimes.model_validate(settings["lifetimes"])
        if "ecps_default" in settings:
            p.ecps_default = EcpsPolicy.model_validate(settings["ecps_default"])
        self.outage = settings.get("outage") or None
        keys = int(settings.get("keys", {}).get("generation", 0))
        if keys != self._keys_generation:
            self._keys_generation = keys
            if self.on_keys is not None:
                self.on_keys()
        if "ecps_overrides" in settings:
            p.ecps_overrides = {k: EcpsPolicy.model_validate(v) for k, v in settings["ecps_overrides"].items()}
