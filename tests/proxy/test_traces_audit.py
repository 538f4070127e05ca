"""Traces an auditor can trust: every stored column hashed, the chain anchored by signed
checkpoints in a witness outside the database, `traces verify` / `export` / `verify
--export`, on real SQLite and PostgreSQL stores tampered with as an intruder would."""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from confiance.cli import app as cli_app
from confiance.core.hashchain import GENESIS
from confiance.proxy.checkpoint import Checkpointer, CheckpointSettings
from confiance.proxy.traces import TraceStore, block_digest, blocks_table, head_table

runner = CliRunner()


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Chain:
    url: str
    store: TraceStore
    signer: Checkpointer
    settings: CheckpointSettings
    clock: Clock

    def commit(self, items: list[tuple[float, dict[str, object]]]) -> None:
        head = self.store.append(items)
        assert head is not None
        self.clock.now += 61  # past the interval: each commit is checkpointed
        self.signer.committed(head)

    def cli(self, *args: str) -> tuple[int, str]:
        r = runner.invoke(
            cli_app,
            [
                "proxy",
                "traces",
                *args,
                "--url",
                self.url,
                "--witness",
                self.settings.witness or "",
                "--key",
                self.settings.key,
            ],
        )
        return r.exit_code, r.output

    def sql(self, statement: str, **params: object) -> None:
        eng = sa.create_engine(self.url.replace("postgresql://", "postgresql+psycopg://"))
        with eng.begin() as c:
            c.execute(sa.text(statement), params)
        eng.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def chain(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Chain]:
    url = (
        f"sqlite:///{tmp_path}/traces.db"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_schema_url")
    )
    settings = CheckpointSettings(str(tmp_path / "key.json"), str(tmp_path / "elsewhere" / "witness.jsonl"), None, 60.0)
    clock = Clock()
    store = TraceStore(url)
    c = Chain(url, store, settings.checkpointer(clock), settings, clock)
    for i in range(4):  # four blocks of three traces, 100 s apart
        c.commit([(1000.0 + 100 * i + j, {"type": "SEND", "IdRPPS": f"{i}-{j}"}) for j in range(3)])
    yield c
    store.close()


def test_intact_chain_verifies_against_its_checkpoints(chain: Chain) -> None:
    code, out = chain.cli("verify")
    assert code == 0, out
    assert "12 trace" in out and "bloc 4" in out
    assert len(Path(chain.settings.witness or "").read_text().splitlines()) == 4


@pytest.mark.parametrize(
    ("column", "value"),
    [("ts_min", 0.0), ("ts_max", 1.0), ("n", 2), ("prev_hash", "1" * 64), ("hash", "2" * 64), ("seq", 9)],
)
def test_every_stored_column_is_covered(chain: Chain, column: str, value: object) -> None:
    """Editing any column of a block (not only its body) breaks the chain. A lowered
    ts_max hid the block from GET /traces while verify said "intact"."""
    chain.sql(f"UPDATE proxy_trace_blocks SET {column} = :v WHERE seq = 2", v=value)
    code, out = chain.cli("verify")
    assert code == 1, out


def test_hidden_block_is_hidden_from_queries_and_caught(chain: Chain) -> None:
    assert len(chain.store.query(1100.0, 1102.0)) == 3
    chain.sql("UPDATE proxy_trace_blocks SET ts_max = 1000.5, ts_min = 1000.5 WHERE seq = 2")
    assert chain.store.query(1100.0, 1102.0) == []  # the edit does hide them…
    assert chain.cli("verify")[0] == 1  # …and is caught


def _rewrite(chain: Chain, keep: int, edit: bool = False) -> None:
    """What an intruder with write access does: rebuild a consistent chain of the first
    ``keep`` blocks (optionally with a trace changed), head row included."""
    eng = sa.create_engine(chain.url.replace("postgresql://", "postgresql+psycopg://"))
    with eng.begin() as c:
        rows = c.execute(sa.select(blocks_table).order_by(blocks_table.c.seq)).all()[:keep]
        c.execute(blocks_table.delete())
        prev, n = GENESIS, 0
        for r in rows:
            body = r.body.replace('"1-1"', '"X-X"') if edit else r.body
            digest = block_digest(prev, r.seq, r.n, r.ts_min, r.ts_max, body.encode())
            c.execute(
                blocks_table.insert().values(
                    seq=r.seq, ts_min=r.ts_min, ts_max=r.ts_max, n=r.n, body=body, prev_hash=prev, hash=digest
                )
            )
            prev, n = digest, n + r.n
        c.execute(head_table.update().values(hash=prev, n=n, seq=len(rows)))
    eng.dispose()


def test_rewritten_store_is_caught_by_the_checkpoints(chain: Chain) -> None:
    _rewrite(chain, keep=4, edit=True)
    assert chain.store.verify().ok  # the chain alone is fooled
    code, out = chain.cli("verify")
    assert code == 1 and "point de contrôle" in out


def test_rewound_store_is_caught(chain: Chain) -> None:
    _rewrite(chain, keep=2)
    assert chain.store.verify().ok
    code, out = chain.cli("verify")
    assert code == 1 and "arrière" in out


def test_emptied_store_is_caught(chain: Chain) -> None:
    _rewrite(chain, keep=0)
    code, out = chain.cli("verify")
    assert code == 1 and "vide" in out


def test_forged_witness_line_is_refused(chain: Chain, tmp_path: Path) -> None:
    other = CheckpointSettings(str(tmp_path / "intruder.json"), chain.settings.witness, None, 0).checkpointer()
    other.committed(chain.store.head())  # appended to the same witness with another key
    code, out = chain.cli("verify")
    assert code == 1 and "signature" in out


def test_missing_witness_or_checkpoints_fail(chain: Chain) -> None:
    witness = Path(chain.settings.witness or "")
    witness.write_text("")
    assert chain.cli("verify")[0] == 1
    witness.unlink()
    assert chain.cli("verify")[0] == 1


def test_verify_never_creates_a_store(tmp_path: Path, postgres_schema_url: str) -> None:
    settings = CheckpointSettings(str(tmp_path / "key.json"), str(tmp_path / "w.jsonl"), None, 60.0)
    settings.checkpointer()  # the key exists; the stores do not
    Path(settings.witness or "").write_text("")
    for url in (f"sqlite:///{tmp_path}/absent.db", postgres_schema_url):
        r = runner.invoke(
            cli_app,
            ["proxy", "traces", "verify", "--url", url, "--witness", settings.witness or "", "--key", settings.key],
        )
        assert r.exit_code == 1, r.output
    assert not (tmp_path / "absent.db").exists()
    eng = sa.create_engine(postgres_schema_url.replace("postgresql://", "postgresql+psycopg://"))
    assert not sa.inspect(eng).has_table("proxy_trace_blocks")
    eng.dispose()


def test_store_and_export_files_are_private(tmp_path: Path) -> None:
    store = TraceStore(f"sqlite:///{tmp_path}/private.db")
    store.append([(1.0, {"type": "SEND", "IdRPPS": "8"})])
    store.close()
    for name in ("private.db", "private.db-wal"):
        path = tmp_path / name
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, name


# ------------------------------------------------------------------ exports
def _export(chain: Chain, out: Path, start: str, end: str) -> tuple[int, str]:
    return chain.cli("export", "--start", start, "--end", end, "--out", str(out))


def _verify_export(chain: Chain, path: Path) -> tuple[int, str]:
    r = runner.invoke(cli_app, ["proxy", "traces", "verify", "--export", str(path), "--key", chain.settings.key])
    return r.exit_code, r.output


def _iso(ts: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()


def test_export_round_trip_and_tampering(chain: Chain, tmp_path: Path) -> None:
    out = tmp_path / "audit.jsonl"
    code, text = _export(chain, out, _iso(1101.0), _iso(1201.0))
    assert code == 0, text
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    lines = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    traces = [x["trace"]["IdRPPS"] for x in lines if x["type"] == "trace"]
    assert traces == ["1-1", "1-2", "2-0", "2-1"]
    assert [x["type"] for x in lines][:2] == ["export", "boundary"] and lines[-1]["type"] == "checkpoint"
    # The public key alone suffices (what the operator hands the auditor).
    pub = tmp_path / "public.json"
    r = runner.invoke(cli_app, ["proxy", "traces", "public-key", "--key", chain.settings.key])
    assert r.exit_code == 0 and "d" not in json.loads(r.output)["keys"][0]
    pub.write_text(r.output)
    assert _verify_export(chain, out)[0] == 0
    r2 = runner.invoke(cli_app, ["proxy", "traces", "verify", "--export", str(out), "--key", str(pub)])
    assert r2.exit_code == 0 and "4 trace" in r2.output

    def tampered(change: object) -> int:
        copy = [dict(x) for x in lines]
        change(copy)  # type: ignore[operator]
        bad = tmp_path / "bad.jsonl"
        bad.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in copy))
        return _verify_export(chain, bad)[0]

    def edit_trace(c: list[dict[str, object]]) -> None:
        t = next(x for x in c if x["type"] == "trace")
        t["trace"] = {**t["trace"], "IdRPPS": "someone-else"}  # type: ignore[dict-item]

    def drop_trace(c: list[dict[str, object]]) -> None:
        c.remove(next(x for x in c if x["type"] == "trace"))

    def drop_first_block(c: list[dict[str, object]]) -> None:
        first = next(x for x in c if x["type"] == "block")
        i = c.index(first)
        del c[1:i]  # boundary gone
        c[i - (i - 1)]["type"] = "boundary"  # the first block poses as the boundary
        c[0]["first_seq"] = int(first["seq"]) + 1  # type: ignore[call-overload]
        while c[2]["type"] == "trace":
            del c[2]

    def drop_checkpoint(c: list[dict[str, object]]) -> None:
        c.pop()

    def edit_block_time(c: list[dict[str, object]]) -> None:
        next(x for x in c if x["type"] == "block")["ts_min"] = 0.0

    for change in (edit_trace, drop_trace, drop_first_block, drop_checkpoint, edit_block_time):
        assert tampered(change) == 1, change.__name__


def test_export_refuses_a_broken_store(chain: Chain, tmp_path: Path) -> None:
    _rewrite(chain, keep=4, edit=True)
    code, out = _export(chain, tmp_path / "x.jsonl", _iso(0), _iso(5000))
    assert code == 1 and not (tmp_path / "x.jsonl").exists(), out


def test_checkpoint_interval_and_last_checkpoint_on_flush(tmp_path: Path) -> None:
    """Signed on the first commit, then at most once per interval, and on flush (stop)."""
    clock = Clock()
    settings = CheckpointSettings(str(tmp_path / "k.json"), str(tmp_path / "w.jsonl"), None, 60.0)
    signer = settings.checkpointer(clock)
    store = TraceStore(f"sqlite:///{tmp_path}/t.db")
    for i in range(5):
        head = store.append([(float(i + 1), {"type": "SEND"})])
        assert head is not None
        signer.committed(head)
        clock.now += 10
    assert signer.signed == 1  # the first only: 40 s < 60 s
    signer.tick()
    assert signer.signed == 1
    clock.now += 30
    signer.tick()  # due now
    assert signer.signed == 2 and signer.last is not None and signer.last.seq == 5
    head = store.append([(9.0, {"type": "SEND"})])
    assert head is not None
    signer.committed(head)
    signer.flush()
    assert signer.signed == 3 and signer.last is not None and signer.last.seq == 6
    assert os.stat(tmp_path / "w.jsonl").st_mode & 0o077 == 0
    store.close()


def test_verify_while_the_proxy_appends(tmp_path: Path) -> None:
    """Blocks committed after verify read the head are not taken for a broken tail."""
    store = TraceStore(f"sqlite:///{tmp_path}/live.db")
    for i in range(3):
        store.append([(float(i + 1), {"type": "SEND"})])
    real_head = store.head
    late = TraceStore(f"sqlite:///{tmp_path}/live.db")

    def head_then_append() -> object:
        h = real_head()
        late.append([(9.0, {"type": "SEND"})])  # another process commits meanwhile
        return h

    store.head = head_then_append  # type: ignore[method-assign]
    check, reached = store.walk()
    assert check.ok and reached.seq == 3
    store.head = real_head  # type: ignore[method-assign]
    assert store.verify().ok and store.head().seq == 4
    late.close()
    store.close()


def test_witness_failure_keeps_the_checkpoint_pending(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A witness that cannot be written loses nothing: the next tick signs again. The
    outage is logged once however many ticks retry, and its end once (core.logs.Incident)."""
    caplog.set_level(logging.INFO, logger="confiance.proxy.checkpoint")
    clock = Clock()
    blocked = tmp_path / "witness-dir"
    blocked.mkdir()  # a directory: appending to it fails
    settings = CheckpointSettings(str(tmp_path / "k.json"), str(blocked), None, 60.0)
    signer = settings.checkpointer(clock)
    store = TraceStore(f"sqlite:///{tmp_path}/t.db")
    head = store.append([(1.0, {"type": "SEND"})])
    assert head is not None
    signer.committed(head)
    for _ in range(3):
        signer.tick()
    assert signer.signed == 0
    blocked.rmdir()
    signer.tick()
    assert signer.signed == 1 and len(blocked.read_text().splitlines()) == 1
    mine = [r for r in caplog.records if "dependency" in r.getMessage()]
    assert [r.levelname for r in mine] == ["ERROR", "WARNING"]
    assert mine[0].__dict__["target"] == str(blocked) and mine[1].__dict__["failures"] == 4
    store.close()


def test_witness_command_gets_every_checkpoint(tmp_path: Path) -> None:
    remote = tmp_path / "remote.jsonl"
    settings = CheckpointSettings(
        str(tmp_path / "k.json"), str(tmp_path / "local.jsonl"), ["sh", "-c", f"cat >> '{remote}'"], 0.0
    )
    signer = settings.checkpointer(Clock())
    store = TraceStore(f"sqlite:///{tmp_path}/t.db")
    for i in range(2):
        head = store.append([(float(i + 1), {"type": "SEND"})])
        assert head is not None
        signer.committed(head)
    assert remote.read_text() == (tmp_path / "local.jsonl").read_text() and len(remote.read_text().splitlines()) == 2
    store.close()


def test_export_signs_a_covering_checkpoint_when_none_is_recent(chain: Chain, tmp_path: Path) -> None:
    from confiance.proxy.checkpoint import FileWitness, load_jwks, read_witness
    from confiance.proxy.traceaudit import export

    head = chain.store.append([(2000.0, {"type": "SEND", "IdRPPS": "late"})])
    assert head is not None
    chain.signer.committed(head)  # within the interval: not signed yet
    assert chain.signer.last is not None and chain.signer.last.seq == 4
    jwks = load_jwks(Path(chain.settings.key))
    cps = read_witness(FileWitness(Path(chain.settings.witness or "")).lines(), jwks)
    out = tmp_path / "late.jsonl"
    assert not export(chain.store, cps, 1999.0, 2001.0, out).ok  # no covering checkpoint, no signer
    audit = export(chain.store, cps, 1999.0, 2001.0, out, chain.signer)
    assert audit.ok and audit.checkpoint is not None and audit.checkpoint.seq == 5
    assert _verify_export(chain, out)[0] == 0
    assert chain.cli("verify")[0] == 0  # the new checkpoint is in the witness too


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_previous_format_is_set_aside_not_changed(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = f"sqlite:///{tmp_path}/old.db" if backend == "sqlite" else request.getfixturevalue("postgres_schema_url")
    eng = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    old = sa.MetaData()
    sa.Table(
        "proxy_trace_blocks",
        old,
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("ts_min", sa.Float, index=True),
        sa.Column("ts_max", sa.Float, index=True),
        sa.Column("body", sa.Text),
        sa.Column("prev_hash", sa.String(64)),
        sa.Column("hash", sa.String(64)),
    )
    sa.Table(
        "proxy_trace_chain",
        old,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("hash", sa.String(64)),
        sa.Column("n", sa.BigInteger),
    )
    old.create_all(eng)
    with eng.begin() as c:
        c.execute(sa.text("INSERT INTO proxy_trace_blocks VALUES (1, 1.0, 1.0, '[[1.0,{}]]', :g, 'x')"), {"g": GENESIS})
    assert (
        runner.invoke(cli_app, ["proxy", "traces", "verify", "--url", url, "--witness", "w", "--key", "k"]).exit_code
        != 0
    )
    store = TraceStore(url)
    store.append([(5.0, {"type": "SEND"})])
    assert store.verify().ok and store.head().n == 1
    with eng.connect() as c:  # the old rows are kept, unchanged
        assert c.execute(sa.text("SELECT body FROM proxy_trace_blocks_v1")).scalar_one() == "[[1.0,{}]]"
    store.close()
    eng.dispose()
