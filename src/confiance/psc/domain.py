"""The PSC sandbox rules: client authentication, CIBA, code + PKCE, tokens, sessions.

Pure logic: no sockets, no files, no clock of its own (``now`` is passed in) and all
state behind the ``Store`` protocol. The HTTP layer (``app.py``) only extracts request
values and renders results, so every rule here is testable without a server and the same
rule answers whether a request came over TLS or through a test.

Errors are ``OAuthError`` carrying the RFC 6749 / CIBA error code, a French description
and the HTTP status PSC (Keycloak) uses.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from .config import EcpsPolicy, Lifetimes
from .identities import Identity
from .store import AuthCode, CibaRequest, Grant, LoginTransaction, Session, Store
from .tokens import JwtSigner, TokenError, at_hash

CIBA_GRANT = "urn:openid:params:grant-type:ciba"
SUPPORTED_GRANTS = (CIBA_GRANT, "authorization_code", "refresh_token")
SUPPORTED_SCOPES = frozenset({"openid", "scope_all", "profile", "email", "offline_access"})
ACR = "eidas1"
CHANNELS = ("CARD", "MOBILE")
BINDING_RE = re.compile(r"^[0-9]{2}$")
PKCE_VERIFIER_RE = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")
PKCE_CHALLENGE_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")
MAX_PARAM = 4096


class OAuthError(Exception):
    """An OAuth/OIDC error answer: ``{"error", "error_description"}`` with ``status``."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


def _new_id() -> str:
    return secrets.token_urlsafe(24)


def _uuid_like() -> str:
    h = secrets.token_hex(16)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass
class Client:
    """A registered client as the domain sees it (built from ``ClientConfig``)."""

    client_id: str
    secret: str | None = None
    subject_dn: str | None = None
    espace_de_confiance: bool = False
    trust_list_required: bool = False
    redirect_uris: tuple[str, ...] = ()
    post_logout_redirect_uris: tuple[str, ...] = ()
    grant_types: tuple[str, ...] = SUPPORTED_GRANTS
    name: str = ""
    id_token_alg: str | None = None
    access_token_alg: str | None = None
    userinfo_alg: str | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "name": self.name,
            "espace_de_confiance": self.espace_de_confiance,
            "trust_list_required": self.trust_list_required,
            "tls_client_auth_subject_dn": self.subject_dn,
            "has_secret": self.secret is not None,
            "redirect_uris": list(self.redirect_uris),
            "post_logout_redirect_uris": list(self.post_logout_redirect_uris),
            "grant_types": list(self.grant_types),
        }


@dataclass(frozen=True)
class Credentials:
    """What the request carried to authenticate a client (extracted by the HTTP edge)."""

    client_id: str | None = None  # from the body
    basic: tuple[str, str] | None = None  # decoded Authorization: Basic
    basic_malformed: bool = False
    secret_post: str | None = None
    cert_dn: str | None = None  # RFC 4514 subject of the verified TLS client certificate


def parse_basic(header: str | None) -> tuple[tuple[str, str] | None, bool]:
    """RFC 6749 §2.3.1: ``Basic base64(urlencode(id):urlencode(secret))``; (creds, malformed)."""
    if not header:
        return None, False
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None, False
    try:
        raw = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None, True
    cid, sep, secret = raw.partition(":")
    if not sep or not cid:
        return None, True
    return (unquote(cid), unquote(secret)), False


def pkce_s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()


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
    on_change: Callable[[], None] | None = None  # persistence hook for admin additions
    # Keys the MAC of refresh tokens: ``<grant id>.<generation>.<mac>`` needs no record per token.
    refresh_key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    _claims_cache: dict[str, dict[str, Any]] = field(default_factory=dict)
    _ops: int = 0

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

    def _housekeeping(self, now: float) -> None:
        self._ops += 1
        if self._ops % 1024 == 0:
            self.store.purge(now)

    # ------------------------------------------------------------------ client auth
    def authenticate(self, creds: Credentials) -> Client:
        """RFC 6749 §2.3 / RFC 8705 §2.1; every failure is ``invalid_client`` (401)."""
        if creds.basic_malformed:
            raise OAuthError("invalid_client", "en-tête Authorization Basic mal formé", 401)
        methods = sum(x is not None for x in (creds.basic, creds.secret_post))
        if methods > 1:
            raise OAuthError("invalid_request", "plusieurs méthodes d'authentification du client", 400)
        cid = creds.basic[0] if creds.basic else creds.client_id
        if creds.basic and creds.client_id and creds.client_id != creds.basic[0]:
            raise OAuthError("invalid_client", "client_id incohérent", 401)
        if not cid:
            raise OAuthError("invalid_client", "authentification du client requise", 401)
        client = self.clients.get(cid)
        if client is None:
            raise OAuthError("invalid_client", "client inconnu", 401)
        secret = creds.basic[1] if creds.basic else creds.secret_post
        if secret is not None:
            if client.espace_de_confiance:
                raise OAuthError(
                    "invalid_client",
                    "client de l'Espace de Confiance : authentification mTLS (tls_client_auth) obligatoire",
                    401,
                )
            if client.secret is None or not hmac.compare_digest(secret.encode(), client.secret.encode()):
                raise OAuthError("invalid_client", "secret du client invalide", 401)
            return client
        # tls_client_auth: the certificate's subject DN must be the one registered.
        if client.subject_dn is None:
            raise OAuthError("invalid_client", "authentification du client requise", 401)
        if creds.cert_dn is None:
            raise OAuthError("invalid_client", "certificat client (mTLS) absent", 401)
        if creds.cert_dn != client.subject_dn:
            raise OAuthError("invalid_client", "le DN du certificat client ne correspond pas au client", 401)
        return client

    # ------------------------------------------------------------------ sessions
    def session_active(self, s: Session | None, now: float) -> bool:
        return (
            s is not None
            and not s.ended
            and now < s.auth_time + self.lifetimes.session_absolute
            and now < s.last_seen + self.lifetimes.session_idle
        )

    def _new_session(self, national_id: str, channel: str, now: float) -> Session:
        s = Session(
            id=_uuid_like(),
            national_id=national_id,
            auth_time=now,
            last_seen=now,
            drop_at=now + self.lifetimes.session_absolute,
            channel=channel,
        )
        self.store.put_session(s)
        return s

    def end_session(self, session_id: str) -> bool:
        s = self.store.session(session_id)
        if s is None or s.ended:
            return False
        s.ended = True
        self.store.put_session(s)
        return True

    # ------------------------------------------------------------------ CIBA
    def ciba_start(self, client: Client, params: Mapping[str, str], now: float) -> dict[str, Any]:
        """Backchannel authentication request (CIBA §7), with PSC's parameters."""
        self._housekeeping(now)
        if CIBA_GRANT not in client.grant_types:
            raise OAuthError("unauthorized_client", "client non autorisé pour CIBA")
        scopes = self._scopes(params.get("scope"))
        if "openid" not in scopes:
            raise OAuthError("invalid_scope", "le scope doit contenir openid")
        acr = params.get("acr_values")
        if acr is not None and ACR not in acr.split():
            raise OAuthError("invalid_request", f"acr_values non supporté (attendu {ACR})")
        for unsupported in ("login_hint_token", "id_token_hint"):
            if unsupported in params:
                raise OAuthError("invalid_request", f"{unsupported} non supporté : utiliser login_hint")
        if "client_notification_token" in params:
            raise OAuthError("invalid_request", "seul le mode poll est supporté")
        hint = params.get("login_hint")
        if not hint:
            raise OAuthError("invalid_request", "login_hint (identifiant national) obligatoire")
        if hint not in self.identities:
            raise OAuthError("unknown_user_id", "identifiant national inconnu")
        binding = params.get("binding_message")
        if binding is None or not BINDING_RE.fullmatch(binding):
            raise OAuthError("invalid_binding_message", "binding_message doit être composé de deux chiffres (00 à 99)")
        channel = params.get("channel", "CARD")
        if channel not in CHANNELS:
            raise OAuthError("invalid_request", "channel doit valoir CARD ou MOBILE")
        expiry = self.lifetimes.ciba_request
        if "requested_expiry" in params:
            try:
                asked = int(params["requested_expiry"])
            except ValueError:
                raise OAuthError("invalid_request", "requested_expiry doit être un entier") from None
            if asked <= 0:
                raise OAuthError("invalid_request", "requested_expiry doit être positif")
            expiry = min(expiry, asked)
        policy = self.policy_for(hint)
        req = CibaRequest(
            id=_uuid_like(),
            client_id=client.client_id,
            national_id=hint,
            scope=" ".join(sorted(scopes)),
            binding_message=binding,
            channel=channel,
            created=now,
            expires_at=now + expiry,
            interval=self.lifetimes.ciba_interval,
            mode=policy.mode,
            delay=policy.delay_ms / 1000.0,
        )
        self.store.put_ciba(req)
        out: dict[str, Any] = {"auth_req_id": req.id, "expires_in": max(1, round(expiry))}
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
            raise OAuthError("invalid_request", "demande CIBA inconnue ou déjà utilisée", 404)
        status = self.ciba_status(req, now)
        if status != "pending":
            raise OAuthError("invalid_request", f"demande CIBA déjà terminée ({status})", 409)
        req.decision = "approved" if approve else "denied"
        self.store.put_ciba(req)
        return req

    def pending_ciba(self, now: float) -> list[CibaRequest]:
        return sorted(
            (r for r in self.store.ciba_requests() if not r.consumed and self.ciba_status(r, now) == "pending"),
            key=lambda r: r.created,
        )

    def _grant_ciba(self, client: Client, params: Mapping[str, str], now: float) -> dict[str, Any]:
        rid = params.get("auth_req_id")
        if not rid:
            raise OAuthError("invalid_request", "auth_req_id obligatoire")
        req = self.store.ciba(rid)
        if req is None or req.client_id != client.client_id:
            raise OAuthError("invalid_grant", "auth_req_id inconnu")
        if req.consumed:
            raise OAuthError("invalid_grant", "auth_req_id déjà utilisé")
        status = self.ciba_status(req, now)
        if status == "expired":
            raise OAuthError("expired_token", "la demande d'authentification a expiré")
        if status == "denied":
            req.consumed = True
            self.store.put_ciba(req)
            raise OAuthError("access_denied", "authentification refusée par le professionnel")
        if status == "pending":
            too_fast = req.last_poll is not None and now - req.last_poll < req.interval
            req.last_poll = now
            self.store.put_ciba(req)
            if too_fast:
                raise OAuthError("slow_down", "interrogation trop fréquente : respecter l'intervalle")
            raise OAuthError("authorization_pending", "authentification en attente de l'utilisateur")
        req.consumed = True
        self.store.put_ciba(req)
        if req.national_id not in self.identities:
            raise OAuthError("invalid_grant", "identité supprimée")
        session = self._new_session(req.national_id, req.channel, now)
        grant = self._new_grant(client, session, req.scope, None, now)
        return self._issue(client, grant, session, now, auth_code_flow=False)

    # ------------------------------------------------------------------ code + PKCE
    def authorize_request(self, params: Mapping[str, str], now: float) -> tuple[Client, LoginTransaction]:
        """Validate an authorization request. Errors before the redirect URI is trusted
        carry status 400 (shown as a page); later ones are redirected (``RedirectError``)."""
        self._housekeeping(now)
        cid = params.get("client_id", "")
        client = self.clients.get(cid)
        if client is None:
            raise OAuthError("invalid_client", "client inconnu")
        redirect_uri = params.get("redirect_uri", "")
        if redirect_uri not in client.redirect_uris:
            raise OAuthError("invalid_request", "redirect_uri non enregistrée pour ce client")
        state = params.get("state")
        if params.get("response_type") != "code":
            raise RedirectError(
                redirect_uri, state, "unsupported_response_type", "seul response_type=code est supporté"
            )
        if "authorization_code" not in client.grant_types:
            raise RedirectError(redirect_uri, state, "unauthorized_client", "client non autorisé pour ce flux")
        try:
            scopes = self._scopes(params.get("scope"))
        except OAuthError as exc:
            raise RedirectError(redirect_uri, state, exc.error, exc.description) from None
        if "openid" not in scopes:
            raise RedirectError(redirect_uri, state, "invalid_scope", "le scope doit contenir openid")
        challenge = params.get("code_challenge")
        if not challenge or params.get("code_challenge_method") != "S256":
            raise RedirectError(redirect_uri, state, "invalid_request", "PKCE S256 obligatoire (code_challenge)")
        if not PKCE_CHALLENGE_RE.fullmatch(challenge):
            raise RedirectError(redirect_uri, state, "invalid_request", "code_challenge mal formé")
        tx = LoginTransaction(
            id=_new_id(),
            client_id=client.client_id,
            redirect_uri=redirect_uri,
            state=state,
            nonce=params.get("nonce"),
            code_challenge=challenge,
            scope=" ".join(sorted(scopes)),
            expires_at=now + self.lifetimes.login_transaction,
        )
        self.store.put_login(tx)
        return client, tx

    def login_answer(
        self, tx_id: str, national_id: str | None, approve: bool, now: float
    ) -> tuple[str, dict[str, str]]:
        """The login page's answer: redirect URI and its query parameters."""
        tx = self.store.login(tx_id)
        if tx is None or tx.used or now >= tx.expires_at:
            raise OAuthError("invalid_request", "demande de connexion inconnue, expirée ou déjà traitée")
        tx.used = True
        self.store.put_login(tx)
        base: dict[str, str] = {"iss": self.issuer}
        if tx.state is not None:
            base["state"] = tx.state
        if not approve:
            return tx.redirect_uri, {"error": "access_denied", "error_description": "connexion refusée", **base}
        if not national_id or national_id not in self.identities:
            return tx.redirect_uri, {"error": "access_denied", "error_description": "identité inconnue", **base}
        session = self._new_session(national_id, "CARD", now)
        code = AuthCode(
            code=_new_id() + "." + session.id,
            client_id=tx.client_id,
            redirect_uri=tx.redirect_uri,
            code_challenge=tx.code_challenge,
            session_id=session.id,
            national_id=national_id,
            scope=tx.scope,
            nonce=tx.nonce,
            expires_at=now + self.lifetimes.authorization_code,
        )
        self.store.put_code(code)
        return tx.redirect_uri, {"code": code.code, "session_state": session.id, **base}

    def _grant_code(self, client: Client, params: Mapping[str, str], now: float) -> dict[str, Any]:
        code_value = params.get("code")
        if not code_value:
            raise OAuthError("invalid_request", "code obligatoire")
        code = self.store.code(code_value)
        if code is None or code.client_id != client.client_id:
            raise OAuthError("invalid_grant", "code d'autorisation inconnu")
        if code.used:
            # RFC 6749 §4.1.2: a replayed code revokes what it already produced.
            if code.grant_id:
                self._revoke_grant(code.grant_id)
            raise OAuthError("invalid_grant", "code d'autorisation déjà utilisé")
        if now >= code.expires_at:
            raise OAuthError("invalid_grant", "code d'autorisation expiré")
        if params.get("redirect_uri") != code.redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri différente de celle de la demande")
        verifier = params.get("code_verifier")
        if not verifier or not PKCE_VERIFIER_RE.fullmatch(verifier):
            raise OAuthError("invalid_grant", "code_verifier absent ou mal formé (PKCE)")
        if not hmac.compare_digest(pkce_s256(verifier), code.code_challenge):
            raise OAuthError("invalid_grant", "code_verifier incorrect (PKCE)")
        code.used = True
        session = self.store.session(code.session_id)
        if not self.session_active(session, now):
            self.store.put_code(code)
            raise OAuthError("invalid_grant", "session PSC terminée")
        assert session is not None
        grant = self._new_grant(client, session, code.scope, code.nonce, now)
        code.grant_id = grant.id
        self.store.put_code(code)
        return self._issue(client, grant, session, now, auth_code_flow=True)

    # ------------------------------------------------------------------ refresh
    def _grant_refresh(self, client: Client, params: Mapping[str, str], now: float) -> dict[str, Any]:
        value = params.get("refresh_token")
        if not value:
            raise OAuthError("invalid_request", "refresh_token obligatoire")
        parsed = self._parse_refresh(value)
        if parsed is None or parsed[0].client_id != client.client_id:
            raise OAuthError("invalid_grant", "jeton de rafraîchissement invalide")
        grant, gen = parsed
        if gen < grant.refresh_gen:
            # Rotation: an older generation means the token leaked; the whole family goes.
            self._revoke_grant(grant.id)
            raise OAuthError("invalid_grant", "jeton de rafraîchissement déjà utilisé : famille révoquée")
        if grant.revoked:
            raise OAuthError("invalid_grant", "jeton de rafraîchissement révoqué")
        if gen != grant.refresh_gen:
            raise OAuthError("invalid_grant", "jeton de rafraîchissement invalide")
        if now >= grant.refresh_expires_at:
            raise OAuthError("invalid_grant", "jeton de rafraîchissement expiré")
        session = self.store.session(grant.session_id)
        if not self.session_active(session, now):
            raise OAuthError("invalid_grant", "session PSC inactive")
        assert session is not None
        if "scope" in params:
            asked = self._scopes(params["scope"])
            if not asked <= set(grant.scope.split()):
                raise OAuthError("invalid_scope", "scope plus large que celui accordé")
        session.last_seen = now
        self.store.put_session(session)
        return self._issue(client, grant, session, now, auth_code_flow=False)

    # ------------------------------------------------------------------ token endpoint
    def token(self, client: Client, params: Mapping[str, str], now: float) -> dict[str, Any]:
        self._housekeeping(now)
        gt = params.get("grant_type")
        if not gt:
            raise OAuthError("invalid_request", "grant_type obligatoire")
        if gt not in SUPPORTED_GRANTS:
            raise OAuthError("unsupported_grant_type", "grant_type non supporté")
        if gt not in client.grant_types:
            raise OAuthError("unauthorized_client", "grant_type non autorisé pour ce client")
        if gt == CIBA_GRANT:
            return self._grant_ciba(client, params, now)
        if gt == "authorization_code":
            return self._grant_code(client, params, now)
        return self._grant_refresh(client, params, now)

    def _new_grant(self, client: Client, session: Session, scope: str, nonce: str | None, now: float) -> Grant:
        g = Grant(
            id=_new_id(),
            client_id=client.client_id,
            session_id=session.id,
            national_id=session.national_id,
            scope=scope,
            drop_at=session.drop_at,
            nonce=nonce,
        )
        self.store.put_grant(g)
        return g

    def _revoke_grant(self, grant_id: str) -> None:
        g = self.store.grant(grant_id)
        if g is not None and not g.revoked:
            g.revoked = True
            self.store.put_grant(g)

    def _refresh_mac(self, grant_id: str, gen: int) -> str:
        digest = hmac.new(self.refresh_key, f"{grant_id}.{gen}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:24]).decode()

    def _parse_refresh(self, token: str) -> tuple[Grant, int] | None:
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

    def _live_refresh(self, token: str, now: float) -> Grant | None:
        """The grant of a current, unexpired refresh token whose family and session are live."""
        parsed = self._parse_refresh(token)
        if parsed is None:
            return None
        grant, gen = parsed
        if grant.revoked or gen != grant.refresh_gen or now >= grant.refresh_expires_at:
            return None
        return grant if self.session_active(self.store.session(grant.session_id), now) else None

    def _issue(self, client: Client, grant: Grant, session: Session, now: float, *, auth_code_flow: bool) -> dict:
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
            "scope": grant.scope,
            "preferred_username": grant.national_id,
        }
        access = self.signer.sign(access_claims, client.access_token_alg or self.signing_alg)
        # Rotation: bump the family's generation; the previous refresh token becomes a replay.
        grant.refresh_gen += 1
        grant.refresh_issued_at = now
        grant.refresh_expires_at = refresh_exp
        self.store.put_grant(grant)
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
                "at_hash": at_hash(access),
                "preferred_username": grant.national_id,
                "given_name": ident_claims["given_name"],
                "family_name": ident_claims["family_name"],
            }
            if grant.nonce is not None:
                id_claims["nonce"] = grant.nonce
            out["id_token"] = self.signer.sign(id_claims, client.id_token_alg or self.signing_alg)
        return out

    # ------------------------------------------------------------------ token checks
    def active_access(self, token: str, now: float) -> tuple[dict[str, Any], Grant, Session] | None:
        """Claims of a live access token, or None (bad signature, expired, revoked, session over)."""
        try:
            claims = self.signer.verify(token, self.issuer, now=now)
        except TokenError:
            return None
        if claims.get("typ") != "Bearer" or not isinstance(claims.get("jti"), str):
            return None
        jti: str = claims["jti"]
        if self.store.jti_revoked(jti):
            return None
        grant = self.store.grant(jti.partition(".")[0])
        if grant is None or grant.revoked:
            return None
        session = self.store.session(grant.session_id)
        if not self.session_active(session, now):
            return None
        assert session is not None
        return claims, grant, session

    def introspect(self, client: Client, token: str | None, hint: str | None, now: float) -> dict[str, Any]:
        """RFC 7662 with PSC's fields; anything not live is just ``{"active": false}``."""
        if not token:
            raise OAuthError("invalid_request", "paramètre token obligatoire")
        if len(token) > MAX_PARAM:
            return {"active": False}
        order = ("refresh", "access") if hint == "refresh_token" else ("access", "refresh")
        for kind in order:
            result = self._introspect_access(token, now) if kind == "access" else self._introspect_refresh(token, now)
            if result is not None:
                return result
        return {"active": False}

    def _introspect_access(self, token: str, now: float) -> dict[str, Any] | None:
        if token.count(".") != 2:
            return None
        live = self.active_access(token, now)
        if live is None:
            return None
        claims, grant, _session = live
        out = {k: claims[k] for k in ("exp", "iat", "auth_time", "jti", "iss", "aud", "sub", "typ", "azp", "scope")}
        out.update(
            {
                "active": True,
                "session_state": claims["session_state"],
                "sid": claims["sid"],
                "acr": claims["acr"],
                "client_id": grant.client_id,
                "username": grant.national_id,
                "preferred_username": grant.national_id,
                "token_type": "Bearer",
                "SubjectNameID": grant.national_id,
            }
        )
        return out

    def _introspect_refresh(self, token: str, now: float) -> dict[str, Any] | None:
        grant = self._live_refresh(token, now)
        if grant is None:
            return None
        return {
            "active": True,
            "exp": int(grant.refresh_expires_at),
            "iat": int(grant.refresh_issued_at),
            "iss": self.issuer,
            "sub": self.claims_of(grant.national_id)["sub"],
            "typ": "Refresh",
            "azp": grant.client_id,
            "client_id": grant.client_id,
            "scope": grant.scope,
            "session_state": grant.session_id,
            "sid": grant.session_id,
        }

    def revoke(self, client: Client, token: str | None, now: float) -> None:
        """RFC 7009: unknown/invalid tokens succeed silently. Revoking a refresh token ends
        its whole grant (§2.1 allows it: a leaked refresh token is a leaked grant); revoking
        an access token ends that token only."""
        if not token:
            raise OAuthError("invalid_request", "paramètre token obligatoire")
        if len(token) > MAX_PARAM:
            return
        parsed = self._parse_refresh(token)
        if parsed is not None:
            if parsed[0].client_id != client.client_id:
                raise OAuthError("unauthorized_client", "jeton émis pour un autre client")
            self._revoke_grant(parsed[0].id)
            return
        if token.count(".") == 2:
            try:
                claims = self.signer.verify_ignoring_expiry(token, self.issuer)
            except TokenError:
                return
            jti = claims.get("jti")
            if claims.get("typ") != "Bearer" or not isinstance(jti, str):
                return
            grant = self.store.grant(jti.partition(".")[0])
            if grant is None:
                return
            if grant.client_id != client.client_id:
                raise OAuthError("unauthorized_client", "jeton émis pour un autre client")
            self.store.revoke_jti(jti, float(claims.get("exp", now + self.lifetimes.access_token)))

    def userinfo(self, token: str | None, now: float) -> tuple[dict[str, Any], Client | None]:
        if not token:
            raise OAuthError("invalid_request", "jeton d'accès absent", 401)
        live = self.active_access(token, now)
        if live is None:
            raise OAuthError("invalid_token", "jeton d'accès invalide, expiré ou révoqué", 401)
        _claims, grant, _session = live
        return dict(self.claims_of(grant.national_id)), self.clients.get(grant.client_id)

    def logout(self, id_token_hint: str | None, redirect_uri: str | None, now: float) -> Session | None:
        """RP-initiated logout: an ID token we signed (expiry tolerated, OIDC RP-Initiated
        Logout §2) names the session to end. The redirect URI is checked first so that a
        refused request ends nothing."""
        if not id_token_hint:
            if redirect_uri:
                raise OAuthError("invalid_request", "id_token_hint obligatoire avec post_logout_redirect_uri")
            return None
        try:
            claims = self.signer.verify_ignoring_expiry(id_token_hint, self.issuer)
        except TokenError:
            raise OAuthError("invalid_request", "id_token_hint invalide") from None
        if claims.get("typ") != "ID":
            raise OAuthError("invalid_request", "id_token_hint n'est pas un jeton d'identité")
        rp = self.clients.get(str(claims.get("azp")))
        if redirect_uri and (rp is None or redirect_uri not in rp.post_logout_redirect_uris):
            raise OAuthError("invalid_request", "post_logout_redirect_uri non enregistrée pour ce client")
        sid = claims.get("sid")
        session = self.store.session(sid) if isinstance(sid, str) else None
        if session is not None:
            self.end_session(session.id)
        return session

    def logout_by_refresh(self, client: Client, refresh_token: str | None) -> None:
        """Keycloak's back-channel logout (POST with client auth + refresh_token), used by adapters."""
        parsed = self._parse_refresh(refresh_token or "")
        grant = parsed[0] if parsed else None
        if grant is None or grant.client_id != client.client_id:
            raise OAuthError("invalid_grant", "jeton de rafraîchissement invalide")
        self.end_session(grant.session_id)

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _scopes(raw: str | None) -> set[str]:
        if not raw:
            raise OAuthError("invalid_scope", "scope obligatoire")
        scopes = set(raw.split())
        unknown = scopes - SUPPORTED_SCOPES
        if unknown:
            raise OAuthError("invalid_scope", f"scope inconnu : {' '.join(sorted(unknown))[:100]}")
        return scopes


class RedirectError(OAuthError):
    """An authorization error sent back to the (already validated) redirect URI."""

    def __init__(self, redirect_uri: str, state: str | None, error: str, description: str) -> None:
        super().__init__(error, description, 302)
        self.redirect_uri = redirect_uri
        self.state = state
