"""Pure rules: connect validation, sessions and their clocks, trace shape, client address, path safety."""

from __future__ import annotations

import ipaddress

import pytest

from confiance.proxy.domain import (
    ApiToken,
    ProxyError,
    TraceType,
    apply_psc_refresh,
    client_address,
    new_session,
    new_session_id,
    parse_connect,
    parse_iso,
    trace,
    valid_session_id,
)
from confiance.proxy.pathsafety import UnsafePath, split_send_target, upstream_url

GOOD = {"nationalId": "899700218896", "bindingMessage": "42", "clientId": "lps-1", "channel": "CARD"}
TOKENS = {
    "access_token": "at",
    "expires_in": 120,
    "refresh_token": "rt",
    "refresh_expires_in": 1800,
    "id_token": "idt",
    "session_state": "ss-1",
}


def test_valid_connect_body() -> None:
    req = parse_connect(GOOD)
    assert (req.national_id, req.binding_message, req.client_id, req.channel) == ("899700218896", "42", "lps-1", "CARD")
    assert parse_connect({**GOOD, "channel": "MOBILE"}).channel == "MOBILE"


@pytest.mark.parametrize("field", ["nationalId", "bindingMessage", "clientId", "channel"])
def test_missing_field_is_named(field: str) -> None:
    body = {k: v for k, v in GOOD.items() if k != field}
    with pytest.raises(ProxyError) as ei:
        parse_connect(body)
    assert ei.value.status == 400
    assert ei.value.extra["field"] == field
    assert field in ei.value.message
    assert set(ei.value.extra["metadata"]) == {"nationalId", "clientId"}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("bindingMessage", "7"),
        ("bindingMessage", "123"),
        ("bindingMessage", "a1"),
        ("bindingMessage", 42),
        ("bindingMessage", "4 "),
        ("bindingMessage", "42\n"),  # full-string match: "$" alone accepts a final newline
        ("nationalId", "899700218896\n"),
        ("clientId", "lps\n"),
        ("channel", "card"),
        ("channel", "SMS"),
        ("channel", 1),
        ("nationalId", ""),
        ("nationalId", "89970021889<script>"),
        ("nationalId", 899700218896),
        ("clientId", ""),
        ("clientId", "a b"),
        ("clientId", ["x"]),
    ],
)
def test_malformed_field_is_named(field: str, value: object) -> None:
    with pytest.raises(ProxyError) as ei:
        parse_connect({**GOOD, field: value})
    assert ei.value.status == 400 and ei.value.extra["field"] == field


def test_non_object_body() -> None:
    for body in (None, [], "x", 3):
        with pytest.raises(ProxyError) as ei:
            parse_connect(body)
        assert ei.value.status == 400


def test_session_ids_are_random_uuid4() -> None:
    ids = {new_session_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(valid_session_id(i) for i in ids)
    assert not valid_session_id("../../etc")
    assert not valid_session_id(None)
    assert not valid_session_id("00000000-0000-1000-8000-000000000000")


def _session(now: float = 1000.0, absolute: float = 100.0, idle: float = 30.0):
    return new_session(
        client_id="lps-1",
        national_id="899700218896",
        tokens=TOKENS,
        now=now,
        absolute_ttl=absolute,
        idle_ttl=idle,
        dn=None,
    )


def test_session_absolute_and_idle_expiry() -> None:
    s = _session()
    assert s.expired(1000 + 29) is None
    assert s.expired(1000 + 30) == "idle"
    s.last_used_at = 1000 + 25
    assert s.expired(1000 + 50) is None
    s.last_used_at = 1000 + 95
    assert s.expired(1000 + 100) == "absolute"
    assert s.expires_at() == 1100


def test_session_tokens_clocks() -> None:
    s = _session()
    assert s.psc_access_usable(1000 + 100, 5)
    assert not s.psc_access_usable(1000 + 116, 5)
    assert s.psc_refresh_usable(1000 + 1799)
    assert not s.psc_refresh_usable(1000 + 1800)
    tok = ApiToken("api", 5000)
    assert tok.usable(4960, 30) and not tok.usable(4971, 30)


def test_refresh_rotates_refresh_token_and_keeps_api_tokens() -> None:
    s = _session()
    s.api_tokens["svc"] = ApiToken("api", 9999)
    apply_psc_refresh(
        s, {"access_token": "at2", "expires_in": 60, "refresh_token": "rt2", "refresh_expires_in": 100}, 2000
    )
    assert (s.psc_access_token, s.psc_refresh_token, s.psc_access_expires_at) == ("at2", "rt2", 2060)
    assert s.api_tokens["svc"].access_token == "api"
    apply_psc_refresh(s, {"access_token": "at3"}, 3000)
    assert s.psc_refresh_token == "rt2"  # not rotated this time: kept


def test_session_roundtrip() -> None:
    s = _session()
    s.api_tokens["svc"] = ApiToken("api", 9999, "r")
    from confiance.proxy.domain import Session

    assert Session.from_dict(s.to_dict()) == s


def test_trace_rules() -> None:
    s = _session()
    for kind in (TraceType.CONNECT_SUCCESS, TraceType.CONNECT_REPLAY, TraceType.DISCONNECT):
        rec = trace(kind, now=1000, national_id="n", ip="1.2.3.4", port=5, session=s)
        assert {"type", "IdRPPS", "ipAddress", "timestamp", "clientId", "proxy_id_session", "session_state"} <= set(rec)
        assert "apiRequest" not in rec
    send = trace(TraceType.SEND, now=1000, national_id="n", ip="1.2.3.4", port=5, session=s, api=("svc", "GET", "/x"))
    assert send["apiRequest"] == {"nomApiPsc": "svc", "methode": "GET", "path": "/x"}
    fail = trace(TraceType.CONNECT_FAILURE, now=1000, national_id="n", ip="1.2.3.4", port=5)
    assert "proxy_id_session" not in fail and "session_state" not in fail and "apiRequest" not in fail
    assert fail["timestamp"] == "1970-01-01T00:16:40.000Z"
    with pytest.raises(ValueError):
        trace(TraceType.SEND, now=1, national_id="n", ip=None, port=None, session=s)
    with pytest.raises(ValueError):
        trace(TraceType.DISCONNECT, now=1, national_id="n", ip=None, port=None, session=s, api=("a", "b", "c"))


def test_parse_iso() -> None:
    assert parse_iso("1970-01-01T00:16:40Z") == 1000
    assert parse_iso("1970-01-01T01:16:40+01:00") == 1000
    assert parse_iso("1970-01-01T00:16:40") == 1000
    with pytest.raises(ValueError):
        parse_iso("hier")


NETS = (ipaddress.ip_network("10.0.0.0/8"),)


def test_forwarded_for_ignored_from_untrusted_peer() -> None:
    assert client_address(("203.0.113.9", 4000), "1.1.1.1", NETS) == ("203.0.113.9", 4000)
    assert client_address(("203.0.113.9", 4000), "1.1.1.1", ()) == ("203.0.113.9", 4000)


def test_forwarded_for_from_trusted_proxy_reads_right_to_left() -> None:
    # The client wrote "6.6.6.6" itself; the trusted proxy appended the real peer 198.51.100.7.
    assert client_address(("10.0.0.2", 4000), "6.6.6.6, 198.51.100.7", NETS) == ("198.51.100.7", None)
    assert client_address(("10.0.0.2", 4000), "198.51.100.7, 10.0.0.5", NETS) == ("198.51.100.7", None)
    assert client_address(("10.0.0.2", 4000), "not-an-ip", NETS) == ("10.0.0.2", 4000)


# ---------------------------------------------------------------- path safety
@pytest.mark.parametrize(
    "raw",
    [
        "/send/svc/../admin",
        "/send/svc/a/../../b",
        "/send/svc/%2e%2e/admin",
        "/send/svc/%2E%2e/admin",
        "/send/svc/.%2e/admin",
        "/send/svc/a%2fb",
        "/send/svc/a%2Fb",
        "/send/svc/a%5cb",
        "/send/svc/a\\b",
        "/send/svc/%252e%252e/x",
        "/send/svc//evil.example/x",
        "/send/svc/https://evil.example/",
        "/send/svc/user@evil.example",
        "/send/svc/a%40b",
        "/send/svc/a%0d%0aX-Injected:%201",
        "/send/svc/a\r\nX: 1",
        "/send/svc/a%00",
        "/send/svc/a b",
        "/send/svc/a%zz",
        "/send/svc/a%2",
        "/send/svc/a#frag",
        "/send/svc/a%23frag",
        "/send/svc/a%3fq",
        "/send/svc/./a",
        "/send/SVC/a",
        "/send/../x",
        "/send//x",
        "/send/sv%63/x",
        # issue 16 §3: what upstream servers normalise into a traversal
        "/send/insi/..;/signsessiondata",
        "/send/svc/a;b=../x",
        "/send/svc/a;jsessionid=1",
        "/send/svc/a%3bb",
        "/send/svc/%c0%ae%c0%ae/x",  # overlong UTF-8 for "."
        "/send/svc/%c0%af",  # overlong "/"
        "/send/svc/%e0%80%ae",
        "/send/svc/%ff",  # invalid UTF-8
        "/send/svc/%c3",  # truncated sequence
        "/send/svc/%ed%a0%80",  # a surrogate
        "/send/svc/%ef%bc%8e%ef%bc%8e/x",  # fullwidth dots: NFKC makes them ".."
        "/send/svc/%ef%bc%8f",  # fullwidth solidus
    ],
)
def test_unsafe_paths_refused(raw: str) -> None:
    with pytest.raises(UnsafePath):
        split_send_target(raw)


@pytest.mark.parametrize("qs", ["a=%0d%0a", "a=\r\n", "a=b#c", "a=%zz", "a= b", "a=%c0%ae", "a=%ff", "a=b\n"])
def test_unsafe_queries_refused(qs: str) -> None:
    with pytest.raises(UnsafePath):
        split_send_target("/send/svc/x", qs)


def test_safe_paths_kept_verbatim() -> None:
    t = split_send_target(b"/send/signsessiondata/v1/sign/a%20b/%C3%A9t%C3%A9/", b"x=1&y=%C3%A9&z=a/b;c")
    assert t.service == "signsessiondata"
    assert t.path == "/v1/sign/a%20b/%C3%A9t%C3%A9/"
    assert (
        upstream_url("https://rs:9445/signsessiondata", t)
        == "https://rs:9445/signsessiondata/v1/sign/a%20b/%C3%A9t%C3%A9/?x=1&y=%C3%A9&z=a/b;c"
    )
    assert split_send_target("/send/svc").path == ""
    assert split_send_target("/send/svc/").path == "/"


def test_first_segment_colon_refused() -> None:
    with pytest.raises(UnsafePath):
        split_send_target("/send/svc/javascript:x")
    assert split_send_target("/send/svc/a/b:c").path == "/a/b:c"


@pytest.mark.parametrize("dn", [None, "CN=LPS,O=Éditeur"])
def test_send_trace_fields_give_the_same_record_as_trace(dn: str | None) -> None:
    """The hot path queues a tuple; the keeper must turn it into exactly the ANS record."""
    from confiance.proxy.domain import TraceType, new_session, send_record, send_trace_fields, trace

    s = new_session(
        client_id="lps-1",
        national_id="899700218896",
        tokens={"access_token": "a", "session_state": "st-1", "expires_in": 60},
        now=1_700_000_000.0,
        absolute_ttl=100,
        idle_ttl=10,
        dn=dn,
    )
    now = 1_700_000_123.4567
    api = ("dmp", "POST", "/fhir/x")
    expected = trace(TraceType.SEND, now=now, national_id=s.national_id, ip="10.0.0.1", port=443, session=s, api=api)
    fields = send_trace_fields(now, s, "10.0.0.1", 443, api)
    assert send_record(fields) == expected
    import json

    from confiance.proxy.traces import Block

    [[ts, stored]] = json.loads(Block.of([(now, fields)]).body)  # as stored in a trace block and read back
    assert ts == now and send_record(stored) == expected
