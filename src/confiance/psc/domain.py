"""The PSC sandbox's provider: registry, sessions, CIBA requests and token issuance.

Pure logic: no sockets, no files, no clock of its own (``now`` is passed in) and all
state behind the ``Store`` protocol. The HTTP layer (``app.py``) only extracts request
values and renders results, so every rule is testable without a server and the same rule
answers whether a request came over TLS or through a test.

The rules live in small modules the ``Provider`` calls: ``clients`` (client
authentication), ``ciba_checks`` (the backchannel request, one function per rule),
``grants/`` (the token endpoint, one module per grant, picked from a table),
``authorize`` (browser flow), ``introspection`` and ``revocation``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from confiance.core.encoding import b64url

from . import acr, authorize, grants, introspection, revocation
from .acr import CHANNELS
from .ciba_checks import ACR, BINDING_RE, BackchannelRequest, run_checks
from .clients import CIBA_GRANT, SUPPORTED_GRANTS, Client, Credentials, authenticate, parse_basic
from .config import EcpsPolicy, Lifetimes
from .errors import InvalidGrantError, InvalidRequestError, OAuthError, RedirectError
from .grants.code import pkce_s256
from .identities import Identity
from .scopes import SUPPORTED_SCOPES
from .store import CibaRequest, Grant, LoginTransaction, Session, Store
from .tokens import JwtSigner, at_hash

__all__ = [
    "ACR",
    "BINDING_RE",
    "CHANNELS",
    "CIBA_GRANT",
    "SUPPORTED_GRANTS",
    "SUPPORTED_SCOPES",
    "Client",
    "Credentials",
    "OAuthError",
    "Provider",
    "RedirectError",
    "parse_basic",
    "pkce_s256",
]


def _new_id() -> str:
    return secrets.token_urlsafe(24)


def _uuid_like() -> str:
    h = secrets.token_hex(16)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass
class Provider:
    """The OpenID provider. ``issuer`` is fixed at start; everything else is live-tunable."""

    issuer: str
    store: Store
    signer: JwtSigner
    lifetimes: Lifetimes
    ecps_default: EcpsPolicy
    signing_alg: str = "RS256"
    clients: dict[str, Client] = field(default_factory=dict)
    identities: dict[str, Identity] = field(default_factory=dict)
    ecps_overrides: dict[str, EcpsPolicy] = field(default_factory=dict)
    # Keys the MAC of refresh tokens: ``<grant id>.<generation>.<mac>`` needs no record per token.
    refresh_key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    _claims_cache: dict[str, dict[str, Any]] = field(default_factory=dict)
    _ops: int = 0

    new_id = staticmethod(_new_id)

    # ------------------------------------------------------------------ registry
    def add_client(self, client: Client) -> None:
        self.clients[client.client_id] = client

    def add_identity(self, ident: Identity) -> None:
        self.identities[ident.national_id] = ident
        self._claims_cache.pop(ident.national_id, None)

    def claims_of(self, national_id: str) -> dict[str, Any]:
        cached = self._claims_cache.get(national_id)
        if cached is None:
            cached = self.identities[national_id].claims()
            self._claims_cache[national_id] = cached
        return cached

    def policy_for(self, national_id: str) -> EcpsPolicy:
        if national_id in self.ecps_overrides:
            return self.ecps_overrides[national_id]
        ident = self.identities.get(national_id)
        if ident is not None and ident.ecps is not None:
            return ident.ecps
        return self.ecps_default

    def housekeeping(self, now: float) -> None:
        self._ops += 1
        if self._ops % 1024 == 0:
            self.store.purge(now)

    def authenticate(self, creds: Credentials) -> Client:
        return authenticate(self.clients, creds)

    # ------------------------------------------------------------------ sessions
    def session_active(self, s: Session | None, now: float) -> bool:
        return (
            s is not None
            and not s.ended
            and now < s.auth_time + self.lifetimes.session_absolute
            and now < s.last_seen + self.lifetimes.session_idle
        )

    def new_session(self, national_id: str, channel: str, now: float, acr: str = "eidas1") -> Session:
        s = Session(
            id=_uuid_like(),
            national_id=national_id,
            auth_time=now,
            last_seen=now,
            drop_at=now + self.lifetimes.session_absolute,
            acr=acr,
            channel=channel,
        )
        self.store.put_session(s)
        return s

    def end_session(self, session_id: str) -> bool:
        s = self.store.session(session_id)
        if s is None or s.ended:
            return False
        return self.store.end_session(s.id, s.drop_at)

    # ------------------------------------------------------------------ CIBA
    def ciba_start(self, client: Client, params: Mapping[str, str], now: float) -> dict[str, Any]:
        """Backchannel authentication request (CIBA §7), with PSC's parameters."""
        self.housekeeping(now)
        checked = run_checks(BackchannelRequest(client, params, self.identities, self.lifetimes.ciba_request))
        policy = self.policy_for(checked.national_id)
        req = CibaRequest(
            id=_uuid_like(),
            client_id=client.client_id,
            national_id=checked.national_id,
            scope=" ".join(sorted(checked.scopes)),
            binding_message=checked.binding_message,
            channel=checked.channel,
            created=now,
            expires_at=now + checked.expiry,
            interval=self.lifetimes.ciba_interval,
            mode=policy.mode,
            delay=policy.delay_ms / 1000.0,
            acr=checked.acr,
        )
        self.store.put_ciba(req)
        out: dict[str, Any] = {"auth_req_id": req.id, "expires_in": max(1, round(checked.expiry))}
        out["interval"] = round(req.interval) if req.interval == int(req.interval) else req.interval
        return out

    def ciba_status(self, req: CibaRequest, now: float) -> str:
        """pending | approved | denied | expired, applying the e-CPS policy lazily."""
        if req.decision is not None:
            return req.decision
        if now >= req.expires_at:
            return "expired"
        if req.mode in ("approve", "deny") and now >= req.created + req.delay:
            return "approved" if req.mode == "approve" else "denied"
        return "pending"

    def ciba_decide(self, rid: str, approve: bool, now: float) -> CibaRequest:
        """A person answered on the e-CPS page or the CLI."""
        req = self.store.ciba(rid)
        if req is None or req.consumed:
            raise InvalidRequestError("demande CIBA inconnue ou déjà utilisée", 404)
        status = self.ciba_status(req, now)
        if status != "pending":
            raise InvalidRequestError(f"demande CIBA déjà terminée ({status})", 409)
        decision = "approved" if approve else "denied"
        if not self.store.decide_ciba(req.id, decision, req.expires_at):
            raise InvalidRequestError("demande CIBA déjà terminée", 409)
        req.decision = decision
        return req

    def pending_ciba(self, now: float) -> list[CibaRequest]:
        return sorted(
            (r for r in self.store.ciba_requests() if not r.consumed and self.ciba_status(r, now) == "pending"),
            key=lambda r: r.created,
        )

    # ------------------------------------------------------------------ browser flow
    def authorize_request(self, params: Mapping[str, str], now: float) -> tuple[Client, LoginTransaction]:
        return authorize.authorize_request(self, params, now)

    def login_answer(
        self, tx_id: str, national_id: str | None, approve: bool, now: float, channel: str = "CARD"
    ) -> tuple[str, dict[str, str]]:
        return authorize.login_answer(self, tx_id, national_id, approve, now, channel)

    # ------------------------------------------------------------------ token endpoint
    def token(self, client: Client, params: Mapping[str, str], now: float) -> dict[str, Any]:
        self.housekeeping(now)
        return grants.pick(client, params)(self, client, params, now)

    def new_grant(self, client: Client, session: Session, scope: str, nonce: str | None, now: float) -> Grant:
        """A new token family; ``issue(..., fresh=True)`` saves it with its first refresh token."""
        g = Grant(
            id=_new_id(),
            client_id=client.client_id,
            session_id=session.id,
            national_id=session.national_id,
            scope=scope,
            drop_at=session.drop_at,
            nonce=nonce,
        )
        return g

    def revoke_grant(self, grant_id: str) -> None:
        g = self.store.grant(grant_id)
        if g is not None and not g.revoked:
            self.store.revoke_grant(g.id, g.drop_at)

    def _refresh_mac(self, grant_id: str, gen: int) -> str:
        digest = hmac.new(self.refresh_key, f"{grant_id}.{gen}".encode(), hashlib.sha256).digest()
        return b64url(digest[:24])  # 24 bytes: no padding, same text as before

    def parse_refresh(self, token: str) -> tuple[Grant, int] | None:
        """The grant and generation of an authentic refresh token (any generation), else None."""
        if len(token) > 200:
            return None
        gid, _, rest = token.partition(".")
        gen_s, _, mac = rest.partition(".")
        if not gid or not gen_s.isdigit() or len(gen_s) > 9 or not mac:
            return None
        gen = int(gen_s)
        if not hmac.compare_digest(mac.encode(), self._refresh_mac(gid, gen).encode()):
            return None
        grant = self.store.grant(gid)
        return (grant, gen) if grant is not None else None

    def live_refresh(self, token: str, now: float) -> Grant | None:
        """The grant of a current, unexpired refresh token whose family and session are live."""
        parsed = self.parse_refresh(token)
        if parsed is None:
            return None
        grant, gen = parsed
        if grant.revoked or gen != grant.refresh_gen or now >= grant.refresh_expires_at:
            return None
        return grant if self.session_active(self.store.session(grant.session_id), now) else None

    def issue(self, client: Client, grant: Grant, session: Session, now: float, *, fresh: bool) -> dict[str, Any]:
        """Access token, rotated refresh token and (with ``openid``) ID token, Keycloak-shaped.

        ``fresh``: a new family, saved here. Otherwise a refresh: the generation moves on by
        compare-and-set together with the session's ``last_seen``; losing the race means the
        same refresh token was used twice at once, which is a replay like any other.
        """
        lt = self.lifetimes
        iat = int(now)
        session_end = min(session.auth_time + lt.session_absolute, now + lt.session_idle)
        access_exp = min(now + lt.access_token, session_end)
        refresh_exp = min(now + lt.refresh_token, session_end)
        jti = f"{grant.id}.{_uuid_like()}"  # the grant id lets introspection find the family
        ident_claims = self.claims_of(grant.national_id)
        access_claims = {
            "exp": int(access_exp),
            "iat": iat,
            "auth_time": int(session.auth_time),
            "jti": jti,
            "iss": self.issuer,
            "aud": client.client_id,
            "sub": ident_claims["sub"],
            "typ": "Bearer",
            "azp": client.client_id,
            "session_state": session.id,
            "sid": session.id,
            "acr": session.acr,
            **acr.claims(session.channel),
            "scope": grant.scope,
            "preferred_username": grant.national_id,
        }
        access = self.signer.sign(access_claims, client.access_token_alg or self.signing_alg)
        # Rotation: bump the family's generation; the previous refresh token becomes a replay.
        from_gen = grant.refresh_gen
        grant.refresh_gen += 1
        grant.refresh_issued_at = now
        grant.refresh_expires_at = refresh_exp
        if fresh:
            self.store.put_grant(grant)
        else:
            # The session's last_seen is written at most once per 1 % of the idle timeout
            # (≤ 1 s): a client refreshing in a loop costs one write per refresh, not two,
            # and the idle end moves by at most that much.
            touch = now - session.last_seen >= min(1.0, lt.session_idle / 100)
            if touch:
                session.last_seen = now
            if not self.store.rotate_grant(grant, from_gen, session if touch else None):
                self.revoke_grant(grant.id)
                raise InvalidGrantError("jeton de rafraîchissement déjà utilisé : famille révoquée")
        refresh = f"{grant.id}.{grant.refresh_gen}.{self._refresh_mac(grant.id, grant.refresh_gen)}"
        out: dict[str, Any] = {
            "access_token": access,
            "expires_in": max(0, int(access_exp - now)),
            "refresh_expires_in": max(0, int(refresh_exp - now)),
            "refresh_token": refresh,
            "token_type": "Bearer",
            "not-before-policy": 0,
            "session_state": session.id,
            "scope": grant.scope,
        }
        if "openid" in grant.scope.split():
            id_claims: dict[str, Any] = {
                "exp": int(now + lt.id_token),
                "iat": iat,
                "auth_time": int(session.auth_time),
                "jti": _uuid_like(),
                "iss": self.issuer,
                "aud": client.client_id,
                "sub": ident_claims["sub"],
                "typ": "ID",
                "azp": client.client_id,
                "session_state": session.id,
                "sid": session.id,
                "acr": session.acr,
                **acr.claims(session.channel),
                "at_hash": at_hash(access),
                "preferred_username": grant.national_id,
                "given_name": ident_claims["given_name"],
                "family_name": ident_claims["family_name"],
            }
            if grant.nonce is not None:
                id_claims["nonce"] = grant.nonce
            out["id_token"] = self.signer.sign(id_claims, client.id_token_alg or self.signing_alg)
        return out

    # ------------------------------------------------------------------ tokens presented back
    def active_access(self, token: str, now: float) -> tuple[dict[str, Any], Grant, Session] | None:
        return introspection.active_access(self, token, now)

    def introspect(self, client: Client, token: str | None, hint: str | None, now: float) -> dict[str, Any]:
        return introspection.introspect(self, client, token, hint, now)

    def userinfo(self, token: str | None, now: float) -> tuple[dict[str, Any], Client | None]:
        return introspection.userinfo(self, token, now)

    def revoke(self, client: Client, token: str | None, now: float) -> None:
        revocation.revoke(self, client, token, now)

    def logout(self, id_token_hint: str | None, redirect_uri: str | None, now: float) -> Session | None:
        return revocation.logout(self, id_token_hint, redirect_uri, now)

    def logout_by_refresh(self, client: Client, refresh_token: str | None) -> None:
        revocation.logout_by_refresh(self, client, refresh_token)
