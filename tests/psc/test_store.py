"""The store contract, run against every backend (memory, SQLite, Redis).

What several worker processes rely on: set-once facts are set once (single use holds under
races), a grant's rotation is a compare-and-set, rewriting a record never undoes a
revocation, and a second connection (another worker, or the same file after a restart)
sees everything.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from confiance.psc.store import CibaRequest, Grant, Session, StateStore, open_store

Opener = Callable[[], StateStore]


@pytest.fixture(params=["memory", "sqlite", "redis"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """A function opening a (new connection to the same) store."""
    kind = request.param
    opened: list[StateStore] = []
    if kind == "memory":
        single = open_store("memory")

        def open_() -> StateStore:
            return single

    elif kind == "sqlite":

        def open_() -> StateStore:
            s = open_store(f"sqlite:///{tmp_path / 'state.sqlite3'}")
            opened.append(s)
            return s

    else:
        url = request.getfixturevalue("redis_url")
        prefix = f"t{uuid.uuid4().hex[:10]}:"

        def open_() -> StateStore:
            s = open_store(url, prefix=prefix)
            opened.append(s)
            return s

    yield open_
    for s in opened:
        s.close()
    if kind == "redis":
        _drop_prefix(request.getfixturevalue("redis_url"), prefix)


def _drop_prefix(url: str, prefix: str) -> None:
    import redis

    r = redis.Redis.from_url(url)
    keys = list(r.scan_iter(f"{prefix}*"))
    if keys:
        r.delete(*keys)
    r.close()


def _session(sid: str = "s1") -> Session:
    return Session(id=sid, national_id="810000000001", auth_time=100.0, last_seen=100.0, drop_at=1000.0)


def _grant(gid: str = "g1") -> Grant:
    return Grant(id=gid, client_id="c", session_id="s1", national_id="810000000001", scope="openid", drop_at=1000.0)


def _ciba(rid: str = "r1") -> CibaRequest:
    return CibaRequest(
        id=rid,
        client_id="c",
        national_id="810000000001",
        scope="openid",
        binding_message="42",
        channel="CARD",
        created=100.0,
        expires_at=220.0,
        interval=0.0,
        mode="manual",
        delay=0.0,
    )


def test_records_round_trip_through_another_connection(opener: Opener) -> None:
    a, b = opener(), opener()
    a.put_session(_session())
    a.put_grant(_grant())
    a.put_ciba(_ciba())
    assert b.session("s1") == _session()
    assert b.grant("g1") == _grant()
    assert b.ciba("r1") == _ciba()
    assert b.session("nope") is None and b.grant("nope") is None and b.ciba("nope") is None


def test_set_once_facts_are_set_once(opener: Opener) -> None:
    a, b = opener(), opener()
    a.put_ciba(_ciba())
    assert a.consume_ciba("r1", 220.0) is True
    assert b.consume_ciba("r1", 220.0) is False
    assert b.consume_ciba("unknown", 220.0) is False
    assert a.decide_ciba("r1", "denied", 220.0) is True
    assert b.decide_ciba("r1", "approved", 220.0) is False
    got = b.ciba("r1")
    assert got is not None and got.consumed and got.decision == "denied"


def test_rewriting_a_record_never_undoes_a_flag(opener: Opener) -> None:
    a, b = opener(), opener()
    a.put_session(_session())
    a.put_grant(_grant())
    assert b.end_session("s1", 1000.0) is True
    assert b.revoke_grant("g1", 1000.0) is True
    a.put_session(_session())  # e.g. a refresh on another worker touching last_seen
    a.put_grant(_grant())
    s, g = a.session("s1"), a.grant("g1")
    assert s is not None and s.ended
    assert g is not None and g.revoked
    assert a.end_session("s1", 1000.0) is False and a.end_session("nope", 1000.0) is False


def test_rotation_is_compare_and_set(opener: Opener) -> None:
    a, b = opener(), opener()
    a.put_session(_session())
    g = _grant()
    g.refresh_gen = 1
    a.put_grant(g)
    first, second = _grant(), _grant()
    first.refresh_gen = second.refresh_gen = 2
    touched = _session()
    touched.last_seen = 150.0
    assert a.rotate_grant(first, 1, touched) is True
    assert b.rotate_grant(second, 1, None) is False  # the same generation used twice
    stored = b.grant("g1")
    s = b.session("s1")
    assert stored is not None and stored.refresh_gen == 2
    assert s is not None and s.last_seen == 150.0
    assert a.rotate_grant(_grant("unknown"), 0, None) is False


def test_revoked_access_tokens_and_purge(opener: Opener) -> None:
    a, b = opener(), opener()
    a.revoke_jti("g1.x", 300.0)
    assert b.jti_revoked("g1.x") and not b.jti_revoked("g1.y")
    a.put_session(_session())
    a.put_ciba(_ciba())
    assert a.purge(500.0) == 0  # within the grace period
    assert b.purge(300.0 + 601.0) >= 1  # CIBA request (220) and revoked jti (300) are due
    assert a.ciba("r1") is None and not a.jti_revoked("g1.x")
    assert a.session("s1") is not None
    a.purge(1000.0 + 601.0)
    assert a.session("s1") is None and a.sessions() == []


def test_shared_state(opener: Opener) -> None:
    a, b = opener(), opener()
    key = a.secret("refresh", lambda: b"k" * 32)
    assert b.secret("refresh", lambda: b"other") == key == b"k" * 32
    v0 = b.version()
    a.put_entry("client", "lps", {"client_id": "lps"})
    assert b.version() == v0 + 1
    assert b.entries("client") == {"lps": {"client_id": "lps"}}
    assert b.entries("identity") == {}
    b.ping()


def test_sqlite_write_waits_for_another_writer(tmp_path: Path) -> None:
    """A worker's write while another holds the file's write lock is retried, not failed."""
    import sqlite3
    import threading

    store = open_store(f"sqlite:///{tmp_path / 's.sqlite3'}")
    other = sqlite3.connect(str(tmp_path / "s.sqlite3"), isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another worker in the middle of a write
    done = threading.Event()
    failure: list[BaseException] = []

    def write() -> None:
        try:
            store.put_session(_session())
        except BaseException as exc:  # reported below
            failure.append(exc)
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    assert not done.wait(0.2)  # still waiting for the lock (no error raised meanwhile)
    other.execute("COMMIT")
    writer.join(timeout=30)
    assert done.is_set() and failure == []
    assert store.session("s1") == _session()
    other.close()
    store.close()
