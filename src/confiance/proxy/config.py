"""The proxy's one TOML configuration, validated at start.

Every section is a :class:`StrictModel`: an unknown or misspelt key is an error naming the
key, never silently ignored (a typo in ``trusted_proxies`` must not open the proxy).
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from confiance.core.clients_file import load_clients
from confiance.core.config import ConfigError, StrictModel, load_config

SERVICE_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class ServerSection(StrictModel):
    """How the proxy listens."""

    host: str = "127.0.0.1"
    port: int = Field(8443, ge=0, le=65535)
    cert: Path
    key: Path
    ca_bundle: Path | None = None  # trust bundle for inbound client certs (optional mTLS)
    crl: Path | None = None
    client_auth: Literal["none", "optional", "required"] = "none"
    public_url: str | None = None  # where browsers reach us (authorization-code flow redirect_uri)
    proxy_id: str = "confiance-proxy"
    max_body_bytes: int = Field(1_048_576, ge=1024, le=64 * 1_048_576)
    max_header_bytes: int = Field(32_768, ge=1024, le=1_048_576)  # request line + headers
    keep_alive_timeout: float = Field(30.0, gt=0, le=3600)  # idle keep-alive connection closed after
    request_read_timeout: float = Field(30.0, gt=0, le=3600)  # a request must have arrived within
    graceful_timeout: float = Field(30.0, ge=0, le=3600)  # on stop, wait this long for requests in flight
    # Request bodies held for unanswered (queued, pipelined) requests: past these bounds a
    # connection is not read until answers free memory.
    max_buffered_bytes_per_connection: int = Field(4 * 1_048_576, ge=1024, le=1024 * 1_048_576)
    max_buffered_bytes: int = Field(64 * 1_048_576, ge=1024, le=16 * 1024 * 1_048_576)
    trusted_proxies: list[str] = Field(default_factory=list)
    # Operator logs (core/logs.py): "info" shows the start-up line and one access line per
    # request; log_format unset means JSON lines unless stderr is a terminal.
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "text"] | None = None
    access_log: bool = True
    # Processes sharing the listening socket. Above 1, sessions must live in a shared store
    # (sqlite or redis): refresh locks, the sweeper and traces are already process-safe.
    workers: int = Field(1, ge=1, le=64)
    # Where /readyz and /metrics are served ("127.0.0.1:9443", same TLS certificate); the
    # LPS-facing port then serves only ANS's contract (+ /healthz, web login). Unset: they
    # stay on the main port, behind ``admin_token`` when it is set (docs/proxy.md).
    admin_listen: str | None = None
    admin_token: str | None = Field(None, min_length=16)

    @field_validator("admin_listen")
    @classmethod
    def _hostport(cls, v: str | None) -> str | None:
        if v is not None:
            host, sep, port = v.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
                raise ValueError("attendu hôte:port, par exemple 127.0.0.1:9443")
        return v

    def admin_address(self) -> tuple[str, int] | None:
        if self.admin_listen is None:
            return None
        host, _, port = self.admin_listen.rpartition(":")
        return host.strip("[]"), int(port)

    @field_validator("log_level", mode="before")
    @classmethod
    def _level(cls, v: object) -> object:
        return v.lower() if isinstance(v, str) else v

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        for item in v:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"réseau invalide {item!r}") from None
        return v


class OutboundSection(StrictModel):
    """TLS trust and timeouts for every outbound call (PSC, AS, services)."""

    ca_bundle: Path
    connect_timeout: float = Field(5.0, gt=0, le=120)
    upstream_timeout: float = Field(30.0, gt=0, le=600)
    psc_timeout: float = Field(10.0, gt=0, le=120)
    pool_size: int = Field(100, ge=1, le=10_000)


class PscSection(StrictModel):
    """Pro Santé Connect, found through its discovery document."""

    discovery_url: str
    scope: str = "openid scope_all"
    acr_values: str = "eidas1"
    ciba_max_wait: float = Field(180.0, gt=0, le=900)  # bound on how long /connect polls
    verify_id_token: bool = True

    @field_validator("discovery_url")
    @classmethod
    def _https(cls, v: str) -> str:
        if not v.startswith("https://"):
            raise ValueError("doit être une URL https://")
        return v


class LpsClient(StrictModel):
    """One LPS known to PSC: its client id and the credentials the proxy holds for it."""

    client_id: str = Field(min_length=1, max_length=200)
    auth: Literal["mtls", "secret"] = "mtls"
    cert: Path | None = None  # ORG AUTH_CLI certificate presented to PSC, the AS and services
    key: Path | None = None
    secret: str | None = None
    as_client_id: str | None = None  # Client_ID_AS at the API authorization servers; default client_id
    web_redirect_url: str | None = None  # where /callback sends the browser after a web login

    @model_validator(mode="after")
    def _credentials(self) -> LpsClient:
        if self.auth == "mtls" and (self.cert is None or self.key is None):
            raise ValueError("auth = 'mtls' exige cert et key")
        if self.auth == "secret" and not self.secret:
            raise ValueError("auth = 'secret' exige secret")
        return self


class ServiceSection(StrictModel):
    """One API Pro Santé Connectée service reachable through /send/{name}/…"""

    base_url: str
    token_endpoint: str
    revocation_endpoint: str | None = None
    scope: str = ""
    audience: str | None = None
    subject_token_type: Literal[
        "urn:ietf:params:oauth:token-type:access_token", "urn:ietf:params:oauth:token-type:jwt"
    ] = "urn:ietf:params:oauth:token-type:access_token"
    send_subject_issuer: bool = True  # ANS's example sends subject_issuer=psc
    timeout: float | None = Field(None, gt=0, le=600)
    # Request headers forwarded to this service besides the default end-to-end set
    # (proxy/forwarding.py); never hop-by-hop, identity, address or rewrite headers.
    forward_headers: list[str] = Field(default_factory=list)

    @field_validator("forward_headers")
    @classmethod
    def _forwardable(cls, v: list[str]) -> list[str]:
        from .forwarding import refusal

        names = [n.strip().lower() for n in v]
        for n in names:
            why = refusal(n)
            if why is not None:
                raise ValueError(why)
        return names

    @field_validator("base_url", "token_endpoint", "revocation_endpoint")
    @classmethod
    def _https(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("https://"):
            raise ValueError("doit être une URL https://")
        if v is not None and any(c in v for c in "?#@\r\n "):
            raise ValueError("ne doit contenir ni requête, ni fragment, ni identifiants")
        return v.rstrip("/") if v else v


class SessionSection(StrictModel):
    """Where sessions live and how long they last."""

    store: Literal["memory", "sqlite", "redis"] = "memory"
    url: str | None = None  # sqlite:///path or redis://host:port/db
    # Key namespace (several proxies per Redis).
    redis_prefix: str = Field("confiance:proxy:", min_length=1, max_length=100)
    # base64url of 32 random bytes: tokens encrypted at rest in sqlite/redis (AES-256-GCM).
    encryption_key: str | None = None
    absolute_ttl: float = Field(4 * 3600, gt=0)
    idle_ttl: float = Field(30 * 60, gt=0)
    api_token_margin: float = Field(30.0, ge=0)  # renew an API token this long before it expires
    psc_token_margin: float = Field(5.0, ge=0)
    refresh_lock_ttl: float = Field(30.0, gt=0)
    sweep_interval: float = Field(15.0, gt=0)
    touch_interval: float = Field(5.0, ge=0)  # coalesce idle-time writes (shared stores)
    # Redis: a worker serves a session it cached for this long before checking it again
    # (deletes and token renewals reach every worker at once by pub/sub); 0: no cache.
    cache_max_age: float = Field(5.0, ge=0, le=300)
    cookie_samesite: Literal["strict", "lax", "none"] = "lax"

    @field_validator("encryption_key", mode="before")
    @classmethod
    def _key(cls, v: object) -> object:
        # Checked here with the codec's own decoder, not when the store first opens: a
        # placeholder left in place must stop `check-config` and `serve` at start-up,
        # naming the key and how to make one.
        from .sessions.codec import decode_key

        if isinstance(v, str):
            try:
                decode_key(v)
            except ValueError:
                raise ValueError(
                    "32 octets aléatoires encodés en base64url attendus (43 caractères), par exemple : "
                    'python3 -c "import base64,secrets;print(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())"'
                ) from None
        return v

    @model_validator(mode="after")
    def _url(self) -> SessionSection:
        if self.store == "redis" and not (self.url or "").startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("store = 'redis' exige url = 'redis://…'")
        if self.store == "sqlite" and not (self.url or "").startswith("sqlite:///"):
            raise ValueError("store = 'sqlite' exige url = 'sqlite:///chemin'")
        if self.idle_ttl > self.absolute_ttl:
            raise ValueError("idle_ttl ne peut dépasser absolute_ttl")
        return self


class TraceSection(StrictModel):
    """Append-only hash-chained traces and who may read them."""

    url: str = "sqlite:///proxy-traces.db"
    admin_token: str | None = Field(None, min_length=16)
    conformity_mode: bool = False  # /traces open to anyone (conformity campaigns only)
    send_durability: Literal["batched", "commit"] = "batched"
    # SEND traces wait at most this long before their batch is committed. 0.1 s: each batch
    # has a fixed cost in the keeper, and on a 2-core machine fewer, larger batches took the
    # proxy's p99 at a steady load from ≈ 2 ms to ≈ 0.4 ms (docs/benchmarks/proxy.md).
    flush_interval: float = Field(0.1, gt=0, le=5)
    batch_max: int = Field(1000, ge=1, le=100_000)
    queue_max: int = Field(100_000, ge=100)
    # "process": batches are encoded, hashed and committed by a child process, so the event
    # loop never waits for the GIL behind them; "thread": a worker thread of the proxy.
    writer: Literal["process", "thread"] = "process"
    # Signed checkpoints of the chain (docs/proxy.md, "Checkpoint witness"). Unset paths
    # default to files beside a SQLite store; with PostgreSQL they must be given.
    checkpoint_key: Path | None = None  # ES256 key file (0600), created on first start
    witness: Path | None = None  # append-only file of checkpoints: put it on another disk/host
    witness_command: list[str] | None = None  # also fed each checkpoint line (e.g. ssh … 'cat >> …')
    checkpoint_interval: float = Field(60.0, gt=0, le=86_400)
    # Bounds on every wait for traces: a CONNECT/DISCONNECT commit (then 503
    # TRACES_UNAVAILABLE), a database call of /traces and /readyz, a PostgreSQL connection.
    commit_timeout: float = Field(5.0, gt=0, le=300)
    db_timeout: float = Field(5.0, gt=0, le=300)
    keeper_timeout: float = Field(30.0, gt=0, le=600)  # keeper silent this long: killed, restarted
    heartbeat_interval: float = Field(1.0, gt=0, le=60)

    @model_validator(mode="after")
    def _witness_for_postgres(self) -> TraceSection:
        if not self.url.startswith("sqlite") and (self.checkpoint_key is None or self.witness is None):
            raise ValueError("traces.checkpoint_key et traces.witness sont requis avec PostgreSQL")
        return self

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("sqlite:///", "postgresql://", "postgresql+psycopg://")):
            raise ValueError("attendu sqlite:///… ou postgresql://…")
        return v


class ProxyConfig(StrictModel):
    server: ServerSection
    outbound: OutboundSection
    psc: PscSection
    lps_clients: list[LpsClient] = Field(min_length=1)
    # LPS onboarded while the proxy runs (`confiance proxy clients add`); re-read when it changes.
    lps_clients_file: Path | None = None
    services: dict[str, ServiceSection] = Field(default_factory=dict)
    sessions: SessionSection = Field(default_factory=lambda: SessionSection.model_validate({}))
    traces: TraceSection = Field(default_factory=lambda: TraceSection.model_validate({}))

    @field_validator("services")
    @classmethod
    def _names(cls, v: dict[str, ServiceSection]) -> dict[str, ServiceSection]:
        for name in v:
            if not SERVICE_NAME_RE.match(name):
                raise ValueError(f"nom de service invalide {name!r} (a-z, 0-9, _ et -)")
        return v

    @model_validator(mode="after")
    def _workers_need_shared_store(self) -> ProxyConfig:
        if self.server.workers > 1 and self.sessions.store == "memory":
            raise ValueError("server.workers > 1 exige sessions.store = 'sqlite' ou 'redis' (sessions partagées)")
        return self

    @model_validator(mode="after")
    def _unique_clients(self) -> ProxyConfig:
        ids = [c.client_id for c in self.lps_clients]
        if len(ids) != len(set(ids)):
            raise ValueError("lps_clients: client_id en double")
        return self

    def client(self, client_id: str) -> LpsClient | None:
        for c in self.lps_clients:
            if c.client_id == client_id:
                return c
        return None


def load_clients_file(path: Path) -> list[LpsClient]:
    """The LPS clients onboarded at run time (core/clients_file.py); none when the file is missing."""
    return load_clients(path, LpsClient)


def load(path: Path | str, check: bool = True) -> ProxyConfig:
    """Load and validate; relative file paths are resolved against the config file's folder.

    ``check=False``: do not stop at missing files (``check-config`` reports them with the
    rest, in one pass)."""
    cfg = load_config(path, ProxyConfig)
    base = Path(path).resolve().parent

    def fix(p: Path | None) -> Path | None:
        return p if p is None or p.is_absolute() else base / p

    cfg.server.cert = fix(cfg.server.cert) or cfg.server.cert
    cfg.server.key = fix(cfg.server.key) or cfg.server.key
    cfg.server.ca_bundle = fix(cfg.server.ca_bundle)
    cfg.server.crl = fix(cfg.server.crl)
    cfg.outbound.ca_bundle = fix(cfg.outbound.ca_bundle) or cfg.outbound.ca_bundle
    for c in cfg.lps_clients:
        c.cert = fix(c.cert)
        c.key = fix(c.key)
    cfg.lps_clients_file = fix(cfg.lps_clients_file)
    cfg.traces.checkpoint_key = fix(cfg.traces.checkpoint_key)
    cfg.traces.witness = fix(cfg.traces.witness)
    if check:
        check_files(cfg, str(path))
    return cfg


def check_files(cfg: ProxyConfig, source: str = "<config>") -> None:
    """Fail at start, naming the key, rather than at the first handshake."""
    missing = []
    files = {
        "server.cert": cfg.server.cert,
        "server.key": cfg.server.key,
        "server.ca_bundle": cfg.server.ca_bundle,
        "outbound.ca_bundle": cfg.outbound.ca_bundle,
    }
    for i, c in enumerate(cfg.lps_clients):
        files[f"lps_clients.{i}.cert"] = c.cert
        files[f"lps_clients.{i}.key"] = c.key
    for key, p in files.items():
        if p is not None and not Path(p).is_file():
            missing.append(f"  - {key}: fichier introuvable {p}")
    if cfg.server.client_auth != "none" and cfg.server.ca_bundle is None:
        missing.append("  - server.ca_bundle: requis quand client_auth n'est pas 'none'")
    if missing:
        raise ConfigError(f"configuration invalide ({source}):\n" + "\n".join(missing))
