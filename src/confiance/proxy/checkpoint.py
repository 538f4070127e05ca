"""Signed checkpoints of the trace chain, kept in a witness outside the trace database.

Why: a hash chain kept in the database it protects shows an edited row, but not a store
rewritten, emptied or rewound by someone who can write to it — they recompute the chain.
So the proxy periodically signs its chain head (RFC 9162's signed tree head, applied to a
hash chain): an ES256 JWS over the last block's ``seq``, its ``hash``, the trace count
``n`` and the signing ``time``, and appends it to a *witness*, an append-only file that
can live on another disk or host (or a command that ships each line elsewhere). ``traces
verify`` then checks every block named by a checkpoint against what it signed, and that
the store reaches the latest one.

A checkpoint is signed after the first commit, then when ``interval`` has passed since the
last one and the chain moved (on a commit or a heartbeat of the trace writer), and when the
writer stops. The key is a :class:`confiance.core.jose.KeyStore` file (0600), separate from
the database; its public JWKS is what an auditor pins (``confiance proxy traces public-key``).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from confiance.core.jose import KeyStore, TokenError, verify_jws
from confiance.core.logs import Incident

from .traces import ChainHead, sqlite_path

if TYPE_CHECKING:  # pydantic's import is half the keeper's start-up time
    from .config import TraceSection

log = logging.getLogger("confiance.proxy.checkpoint")

TYP = "confiance-trace-checkpoint+jws"
ALG = "ES256"


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    hash: str
    n: int
    time: float
    jws: str

    @property
    def head(self) -> ChainHead:
        return ChainHead(self.seq, self.hash, self.n)


class CheckpointError(ValueError):
    """A witness or checkpoint that cannot be trusted (bad signature, unreadable line, fork)."""


def payload(head: ChainHead, at: float) -> bytes:
    return orjson.dumps(
        {"v": 1, "seq": head.seq, "hash": head.hash, "n": head.n, "time": at}, option=orjson.OPT_SORT_KEYS
    )


def sign(keys: KeyStore, head: ChainHead, at: float) -> str:
    return keys.sign_bytes(payload(head, at), alg=ALG, typ=TYP)


def parse(token: str, jwks: Mapping[str, Any]) -> Checkpoint:
    """A checkpoint whose signature verifies with ``jwks`` (ES256 only)."""
    try:
        data = json.loads(verify_jws(token, jwks, [ALG]))
        return Checkpoint(int(data["seq"]), str(data["hash"]), int(data["n"]), float(data["time"]), token)
    except TokenError as exc:
        raise CheckpointError(f"signature du point de contrôle invalide ({exc})") from None
    except (ValueError, KeyError, TypeError):
        raise CheckpointError("point de contrôle illisible") from None


# ---------------------------------------------------------------------------- witnesses
class FileWitness:
    """Checkpoints appended one per line to a file (created 0600). Each line is written by
    one ``write`` on an ``O_APPEND`` descriptor and fsynced, so the lines of several
    workers or instances never interleave. Put it on another disk, or on a mount from
    another host (NFS, an append-only bucket), so whoever can rewrite the trace database
    cannot also rewrite it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, line: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode("ascii") + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)

    def lines(self) -> Iterator[str]:
        with self.path.open("r", encoding="ascii") as fh:
            for line in fh:
                if line.strip():
                    yield line.strip()


class CommandWitness:
    """Each checkpoint line written to the standard input of a command (for example
    ``ssh audit@host 'cat >> witness.jsonl'`` or ``logger -n loghost``): the witness then
    lives where the proxy host cannot rewrite it."""

    def __init__(self, argv: Sequence[str], timeout: float = 10.0) -> None:
        self.argv, self.timeout = list(argv), timeout

    def append(self, line: str) -> None:
        subprocess.run(self.argv, input=line.encode("ascii") + b"\n", check=True, timeout=self.timeout)


class Witness:
    """Every configured witness gets every checkpoint."""

    def __init__(self, witnesses: Iterable[FileWitness | CommandWitness]) -> None:
        self.witnesses = list(witnesses)

    def describe(self) -> str:
        """Where checkpoints go, for logs: file paths and command names (not their arguments,
        which may name keys or hosts)."""
        return ", ".join(str(w.path) if isinstance(w, FileWitness) else f"command {w.argv[0]}" for w in self.witnesses)

    def append(self, line: str) -> None:
        for w in self.witnesses:
            w.append(line)


def read_witness(lines: Iterable[str], jwks: Mapping[str, Any]) -> list[Checkpoint]:
    """Every checkpoint of a witness, each signature checked; a forged or unreadable line,
    or two checkpoints disagreeing on a block (a fork), is an error: the witness itself was
    tampered with or mixes two chains."""
    by_seq: dict[int, Checkpoint] = {}
    for i, line in enumerate(lines, 1):
        try:
            cp = parse(line, jwks)
        except CheckpointError as exc:
            raise CheckpointError(f"témoin, ligne {i} : {exc}") from None
        seen = by_seq.get(cp.seq)
        if seen is not None and (seen.hash, seen.n) != (cp.hash, cp.n):
            raise CheckpointError(f"témoin, ligne {i} : deux points de contrôle différents pour le bloc {cp.seq}")
        by_seq[cp.seq] = cp
    ordered = sorted(by_seq.values(), key=lambda c: c.seq)
    for a, b in itertools.pairwise(ordered):
        if b.n < a.n:
            raise CheckpointError(f"témoin : le nombre de traces diminue entre les blocs {a.seq} et {b.seq}")
    return ordered


# ---------------------------------------------------------------------------- signing side
@dataclass(frozen=True)
class CheckpointSettings:
    """What the committer needs to sign checkpoints (passed to the trace keeper as JSON)."""

    key: str  # KeyStore file (ES256), created 0600 on first use
    witness: str | None = None  # file appended to
    witness_command: list[str] | None = None  # command fed each line on stdin
    interval: float = 60.0

    def checkpointer(self, clock: Callable[[], float] = time.time) -> Checkpointer:
        witnesses: list[FileWitness | CommandWitness] = []
        if self.witness:
            witnesses.append(FileWitness(Path(self.witness)))
        if self.witness_command:
            witnesses.append(CommandWitness(self.witness_command))
        return Checkpointer(KeyStore(Path(self.key), algs=(ALG,)), Witness(witnesses), self.interval, clock)

    @classmethod
    def from_json(cls, text: str) -> CheckpointSettings:
        return cls(**json.loads(text))


class Checkpointer:
    """Signs the chain head at most every ``interval`` seconds when it moved; called by
    whatever commits blocks (the trace keeper process, or the writer thread)."""

    def __init__(
        self, keys: KeyStore, witness: Witness, interval: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.keys, self.witness, self.interval, self.clock = keys, witness, interval, clock
        self._pending: ChainHead | None = None
        self._last: float | None = None
        self.last: Checkpoint | None = None  # the last one written to the witness
        self.signed = 0
        # A failing witness is retried at every tick: logged once, and its recovery.
        self.incident = Incident("trace witness", witness.describe(), log)

    def committed(self, head: ChainHead) -> None:
        self._pending = head
        self.tick()

    def tick(self) -> None:
        """Sign what is pending if ``interval`` has passed since the last checkpoint."""
        now = self.clock()
        if self._pending is not None and (self._last is None or now - self._last >= self.interval):
            self._sign(self._pending, now)

    def flush(self) -> None:
        """Sign what is pending now (the writer stops)."""
        if self._pending is not None:
            self._sign(self._pending, self.clock())

    def _sign(self, head: ChainHead, now: float) -> None:
        token = sign(self.keys, head, now)
        try:
            self.witness.append(token)
        except (OSError, subprocess.SubprocessError) as exc:  # kept pending: the next tick retries
            self.incident.failed(exc)
            return
        self.incident.ok()
        self._pending, self._last = None, now
        self.last = Checkpoint(head.seq, head.hash, head.n, now, token)
        self.signed += 1


def load_jwks(path: Path) -> dict[str, Any]:
    """Public keys to verify with, from a JWKS file (``traces public-key``) or from the
    proxy's own key file (its private parts are not used)."""
    data = json.loads(path.read_text())
    keys = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(keys, list):
        raise CheckpointError(f"{path} : ni JWKS ni fichier de clés du proxy")
    if keys and isinstance(keys[0], dict) and "jwk" in keys[0]:
        return _public_of(keys)  # read only: opening it as a KeyStore would rewrite it
    return {"keys": keys}


def _public_of(entries: list[dict[str, Any]]) -> dict[str, Any]:
    from joserfc.jwk import ECKey

    return {"keys": [ECKey.import_key(e["jwk"]).as_dict(private=False) for e in entries if e["jwk"]["kty"] == "EC"]}


def settings_for(section: TraceSection) -> CheckpointSettings:
    """The checkpoint settings of a ``[traces]`` section; unset paths sit beside a SQLite
    store (``<db>.checkpoint-key.json``, ``<db>.witness.jsonl``)."""
    key, witness = section.checkpoint_key, section.witness
    if key is None or witness is None:
        db = sqlite_path(section.url)
        if db is None:  # the config validator requires both paths for other stores
            raise CheckpointError("traces.checkpoint_key et traces.witness requis")
        key = key or db.with_name(db.name + ".checkpoint-key.json")
        witness = witness or db.with_name(db.name + ".witness.jsonl")
    return CheckpointSettings(str(key), str(witness), section.witness_command, section.checkpoint_interval)


def ensure_key(settings: CheckpointSettings) -> dict[str, Any]:
    """Create the signing key now if it is missing (before workers or keepers race to
    create two different ones); return its public JWKS."""
    return KeyStore(Path(settings.key), algs=(ALG,)).jwks()
