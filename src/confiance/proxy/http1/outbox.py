"""Writes made during one pass of the event loop, sent together at the end of that pass.

Why: a relayed /send makes two writes, the request to the service and the answer to the
LPS. Written at once, each one lands while the peer (the service, the LPS) has often gone
back to sleep since the previous one, and waking a sleeping peer is the costliest part of
a loopback send on a virtual machine (perf: ``sock_def_readable`` → ``_raw_spin_unlock_irqrestore``,
≈ 13 % of the proxy's CPU at saturation). Queued and sent at the end of the pass, the
writes to one peer follow each other closely and only the first one wakes it. Measured in
bench/bench_proxy.py: CPU per relayed request ≈ 60 → 46–50 µs, throughput 0.46× → 0.57×
nginx's (docs/benchmarks/proxy.md, session 4). One outbox per proxy, shared by the server
and the upstream pools: with one each, the gain was about half.

The delay this adds is the rest of the current pass: nothing when the proxy is idle (the
pass holds one event), the time to handle the other ready events when it is busy.

Order is kept per transport: every write of a transport goes through the same outbox,
and whoever closes a transport flushes first (:meth:`flush`), so an answer queued before
a close still goes out before it.
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("confiance.proxy.http1.outbox")


class Outbox:
    """One per event loop user (the server, the upstream pools); see the module docstring."""

    __slots__ = ("_items", "_loop")

    def __init__(self) -> None:
        self._items: list[tuple[asyncio.WriteTransport, bytes]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def write(self, transport: asyncio.WriteTransport, data: bytes) -> None:
        """Send ``data`` on ``transport`` at the end of this pass of the event loop."""
        if not self._items:
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            self._loop.call_soon(self.flush)
        self._items.append((transport, data))

    def flush(self) -> None:
        """Send what is queued now (end of the pass, or before a transport is closed)."""
        if not self._items:
            return
        items, self._items = self._items, []
        for transport, data in items:
            if transport.is_closing():  # its request failed meanwhile: nothing to send
                continue
            try:
                transport.write(data)
            except Exception:  # one broken transport must not keep the others' data
                log.exception("write to a connection failed")
