"""Pure rules of the tool: trace fields per type, timestamps, cookies, redaction."""

from __future__ import annotations

import datetime as dt

import httpx

from confiance.conformity import traces as tr
from confiance.conformity.http import cookie_erased, session_cookie
from confiance.conformity.model import redact_text

FULL = {
    "type": "SEND",
    "IdRPPS": "810000007919",
    "ipAddress": "127.0.0.1",
    "ports": [50432],
    "timestamp": "2026-11-28T12:00:00.123Z",
    "clientId": "lps",
    "proxy_id_session": "p",
    "session_state": "s",
    "apiRequest": {"nomApiPsc": "signsessiondata", "methode": "POST", "path": "/signsessiondata"},
}


def test_fields_required_per_type() -> None:
    assert tr.field_problems(FULL) == []
    failure = {k: FULL[k] for k in ("IdRPPS", "ipAddress", "ports", "timestamp")} | {"type": "CONNECT_FAILURE"}
    assert tr.field_problems(failure) == []  # no session fields required on failures
    for name in ("IdRPPS", "ipAddress", "ports", "timestamp", "clientId", "proxy_id_session", "session_state"):
        broken = {k: v for k, v in FULL.items() if k != name}
        assert any(name in p for p in tr.field_problems(broken)), name
    assert tr.field_problems({**FULL, "type": "CONNECT_WHATEVER"}) == ["type inconnu : 'CONNECT_WHATEVER'"]
    assert tr.field_problems({**FULL, "ipAddress": "pas-une-ip"})
    assert tr.field_problems({**FULL, "timestamp": "hier"})
    assert tr.field_problems({**FULL, "ports": "50432"})  # typed, not only present
    assert tr.field_problems({**FULL, "ports": [0]})
    assert tr.field_problems({**FULL, "IdRPPS": 810000007919})


def test_api_request_only_on_send() -> None:
    assert tr.api_request_problems(FULL) == []
    assert tr.api_request_problems({**FULL, "apiRequest": None}) == ["SEND : « apiRequest » absent"]
    assert tr.api_request_problems({**FULL, "apiRequest": {"nomApiPsc": "x", "methode": "GET"}}) == [
        "SEND : apiRequest.path absent"
    ]
    assert tr.api_request_problems({**FULL, "type": "DISCONNECT"})
    assert tr.api_request_problems({k: v for k, v in FULL.items() if k != "apiRequest"} | {"type": "DISCONNECT"}) == []


def test_timestamps_iso_and_epoch() -> None:
    expected = dt.datetime(2026, 11, 28, 12, 0, 0, 123000, tzinfo=dt.UTC)
    assert tr.parse_timestamp("2026-11-28T12:00:00.123Z") == expected
    assert tr.parse_timestamp("2026-11-28T13:00:00.123+01:00") == expected
    assert tr.parse_timestamp(expected.timestamp()) == expected
    assert tr.parse_timestamp(int(expected.timestamp() * 1000)) == expected.replace(microsecond=123000)
    assert tr.parse_timestamp(True) is None and tr.parse_timestamp("") is None
    assert tr.as_list({"traces": [FULL, 3]}) == [FULL] and tr.as_list("x") is None


def _resp(*cookies: str) -> httpx.Response:
    return httpx.Response(200, headers=[("set-cookie", c) for c in cookies])


def test_cookie_parsing() -> None:
    assert session_cookie(_resp("proxy_session_id=abc; Path=/; Secure; HttpOnly")) == "abc"
    assert session_cookie(_resp("other=1")) is None
    assert cookie_erased(_resp("proxy_session_id=; Max-Age=0; Path=/"))
    assert cookie_erased(_resp('proxy_session_id=""; expires=Thu, 01 Jan 1970 00:00:00 GMT; Path=/'))
    assert cookie_erased(_resp("proxy_session_id=abc; Expires=Thu, 01 Jan 1970 00:00:00 GMT"))
    assert not cookie_erased(_resp("proxy_session_id=abc; Max-Age=60"))
    assert not cookie_erased(_resp())


def test_free_text_redaction() -> None:
    text = "Authorization: Bearer abc.DEF-123 and eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"
    out = redact_text(text)
    assert "abc.DEF-123" not in out and "eyJhbGciOiJSUzI1NiJ9" not in out and "Bearer «masqué»" in out
