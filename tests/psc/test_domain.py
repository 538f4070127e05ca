"""Rules of the provider without a server: CIBA, refresh rotation, sessions, client auth."""

from __future__ import annotations

from typing import Any

import pytest

from confiance.psc.config import EcpsPolicy
from confiance.psc.domain import Credentials, OAuthError, Provider
from tests.psc.conftest import CIBA, ISSUER, Clock, ciba_params, nid


def client(p: Provider, cid: str = "lps") -> Any:
    return p.clients[cid]


def ciba_tokens(p: Provider, clock: Clock, **over: str) -> dict[str, Any]:
    rid = p.ciba_start(client(p), ciba_params(p, **over), clock())["auth_req_id"]
    return p.token(client(p), {"grant_type": CIBA, "auth_req_id": rid}, clock())


def err(exc: pytest.ExceptionInfo[OAuthError]) -> tuple[str, int]:
    return exc.value.error, exc.value.status


# ---------------------------------------------------------------- CIBA request validation
@pytest.mark.parametrize(
    ("over", "error"),
    [
        ({"binding_message": "123"}, "invalid_binding_message"),
        ({"binding_message": "a1"}, "invalid_binding_message"),
        ({"binding_message": ""}, "invalid_binding_message"),
        ({"binding_message": "42\n"}, "invalid_binding_message"),
        ({"login_hint": "899999999999"}, "unknown_user_id"),
        ({"login_hint": ""}, "invalid_request"),
        ({"channel": "SMS"}, "invalid_request"),
        ({"acr_values": "eidas3"}, "invalid_request"),
        ({"scope": "scope_all"}, "invalid_scope"),
        ({"scope": "openid admin"}, "invalid_scope"),
        ({"requested_expiry": "abc"}, "invalid_request"),
        ({"client_notification_token": "x"}, "invalid_request"),
    ],
)
def test_ciba_request_errors(provider: Provider, clock: Clock, over: dict[str, str], error: str) -> None:
    with pytest.raises(OAuthError) as exc:
        provider.ciba_start(client(provider), ciba_params(provider, **over), clock())
    assert exc.value.error == error
    assert exc.value.status == 400


def test_ciba_missing_binding_message(provider: Provider, clock: Clock) -> None:
    params = ciba_params(provider)
    del params["binding_message"]
    with pytest.raises(OAuthError) as exc:
        provider.ciba_start(client(provider), params, clock())
    assert exc.value.error == "invalid_binding_message"


def test_ciba_answer_shape(provider: Provider, clock: Clock) -> None:
    r = provider.ciba_start(client(provider), ciba_params(provider, channel="MOBILE"), clock())
    assert set(r) == {"auth_req_id", "expires_in", "interval"}
    assert r["expires_in"] == 120 and r["interval"] == 5


# ---------------------------------------------------------------- CIBA polling
def test_poll_pending_slow_down_then_tokens(provider: Provider, clock: Clock) -> None:
    provider.ecps_default = EcpsPolicy(mode="approve", delay_ms=12_000)
    rid = provider.ciba_start(client(provider), ciba_params(provider), clock())["auth_req_id"]
    poll = {"grant_type": CIBA, "auth_req_id": rid}
    with pytest.raises(OAuthError) as exc:
        provider.token(client(provider), poll, clock())
    assert err(exc) == ("authorization_pending", 400)
    clock.advance(1)  # faster than interval (5 s)
    with pytest.raises(OAuthError) as exc:
        provider.token(client(provider), poll, clock())
    assert exc.value.error == "slow_down"
    clock.advance(5)
    with pytest.raises(OAuthError) as exc:
        provider.token(client(provider), poll, clock())
    assert exc.value.error == "authorization_pending"
    clock.advance(6)
    tokens = provider.token(client(provider), poll, clock())
    assert {"access_token", "refresh_token", "id_token", "refresh_expires_in", "session_state", "scope"} <= set(tokens)
    assert tokens["expires_in"] == 120 and tokens["refresh_expires_in"] == 1800
    # single use
    with pytest.raises(OAuthError) as exc:
        provider.token(client(provider), poll, clock())
    assert exc.value.error == "invalid_grant"


def test_poll_denied_and_expired(provider: Provider, clock: Clock) -> None:
    deny_id = nid(provider, 3)
    provider.ecps_overrides[deny_id] = EcpsPolicy(mode="deny")
    rid = provider.ciba_start(client(provider), ciba_params(provider, login_hint=deny_id), clock())["auth_req_id"]
    with pytest.raises(OAuthError) as exc:
        provider.token(client(provider), {"grant_type": CIBA, "auth_req_id": rid}, clock())
    assert exc.value.error == "access_denied"
    with pytest.raises(OAuthError) as exc:
        provider.token(client(provider), {"grant_type": CIBA, "auth_req_id": rid}, clock())
    assert exc.value.error == "invalid_grant"

    provider.ecps_default = EcpsPolicy(mode="never")
    rid = provider.ciba_start(client(provider), ciba_params(provider), clock())["auth_req_id"]
    clock.advance(121)
    with pytest.raises(OAuthError) as exc:
        provider.token(client(provider), {"grant_type": CIBA, "auth_req_id": rid}, clock())
    assert exc.value.error == "expired_token"


def test_seeded_policies_deny_and_never(provider: Provider, clock: Clock) -> None:
    policies = {i.national_id: i.ecps.mode for i in provider.identities.values() if i.ecps is not None}
    assert sorted(policies.values()) == ["deny", "never"]


def test_auth_req_id_bound_to_client(provider: Provider, clock: Clock) -> None:
    rid = provider.ciba_start(client(provider), ciba_params(provider), clock())["auth_req_id"]
    with pytest.raises(OAuthError) as exc:
        provider.token(client(provider, "web"), {"grant_type": CIBA, "auth_req_id": rid}, clock())
    assert exc.value.error == "invalid_grant"
    assert provider.token(client(provider), {"grant_type": CIBA, "auth_req_id": rid}, clock())["access_token"]


def test_manual_decisions(provider: Provider, clock: Clock) -> None:
    provider.ecps_default = EcpsPolicy(mode="manual")
    rid = provider.ciba_start(client(provider), ciba_params(provider, binding_message="07"), clock())["auth_req_id"]
    pending = provider.pending_ciba(clock())
    assert [(r.id, r.binding_message) for r in pending] == [(rid, "07")]
    provider.ciba_decide(rid, True, clock())
    assert provider.pending_ciba(clock()) == []
    with pytest.raises(OAuthError):
        provider.ciba_decide(rid, False, clock())  # already decided
    assert provider.token(client(provider), {"grant_type": CIBA, "auth_req_id": rid}, clock())["id_token"]


# ---------------------------------------------------------------- refresh rotation
def test_refresh_rotation_and_family_revocation(provider: Provider, clock: Clock) -> None:
    t1 = ciba_tokens(provider, clock)
    t2 = provider.token(
        client(provider), {"grant_type": "refresh_token", "refresh_token": t1["refresh_token"]}, clock()
    )
    assert t2["refresh_token"] != t1["refresh_token"]
    assert t2["session_state"] == t1["session_state"]
    # Reusing the first refresh token: refused, and the whole family dies.
    with pytest.raises(OAuthError) as exc:
        provider.token(client(provider), {"grant_type": "refresh_token", "refresh_token": t1["refresh_token"]}, clock())
    assert exc.value.error == "invalid_grant"
    with pytest.raises(OAuthError):
        provider.token(client(provider), {"grant_type": "refresh_token", "refresh_token": t2["refresh_token"]}, clock())
    assert provider.introspect(client(provider), t2["access_token"], None, clock()) == {"active": False}


def test_refresh_other_client_and_scope(provider: Provider, clock: Clock) -> None:
    t1 = ciba_tokens(provider, clock)
    with pytest.raises(OAuthError) as exc:
        provider.token(
            client(provider, "web"), {"grant_type": "refresh_token", "refresh_token": t1["refresh_token"]}, clock()
        )
    assert exc.value.error == "invalid_grant"
    with pytest.raises(OAuthError) as exc:
        provider.token(
            client(provider),
            {"grant_type": "refresh_token", "refresh_token": t1["refresh_token"], "scope": "openid email"},
            clock(),
        )
    assert exc.value.error == "invalid_scope"


def test_refresh_expiry(provider: Provider, clock: Clock) -> None:
    provider.lifetimes = provider.lifetimes.model_copy(update={"refresh_token": 10})
    t1 = ciba_tokens(provider, clock)
    assert t1["refresh_expires_in"] == 10
    clock.advance(11)
    with pytest.raises(OAuthError) as exc:
        provider.token(client(provider), {"grant_type": "refresh_token", "refresh_token": t1["refresh_token"]}, clock())
    assert exc.value.error == "invalid_grant"


# ---------------------------------------------------------------- sessions
def test_session_idle_timeout(provider: Provider, clock: Clock) -> None:
    provider.lifetimes = provider.lifetimes.model_copy(update={"session_idle": 60, "refresh_token": 600})
    t = ciba_tokens(provider, clock)
    assert t["refresh_expires_in"] == 60  # bounded by the idle timeout
    clock.advance(50)
    t = provider.token(client(provider), {"grant_type": "refresh_token", "refresh_token": t["refresh_token"]}, clock())
    clock.advance(50)  # 100 s after login, but only 50 s idle
    t = provider.token(client(provider), {"grant_type": "refresh_token", "refresh_token": t["refresh_token"]}, clock())
    clock.advance(61)
    with pytest.raises(OAuthError) as exc:
        provider.token(client(provider), {"grant_type": "refresh_token", "refresh_token": t["refresh_token"]}, clock())
    assert exc.value.error == "invalid_grant"


def test_session_idle_checked_on_its_own(provider: Provider, clock: Clock) -> None:
    """Tokens issued under long lifetimes still die with their session when it goes idle."""
    t = ciba_tokens(provider, clock)
    provider.lifetimes = provider.lifetimes.model_copy(update={"session_idle": 60})
    clock.advance(61)
    assert provider.introspect(client(provider), t["access_token"], None, clock()) == {"active": False}
    with pytest.raises(OAuthError) as exc:
        provider.token(client(provider), {"grant_type": "refresh_token", "refresh_token": t["refresh_token"]}, clock())
    assert "session" in exc.value.description


def test_session_absolute_timeout(provider: Provider, clock: Clock) -> None:
    provider.lifetimes = provider.lifetimes.model_copy(update={"session_absolute": 100, "session_idle": 60})
    t = ciba_tokens(provider, clock)
    for _ in range(3):
        clock.advance(40)
        if clock.t - 1_800_000_000.0 >= 100:
            break
        t = provider.token(
            client(provider), {"grant_type": "refresh_token", "refresh_token": t["refresh_token"]}, clock()
        )
        assert t["refresh_expires_in"] <= 100
    with pytest.raises(OAuthError):
        provider.token(client(provider), {"grant_type": "refresh_token", "refresh_token": t["refresh_token"]}, clock())


def test_access_token_expiry_in_introspection(provider: Provider, clock: Clock) -> None:
    provider.lifetimes = provider.lifetimes.model_copy(update={"access_token": 2})
    t = ciba_tokens(provider, clock)
    assert provider.introspect(client(provider), t["access_token"], None, clock())["active"] is True
    clock.advance(3)
    assert provider.introspect(client(provider), t["access_token"], None, clock()) == {"active": False}


def test_end_session_by_id_token_hint(provider: Provider, clock: Clock) -> None:
    t = ciba_tokens(provider, clock)
    other = ciba_tokens(provider, clock)
    with pytest.raises(OAuthError):
        provider.logout(t["id_token"], "https://evil.test/", clock())
    assert provider.introspect(client(provider), t["access_token"], None, clock())["active"] is True
    session = provider.logout(t["id_token"], None, clock())
    assert session is not None and session.id == t["session_state"]
    for token in (t["access_token"], t["refresh_token"]):
        assert provider.introspect(client(provider), token, None, clock()) == {"active": False}
    # other sessions unaffected
    assert provider.introspect(client(provider), other["access_token"], None, clock())["active"] is True
    with pytest.raises(OAuthError):
        provider.logout(t["access_token"], None, clock())  # not an ID token


# ---------------------------------------------------------------- introspection and revocation
def test_introspection_fields(provider: Provider, clock: Clock) -> None:
    t = ciba_tokens(provider, clock)
    at = provider.introspect(client(provider), t["access_token"], None, clock())
    for key in ("active", "exp", "iat", "auth_time", "jti", "iss", "sub", "typ", "azp", "scope", "session_state"):
        assert key in at
    assert at["SubjectNameID"] == nid(provider) and at["iss"] == ISSUER and at["typ"] == "Bearer"
    rt = provider.introspect(client(provider), t["refresh_token"], "refresh_token", clock())
    assert rt["active"] is True and rt["typ"] == "Refresh" and "SubjectNameID" not in rt


def test_revocation(provider: Provider, clock: Clock) -> None:
    t = ciba_tokens(provider, clock)
    with pytest.raises(OAuthError) as exc:
        provider.revoke(client(provider, "web"), t["refresh_token"], clock())
    assert exc.value.error == "unauthorized_client"
    provider.revoke(client(provider), "not-a-token", clock())  # RFC 7009: silently fine
    provider.revoke(client(provider), t["access_token"], clock())
    assert provider.introspect(client(provider), t["access_token"], None, clock()) == {"active": False}
    assert provider.introspect(client(provider), t["refresh_token"], None, clock())["active"] is True
    provider.revoke(client(provider), t["refresh_token"], clock())
    assert provider.introspect(client(provider), t["refresh_token"], None, clock()) == {"active": False}


# ---------------------------------------------------------------- client authentication
@pytest.mark.parametrize(
    ("creds", "error"),
    [
        (Credentials(client_id="lps", secret_post="wrong-secret"), "invalid_client"),
        (Credentials(client_id="nobody", secret_post="x"), "invalid_client"),
        (Credentials(), "invalid_client"),
        (Credentials(client_id="lps"), "invalid_client"),  # no secret, no certificate
        (Credentials(client_id="edc", secret_post="whatever"), "invalid_client"),  # EDC: mTLS only
        (Credentials(client_id="edc"), "invalid_client"),  # no certificate
        (Credentials(client_id="edc", cert_dn="CN=other,OU=390000000001017,C=FR"), "invalid_client"),
        (Credentials(basic=("lps", "s3cret-s3cret"), secret_post="s3cret-s3cret"), "invalid_request"),
        (Credentials(client_id="web", basic=("lps", "s3cret-s3cret")), "invalid_client"),
        (Credentials(basic_malformed=True), "invalid_client"),
    ],
)
def test_client_auth_failures(provider: Provider, creds: Credentials, error: str) -> None:
    with pytest.raises(OAuthError) as exc:
        provider.authenticate(creds)
    assert exc.value.error == error
    assert exc.value.status == (401 if error == "invalid_client" else 400)


def test_client_auth_success(provider: Provider) -> None:
    assert provider.authenticate(Credentials(basic=("lps", "s3cret-s3cret"))).client_id == "lps"
    assert provider.authenticate(Credentials(client_id="lps", secret_post="s3cret-s3cret")).client_id == "lps"
    edc = Credentials(client_id="edc", cert_dn="CN=lps,OU=390000000001017,C=FR")
    assert provider.authenticate(edc).client_id == "edc"


def test_token_endpoint_grant_errors(provider: Provider, clock: Clock) -> None:
    for params, error in (
        ({}, "invalid_request"),
        ({"grant_type": "password"}, "unsupported_grant_type"),
        ({"grant_type": CIBA}, "invalid_request"),
        ({"grant_type": CIBA, "auth_req_id": "nope"}, "invalid_grant"),
        ({"grant_type": "refresh_token", "refresh_token": "nope"}, "invalid_grant"),
        ({"grant_type": "authorization_code", "code": "nope", "redirect_uri": "x"}, "invalid_grant"),
    ):
        with pytest.raises(OAuthError) as exc:
            provider.token(client(provider), params, clock())
        assert exc.value.error == error, params


def test_memory_is_purged(provider: Provider, clock: Clock) -> None:
    for _ in range(5):
        ciba_tokens(provider, clock)
    clock.advance(5 * 3600 + 601)
    assert provider.store.purge(clock()) > 0
    assert provider.store.sessions() == []


def test_forged_refresh_tokens(provider: Provider, clock: Clock) -> None:
    t = ciba_tokens(provider, clock)
    gid, gen, mac = t["refresh_token"].split(".")
    forged = [
        f"{gid}.{int(gen) + 1}.{mac}",  # next generation, old MAC
        f"{gid}.{gen}.{mac[:-2]}AA",  # altered MAC
        f"{gid}x.{gen}.{mac}",  # other grant id
        f"{gid}.-1.{mac}",
        f"{gid}.{gen}",
        "." * 3,
        "a" * 300,
    ]
    for token in forged:
        with pytest.raises(OAuthError) as exc:
            provider.token(client(provider), {"grant_type": "refresh_token", "refresh_token": token}, clock())
        assert exc.value.error == "invalid_grant", token
        assert provider.introspect(client(provider), token, "refresh_token", clock()) == {"active": False}
    # none of the forgeries counted as a replay: the real token still works
    assert provider.token(
        client(provider), {"grant_type": "refresh_token", "refresh_token": t["refresh_token"]}, clock()
    )


def test_rotation_keeps_memory_flat(provider: Provider, clock: Clock) -> None:
    t = ciba_tokens(provider, clock)
    store: Any = provider.store
    before = (len(store._grants), len(store._sessions), len(store._expiry))
    for _ in range(200):
        t = provider.token(
            client(provider), {"grant_type": "refresh_token", "refresh_token": t["refresh_token"]}, clock()
        )
    assert (len(store._grants), len(store._sessions), len(store._expiry)) == before


def test_revoked_access_token_record_expires(provider: Provider, clock: Clock) -> None:
    t = ciba_tokens(provider, clock)
    provider.revoke(client(provider), t["access_token"], clock())
    store: Any = provider.store
    assert len(store._revoked_jti) == 1
    clock.advance(121 + store.grace)
    store.purge(clock())
    assert len(store._revoked_jti) == 0


def test_refresh_loop_touches_the_session_at_most_once_a_second(provider: Provider, clock: Clock) -> None:
    """Cheap store ops: a client refreshing in a loop writes last_seen at most once per
    min(1 s, 1 % of session_idle), and refreshes alone still keep the session alive."""
    provider.lifetimes = provider.lifetimes.model_copy(update={"session_idle": 10.0, "refresh_token": 10.0})
    t = ciba_tokens(provider, clock)
    sid = t["session_state"]
    start = provider.store.session(sid)
    assert start is not None
    seen = [start.last_seen]
    for _ in range(60):  # 60 refreshes, 0.05 s apart: 3 s, longer than 1 % of idle (0.1 s)
        clock.advance(0.05)
        t = provider.token(
            client(provider), {"grant_type": "refresh_token", "refresh_token": t["refresh_token"]}, clock()
        )
        s = provider.store.session(sid)
        assert s is not None
        seen.append(s.last_seen)
    assert 20 <= len(set(seen)) <= 31  # a write every 0.1 s, not 60
    assert clock() - seen[-1] < 0.1 + 1e-9
    clock.advance(9.8)  # idle end follows the last write, within the granularity
    assert provider.session_active(provider.store.session(sid), clock())
    clock.advance(0.3)
    assert not provider.session_active(provider.store.session(sid), clock())


def test_single_use_holds_when_two_workers_read_before_either_consumes(provider: Provider, clock: Clock) -> None:
    """Two workers read the same approved request (or the same refresh generation) before
    either writes: the store's set-once flag / compare-and-set lets only one through."""
    from confiance.psc.store import MemoryStore

    class StaleReads(MemoryStore):
        def ciba(self, rid: str) -> Any:
            c = super().ciba(rid)
            if c is not None:
                c.consumed = False  # read before the other worker consumed it
            return c

    provider.store = StaleReads()
    rid = provider.ciba_start(client(provider), ciba_params(provider), clock())["auth_req_id"]
    poll = {"grant_type": CIBA, "auth_req_id": rid}
    first = provider.token(client(provider), poll, clock())
    with pytest.raises(OAuthError) as exc:
        provider.token(client(provider), poll, clock())
    assert exc.value.error == "invalid_grant"

    # refresh: both requests saw generation n; the second compare-and-set fails and is a replay
    refresh = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    grant_id = first["refresh_token"].split(".")[0]
    stale = provider.store.grant(grant_id)
    provider.token(client(provider), refresh, clock())
    assert stale is not None
    stale.refresh_gen += 1
    assert provider.store.rotate_grant(stale, stale.refresh_gen - 1, None) is False


def test_same_refresh_token_on_two_workers_at_once_succeeds_once(provider: Provider, clock: Clock) -> None:
    import copy

    from confiance.psc.store import MemoryStore

    class SnapshotReads(MemoryStore):
        frozen: dict[str, Any] = {}  # noqa: RUF012

        def grant(self, gid: str) -> Any:
            if gid in self.frozen:
                return copy.copy(self.frozen[gid])  # what both workers read before either wrote
            return super().grant(gid)

    store = SnapshotReads()
    provider.store = store
    t = ciba_tokens(provider, clock)
    gid = t["refresh_token"].split(".")[0]
    store.frozen[gid] = store.grant(gid)
    refresh = {"grant_type": "refresh_token", "refresh_token": t["refresh_token"]}
    won = provider.token(client(provider), refresh, clock())  # worker A
    with pytest.raises(OAuthError) as exc:
        provider.token(client(provider), refresh, clock())  # worker B, same token, same generation read
    assert exc.value.error == "invalid_grant"
    store.frozen.clear()
    with pytest.raises(OAuthError):  # a double use is a replay: the family is revoked
        provider.token(client(provider), {**refresh, "refresh_token": won["refresh_token"]}, clock())
