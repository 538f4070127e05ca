"""Persistent, append-only, hash-chained traces (SQLite by default, PostgreSQL by config).

Traces are committed in blocks (one row per batch); each block stores
``hash = SHA-256(prev_hash || body)`` (``confiance.core.hashchain``) and a one-row head table
holds the last hash and the trace count, so deleting the newest blocks is detected too.
Appends lock the head row *first* (an UPDATE), which serialises writers across processes
and proxy instances on both SQLite and PostgreSQL without upgrade deadlocks.

Durability: :class:`TraceWriter` batches records in a background task (one transaction per
batch, committed by the trace keeper process — or a worker thread — so the event loop never
blocks on disk). CONNECT and DISCONNECT traces are awaited until committed before the
response leaves. SEND traces are, by default (``send_durability = "batched"``), enqueued
and committed within ``flush_interval`` (``GET /traces`` first waits for what is queued:
:meth:`TraceWriter.flush`); with ``"commit"`` the response waits for its batch commit
(group commit). On shutdown the queue is drained. If the database is unreachable the batch is kept
and retried, so a database outage delays traces but does not lose them while the process
lives; the queue is bounded (``queue_max``) and requests are refused (503) when it is full
rather than served without a trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import sqlalchemy as sa

from confiance.core.hashchain import GENESIS, ChainCheck, link_bytes
from confiance.core.logs import Incident, redact_url
from confiance.core.storage import make_engine

from .domain import send_record

log = logging.getLogger("confiance.proxy.traces")

_meta = sa.MetaData()
# One row per committed batch ("block"): at thousands of /send per second a row per trace
# made SQLite's inserts and index updates the proxy's largest CPU cost after TLS.
blocks_table = sa.Table(
    "proxy_trace_blocks",
    _meta,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("ts_min", sa.Float, nullable=False, index=True),
    sa.Column("ts_max", sa.Float, nullable=False, index=True),
    sa.Column("body", sa.Text, nullable=False),  # JSON, sorted keys: [[ts, record or SEND fields], …] (Block)
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)
head_table = sa.Table(
    "proxy_trace_chain",
    _meta,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("n", sa.BigInteger, nullable=False),  # traces in the chain
)


class TraceQueueFull(RuntimeError):
    """Too many traces waiting for the database: refuse work rather than lose its trace."""


class Block:
    """One batch of traces as it is stored and hashed: ``[[ts, record or SEND fields], …]``
    as compact JSON with sorted keys, and what the chain's tables need beside it.

    A SEND trace is stored as its compact field list and expanded to its ANS record when
    read (:meth:`TraceStore.query`): most traces are SENDs, and their records cost several
    times more to build and encode than the fields. The chain hashes the stored bytes
    themselves (:meth:`TraceStore.verify`), so the encoder only has to be deterministic
    for the process that writes. orjson: ≈ 0.1 µs per SEND trace where ``json`` took
    ≈ 2 µs, which was most of the trace keeper's CPU at saturation (docs/benchmarks/proxy.md).
    The proxy encodes a batch once and hands the bytes to its keeper (no pickling, no
    second encoding there).
    """

    HEADER = struct.Struct(">QIdd")  # body length, trace count, ts_min, ts_max

    __slots__ = ("body", "count", "ts_max", "ts_min")

    def __init__(self, body: bytes, count: int, ts_min: float, ts_max: float) -> None:
        self.body, self.count, self.ts_min, self.ts_max = body, count, ts_min, ts_max

    @classmethod
    def of(cls, items: list[tuple[float, TraceItem]]) -> Block:
        stamps = [ts for ts, _ in items]
        body = orjson.dumps([[ts, rec] for ts, rec in items], option=orjson.OPT_SORT_KEYS, default=str)
        return cls(body, len(items), min(stamps), max(stamps))

    def framed(self) -> bytes:
        """The block as the keeper reads it from its input (tracekeeper.py)."""
        return self.HEADER.pack(len(self.body), self.count, self.ts_min, self.ts_max) + self.body


class TraceStore:
    """Synchronous storage, written by the trace keeper process (or a worker thread).

    Each block stores ``hash = SHA-256(prev_hash || body)`` over the exact stored bytes, so
    any change to a trace (even whitespace), a deleted or inserted block, or a deleted
    tail (the chain head keeps the last hash and the trace count) fails :meth:`verify`.
    """

    # Built once: constructing SQLAlchemy statements cost the keeper more per batch than
    # executing them (cProfile: ≈ 0.3 of ≈ 0.9 ms fixed per batch), and the keeper's CPU
    # per batch shows up in the proxy's tail latency on a small machine
    # (docs/benchmarks/proxy.md).
    # Taking the head row's write lock and reading it in one statement: writers queue here,
    # whatever the backend (UPDATE … RETURNING: PostgreSQL, SQLite ≥ 3.35).
    _TAKE_HEAD = (
        head_table.update()
        .where(head_table.c.id == 1)
        .values(n=head_table.c.n)
        .returning(head_table.c.hash, head_table.c.n)
    )
    _ADD_BLOCK = blocks_table.insert()
    _SET_HEAD = (
        head_table.update().where(head_table.c.id == 1).values(hash=sa.bindparam("new_hash"), n=sa.bindparam("new_n"))
    )

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        _meta.create_all(self.engine)
        with self.engine.begin() as c:
            if c.execute(sa.select(head_table.c.id).where(head_table.c.id == 1)).first() is None:
                with contextlib.suppress(sa.exc.IntegrityError), c.begin_nested():
                    c.execute(head_table.insert().values(id=1, hash=GENESIS, n=0))

    def append(self, items: list[tuple[float, TraceItem]]) -> None:
        if items:
            self.append_block(Block.of(items))

    def append_block(self, block: Block) -> None:
        """Commit one encoded batch as the chain's next block."""
        with self.engine.begin() as c:
            prev_hash, n = c.execute(self._TAKE_HEAD).one()
            digest = link_bytes(prev_hash, block.body)
            c.execute(
                self._ADD_BLOCK,
                {
                    "ts_min": block.ts_min,
                    "ts_max": block.ts_max,
                    "body": block.body.decode(),
                    "prev_hash": prev_hash,
                    "hash": digest,
                },
            )
            c.execute(self._SET_HEAD, {"new_hash": digest, "new_n": n + block.count})

    def query(self, start: float, end: float | None, limit: int = 10_000) -> list[dict[str, Any]]:
        q = sa.select(blocks_table.c.body).where(blocks_table.c.ts_max >= start)
        if end is not None:
            q = q.where(blocks_table.c.ts_min <= end)
        out: list[dict[str, Any]] = []
        with self.engine.connect() as c:
            for (body,) in c.execute(q.order_by(blocks_table.c.seq)).yield_per(100):
                for ts, rec in json.loads(body):
                    if ts >= start and (end is None or ts <= end):
                        out.append(rec if isinstance(rec, dict) else send_record(rec))
                        if len(out) >= limit:
                            return out
        return out

    def verify(self) -> ChainCheck:
        """Check every block's link and digest, then that the head names the last block."""
        expected_prev, count = GENESIS, 0
        with self.engine.connect() as c:
            q = sa.select(blocks_table).order_by(blocks_table.c.seq)
            for row in c.execute(q).yield_per(100):
                if row.prev_hash != expected_prev:
                    return ChainCheck(False, count, count, "maillon précédent incohérent (bloc supprimé ou inséré)")
                if link_bytes(row.prev_hash, row.body.encode()) != row.hash:
                    return ChainCheck(False, count, count, "empreinte incorrecte (trace modifiée)")
                expected_prev, count = row.hash, count + len(json.loads(row.body))
            head = c.execute(sa.select(head_table).where(head_table.c.id == 1)).one()
        if head.hash != expected_prev or head.n != count:
            return ChainCheck(False, count, count, "dernières traces supprimées (tête de chaîne incohérente)")
        return ChainCheck(True, count)

    def ping(self) -> None:
        with self.engine.connect() as c:
            c.execute(sa.select(1))

    def close(self) -> None:
        self.engine.dispose()


# A trace as queued: the ANS record itself, or the compact tuple of a SEND trace
# (domain.send_trace_fields), turned into its record where it is committed.
TraceItem = dict[str, Any] | tuple[Any, ...]
Appender = Callable[[list[tuple[float, TraceItem]]], Awaitable[None]]


class KeeperAppender:
    """Commits trace batches in a child process, the *trace keeper* (``writer = "process"``).

    Why: building, encoding, hashing and committing traces in a thread of the proxy
    process held its GIL long enough per batch that the event loop waited behind it
    (measured: a third of the relay's throughput; docs/benchmarks/proxy.md). The keeper is
    ``python -m confiance.proxy.tracekeeper URL``: the proxy writes each batch to its stdin
    (:meth:`Block.framed`: the batch already encoded as it will be stored) and reads
    one line per batch, sent after the commit. Only the event loop thread of the proxy
    touches the pipes. If the keeper dies, the batch stays queued, the next attempt starts
    a new keeper and the batch is written again; a database error is reported back and
    the batch is retried the same way.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Start the keeper now, so the first trace (a CONNECT, awaited before the answer)
        does not wait for a Python process to start: under load that took long enough to
        idle-expire a session with a short ``idle_ttl`` before its first use."""
        await self._running()

    async def _running(self) -> asyncio.subprocess.Process:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            proc = self._proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "confiance.proxy.tracekeeper",
                self.url,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
        return proc

    async def __call__(self, items: list[tuple[float, TraceItem]]) -> None:
        proc = await self._running()
        assert proc.stdin is not None and proc.stdout is not None
        data = Block.of(items).framed()
        try:
            proc.stdin.write(data)
            await proc.stdin.drain()
            answer = await proc.stdout.readline()
        except (BrokenPipeError, ConnectionResetError):
            answer = b""
        if answer == b"ok\n":
            return
        if not answer:
            self._stop(proc)
            raise KeeperDown("le processus d'écriture des traces s'est arrêté")
        raise OSError(answer.decode("utf-8", "replace").removeprefix("err ").strip())

    @property
    def pid(self) -> int | None:
        """The keeper's pid while it runs (tests stop it to check recovery)."""
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    def _stop(self, proc: asyncio.subprocess.Process) -> None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        self._proc = None

    async def aclose(self) -> None:
        """Close the keeper's input (it exits after its last commit) and wait for it."""
        proc, self._proc = self._proc, None
        if proc is None or proc.stdin is None:
            return
        proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()


class KeeperDown(RuntimeError):
    """The trace keeper process stopped; the batch is kept and retried."""


class TraceWriter:
    """Batches appends in the background; see the module docstring for durability."""

    def __init__(
        self,
        store: TraceStore,
        flush_interval: float = 0.1,
        batch_max: int = 1000,
        queue_max: int = 100_000,
        appender: Appender | None = None,
    ):
        """``appender`` commits one batch; by default ``store.append`` in a worker thread."""
        self.store = store
        # ops: a database outage is logged once, and its recovery (core/logs.py)
        engine = getattr(store, "engine", None)
        target = redact_url(str(engine.url.render_as_string(hide_password=True))) if engine is not None else "?"
        self.incident = Incident("trace database", target, log)
        self._append: Appender = appender or (lambda items: asyncio.to_thread(store.append, items))
        self.flush_interval = flush_interval
        self.batch_max = batch_max
        self.queue_max = queue_max
        self._queue: list[tuple[float, TraceItem, asyncio.Future[None] | None]] = []
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
        self, rec: TraceItem, ts: float | None = None, wait: bool = False, force: bool = False
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

    async def flush(self, timeout: float) -> bool:  # noqa: ASYNC109
        """Wait until every trace queued before this call is committed; False on timeout.

        Why: SEND traces wait up to ``flush_interval`` in the queue, and a reader of
        ``GET /traces`` (ANS's conformity tool, right after its requests) must see the
        trace of every request this proxy has already answered.
        """
        if not self._queue:
            return True
        # Batches commit in queue order: once the last queued trace is in, all are. Wait on
        # its commit future, giving it one if it has none (the writer resolves the futures
        # of the queue entries a batch covered, so an entry in flight counts too).
        ts, rec, fut = self._queue[-1]
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self._queue[-1] = (ts, rec, fut)
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            return False
        return True

    async def write(self, rec: dict[str, Any], ts: float | None = None) -> None:
        """Enqueue and wait for the commit."""
        fut = self.submit(rec, ts, wait=True)
        assert fut is not None
        await fut

    async def _run(self) -> None:
        start = getattr(self._append, "start", None)
        if start is not None:
            try:
                await start()
            except Exception as exc:  # the first batch will try again
                log.warning("trace keeper not started yet (%s)", type(exc).__name__)
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
                await self._append([(ts, rec) for ts, rec, _ in batch])
            except Exception as exc:  # the database is down: keep the batch, retry
                self.failures += 1
                self.incident.failed(exc)  # once per outage; the batch is kept and retried
                await asyncio.sleep(min(1.0, 0.05 * self.failures))
                continue
            self.failures = 0
            self.incident.ok()
            # Read back from the queue, not from ``batch``: flush() may have given an entry
            # of this batch a future while it was being written.
            committed = self._queue[: len(batch)]
            del self._queue[: len(batch)]
            self.written += len(batch)
            for _, _, fut in committed:
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
        aclose = getattr(self._append, "aclose", None)
        if aclose is not None:
            await aclose()
