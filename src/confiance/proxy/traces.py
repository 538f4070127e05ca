"""Persistent, append-only, hash-chained traces (SQLite by default, PostgreSQL by config).

Each row stores ``hash = SHA-256(prev_hash || canonical JSON)`` (``confiance.core.hashchain``);
a one-row head table holds the last hash so that deleting the newest rows is detected too.
Appends lock the head row *first* (an UPDATE), which serialises writers across processes
and proxy instances on both SQLite and PostgreSQL without upgrade deadlocks.

Durability: :class:`TraceWriter` batches records in a background task (one transaction per
batch, written from a worker thread so the event loop never blocks on disk). CONNECT and
DISCONNECT traces are awaited until committed before the response leaves. SEND traces are,
by default (``send_durability = "batched"``), enqueued and committed within
``flush_interval``; with ``"commit"`` the response waits for its batch commit (group
commit). On shutdown the queue is drained. If the database is unreachable the batch is kept
and retried, so a database outage delays traces but does not lose them while the process
lives; the queue is bounded (``queue_max``) and requests are refused (503) when it is full
rather than served without a trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

from confiance.core.hashchain import GENESIS, ChainCheck, canonical, link_bytes, verify_chain
from confiance.core.storage import make_engine

log = logging.getLogger("confiance.proxy.traces")

_meta = sa.MetaData()
traces_table = sa.Table(
    "proxy_traces",
    _meta,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("ts", sa.Float, nullable=False, index=True),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("record", sa.Text, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)
head_table = sa.Table(
    "proxy_trace_head",
    _meta,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("n", sa.BigInteger, nullable=False),
)


class TraceQueueFull(RuntimeError):
    """Too many traces waiting for the database: refuse work rather than lose its trace."""


class TraceStore:
    """Synchronous storage; :class:`TraceWriter` calls it from a worker thread."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        _meta.create_all(self.engine)
        with self.engine.begin() as c:
            if c.execute(sa.select(head_table.c.id).where(head_table.c.id == 1)).first() is None:
                with contextlib.suppress(sa.exc.IntegrityError), c.begin_nested():
                    c.execute(head_table.insert().values(id=1, hash=GENESIS, n=0))
        mark = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"
        # Constant table and column names; values are bound by the driver.
        self._insert_sql = (
            f"INSERT INTO {traces_table.name} (ts, type, record, prev_hash, hash) VALUES ({', '.join([mark] * 5)})"  # noqa: S608
        )

    def append(self, items: list[tuple[float, dict[str, Any]]]) -> None:
        if not items:
            return
        with self.engine.begin() as c:
            # Lock the head row before reading it: writers queue here, whatever the backend.
            c.execute(head_table.update().where(head_table.c.id == 1).values(n=head_table.c.n))
            head = c.execute(sa.select(head_table).where(head_table.c.id == 1)).one()
            prev = head.hash
            rows = []
            for ts, rec in items:
                body = canonical(rec)  # encoded once: hashed and stored as the same bytes
                digest = link_bytes(prev, body)
                rows.append((ts, rec.get("type", ""), body.decode(), prev, digest))
                prev = digest
            # Driver-level executemany: at thousands of traces per second, building
            # SQLAlchemy parameter dicts per row cost more than SQLite's own insert.
            c.exec_driver_sql(self._insert_sql, rows)
            c.execute(head_table.update().where(head_table.c.id == 1).values(hash=prev, n=head.n + len(rows)))

    def query(self, start: float, end: float | None, limit: int = 10_000) -> list[dict[str, Any]]:
        q = sa.select(traces_table.c.record).where(traces_table.c.ts >= start)
        if end is not None:
            q = q.where(traces_table.c.ts <= end)
        q = q.order_by(traces_table.c.seq).limit(limit)
        with self.engine.connect() as c:
            return [json.loads(r.record) for r in c.execute(q)]

    def rows(self) -> Iterator[tuple[dict[str, Any], str, str]]:
        with self.engine.connect() as c:
            for r in c.execute(sa.select(traces_table).order_by(traces_table.c.seq)).yield_per(1000):
                yield json.loads(r.record), r.prev_hash, r.hash

    def verify(self) -> ChainCheck:
        """Check every link, then that the head names the last row (tail truncation)."""
        last = GENESIS
        count = 0

        def tracking() -> Iterator[tuple[dict[str, Any], str, str]]:
            nonlocal last, count
            for row in self.rows():
                last = row[2]
                count += 1
                yield row

        check = verify_chain(tracking())
        if not check.ok:
            return check
        with self.engine.connect() as c:
            head = c.execute(sa.select(head_table).where(head_table.c.id == 1)).one()
        if head.hash != last or head.n != count:
            return ChainCheck(False, count, count, "dernières traces supprimées (tête de chaîne incohérente)")
        return check

    def ping(self) -> None:
        with self.engine.connect() as c:
            c.execute(sa.select(1))

    def close(self) -> None:
        self.engine.dispose()


class TraceWriter:
    """Batches appends in the background; see the module docstring for durability."""

    def __init__(
        self, store: TraceStore, flush_interval: float = 0.02, batch_max: int = 1000, queue_max: int = 100_000
    ):
        self.store = store
        self.flush_interval = flush_interval
        self.batch_max = batch_max
        self.queue_max = queue_max
        self._queue: list[tuple[float, dict[str, Any], asyncio.Future[None] | None]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.failures = 0
        self.written = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="trace-writer")

    def pending(self) -> int:
        return len(self._queue)

    def full(self) -> bool:
        return len(self._queue) >= self.queue_max

    def submit(
        self, rec: dict[str, Any], ts: float | None = None, wait: bool = False, force: bool = False
    ) -> asyncio.Future[None] | None:
        """Enqueue; return a future resolved at commit when ``wait``. Never blocks.

        ``force`` accepts the record past ``queue_max``: for work already done, whose trace
        must not be dropped (callers check :meth:`full` before doing the work)."""
        if len(self._queue) >= self.queue_max and not force:
            raise TraceQueueFull("file d'attente des traces pleine")
        fut: asyncio.Future[None] | None = asyncio.get_running_loop().create_future() if wait else None
        self._queue.append((ts if ts is not None else time.time(), rec, fut))
        if wait or len(self._queue) >= self.batch_max:
            self._wake.set()
        return fut

    async def write(self, rec: dict[str, Any], ts: float | None = None) -> None:
        """Enqueue and wait for the commit."""
        fut = self.submit(rec, ts, wait=True)
        assert fut is not None
        await fut

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.flush_interval)
                continue
            batch = self._queue[: self.batch_max]
            try:
                await asyncio.to_thread(self.store.append, [(ts, rec) for ts, rec, _ in batch])
            except Exception as exc:  # the database is down: keep the batch, retry
                self.failures += 1
                log.warning("trace batch of %d not written yet (%s); retrying", len(batch), type(exc).__name__)
                await asyncio.sleep(min(1.0, 0.05 * self.failures))
                continue
            self.failures = 0
            del self._queue[: len(batch)]
            self.written += len(batch)
            for _, _, fut in batch:
                if fut is not None and not fut.done():
                    fut.set_result(None)
            # Let more records join the next batch (group commit) unless someone waits.
            if (
                not self._closing
                and len(self._queue) < self.batch_max
                and not any(f is not None for _, _, f in self._queue)
            ):
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.flush_interval)

    async def close(self, timeout: float = 30.0) -> None:  # noqa: ASYNC109
        """Drain the queue (bounded wait), then stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                log.error("%d traces could not be written before shutdown", len(self._queue))
                self._task.cancel()
