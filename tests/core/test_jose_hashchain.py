"""Key rotation, strict JWT verification and hash chains."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest
from joserfc import jwt
from joserfc.jwk import OctKey

from confiance.core.hashchain import GENESIS, link, verify_chain
from confiance.core.jose import KeyStore, TokenError, verify_jws, verify_jwt


def _claims(**extra):
    now = int(time.time())
    return {"iss": "https://issuer", "sub": "s", "aud": "api", "iat": now, "exp": now + 60, **extra}


def test_sign_and_verify_each_algorithm():
    ks = KeyStore(None, algs=("RS256", "ES256", "PS256"))
    for alg in ("RS256", "ES256", "PS256"):
        token = ks.sign(_claims(), alg=alg)
        assert verify_jwt(token, ks.jwks(), issuer="https://issuer", audience="api")["sub"] == "s"


def test_rotation_keeps_old_key_until_dropped(tmp_path: Path):
    ks = KeyStore(tmp_path / "keys.json")
    old = ks.sign(_claims())
    ks.rotate(keep_for_seconds=3600)
    new = ks.sign(_claims())
    assert verify_jwt(old, ks.jwks())["sub"] == "s"
    assert verify_jwt(new, ks.jwks())["sub"] == "s"
    assert len(ks.jwks()["keys"]) == 2
    reloaded = KeyStore(tmp_path / "keys.json")
    assert verify_jwt(old, reloaded.jwks())["sub"] == "s"
    ks.rotate(keep_for_seconds=0)
    with pytest.raises(TokenError):
        verify_jwt(new, ks.jwks())


def test_expired_wrong_audience_wrong_issuer_refused():
    ks = KeyStore(None)
    now = int(time.time())
    with pytest.raises(TokenError, match="expiré"):
        verify_jwt(ks.sign(_claims(exp=now - 1)), ks.jwks())
    with pytest.raises(TokenError):
        verify_jwt(ks.sign(_claims()), ks.jwks(), audience="other")
    with pytest.raises(TokenError):
        verify_jwt(ks.sign(_claims()), ks.jwks(), issuer="https://evil")


def _b64(d: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()


def test_alg_none_and_hs256_with_public_key_refused():
    ks = KeyStore(None)
    kid = ks.signing_key().kid
    none_token = f"{_b64({'alg': 'none', 'kid': kid})}.{_b64(_claims())}."
    with pytest.raises(TokenError):
        verify_jwt(none_token, ks.jwks())
    pub = json.dumps(ks.jwks()["keys"][0]).encode()
    hs = jwt.encode({"alg": "HS256", "kid": kid}, _claims(), OctKey.import_key(pub), algorithms=["HS256"])
    with pytest.raises(TokenError, match="algorithme"):
        verify_jwt(hs, ks.jwks())


def test_unknown_kid_and_tampered_payload_refused():
    ks, other = KeyStore(None), KeyStore(None)
    with pytest.raises(TokenError, match="kid"):
        verify_jwt(other.sign(_claims()), ks.jwks())
    token = ks.sign(_claims())
    h, _, s = token.split(".")
    with pytest.raises(TokenError):
        verify_jwt(f"{h}.{_b64(_claims(sub='admin'))}.{s}", ks.jwks())
    for junk in ("", "a.b", "a.b.c", "x" * 20000):
        with pytest.raises(TokenError):
            verify_jwt(junk, ks.jwks())


def test_jws_over_bytes():
    ks = KeyStore(None)
    token = ks.sign_bytes(b'{"a":1}')
    assert verify_jws(token, ks.jwks()) == b'{"a":1}'
    h, _p, s = token.split(".")
    with pytest.raises(TokenError):
        verify_jws(f"{h}.{_b64({'a': 2})}.{s}", ks.jwks())


def test_hash_chain_detects_edit_insert_delete():
    records = [{"n": i, "v": f"r{i}"} for i in range(5)]
    rows, prev = [], GENESIS
    for r in records:
        h = link(prev, r)
        rows.append((r, prev, h))
        prev = h
    assert verify_chain(rows).ok and verify_chain(rows).checked == 5
    edited = list(rows)
    edited[2] = ({"n": 2, "v": "EDITED"}, rows[2][1], rows[2][2])
    check = verify_chain(edited)
    assert not check.ok and check.first_bad == 2
    deleted = rows[:1] + rows[2:]
    assert not verify_chain(deleted).ok
    assert verify_chain([]).ok
