"""Pure rules of the API PSC: parsing, client authentication, scopes/audiences, token checks."""

from __future__ import annotations

import time

import pytest
from pydantic import ValidationError

from confiance.api.config import ApiClient, AuthorizationServerConfig, PscValidation
from confiance.api.domain import (
    GRANT_TOKEN_EXCHANGE,
    TT_ACCESS_TOKEN,
    TT_JWT,
    AccessDenied,
    Caller,
    Catalog,
    ClientRegistry,
    RevocationList,
    Service,
    authenticate_client,
    check_access,
    check_session_data,
    parse_exchange,
    parse_form,
    parse_session_data,
    resolve_targets,
    secret_hash,
    subject_from_claims,
)
from confiance.core.oauth_errors import OAuthError

FORM = "application/x-www-form-urlencoded"
DN = "CN=proxy,OU=3123456789,C=FR"
ISS = "https://psc.test/auth/realms/esante-wallet"


def client(**kw) -> ApiClient:
    return ApiClient.model_validate({"client_id": "proxy", "dn": DN, "scopes": ["signsessiondata", "insi"], **kw})


CATALOG = Catalog(
    (
        Service("signsessiondata", "https://rs", "https://rs/signsessiondata", ("signsessiondata",)),
        Service("insi", "https://rs/insi", "https://rs/insi", ("insi",)),
        Service("dmp", "https://rs/dmp", "https://rs/dmp", ("dmp",)),
    )
)


# ----------------------------------------------------------------------------- forms
def test_parse_form_refuses_wrong_type_duplicates_and_size() -> None:
    with pytest.raises(OAuthError, match="Content-Type"):
        parse_form(b"a=1", "application/json", 100)
    with pytest.raises(OAuthError, match="répété"):
        parse_form(b"scope=a&scope=b", FORM, 100)
    with pytest.raises(OAuthError) as exc:
        parse_form(b"a=" + b"x" * 200, FORM, 100)
    assert exc.value.status == 413
    with pytest.raises(OAuthError, match="UTF-8"):
        parse_form(b"a=\xff\xfe", FORM, 100)
    form = parse_form(b"audience=a&audience=b&x=%C3%A9+b", FORM + "; charset=utf-8", 100)
    assert form == {"audience": ["a", "b"], "x": ["é b"]}


def _exchange_form(**kw: str) -> dict[str, list[str]]:
    base = {
        "grant_type": GRANT_TOKEN_EXCHANGE,
        "subject_token": "tok",
        "subject_token_type": TT_ACCESS_TOKEN,
    }
    base.update(kw)
    return {k: [v] for k, v in base.items()}


def test_parse_exchange_validates_fields() -> None:
    req = parse_exchange(_exchange_form(scope="insi signsessiondata insi", subject_issuer="psc", audience="x"))
    assert req.scopes == ("insi", "signsessiondata") and req.targets == ("x",)
    assert parse_exchange(_exchange_form(subject_token_type=TT_JWT)).subject_token_type == TT_JWT
    for bad, match in [
        ({"subject_token": ""}, "subject_token"),
        ({"subject_token_type": "urn:ietf:params:oauth:token-type:id_token"}, "subject_token_type"),
        ({"subject_issuer": "google"}, "subject_issuer"),
        ({"actor_token": "x"}, "actor_token"),
        ({"requested_token_type": "urn:x"}, "requested_token_type"),
        ({"scope": "a<b"}, "scope mal formé"),
    ]:
        with pytest.raises(OAuthError, match=match):
            parse_exchange(_exchange_form(**bad))
    with pytest.raises(OAuthError) as exc:
        parse_exchange(_exchange_form(resource="http://plain"))
    assert exc.value.error == "invalid_target"


# ----------------------------------------------------------------------------- clients
def test_tls_client_auth_maps_dn_to_client_id() -> None:
    reg = ClientRegistry([client()])
    assert authenticate_client(reg, Caller(DN, "x5t", client_id="proxy")).client_id == "proxy"
    # DN typed with spaces in config, lookup without client_id
    reg2 = ClientRegistry([client(dn="CN=proxy, OU=3123456789, C=FR")])
    assert authenticate_client(reg2, Caller(DN, "x5t")).client_id == "proxy"
    for caller, match in [
        (Caller(None, None, client_id="proxy"), "certificat client TLS requis"),
        (Caller("CN=other,OU=3999999999,C=FR", "x5t"), "aucun Client_ID_AS"),
        (Caller("CN=other,OU=3999999999,C=FR", "x5t", client_id="proxy"), "DN"),
        (Caller(DN, "x5t", client_id="nobody"), "client inconnu"),
    ]:
        with pytest.raises(OAuthError, match=match) as exc:
            authenticate_client(reg, caller)
        assert exc.value.error == "invalid_client" and exc.value.status == 401
    with pytest.raises(OAuthError) as exc:
        authenticate_client(reg, Caller(DN, "x5t", client_id="proxy", basic_client_id="other"))
    assert exc.value.error == "invalid_request"


def test_secret_only_for_sandbox_clients() -> None:
    with pytest.raises(ValidationError, match="sandbox"):
        client(secret_sha256=secret_hash("s3cret-s3cret"))
    sandbox = client(client_id="sbx", level="sandbox", secret_sha256=secret_hash("s3cret-s3cret"))
    reg = ClientRegistry([client(), sandbox])
    other_dn = "CN=any,OU=3999999999,C=FR"
    assert authenticate_client(reg, Caller(other_dn, "x5t", client_id="sbx", secret="s3cret-s3cret")) is sandbox
    with pytest.raises(OAuthError, match="secret client invalide"):
        authenticate_client(reg, Caller(other_dn, "x5t", client_id="sbx", secret="wrong"))
    with pytest.raises(OAuthError, match="Espace de Confiance"):
        authenticate_client(reg, Caller(DN, "x5t", client_id="proxy", secret="anything"))


# ----------------------------------------------------------------------------- scopes and audiences
def test_resolve_targets() -> None:
    c = client()
    assert resolve_targets(c, CATALOG, (), ()) == (
        ("signsessiondata", "insi"),
        ("https://rs/signsessiondata", "https://rs/insi"),
    )
    assert resolve_targets(c, CATALOG, ("insi",), ()) == (("insi",), ("https://rs/insi",))
    assert resolve_targets(c, CATALOG, (), ("insi",)) == (("insi",), ("https://rs/insi",))
    assert resolve_targets(c, CATALOG, (), ("https://rs/insi",))[1] == ("https://rs/insi",)
    for scopes, targets, error in [
        (("dmp",), (), "invalid_scope"),  # known scope, not allowed to this client
        (("admin",), (), "invalid_scope"),  # unknown scope
        (("insi",), ("https://rs/signsessiondata",), "invalid_scope"),  # scope outside the audience
        ((), ("https://evil.example/",), "invalid_target"),
        ((), ("dmp",), "invalid_scope"),  # audience the client has no scope for
    ]:
        with pytest.raises(OAuthError) as exc:
            resolve_targets(c, CATALOG, scopes, targets)
        assert exc.value.error == error


# ----------------------------------------------------------------------------- subject token
def test_subject_from_psc_claims() -> None:
    now = time.time()
    good = {"active": True, "iss": ISS, "exp": now + 60, "typ": "Bearer", "SubjectNameID": "8001", "sub": "u"}
    s = subject_from_claims({**good, "session_state": "ss", "azp": "lps"}, ISS, now)
    assert (s.national_id, s.session_state, s.psc_client_id) == ("8001", "ss", "lps")
    assert (
        subject_from_claims({**good, "SubjectNameID": None, "preferred_username": "8002"}, ISS, now).national_id
        == "8002"
    )
    for claims, match in [
        ({"active": False}, "inactif"),
        ({**good, "iss": "https://evil/"}, "autre fournisseur"),
        ({**good, "typ": "Refresh"}, "typ=Refresh"),
        ({**good, "exp": now - 1}, "expiré"),
        ({**good, "SubjectNameID": ""}, "SubjectNameID"),
    ]:
        with pytest.raises(OAuthError, match=match):
            subject_from_claims(claims, ISS, now)


# ----------------------------------------------------------------------------- resource checks
def _claims(**kw) -> dict:
    return {
        "exp": time.time() + 60,
        "aud": "https://rs/signsessiondata",
        "jti": "j1",
        "cnf": {"x5t#S256": "good"},
        "scope": "signsessiondata",
        **kw,
    }


def test_check_access_each_reason() -> None:
    rl = RevocationList()
    ok = {
        "audience": "https://rs/signsessiondata",
        "scopes": ("signsessiondata",),
        "cert_x5t": "good",
        "revocations": rl,
    }
    check_access(_claims(), now=time.time(), **ok)
    check_access(_claims(aud=["https://rs/insi", "https://rs/signsessiondata"]), now=time.time(), **ok)
    cases = [
        (_claims(exp=time.time() - 1), ok, "expired"),
        (_claims(aud="https://rs/insi"), ok, "audience"),
        (_claims(cnf=None), ok, "cnf_missing"),
        (_claims(), {**ok, "cert_x5t": "other"}, "cnf_mismatch"),
        (_claims(), {**ok, "cert_x5t": None}, "no_certificate"),
        (_claims(scope="insi"), ok, "scope"),
    ]
    for claims, kw, reason in cases:
        with pytest.raises(AccessDenied) as exc:
            check_access(claims, now=time.time(), **kw)
        assert exc.value.reason == reason
        assert exc.value.status == (403 if reason == "scope" else 401)
    rl.revoke("j1", time.time() + 60)
    with pytest.raises(AccessDenied, match="révoqué"):
        check_access(_claims(), now=time.time(), **ok)
    assert rl.prune(time.time() + 120) == 1 and len(rl) == 0


def test_session_data_parsing_and_matching() -> None:
    for body, match in [
        (b"not json", "JSON"),
        (b"[]", "objet"),
        (b'{"nationalId": "1"}', "clientID"),
        (b'{"nationalId": 1, "clientID": "c", "proxy_session_id": "p", "session_state": "s"}', "nationalId"),
    ]:
        with pytest.raises(ValueError, match=match):
            parse_session_data(body)
    data = parse_session_data(
        b'{"nationalId": "8001", "clientID": "lps", "proxy_session_id": "p", "session_state": "s"}'
    )
    claims = {"SubjectNameID": "8001", "session_state": "s", "psc_client_id": "lps"}
    assert check_session_data(data, claims) is None
    assert "nationalId" in (check_session_data({**data, "nationalId": "x"}, claims) or "")
    assert "session_state" in (check_session_data({**data, "session_state": "x"}, claims) or "")
    assert "clientID" in (check_session_data({**data, "clientID": "x"}, claims) or "")


def test_config_bounds() -> None:
    for bad in (3599, 4 * 3600 + 1):
        with pytest.raises(ValidationError):
            AuthorizationServerConfig.model_validate({"token_lifetime": bad})
    assert AuthorizationServerConfig.model_validate({"token_lifetime": 3600}).token_lifetime == 3600
    with pytest.raises(ValidationError, match="client_id"):
        PscValidation.model_validate({"issuer": ISS, "mode": "introspection"})
    assert PscValidation.model_validate({"issuer": ISS, "mode": "jwks"}).jwks_url.endswith("/certs")


def test_ttl_cache_bounded_and_expiring() -> None:
    from confiance.api.psc_check import TtlCache

    cache = TtlCache(3)
    now = 1000.0
    for i in range(5):
        cache.put(f"k{i}", i, now + 10, now)
    assert len(cache) == 3 and cache.get("k0", now) is None and cache.get("k4", now) == 4
    assert cache.get("k4", now + 10) is None  # expired entries are never returned
    cache.put("past", 1, now - 1, now)
    assert cache.get("past", now) is None
    cache.prune(now + 11)
    assert len(cache) == 0


def test_verified_token_cache_bounded() -> None:
    from confiance.api.resources import VerifiedTokens

    vt = VerifiedTokens(2)
    for i in range(3):
        vt.put(f"t{i}", {"exp": 100 + i}, 0)
    assert vt.get("t0") is None and vt.get("t2") == {"exp": 102}
    vt.prune(101.5)
    assert vt.get("t1") is None and vt.get("t2") is not None


def test_revocations_survive_restart(tmp_path) -> None:
    path = tmp_path / "rev.jsonl"
    rl = RevocationList(path)
    rl.revoke("live", time.time() + 60)
    rl.revoke("dead", time.time() - 1)
    with path.open("a") as fh:
        fh.write('{"jti": "torn"')  # a crash mid-write
    again = RevocationList(path)
    assert again.is_revoked("live") and not again.is_revoked("dead") and not again.is_revoked("torn")
    assert len(path.read_text().splitlines()) == 1  # compacted at load


def test_concurrent_checks_share_one_psc_call_and_survive_a_cancelled_caller() -> None:
    import asyncio

    from confiance.api.config import PscValidation
    from confiance.api.psc_check import PscTokenChecker
    from confiance.core.http import ClientFactory

    checker = PscTokenChecker(PscValidation.model_validate({"issuer": ISS, "client_id": "as"}), ClientFactory(None))
    calls = 0

    async def fake_introspect(token: str) -> dict:  # stands in for the HTTP call to PSC only
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return {"active": True, "iss": ISS, "exp": time.time() + 60, "SubjectNameID": "8001", "sub": "u"}

    checker._introspect = fake_introspect  # type: ignore[method-assign]

    async def main() -> list:
        first = asyncio.ensure_future(checker.check("tok"))
        await asyncio.sleep(0.01)
        others = [asyncio.ensure_future(checker.check("tok")) for _ in range(5)]
        first.cancel()  # the caller that started the PSC call goes away
        return await asyncio.gather(*others)

    results = asyncio.run(main())
    assert calls == 1 and all(r.national_id == "8001" for r in results)
