"""Persistent, append-only, hash-chained trace store (SQLite by default, PostgreSQL by config).

Traces are committed in blocks (one row per batch); each block stores
``hash = SHA-256(prev_hash ‖ seq ‖ count ‖ ts_min ‖ ts_max ‖ body)`` (:func:`block_digest`:
every stored column) and a one-row head table holds the last seq, hash and trace count, so
deleting the newest blocks is detected too. Appends lock the head row *first* (an UPDATE),
which serialises writers across processes and proxy instances on both SQLite and
PostgreSQL without upgrade deadlocks. Reads go a page of blocks at a time (bounded memory).

Who writes, and when: ``tracewriter.py`` (batching, the trace keeper process, bounded
waits). What anchors the chain outside this database: ``checkpoint.py``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import sqlalchemy as sa

from confiance.core.hashchain import GENESIS, ChainCheck, link_bytes
from confiance.core.storage import make_engine

from .domain import send_record

log = logging.getLogger("confiance.proxy.traces")

_meta = sa.MetaData()
# One row per committed batch ("block"): at thousands of /send per second a row per trace
# made SQLite's inserts and index updates the proxy's largest CPU cost after TLS.
# Every column is covered by the block's hash (:func:`block_digest`): a changed ``ts_min``
# would otherwise hide a block from ``GET /traces`` while ``verify`` still said "intact".
blocks_table = sa.Table(
    "proxy_trace_blocks",
    _meta,
    # Assigned by the writer under the head lock (head.seq + 1), so it can be hashed.
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=False),
    sa.Column("ts_min", sa.Float, nullable=False, index=True),
    sa.Column("ts_max", sa.Float, nullable=False, index=True),
    sa.Column("n", sa.Integer, nullable=False),  # traces in the block
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
    sa.Column("seq", sa.BigInteger, nullable=False),  # last block's seq (0: none)
)

# What a block's hash covers besides ``prev_hash`` and the body: its seq, trace count and
# time span as fixed-width big-endian integers and IEEE 754 doubles, so an auditor's own
# tool recomputes it without depending on how a language prints floats.
_HASHED_HEADER = struct.Struct(">QQdd")


def block_digest(prev_hash: str, seq: int, count: int, ts_min: float, ts_max: float, body: bytes) -> str:
    """``SHA-256(prev_hash ‖ seq ‖ count ‖ ts_min ‖ ts_max ‖ body)``, hex: every stored column."""
    return link_bytes(prev_hash, _HASHED_HEADER.pack(seq, count, ts_min, ts_max) + body)


class TraceStoreMissing(RuntimeError):
    """The trace database or its tables do not exist (``verify`` never creates them)."""


Cursor = tuple[int, int]  # (block seq, index of the trace in the block)


def format_cursor(cursor: Cursor) -> str:
    """Opaque to clients: ``<block seq>.<index>`` of the last trace returned."""
    return f"{cursor[0]}.{cursor[1]}"


def parse_cursor(text: str) -> Cursor:
    seq, dot, idx = text.partition(".")
    if not dot or not seq.isdigit() or not idx.isdigit() or not seq.isascii() or not idx.isascii():
        raise ValueError("curseur invalide")
    return int(seq), int(idx)


class ChainHead(NamedTuple):
    """The chain's state after a block: what a checkpoint signs."""

    seq: int
    hash: str
    n: int


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

    Each block stores ``hash = SHA-256(prev_hash ‖ seq ‖ count ‖ ts_min ‖ ts_max ‖ body)``
    (:func:`block_digest`) over the exact stored values, so any change to a trace (even
    whitespace) or to a block's columns, a deleted or inserted block, or a deleted tail (the
    chain head keeps the last seq, hash and the trace count) fails :meth:`verify`. What a
    chain kept in the same database cannot show — the whole store rewritten, emptied or
    rewound — is caught against the signed checkpoints (``proxy/checkpoint.py``).

    ``create=False`` (``traces verify``/``export``) opens an existing store only: a missing
    SQLite file or missing tables raise :class:`TraceStoreMissing` instead of being created
    empty, which would make a vanished store look like a fresh, intact one.
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
        .returning(head_table.c.hash, head_table.c.n, head_table.c.seq)
    )
    _ADD_BLOCK = blocks_table.insert()
    _SET_HEAD = (
        head_table.update()
        .where(head_table.c.id == 1)
        .values(hash=sa.bindparam("new_hash"), n=sa.bindparam("new_n"), seq=sa.bindparam("new_seq"))
    )
    PAGE = 64  # blocks per read: keyset pages keep memory bounded and transactions short

    def __init__(self, url: str, create: bool = True, connect_timeout: float = 5.0) -> None:
        self.url = url
        if create:
            _create_private_sqlite(url)
            self.engine = make_engine(url, **_connect_args(url, connect_timeout))
            self._set_aside_old_format()
            _meta.create_all(self.engine)
            self._check_layout()
            with self.engine.begin() as c:
                if c.execute(sa.select(head_table.c.id).where(head_table.c.id == 1)).first() is None:
                    with contextlib.suppress(sa.exc.IntegrityError), c.begin_nested():
                        c.execute(head_table.insert().values(id=1, hash=GENESIS, n=0, seq=0))
        else:
            self.engine = _existing_engine(url, connect_timeout)
            try:
                self._check_layout()
            except sa.exc.OperationalError as exc:
                self.engine.dispose()
                raise TraceStoreMissing(f"base des traces injoignable : {type(exc.orig).__name__}") from None
            except TraceStoreMissing:
                self.engine.dispose()
                raise

    OLD_SUFFIX = "_v1"

    def _set_aside_old_format(self) -> None:
        """A store from before every column was hashed (no ``n`` column) is renamed, not
        changed: its tables become ``…_v1`` (still verifiable by the version that wrote
        them; keep them as evidence) and a new chain starts beside them. Its indexes are
        dropped first so the new tables can take their names."""
        insp = sa.inspect(self.engine)
        if not insp.has_table(blocks_table.name):
            return
        if "n" in {c["name"] for c in insp.get_columns(blocks_table.name)}:
            return
        log.warning("trace store in the previous format: kept as *%s tables, a new chain starts", self.OLD_SUFFIX)
        with self.engine.begin() as c:
            for ix in insp.get_indexes(blocks_table.name):
                c.execute(sa.text(f'DROP INDEX "{ix["name"]}"'))
            for table in (blocks_table, head_table):
                if insp.has_table(table.name):
                    c.execute(sa.text(f'ALTER TABLE "{table.name}" RENAME TO "{table.name}{self.OLD_SUFFIX}"'))

    def _check_layout(self) -> None:
        insp = sa.inspect(self.engine)
        for table in (blocks_table, head_table):
            if not insp.has_table(table.name):
                raise TraceStoreMissing(f"table {table.name} absente : ce n'est pas une base de traces du proxy")
            have = {c["name"] for c in insp.get_columns(table.name)}
            missing = {c.name for c in table.columns} - have
            if missing:
                raise TraceStoreMissing(
                    f"table {table.name} d'un format antérieur (colonnes absentes : {', '.join(sorted(missing))})"
                )

    def append(self, items: list[tuple[float, TraceItem]]) -> ChainHead | None:
        return self.append_block(Block.of(items)) if items else None

    def append_block(self, block: Block) -> ChainHead:
        """Commit one encoded batch as the chain's next block; return the new head."""
        with self.engine.begin() as c:
            prev_hash, n, seq = c.execute(self._TAKE_HEAD).one()
            seq += 1
            digest = block_digest(prev_hash, seq, block.count, block.ts_min, block.ts_max, block.body)
            c.execute(
                self._ADD_BLOCK,
                {
                    "seq": seq,
                    "ts_min": block.ts_min,
                    "ts_max": block.ts_max,
                    "n": block.count,
                    "body": block.body.decode(),
                    "prev_hash": prev_hash,
                    "hash": digest,
                },
            )
            c.execute(self._SET_HEAD, {"new_hash": digest, "new_n": n + block.count, "new_seq": seq})
        return ChainHead(seq, digest, n + block.count)

    def head(self) -> ChainHead:
        with self.engine.connect() as c:
            row = c.execute(
                sa.select(head_table.c.seq, head_table.c.hash, head_table.c.n).where(head_table.c.id == 1)
            ).first()
        return ChainHead(0, GENESIS, 0) if row is None else ChainHead(int(row.seq), row.hash, int(row.n))

    def blocks(
        self,
        after: int = 0,
        upto: int | None = None,
        start: float | None = None,
        end: float | None = None,
        page: int = PAGE,
    ) -> Iterator[sa.Row[Any]]:
        """Blocks with ``after < seq ≤ upto`` overlapping ``[start, end]``, in chain order,
        read a page at a time (bounded memory however large the store)."""
        while True:
            q = sa.select(blocks_table).where(blocks_table.c.seq > after)
            if upto is not None:
                q = q.where(blocks_table.c.seq <= upto)
            if start is not None:
                q = q.where(blocks_table.c.ts_max >= start)
            if end is not None:
                q = q.where(blocks_table.c.ts_min <= end)
            with self.engine.connect() as c:
                rows = c.execute(q.order_by(blocks_table.c.seq).limit(page)).all()
            yield from rows
            if len(rows) < page:
                return
            after = rows[-1].seq

    def traces(
        self, start: float, end: float | None, after: Cursor | None = None
    ) -> Iterator[tuple[Cursor, dict[str, Any]]]:
        """Every trace with ``start ≤ ts ≤ end`` after ``after``, in chain order, each with
        its cursor (block seq, index in the block). Nothing is skipped or capped here:
        paging is the caller's choice (``GET /traces?limit=…&cursor=…``)."""
        first_seq, first_idx = after if after is not None else (0, -1)
        # Few blocks per read: a block holds up to batch_max traces, and a page of /traces
        # stops early.
        for row in self.blocks(after=first_seq - 1 if after is not None else 0, start=start, end=end, page=4):
            for idx, (ts, rec) in enumerate(orjson.loads(row.body)):
                if row.seq == first_seq and idx <= first_idx:
                    continue
                if ts >= start and (end is None or ts <= end):
                    yield (row.seq, idx), (rec if isinstance(rec, dict) else send_record(rec))

    def page(
        self, start: float, end: float | None, after: Cursor | None, limit: int
    ) -> tuple[list[dict[str, Any]], Cursor | None]:
        """Up to ``limit`` traces after ``after``, and the cursor to continue from when more
        remain (None: this page ends the window)."""
        out: list[dict[str, Any]] = []
        last: Cursor | None = None
        for cursor, rec in self.traces(start, end, after):
            if len(out) == limit:
                return out, last
            out.append(rec)
            last = cursor
        return out, None

    def query(self, start: float, end: float | None, limit: int | None = None) -> list[dict[str, Any]]:
        """The traces in the window as a list (tests and small windows; see :meth:`traces`)."""
        out: list[dict[str, Any]] = []
        for _, rec in self.traces(start, end):
            out.append(rec)
            if limit is not None and len(out) >= limit:
                break
        return out

    def verify(self, anchors: Mapping[int, ChainHead] | None = None) -> ChainCheck:
        """:meth:`walk` without the head."""
        return self.walk(anchors)[0]

    def walk(self, anchors: Mapping[int, ChainHead] | None = None) -> tuple[ChainCheck, ChainHead]:
        """Check every block's seq, link, digest and body against its columns, each anchor
        (a verified checkpoint: block seq → head then) on the way, then that the head row
        names the last block. Returns the check and the head the blocks lead to."""
        anchors = anchors or {}
        # The head first, then the blocks up to it: a proxy still appending while this
        # runs adds blocks past the head read, which must not look like a broken tail.
        head = self.head()
        expected_prev, count, seq = GENESIS, 0, 0
        for row in self.blocks(upto=head.seq):
            bad = _block_problem(row, seq + 1, expected_prev)
            if bad is not None:
                return ChainCheck(False, count, count, bad), ChainHead(seq, expected_prev, count)
            expected_prev, count, seq = row.hash, count + row.n, row.seq
            anchor = anchors.get(seq)
            if anchor is not None and (anchor.hash != expected_prev or anchor.n != count):
                reason = f"bloc {seq} différent de celui signé au point de contrôle (traces réécrites)"
                return ChainCheck(False, count, count, reason), ChainHead(seq, expected_prev, count)
        reached = ChainHead(seq, expected_prev, count)
        if head != reached:
            return ChainCheck(False, count, count, "dernières traces supprimées (tête de chaîne incohérente)"), reached
        return ChainCheck(True, count), reached

    def ping(self) -> None:
        with self.engine.connect() as c:
            c.execute(sa.select(1))

    def close(self) -> None:
        self.engine.dispose()


def _block_problem(row: Any, seq: int, prev_hash: str) -> str | None:
    """Why a stored block is not the chain's next one, or None."""
    if row.seq != seq or row.prev_hash != prev_hash:
        return "maillon précédent incohérent (bloc supprimé ou inséré)"
    if block_digest(row.prev_hash, row.seq, row.n, row.ts_min, row.ts_max, row.body.encode()) != row.hash:
        return f"empreinte incorrecte au bloc {row.seq} (trace ou colonne modifiée)"
    try:
        stamps = [ts for ts, _ in orjson.loads(row.body)]
    except (orjson.JSONDecodeError, TypeError, ValueError):
        return f"bloc {row.seq} illisible"
    if len(stamps) != row.n or not stamps or min(stamps) != row.ts_min or max(stamps) != row.ts_max:
        return f"bloc {row.seq} incohérent avec son contenu (nombre ou dates)"
    return None


def sqlite_path(url: str) -> Path | None:
    if not url.startswith("sqlite"):
        return None
    db = sa.engine.make_url(url).database
    return None if not db or db == ":memory:" or db.startswith("file:") else Path(db)


def _create_private_sqlite(url: str) -> None:
    """Create a new SQLite trace file mode 0600 before SQLite does (national ids inside;
    SQLite gives its -wal and -shm files the database file's mode)."""
    path = sqlite_path(url)
    if path is not None and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _connect_args(url: str, timeout: float) -> dict[str, Any]:
    """A bounded connection attempt: an unreachable PostgreSQL fails in ``timeout``, not
    after the OS's TCP retries (minutes)."""
    if url.startswith("postgresql"):
        return {"connect_args": {"connect_timeout": max(1, round(timeout))}}
    return {}


def _existing_engine(url: str, timeout: float) -> sa.Engine:
    path = sqlite_path(url)
    if url.startswith("sqlite"):
        if path is None or not path.is_file():
            raise TraceStoreMissing(f"base des traces introuvable : {path or url}")
        # A plain engine: no pragma may change the file (make_engine sets WAL).
        return sa.create_engine(url)
    return make_engine(url, **_connect_args(url, timeout))


# A trace as queued: the ANS record itself, or the compact tuple of a SEND trace
# (domain.send_trace_fields), turned into its record where it is committed.
TraceItem = dict[str, Any] | tuple[Any, ...]
