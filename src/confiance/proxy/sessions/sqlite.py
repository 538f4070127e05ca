"""Sessions in a SQLite file: one host, several proxy processes, survives restarts."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import sqlalchemy as sa

from confiance.core.logs import Incident, redact_url
from confiance.core.storage import make_engine

from ..domain import Session
from .base import SessionStore, StoreUnavailable, copy_session
from .codec import SessionCodec

_meta = sa.MetaData()
_sessions = sa.Table(
    "proxy_sessions",
    _meta,
    sa.Column("id", sa.String(36), primary_key=True),
    # client id + national id: who the session is for (several sessions may share it)
    sa.Column("user_key", sa.String(300), nullable=False, index=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("last_used_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False, index=True),
    sa.Column("data", sa.Text, nullable=False),
)
_locks = sa.Table(
    "proxy_locks",
    _meta,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("owner", sa.String(100), nullable=False),
    sa.Column("until", sa.Float, nullable=False),
)
_pending = sa.Table(
    "proxy_pending",
    _meta,
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("until", sa.Float, nullable=False),
    sa.Column("data", sa.Text, nullable=False),
)


class SqliteStore(SessionStore):
    """Sessions in a SQLite file (WAL): survives restarts, shared by processes on one host.

    Calls run in a worker thread so the event loop never waits on the disk.
    """

    def __init__(self, url: str, touch_interval: float = 5.0, codec: SessionCodec | None = None) -> None:
        self.codec = codec or SessionCodec()
        self.engine = make_engine(url)
        _upgrade_one_session_per_user(self.engine)
        _meta.create_all(self.engine)
        self.touch_interval = touch_interval
        # ops: a locked or unreachable database is logged once, and its recovery (core/logs.py)
        self.incident = Incident("sqlite session store", redact_url(url), logging.getLogger("confiance.proxy.sessions"))

    async def _run(self, fn: Any, *args: Any) -> Any:
        try:
            result = await asyncio.to_thread(fn, *args)
        except sa.exc.OperationalError as exc:
            self.incident.failed(str(exc.orig))
            raise StoreUnavailable(str(exc.orig)) from exc
        self.incident.ok()
        return result

    def _load(self, row: Any) -> Session:
        s = self.codec.load(row.data, row.id)
        s.version = row.version
        s.last_used_at = max(s.last_used_at, row.last_used_at)
        return s

    def _get(self, sid: str) -> Session | None:
        with self.engine.connect() as c:
            row = c.execute(sa.select(_sessions).where(_sessions.c.id == sid)).first()
        return self._load(row) if row else None

    async def get(self, sid: str) -> Session | None:
        result: Session | None = await self._run(self._get, sid)
        return result

    def _create(self, s: Session) -> None:
        with self.engine.begin() as c:
            c.execute(
                _sessions.insert().values(
                    id=s.id,
                    user_key=f"{s.client_id}\x1f{s.national_id}",
                    version=s.version,
                    last_used_at=s.last_used_at,
                    expires_at=s.expires_at(),
                    data=self.codec.dump(s),
                )
            )

    async def create(self, session: Session) -> None:
        await self._run(self._create, session)

    def _save(self, s: Session, expected: int) -> bool:
        new = copy_session(s)
        new.version = expected + 1
        with self.engine.begin() as c:
            res = c.execute(
                _sessions.update()
                .where(_sessions.c.id == s.id, _sessions.c.version == expected)
                .values(version=expected + 1, data=self.codec.dump(new), expires_at=new.expires_at())
            )
            ok = bool(res.rowcount == 1)
        if ok:
            s.version = expected + 1
        return ok

    async def save(self, session: Session, expected_version: int) -> bool:
        return bool(await self._run(self._save, session, expected_version))

    def _touch(self, sid: str, now: float, expires_at: float) -> None:
        with self.engine.begin() as c:
            c.execute(
                _sessions.update()
                .where(_sessions.c.id == sid, _sessions.c.last_used_at < now)
                .values(last_used_at=now, expires_at=expires_at)
            )

    async def touch(self, session: Session, now: float) -> None:
        if now - session.last_used_at < self.touch_interval:
            return
        session.last_used_at = now
        await self._run(self._touch, session.id, now, session.expires_at())

    def _delete(self, sid: str) -> Session | None:
        with self.engine.begin() as c:
            row = c.execute(sa.select(_sessions).where(_sessions.c.id == sid)).first()
            if row is None:
                return None
            res = c.execute(_sessions.delete().where(_sessions.c.id == sid, _sessions.c.version == row.version))
            return self._load(row) if res.rowcount == 1 else None

    async def delete(self, sid: str) -> Session | None:
        result: Session | None = await self._run(self._delete, sid)
        return result

    def _expired(self, now: float, limit: int) -> list[str]:
        with self.engine.connect() as c:
            rows = c.execute(sa.select(_sessions.c.id).where(_sessions.c.expires_at <= now).limit(limit)).all()
        return [r.id for r in rows]

    async def expired(self, now: float, limit: int = 100) -> list[str]:
        result: list[str] = await self._run(self._expired, now, limit)
        return result

    def _count(self) -> int:
        with self.engine.connect() as c:
            return int(c.execute(sa.select(sa.func.count()).select_from(_sessions)).scalar_one())

    async def count(self) -> int:
        return int(await self._run(self._count))

    def _acquire(self, name: str, owner: str, ttl: float) -> bool:
        now = time.time()
        with self.engine.begin() as c:
            res = c.execute(
                _locks.update()
                .where(_locks.c.name == name, sa.or_(_locks.c.until < now, _locks.c.owner == owner))
                .values(owner=owner, until=now + ttl)
            )
            if res.rowcount == 1:
                return True
            try:
                with c.begin_nested():
                    c.execute(_locks.insert().values(name=name, owner=owner, until=now + ttl))
            except sa.exc.IntegrityError:
                return False
            return True

    async def acquire(self, name: str, owner: str, ttl: float) -> bool:
        return bool(await self._run(self._acquire, name, owner, ttl))

    def _release(self, name: str, owner: str) -> None:
        with self.engine.begin() as c:
            c.execute(_locks.delete().where(_locks.c.name == name, _locks.c.owner == owner))

    async def release(self, name: str, owner: str) -> None:
        await self._run(self._release, name, owner)

    def _put_pending(self, key: str, data: dict[str, Any], ttl: float) -> None:
        now = time.time()
        with self.engine.begin() as c:
            c.execute(_pending.delete().where(_pending.c.until < now))
            c.execute(_pending.insert().values(key=key, until=now + ttl, data=json.dumps(data)))

    async def put_pending(self, key: str, data: dict[str, Any], ttl: float) -> None:
        await self._run(self._put_pending, key, data, ttl)

    def _pop_pending(self, key: str) -> dict[str, Any] | None:
        with self.engine.begin() as c:
            row = c.execute(sa.select(_pending).where(_pending.c.key == key)).first()
            if row is None:
                return None
            res = c.execute(_pending.delete().where(_pending.c.key == key))
            if res.rowcount != 1 or row.until < time.time():
                return None
            data: dict[str, Any] = json.loads(row.data)
            return data

    async def pop_pending(self, key: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = await self._run(self._pop_pending, key)
        return result

    async def ping(self) -> None:
        await self._run(self._count)

    async def close(self) -> None:
        self.engine.dispose()


def _upgrade_one_session_per_user(engine: sa.Engine) -> None:
    """Tables made before a user could hold several sessions had ``user_key`` UNIQUE:
    rebuild such a table without the constraint, keeping its sessions."""
    insp = sa.inspect(engine)
    if not insp.has_table("proxy_sessions"):
        return
    indexes = insp.get_indexes("proxy_sessions")
    unique = any(u["column_names"] == ["user_key"] for u in insp.get_unique_constraints("proxy_sessions")) or any(
        i["column_names"] == ["user_key"] and i["unique"] for i in indexes
    )
    if not unique:
        return
    with engine.begin() as c:
        c.execute(sa.text("ALTER TABLE proxy_sessions RENAME TO proxy_sessions_old"))
        for old in indexes:
            c.execute(sa.text(f'DROP INDEX IF EXISTS "{old["name"]}"'))
        _sessions.create(c)  # with its indexes
        c.execute(
            sa.text(
                "INSERT INTO proxy_sessions (id, user_key, version, last_used_at, expires_at, data) "
                "SELECT id, user_key, version, last_used_at, expires_at, data FROM proxy_sessions_old"
            )
        )
        c.execute(sa.text("DROP TABLE proxy_sessions_old"))
