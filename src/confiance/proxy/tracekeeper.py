"""The trace keeper: a child process of the proxy that commits its trace batches.

Run by :class:`confiance.proxy.tracewriter.KeeperAppender` as
``python -m confiance.proxy.tracekeeper URL [CHECKPOINT-SETTINGS-JSON]``. Protocol on its
stdin/stdout, one frame at a time: a block as :meth:`confiance.proxy.traces.Block.framed`
writes it (a fixed header: body length, trace count, first and last timestamp; then the
body, already encoded as it is stored and hashed); the answer is ``ok`` after the commit, or
``err <reason>`` (the proxy keeps the batch and retries). A frame of length 0 is a
heartbeat: answered ``ok`` at once, after signing a checkpoint if one is due. The keeper
signs the checkpoints (``checkpoint.py``) because it is what knows each new chain head
without another query; at end of input it signs a last one covering every commit. The
pipe is private to the proxy that started the keeper. The keeper ignores SIGINT/SIGTERM/SIGHUP
sent to the proxy's process group and exits at end of input, so a stopping proxy can still
hand it its last batch.
"""

from __future__ import annotations

import signal
import sys

from .checkpoint import Checkpointer, CheckpointSettings
from .traces import Block, TraceStore


def serve(url: str, checkpointer: Checkpointer | None = None) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a reload is the proxy's, not the keeper's
    store = TraceStore(url)
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    try:
        while True:
            head = inp.read(Block.HEADER.size)
            if len(head) < Block.HEADER.size:
                return 0
            size, count, ts_min, ts_max = Block.HEADER.unpack(head)
            if size == 0:  # heartbeat
                if checkpointer is not None:
                    checkpointer.tick()
                out.write(b"ok\n")
                out.flush()
                continue
            body = inp.read(size)
            if len(body) < size:
                return 0  # the proxy stopped mid-batch: it keeps the batch and retries
            try:
                chain = store.append_block(Block(body, count, ts_min, ts_max))
            except Exception as exc:  # the database: reported to the proxy, which logs the
                # outage once (core.logs.Incident) and retries the batch; a line here per
                # retry would repeat it ten times a second, unformatted
                out.write(
                    b"err " + f"{type(exc).__name__}: {exc}".encode("utf-8", "replace").replace(b"\n", b" ") + b"\n"
                )
            else:
                out.write(b"ok\n")
                if checkpointer is not None:
                    out.flush()  # the commit is answered first; signing is not on its path
                    checkpointer.committed(chain)
            out.flush()
    finally:
        if checkpointer is not None:
            checkpointer.flush()
        store.close()


if __name__ == "__main__":
    from confiance.core import logs

    # What it logs (a witness that cannot be written: core.logs.Incident) goes to the
    # proxy's stderr, shaped like the proxy's lines (JSON unless stderr is a terminal).
    logs.setup("warning")
    settings = CheckpointSettings.from_json(sys.argv[2]) if len(sys.argv) > 2 else None
    sys.exit(serve(sys.argv[1], settings.checkpointer() if settings else None))
