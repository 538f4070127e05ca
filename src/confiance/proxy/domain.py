"""Pure proxy rules: connect-body validation, the session and its clocks, trace records.

Nothing here does I/O or reads the clock by itself (``now`` is always passed in), so each
rule is unit-tested directly and behaves the same under every session store.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import uuid
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from confiance.core.errors import ApiError

NATIONAL_ID_RE = re.compile(r"^[0-9A-Za-z]{1,30}$")
BINDING_RE = re.compile(r"^[0-9]{2}$")
CLIENT_ID_RE = re.compile(r"^[\x21-\x7e]{1,200}$")
CHANNELS = ("CARD", "MOBILE")
SESSION_ID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


class ProxyError(ApiError):
    """A refusal with an HTTP status, an error code and a French message for the LPS
    (``core.errors.ApiError``: the ``{code, message, ...}`` shape of ANS's contract)."""

    def __init__(
        self, status: int, code: str, message: str, *, headers: tuple[tuple[bytes, bytes], ...] = (), **extra: Any
    ) -> None:
        """``headers``: response headers the refusal needs (``Allow`` on a 405); ``extra``:
        more fields of the JSON body."""
        super().__init__(status, code, message, **extra)
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **self.extra}


def internal_error() -> ProxyError:
    """What the LPS gets when the proxy itself failed (the cause is logged, never sent)."""
    return ProxyError(500, "INTERNAL_ERROR", "erreur interne du proxy", metadata={})


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    national_id: str
    binding_message: str
    client_id: str
    channel: str


def parse_connect(body: Any) -> ConnectRequest:
    """Validate a ``POST /connect`` body; the 400 error names the first bad field.

    ``metadata`` echoes nationalId/clientId as the ANS contract's 400/404 schema shows.
    """

    def meta() -> dict[str, Any]:
        if not isinstance(body, dict):
            return {"nationalId": None, "clientId": None}
        return {"nationalId": _echo(body.get("nationalId")), "clientId": _echo(body.get("clientId"))}

    if not isinstance(body, dict):
        raise ProxyError(400, "INVALID_REQUEST", "le corps doit être un objet JSON", metadata=meta())
    checks = (
        ("nationalId", NATIONAL_ID_RE, "identifiant national (1 à 30 caractères alphanumériques)"),
        ("bindingMessage", BINDING_RE, "deux chiffres de 00 à 99"),
        ("clientId", CLIENT_ID_RE, "identifiant client PSC du logiciel"),
    )
    for name, rx, expected in checks:
        value = body.get(name)
        if value is None:
            raise ProxyError(400, "MISSING_FIELD", f"champ {name} manquant", field=name, metadata=meta())
        # fullmatch: with match, "$" also accepts a final "\n" ("42\n" would reach PSC)
        if not isinstance(value, str) or not rx.fullmatch(value):
            raise ProxyError(
                400, "INVALID_FIELD", f"champ {name} invalide: attendu {expected}", field=name, metadata=meta()
            )
    channel = body.get("channel")
    if channel is None:
        raise ProxyError(400, "MISSING_FIELD", "champ channel manquant", field="channel", metadata=meta())
    if channel not in CHANNELS:
        raise ProxyError(
            400, "INVALID_FIELD", "champ channel invalide: attendu CARD ou MOBILE", field="channel", metadata=meta()
        )
    return ConnectRequest(body["nationalId"], body["bindingMessage"], body["clientId"], channel)


def _echo(v: Any) -> Any:
    """Echo a caller's value back only when it is a short string (never reflect arbitrary JSON)."""
    return v if isinstance(v, str) and len(v) <= 200 else None


def new_session_id() -> str:
    """UUIDv4 as in ANS's example (122 random bits from the OS CSPRNG)."""
    return str(uuid.UUID(bytes=secrets.token_bytes(16), version=4))


def valid_session_id(value: str | None) -> bool:
    return value is not None and len(value) == 36 and SESSION_ID_RE.fullmatch(value) is not None


@dataclass(slots=True)
class ApiToken:
    """A token obtained by exchange at one service's AS (bound to the LPS certificate)."""

    access_token: str
    expires_at: float
    refresh_token: str | None = None

    def usable(self, now: float, margin: float) -> bool:
        return now + margin < self.expires_at


@dataclass(slots=True)
class Session:
    """A professional (national id) + an LPS (client id) + their PSC tokens."""

    id: str
    client_id: str
    national_id: str
    session_state: str
    created_at: float
    last_used_at: float
    absolute_expires_at: float
    idle_ttl: float
    psc_access_token: str
    psc_access_expires_at: float
    psc_refresh_token: str | None
    psc_refresh_expires_at: float | None
    id_token: str | None
    dn: str | None = None  # subject DN of the certificate used for client_id (traces)
    flow: str = "ciba"
    api_tokens: dict[str, ApiToken] = field(default_factory=dict)
    version: int = 0  # bumped at each save: compare-and-set for refreshes

    def expired(self, now: float) -> str | None:
        """Why the session is over, or None: absolute lifetime or idle time exceeded."""
        if now >= self.absolute_expires_at:
            return "absolute"
        if now - self.last_used_at >= self.idle_ttl:
            return "idle"
        return None

    def expires_at(self) -> float:
        return min(self.absolute_expires_at, self.last_used_at + self.idle_ttl)

    def psc_access_usable(self, now: float, margin: float) -> bool:
        return now + margin < self.psc_access_expires_at

    def psc_refresh_usable(self, now: float) -> bool:
        if not self.psc_refresh_token:
            return False
        return self.psc_refresh_expires_at is None or now < self.psc_refresh_expires_at

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Session:
        d = dict(data)
        d["api_tokens"] = {k: ApiToken(**v) for k, v in (d.get("api_tokens") or {}).items()}
        return cls(**d)


def new_session(
    *,
    client_id: str,
    national_id: str,
    tokens: dict[str, Any],
    now: float,
    absolute_ttl: float,
    idle_ttl: float,
    dn: str | None,
    flow: str = "ciba",
) -> Session:
    """A session from a PSC token response (CIBA or authorization code)."""
    expires_in = _seconds(tokens.get("expires_in"), 60)
    refresh_in = tokens.get("refresh_expires_in")
    return Session(
        id=new_session_id(),
        client_id=client_id,
        national_id=national_id,
        session_state=str(tokens.get("session_state") or ""),
        created_at=now,
        last_used_at=now,
        absolute_expires_at=now + absolute_ttl,
        idle_ttl=idle_ttl,
        psc_access_token=str(tokens["access_token"]),
        psc_access_expires_at=now + expires_in,
        psc_refresh_token=tokens.get("refresh_token"),
        psc_refresh_expires_at=(now + float(refresh_in)) if refresh_in else None,
        id_token=tokens.get("id_token"),
        dn=dn,
        flow=flow,
    )


def _seconds(value: Any, default: float) -> float:
    """A lifetime from a token response; 0 is a real (already elapsed) lifetime, not "absent"."""
    if value is None or isinstance(value, bool):
        return default
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return default


def apply_psc_refresh(session: Session, tokens: dict[str, Any], now: float) -> None:
    """Store a refreshed PSC token set; a rotated refresh token replaces the old one.

    API tokens obtained from the previous access token stay valid until they expire: the AS
    bound them to the certificate, not to the PSC token.
    """
    session.psc_access_token = str(tokens["access_token"])
    session.psc_access_expires_at = now + _seconds(tokens.get("expires_in"), 60)
    if tokens.get("refresh_token"):
        session.psc_refresh_token = str(tokens["refresh_token"])
        refresh_in = tokens.get("refresh_expires_in")
        session.psc_refresh_expires_at = (now + float(refresh_in)) if refresh_in else None
    if tokens.get("id_token"):
        session.id_token = str(tokens["id_token"])
    if tokens.get("session_state"):
        session.session_state = str(tokens["session_state"])


class TraceType(StrEnum):
    CONNECT_SUCCESS = "CONNECT_SUCCESS"
    CONNECT_REPLAY = "CONNECT_REPLAY"
    CONNECT_FAILURE = "CONNECT_FAILURE"
    SEND = "SEND"
    DISCONNECT = "DISCONNECT"


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def trace(
    kind: TraceType,
    *,
    now: float,
    national_id: str | None,
    ip: str | None,
    port: int | None,
    session: Session | None = None,
    client_id: str | None = None,
    dn: str | None = None,
    api: tuple[str, str, str] | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    """A trace in ANS's shape. Rules (proxy-contract.md): type, IdRPPS, ipAddress, timestamp
    always; clientId, proxy_id_session, session_state for all but CONNECT_FAILURE;
    apiRequest only on SEND."""
    rec: dict[str, Any] = {
        "type": str(kind),
        "IdRPPS": national_id,
        "ipAddress": ip,
        "ports": [port] if port is not None else [],
        "timestamp": iso(now),
    }
    if kind is not TraceType.CONNECT_FAILURE:
        if session is None:
            raise ValueError(f"{kind} trace needs its session")
        rec["clientId"] = session.client_id
        rec["proxy_id_session"] = session.id
        rec["session_state"] = session.session_state
        if session.dn is not None:  # only when the clientId authenticates by certificate
            rec["dn"] = session.dn
    else:
        if client_id is not None:
            rec["clientId"] = client_id
        if dn is not None:
            rec["dn"] = dn
        if reason is not None:
            rec["reason"] = reason
    if kind is TraceType.SEND:
        if api is None:
            raise ValueError("SEND trace needs apiRequest")
        rec["apiRequest"] = {"nomApiPsc": api[0], "methode": api[1], "path": api[2]}
    elif api is not None:
        raise ValueError("apiRequest only on SEND")
    return rec


@dataclass(frozen=True, slots=True)
class _SessionView:
    """The session fields a trace names (what ``send_trace_fields`` carries)."""

    client_id: str
    id: str
    session_state: str | None
    dn: str | None


def send_trace_fields(
    now: float, session: Session, ip: str | None, port: int | None, api: tuple[str, str, str]
) -> tuple[Any, ...]:
    """A SEND trace as a flat tuple, queued on the hot path instead of its record.

    Why: the record (a nested dict with an ISO timestamp) costs several times more to
    build and encode than these values; they are queued, pickled to the trace keeper,
    stored as a JSON list, and turned into the record only when traces are read.
    """
    return (
        now,
        session.national_id,
        ip,
        port,
        session.client_id,
        session.id,
        session.session_state,
        session.dn,
        api,
    )


def send_record(fields: tuple[Any, ...]) -> dict[str, Any]:
    """The SEND trace record for :func:`send_trace_fields`' values (tuple, or list once
    read back from JSON): the same record :func:`trace` builds."""
    now, national_id, ip, port, client_id, sid, session_state, dn, api = fields
    view = _SessionView(client_id, sid, session_state, dn)
    return trace(
        TraceType.SEND,
        now=now,
        national_id=national_id,
        ip=ip,
        port=port,
        session=view,  # type: ignore[arg-type]
        api=tuple(api),
    )


def parse_iso(value: str) -> float:
    """ISO 8601 date-time → epoch seconds (naive times are UTC); ValueError when malformed."""
    v = value.strip()
    if v.endswith(("Z", "z")):
        v = v[:-1] + "+00:00"
    d = dt.datetime.fromisoformat(v)
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.UTC)
    return d.timestamp()


def client_address(
    peer: tuple[str, int] | None,
    forwarded_for: str | None,
    trusted: tuple[Any, ...],
) -> tuple[str | None, int | None]:
    """The caller's address for traces.

    ``X-Forwarded-For`` is believed only when the TCP peer is a configured reverse proxy,
    and then read right to left, skipping trusted hops: the first untrusted address is
    the client (entries further left were written by the client itself and prove nothing).
    """
    if peer is None:
        return None, None
    ip, port = peer[0], peer[1]
    if not forwarded_for or not trusted:  # the common case, on every /send: nothing to read
        return ip, port
    import ipaddress

    def is_trusted(addr: str) -> bool:
        try:
            a = ipaddress.ip_address(addr.strip())
        except ValueError:
            return False
        return any(a in net for net in trusted)

    if not is_trusted(ip):
        return ip, port
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return ip, port  # malformed chain: fall back to what we saw ourselves
        if not is_trusted(hop):
            return hop, None
    return (hops[0] if hops else ip), None
