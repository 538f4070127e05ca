"""The default shared store: one SQLite file, used by every worker process of a sandbox.

Why SQLite: no server to run for a team's sandbox, survives restarts, and in WAL mode
readers never wait for the writer while writers serialise on the file lock (``busy_timeout``
waits instead of failing). Each operation is one statement or one short transaction; the
refresh path is two reads and one write transaction. ``synchronous=NORMAL``: a power cut
may lose the last transactions, never corrupt the file — right for a development sandbox.

Layout: ``rec(kind, key, gen, drop_at, data)`` holds records (``gen`` is a grant's refresh
generation, the compare-and-set column); ``flag(kind, key, value, drop_at)`` the set-once
facts (see ``records``); ``entry`` and ``meta`` the shared configuration and secrets.
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import orjson

from .codec import R, dump, load
from .records import AuthCode, CibaRequest, Grant, LoginTransaction, Session

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rec (kind TEXT NOT NULL, key TEXT NOT NULL, gen INTEGER NOT NULL DEFAULT 0,
  drop_at REAL NOT NULL, data BLOB NOT NULL, PRIMARY KEY (kind, key)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS rec_drop ON rec (drop_at);
CREATE TABLE IF NOT EXISTS flag (kind TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
  drop_at REAL NOT NULL, PRIMARY KEY (kind, key)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS flag_drop ON flag (drop_at);
CREATE TABLE IF NOT EXISTS entry (kind TEXT NOT NULL, key TEXT NOT NULL, data TEXT NOT NULL,
  PRIMARY KEY (kind, key));
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('version', 0);
"""

_GET = "SELECT data FROM rec WHERE kind = ? AND key = ?"
_GET_FLAGGED = (
    "SELECT r.data, (SELECT value FROM flag WHERE kind = ? AND key = r.key) FROM rec r WHERE r.kind = ? AND r.key = ?"
)
_PUT = (
    "INSERT INTO rec (kind, key, gen, drop_at, data) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (kind, key) DO UPDATE SET gen = excluded.gen, data = excluded.data"
)
_MARK = "INSERT OR IGNORE INTO flag (kind, key, value, drop_at) VALUES (?, ?, ?, ?)"
_MARK_IF_RECORD = (
    "INSERT OR IGNORE INTO flag (kind, key, value, drop_at) SELECT ?, ?, ?, ? "
    "WHERE EXISTS (SELECT 1 FROM rec WHERE kind = ? AND key = ?)"
)


class SqliteStore:
    """``Store`` and ``SharedState`` over one SQLite file (safe across threads and processes)."""

    def __init__(self, path: Path, grace: float = 600.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.grace = grace
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout = 30000")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.execute("PRAGMA mmap_size = 268435456")  # reads from the page cache, no read() calls
        with self._lock:
            self._db.executescript(_SCHEMA)
        # From here on a busy file is retried by ``_retry``: SQLite's own busy handler sleeps
        # 1 ms at least, which on the hot path would stall the worker's event loop for a lock
        # another worker holds for a few microseconds.
        self._db.execute("PRAGMA busy_timeout = 0")

    def _retry(self, call: Callable[[], T]) -> T:
        delay, deadline = 0.00005, time.monotonic() + 30
        while True:
            try:
                return call()
            except sqlite3.OperationalError as exc:
                if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.005)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken at once (``IMMEDIATE``) so it cannot deadlock on upgrade."""
        with self._lock:
            self._retry(lambda: self._db.execute("BEGIN IMMEDIATE"))
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _one(self, sql: str, args: tuple[Any, ...]) -> Any:
        with self._lock:
            return self._retry(lambda: self._db.execute(sql, args).fetchone())

    def _write(self, sql: str, args: tuple[Any, ...]) -> int:
        with self._lock:
            return self._retry(lambda: self._db.execute(sql, args).rowcount)

    def _put(self, kind: str, key: str, drop_at: float, record: Any, gen: int = 0) -> None:
        self._write(_PUT, (kind, key, gen, drop_at, dump(record)))

    def _get(self, cls: type[R], kind: str, key: str, flag: str) -> tuple[R, str | None] | None:
        row = self._one(_GET_FLAGGED, (flag, kind, key))
        return None if row is None else (load(cls, row[0]), row[1])

    def _mark(self, kind: str, key: str, drop_at: float, value: str = "1", rec_kind: str | None = None) -> bool:
        """Set a flag once (one statement: ``rec_kind`` requires the record to exist)."""
        if rec_kind is None:
            return self._write(_MARK, (kind, key, value, drop_at)) == 1
        return self._write(_MARK_IF_RECORD, (kind, key, value, drop_at, rec_kind, key)) == 1

    # ----- sessions
    def put_session(self, s: Session) -> None:
        self._put("session", s.id, s.drop_at, s)

    def session(self, sid: str) -> Session | None:
        got = self._get(Session, "session", sid, "ended")
        if got is None:
            return None
        got[0].ended = got[1] is not None
        return got[0]

    def sessions(self) -> list[Session]:
        with self._lock:
            keys = [
                k
                for (k,) in self._retry(
                    lambda: self._db.execute("SELECT key FROM rec WHERE kind = 'session'").fetchall()
                )
            ]
        return [s for s in map(self.session, keys) if s is not None]

    def end_session(self, sid: str, drop_at: float) -> bool:
        return self._mark("ended", sid, drop_at, rec_kind="session")

    # ----- grants
    def put_grant(self, g: Grant) -> None:
        self._put("grant", g.id, g.drop_at, g, g.refresh_gen)

    def grant(self, gid: str) -> Grant | None:
        got = self._get(Grant, "grant", gid, "revoked")
        if got is None:
            return None
        got[0].revoked = got[1] is not None
        return got[0]

    def rotate_grant(self, g: Grant, from_gen: int, session: Session | None) -> bool:
        """The compare-and-set is the one UPDATE; the session's ``last_seen`` follows in its
        own statement (two statements, not a four-statement transaction: this is the hot
        path, and a lost ``last_seen`` after a crash only shortens an idle session)."""
        won = self._write(
            "UPDATE rec SET gen = ?, data = ? WHERE kind = 'grant' AND key = ? AND gen = ?",
            (g.refresh_gen, dump(g), g.id, from_gen),
        )
        if won != 1:
            return False
        if session is not None:
            self._write("UPDATE rec SET data = ? WHERE kind = 'session' AND key = ?", (dump(session), session.id))
        return True

    def revoke_grant(self, gid: str, drop_at: float) -> bool:
        return self._mark("revoked", gid, drop_at)

    def revoke_jti(self, jti: str, expires_at: float) -> None:
        self._mark("jti", jti, expires_at)

    def jti_revoked(self, jti: str) -> bool:
        return self._one("SELECT 1 FROM flag WHERE kind = 'jti' AND key = ?", (jti,)) is not None

    # ----- CIBA requests
    def put_ciba(self, c: CibaRequest) -> None:
        self._put("ciba", c.id, c.expires_at, c)

    def ciba(self, rid: str) -> CibaRequest | None:
        row = self._one(
            "SELECT r.data, (SELECT 1 FROM flag WHERE kind = 'consumed' AND key = r.key),"
            " (SELECT value FROM flag WHERE kind = 'decision' AND key = r.key)"
            " FROM rec r WHERE r.kind = 'ciba' AND r.key = ?",
            (rid,),
        )
        if row is None:
            return None
        c = load(CibaRequest, row[0])
        c.consumed, c.decision = row[1] is not None, row[2]
        return c

    def ciba_requests(self) -> list[CibaRequest]:
        with self._lock:
            keys = [
                k
                for (k,) in self._retry(lambda: self._db.execute("SELECT key FROM rec WHERE kind = 'ciba'").fetchall())
            ]
        return [c for c in map(self.ciba, keys) if c is not None]

    def consume_ciba(self, rid: str, drop_at: float) -> bool:
        return self._mark("consumed", rid, drop_at, rec_kind="ciba")

    def decide_ciba(self, rid: str, decision: str, drop_at: float) -> bool:
        return self._mark("decision", rid, drop_at, decision, rec_kind="ciba")

    # ----- codes and login transactions
    def put_code(self, c: AuthCode) -> None:
        self._put("code", c.code, c.expires_at, c)

    def code(self, code: str) -> AuthCode | None:
        got = self._get(AuthCode, "code", code, "used")
        if got is None:
            return None
        got[0].used = got[1] is not None
        return got[0]

    def use_code(self, code: str, drop_at: float) -> bool:
        return self._mark("used", code, drop_at, rec_kind="code")

    def put_login(self, t: LoginTransaction) -> None:
        self._put("login", t.id, t.expires_at, t)

    def login(self, tid: str) -> LoginTransaction | None:
        got = self._get(LoginTransaction, "login", tid, "login")
        if got is None:
            return None
        got[0].used = got[1] is not None
        return got[0]

    def use_login(self, tid: str, drop_at: float) -> bool:
        return self._mark("login", tid, drop_at, rec_kind="login")

    def purge(self, now: float) -> int:
        limit = now - self.grace
        with self._tx() as db:
            n = db.execute("DELETE FROM rec WHERE drop_at <= ?", (limit,)).rowcount
            db.execute("DELETE FROM flag WHERE drop_at <= ?", (limit,))
        return int(n)

    # ----- shared state
    def secret(self, name: str, make: Callable[[], bytes] = lambda: secrets.token_bytes(32)) -> bytes:
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", ("secret:" + name, make()))
            row = db.execute("SELECT value FROM meta WHERE key = ?", ("secret:" + name,)).fetchone()
        return bytes(row[0])

    def put_entry(self, kind: str, key: str, data: dict[str, Any]) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO entry (kind, key, data) VALUES (?, ?, ?) "
                "ON CONFLICT (kind, key) DO UPDATE SET data = excluded.data",
                (kind, key, orjson.dumps(data).decode()),
            )
            db.execute("UPDATE meta SET value = value + 1 WHERE key = 'version'")

    def entries(self, kind: str) -> dict[str, dict[str, Any]]:
        with self._lock:
            rows = self._retry(
                lambda: self._db.execute("SELECT key, data FROM entry WHERE kind = ?", (kind,)).fetchall()
            )
        return {k: orjson.loads(d) for k, d in rows}

    def version(self) -> int:
        return int(self._one("SELECT value FROM meta WHERE key = 'version'", ())[0])

    def ping(self) -> None:
        self._one("SELECT 1", ())

    def close(self) -> None:
        with self._lock:
            self._db.close()
