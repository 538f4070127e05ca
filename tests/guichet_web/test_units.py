"""Pure parts of the web layer: lockout policy, CSRF tokens, passwords, the SVG graph."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET

from confiance.guichet.web import graph
from confiance.guichet.web.pages_auth import safe_next
from confiance.guichet.web.security import (
    LockoutPolicy,
    csrf_token,
    csrf_valid,
    hash_password,
    locked_until,
    verify_password,
)

T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
M = dt.timedelta(minutes=1)
POLICY = LockoutPolicy(max_failures=5, window=15 * M, lock_for=15 * M)


def test_lockout_counts_recent_failures_since_last_success() -> None:
    fails = [(T0 + i * M, False) for i in range(5)]
    assert locked_until(fails[:4], T0 + 5 * M, POLICY) is None
    assert locked_until(fails, T0 + 5 * M, POLICY) == T0 + 4 * M + 15 * M
    assert locked_until(fails, T0 + 20 * M, POLICY) is None  # lock expired
    assert locked_until([*fails[:3], (T0 + 3 * M, True), *fails[3:]], T0 + 5 * M, POLICY) is None  # success resets
    spread = [(T0 + i * 10 * M, False) for i in range(5)]  # outside the window
    assert locked_until(spread, T0 + 41 * M, POLICY) is None


def test_csrf_token_is_bound_to_the_cookie_and_key() -> None:
    key = b"k" * 32
    tok = csrf_token(key, "cookie-a")
    assert csrf_valid(key, "cookie-a", tok)
    assert not csrf_valid(key, "cookie-b", tok)
    assert not csrf_valid(b"x" * 32, "cookie-a", tok)
    assert not csrf_valid(key, "cookie-a", None) and not csrf_valid(key, None, tok)


def test_password_hash_is_argon2id_and_verifies() -> None:
    h = hash_password("correct horse battery staple")
    assert h.startswith("$argon2id$")
    assert verify_password(h, "correct horse battery staple")
    assert not verify_password(h, "wrong")
    assert not verify_password(None, "anything")


def test_safe_next_refuses_other_sites() -> None:
    assert safe_next("/candidatures/3?x=1") == "/candidatures/3?x=1"
    for bad in ("//evil.example", "https://evil.example/", "/\\evil", "javascript:alert(1)"):
        assert safe_next(bad) == "/"


def test_graph_highlights_at_risk_and_escapes_text() -> None:
    nodes = [
        graph.Node(1, "ELP", "Proxy <b>", "retiree", "Éditeur"),
        graph.Node(2, "ELU", "LPS", "a_risque", "Éditeur", relies_on=(1,)),
        graph.Node(3, "OSP", "Opération proxy", "a_risque", "Opérateur", relies_on=(1,)),
        graph.Node(4, "OSU", "Service", "a_risque", "Opérateur", relies_on=(2, 3), href="#hab-4"),
    ]
    svg = graph.render_svg(nodes)
    root = ET.fromstring(svg)  # well-formed XML (escaped)
    assert "Proxy &lt;b&gt;" in svg and "<b>" not in svg
    badges = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text") if t.get("class") == "node-badge"]
    assert badges.count("À RISQUE") == 3 and "retirée" in badges  # a word, not only a colour
    ns = "{http://www.w3.org/2000/svg}"
    lines = root.findall(f"{ns}line")
    assert len(lines) == 4
    assert all(line.get("stroke") == "#9b1c1c" for line in lines if "ELP" in (line.findtext(f"{ns}title") or ""))
    assert root.get("role") == "img" and root.find(f"{ns}title") is not None
    # columns: ELP left of ELU/OSP, left of OSU
    xs = {}
    for rect in root.iter(f"{ns}rect"):
        xs.setdefault(float(rect.get("x")), 0)
    assert len(xs) == 3
    assert graph.render_svg([]) == ""


def test_session_store_expires_idle_sessions_and_purges(tmp_path) -> None:
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from confiance.guichet.db import Database
    from confiance.guichet.web.sessions import LoginAttempt, SessionStore, WebSession

    db = Database(f"sqlite:///{tmp_path / 's.db'}")
    db.migrate()  # the web tables are the guichet's migration 0004
    engine = db.engine
    store = SessionStore(engine, idle_timeout=30 * M, absolute_timeout=600 * M, lockout=POLICY)
    a = store.create(1, "A", T0)
    assert store.lookup(a.token, T0 + 29 * M) is not None  # slides the idle timer
    assert store.lookup(a.token, T0 + 58 * M) is not None
    assert store.lookup(a.token, T0 + 120 * M) is None  # idle for > 30 min
    b = store.create(2, "B", T0)
    assert store.lookup(b.token + "x", T0) is None  # unknown token
    store.record_attempt("x@y", False, T0)
    store.record_attempt("x@y", True, T0 + 200 * M)  # success purges old attempts and dead sessions
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(LoginAttempt)) == 1
        assert s.scalar(select(func.count()).select_from(WebSession)) == 0
    c = store.create(3, "C", T0)
    assert store.revoke_account(3) == 1 and store.lookup(c.token, T0) is None
