"""The trace keeper: a child process of the proxy that commits its trace batches.

Run by :class:`confiance.proxy.traces.KeeperAppender` as
``python -m confiance.proxy.tracekeeper URL``. Protocol on its stdin/stdout, one batch at
a time: a block as :meth:`confiance.proxy.traces.Block.framed` writes it (a fixed header:
body length, trace count, first and last timestamp; then the body, already encoded as it
is stored and hashed); the answer is ``ok`` after the commit, or ``err <reason>`` (the
proxy keeps the batch and retries). The pipe is private to the proxy that started the
keeper. The keeper ignores SIGINT/SIGTERM/SIGHUP sent to the proxy's process group and exits at
end of input, so a stopping proxy can still hand it its last batch.
"""

from __future__ import annotations

import signal
import sys

from .traces import Block, TraceStore


def serve(url: str) -> int:
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
            body = inp.read(size)
            if len(body) < size:
                return 0  # the proxy stopped mid-batch: it keeps the batch and retries
            try:
                store.append_block(Block(body, count, ts_min, ts_max))
            except Exception as exc:  # the database: reported to the proxy, which logs the
                # outage once (core.logs.Incident) and retries the batch; a line here per
                # retry would repeat it ten times a second, unformatted
                out.write(
                    b"err " + f"{type(exc).__name__}: {exc}".encode("utf-8", "replace").replace(b"\n", b" ") + b"\n"
                )
            else:
                out.write(b"ok\n")
            out.flush()
    finally:
        store.close()


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1]))
