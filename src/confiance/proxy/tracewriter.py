"""Who commits the traces, and how long anyone waits for it.

:class:`TraceWriter` batches records in a background task (one transaction per batch,
committed by the trace keeper process — or a worker thread — so the event loop never blocks
on disk). CONNECT and DISCONNECT traces are awaited until committed before the response
leaves, but never longer than ``commit_timeout``: a keeper that stopped or a database that
does not answer makes ``/connect`` fail with 503 ``TRACES_UNAVAILABLE`` instead of hanging,
and the trace it waited for is withdrawn from the queue (:meth:`TraceWriter.write`). SEND
traces are, by default (``send_durability = "batched"``), enqueued and committed within
``flush_interval`` (``GET /traces`` first waits for what is queued: :meth:`TraceWriter.flush`);
with ``"commit"`` the response waits for its batch commit (group commit). On shutdown the
queue is drained. If the database is unreachable the batch is kept and retried, so an
outage delays traces but does not lose them while the process lives; the queue is bounded
(``queue_max``) and requests are refused (503) when it is full rather than served untraced.

When idle the writer sends the committer a heartbeat every ``heartbeat_interval``; an
append or heartbeat outstanding for longer than ``stall_after`` makes :meth:`stalled` true
(``/readyz`` reports ``trace_keeper``), and the keeper is killed and restarted when it has
not answered within ``keeper_timeout``. Heartbeats are also when a due checkpoint is signed
while no trace arrives (``checkpoint.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from confiance.core.logs import Incident, redact_url

from .checkpoint import Checkpointer, CheckpointSettings
from .traces import Block, TraceItem, TraceQueueFull, TraceStore

if TYPE_CHECKING:
    from .config import TraceSection

log = logging.getLogger("confiance.proxy.traces")

Appender = Callable[[list[tuple[float, TraceItem]]], Awaitable[None]]


class TraceCommitTimeout(RuntimeError):
    """A trace was not committed within ``commit_timeout``; it was withdrawn from the queue."""


class StoreAppender:
    """Commits batches with ``store.append`` in a worker thread (``writer = "thread"``), and
    signs checkpoints there too."""

    def __init__(self, store: TraceStore, checkpointer: Checkpointer | None = None) -> None:
        self.store, self.checkpointer = store, checkpointer

    def _commit(self, items: list[tuple[float, TraceItem]]) -> None:
        head = self.store.append(items)
        if head is not None and self.checkpointer is not None:
            self.checkpointer.committed(head)

    async def __call__(self, items: list[tuple[float, TraceItem]]) -> None:
        await asyncio.to_thread(self._commit, items)

    async def heartbeat(self) -> None:
        if self.checkpointer is not None:
            await asyncio.to_thread(self.checkpointer.tick)

    async def aclose(self) -> None:
        if self.checkpointer is not None:
            await asyncio.to_thread(self.checkpointer.flush)


class KeeperAppender:
    """Commits trace batches in a child process, the *trace keeper* (``writer = "process"``).

    Why: building, encoding, hashing and committing traces in a thread of the proxy
    process held its GIL long enough per batch that the event loop waited behind it
    (measured: a third of the relay's throughput; docs/benchmarks/proxy.md). The keeper is
    ``python -m confiance.proxy.tracekeeper URL [CHECKPOINT-SETTINGS]``: the proxy writes
    each batch to its stdin (:meth:`Block.framed`: the batch already encoded as it will be
    stored) and reads one line per batch, sent after the commit; an empty frame is a
    heartbeat. Only the event loop thread of the proxy touches the pipes. If the keeper
    dies, or does not answer within ``timeout`` (stopped, stuck), it is killed, the batch
    stays queued, the next attempt starts a new keeper and the batch is written again; a
    database error is reported back and the batch is retried the same way.
    """

    def __init__(self, url: str, checkpoint: CheckpointSettings | None = None, timeout: float = 30.0) -> None:
        self.url = url
        self.checkpoint = checkpoint
        self.timeout = timeout
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Start the keeper now, so the first trace (a CONNECT, awaited before the answer)
        does not wait for a Python process to start: under load that took long enough to
        idle-expire a session with a short ``idle_ttl`` before its first use."""
        await self._running()

    async def _running(self) -> asyncio.subprocess.Process:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            args = [self.url] + ([json.dumps(asdict(self.checkpoint), default=str)] if self.checkpoint else [])
            proc = self._proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "confiance.proxy.tracekeeper",
                *args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
        return proc

    async def __call__(self, items: list[tuple[float, TraceItem]]) -> None:
        await self._exchange(Block.of(items).framed())

    async def heartbeat(self) -> None:
        """An empty frame: the keeper answers at once (and signs a due checkpoint)."""
        await self._exchange(Block.HEADER.pack(0, 0, 0.0, 0.0))

    async def _exchange(self, data: bytes) -> None:
        proc = await self._running()
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(data)
            await asyncio.wait_for(proc.stdin.drain(), self.timeout)
            answer = await asyncio.wait_for(proc.stdout.readline(), self.timeout)
        except (BrokenPipeError, ConnectionResetError):
            answer = b""
        except TimeoutError:
            # Stopped or stuck: its answer may never come, and a late one would be read as
            # the next batch's. A new keeper writes the batch again.
            self._stop(proc)
            raise KeeperDown("the trace keeper stopped answering") from None
        if answer == b"ok\n":
            return
        if not answer:
            self._stop(proc)
            raise KeeperDown("the trace keeper process exited")
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
        """Close the keeper's input (it signs a last checkpoint and exits after its last
        commit) and wait for it."""
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
    """The trace keeper process stopped or stopped answering; the batch is kept and retried."""


_Entry = tuple[float, TraceItem, "asyncio.Future[None] | None"]


class TraceWriter:
    """Batches appends in the background; see the module docstring for durability."""

    def __init__(
        self,
        store: TraceStore,
        flush_interval: float = 0.1,
        batch_max: int = 1000,
        queue_max: int = 100_000,
        appender: Appender | None = None,
        commit_timeout: float = 5.0,
        heartbeat_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        """``appender`` commits one batch; by default ``store.append`` in a worker thread."""
        self.store = store
        # ops: a database outage is logged once, and its recovery (core/logs.py)
        engine = getattr(store, "engine", None)
        target = redact_url(str(engine.url.render_as_string(hide_password=True))) if engine is not None else "?"
        self.incident = Incident("trace database", target, log)
        self._append: Appender = appender or StoreAppender(store)
        self.flush_interval = flush_interval
        self.batch_max = batch_max
        self.queue_max = queue_max
        self.commit_timeout = commit_timeout
        self.heartbeat_interval = heartbeat_interval
        self.clock = clock
        self._queue: list[_Entry] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._withdrawn = False
        self.busy_since: float | None = None  # an append or heartbeat is outstanding since
        self.answered = False  # the committer answered at least once (the keeper is up)
        self._answered = asyncio.Event()
        self._last_beat = clock()
        self.failures = 0
        self.written = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="trace-writer")

    def pending(self) -> int:
        return len(self._queue)

    def full(self) -> bool:
        return len(self._queue) >= self.queue_max

    def stalled(self) -> bool:
        """The committer has not answered for longer than ``commit_timeout`` (keeper stopped,
        database hanging; a keeper slow to start counts from its first heartbeat, sent at
        start), or the last batch failed: new traces would not be committed in time."""
        since = self.busy_since
        return self.failures > 0 or (since is not None and self.clock() - since > self.commit_timeout)

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
        if fut is None or fut.cancelled():
            fut = asyncio.get_running_loop().create_future()
            self._queue[-1] = (ts, rec, fut)
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            return False
        return True

    async def write(self, rec: dict[str, Any], ts: float | None = None) -> None:
        """Enqueue and wait for the commit, at most ``commit_timeout``.

        On timeout the trace is withdrawn: a batch formed or retried after this never
        carries it (:meth:`_purge`), so the caller may undo what the trace recorded (the
        session of a CONNECT_SUCCESS). Only a batch already handed to a keeper that then
        stopped answering may still hold it; callers record the failure too."""
        fut = self.submit(rec, ts, wait=True)
        assert fut is not None
        try:
            await asyncio.wait_for(asyncio.shield(fut), self.commit_timeout)
        except TimeoutError:
            if fut.cancel():
                self._withdrawn = True
                raise TraceCommitTimeout("trace non enregistrée dans le délai") from None

    async def committed(self, fut: asyncio.Future[None]) -> bool:
        """Wait for a SEND trace's commit (``send_durability = "commit"``), at most
        ``commit_timeout``. The request was relayed: its trace stays queued whatever
        happens, and its answer goes back (a 503 would tell the LPS a call that happened
        did not); a timeout is logged and shows in /readyz."""
        try:
            await asyncio.wait_for(asyncio.shield(fut), self.commit_timeout)
        except TimeoutError:
            log.warning("SEND trace not committed within %.1f s; answered anyway, still queued", self.commit_timeout)
            return False
        return True

    def _purge(self) -> None:
        """Drop withdrawn traces (futures cancelled by :meth:`write`) before a batch forms."""
        if self._withdrawn:
            self._withdrawn = False
            self._queue = [e for e in self._queue if e[2] is None or not e[2].cancelled()]

    async def ready(self, timeout: float) -> bool:  # noqa: ASYNC109
        """Wait (at most ``timeout``) until the committer has answered once. The server
        listens only then: a keeper takes a second or more to start, and the first
        CONNECT must not spend its ``commit_timeout`` waiting for Python to import."""
        if not self.answered:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._answered.wait(), timeout)
        return self.answered

    async def _call(self, work: Awaitable[None]) -> None:
        self.busy_since = self.clock()
        try:
            await work
            self.answered = True
            self._answered.set()
        finally:
            self.busy_since = None

    async def _idle(self) -> None:
        """Wait for work up to ``flush_interval``; beat when idle for ``heartbeat_interval``."""
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), self.flush_interval)
        beat = getattr(self._append, "heartbeat", None)
        if beat is not None and not self._queue and self.clock() - self._last_beat >= self.heartbeat_interval:
            self._last_beat = self.clock()
            try:
                await self._call(beat())
            except Exception as exc:
                log.warning("trace keeper heartbeat failed (%s)", type(exc).__name__)

    async def _run(self) -> None:
        start = getattr(self._append, "start", None)
        if start is not None:
            try:
                await start()
            except Exception as exc:  # the first batch will try again
                log.warning("trace keeper not started yet (%s)", type(exc).__name__)
        beat = getattr(self._append, "heartbeat", None)
        if beat is not None:  # up once it answers (a keeper takes a while to import)
            with contextlib.suppress(Exception):
                await self._call(beat())
        else:  # nothing to ask: taken as up
            self.answered = True
            self._answered.set()
        while True:
            self._purge()
            if not self._queue:
                if self._closing:
                    return
                await self._idle()
                continue
            batch = self._queue[: self.batch_max]
            try:
                await self._call(self._append([(ts, rec) for ts, rec, _ in batch]))
            except Exception as exc:  # the database is down: keep the batch, retry
                self.failures += 1
                self.incident.failed(exc)  # once per outage; the batch is kept and retried
                await asyncio.sleep(min(1.0, 0.05 * self.failures))
                continue
            self.failures = 0
            self.incident.ok()
            self._last_beat = self.clock()
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
                await self._idle()

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


def build_writer(section: TraceSection) -> TraceWriter:
    """The trace store and writer of a ``[traces]`` section, checkpoints and bounds wired."""
    from .checkpoint import ensure_key, settings_for

    store = TraceStore(section.url, connect_timeout=section.db_timeout)
    checkpoints = settings_for(section)
    ensure_key(checkpoints)
    appender: Appender = (
        KeeperAppender(section.url, checkpoints, section.keeper_timeout)
        if section.writer == "process"
        else StoreAppender(store, checkpoints.checkpointer())
    )
    return TraceWriter(
        store,
        section.flush_interval,
        section.batch_max,
        section.queue_max,
        appender=appender,
        commit_timeout=section.commit_timeout,
        heartbeat_interval=section.heartbeat_interval,
    )
