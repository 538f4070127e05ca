"""The per-worker cache of decoded sessions in front of a shared store (Redis).

Why: with Redis, a /send used to cost a round trip (HMGET) and an awaited path through the
event loop, ≈ 3× the CPU of the in-memory store (docs/benchmarks/proxy.md). Sessions
change rarely (a token renewal every few minutes, a disconnect, an expiry) and are read on
every request, so each worker keeps the decoded sessions it served and answers from them
without awaiting anything, as the in-memory store does.

What keeps a cached copy honest (the store around this cache does the I/O):

* **Invalidations.** Every write that matters to other workers (a save that bumps the
  version, a delete) publishes the session id on the store's invalidation channel in the
  same atomic script as the write; each worker drops its copy when the message arrives.
  While the channel is not known to be subscribed (start-up, a lost connection), the cache
  is *blind*: nothing is served from it, every lookup reads the store.
* **A bounded age.** A copy is served for at most ``max_age`` seconds after it was last
  checked against the store (one ``HMGET`` of version and last-seen time; the decoded
  session is reused when the version did not move). This bounds what a lost message could
  cost (a key deleted by hand, a connection that died silently between heartbeats).
* **Races.** A read that was in flight while an invalidation arrived is not trusted: its
  result is served to that request (it read the store before the write) but not cached as
  fresh (``seq``).
* **Idle time, written back in batches.** The relay marks a session used by setting its
  ``last_used_at`` on the cached object, as with the in-memory store; :meth:`due_touches`
  collects the sessions whose last use moved by ``touch_interval`` or more since the store
  last heard of it, and the store writes them in one pipelined round trip per
  ``sync_interval``. So the store's last-seen time lags by at most ``touch_interval`` +
  ``sync_interval``. Another worker whose copy looks idle-expired never ends the session on
  that copy: an expired-looking copy is not served, the store is read first.

Nothing here does I/O or awaits: the store calls it, and tests drive it with a fake clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from ..domain import Session


@dataclass(slots=True)
class Entry:
    session: Session  # the live object the relay reads and marks used
    version: int  # the store's version of this copy
    written: float  # last_used_at the store is known to hold
    fresh_until: float  # monotonic clock: served without a store read until then


Touch = tuple[str, float, float]  # session id, last used at, expires at


class SessionCache:
    """Decoded sessions of one worker (see the module docstring)."""

    def __init__(
        self,
        max_age: float,
        touch_interval: float,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 100_000,
        keep: float = 60.0,
    ) -> None:
        """``max_age``: 0 disables serving from the cache (every lookup reads the store).
        ``keep``: an entry not checked for this long is evicted (it still spares a decode
        until then); ``max_entries`` bounds memory whatever the traffic."""
        self.max_age = max_age
        self.touch_interval = touch_interval
        self.clock = clock
        self.max_entries = max_entries
        self.keep = keep
        self.entries: dict[str, Entry] = {}
        self.live = False  # the invalidation channel is subscribed
        self.seq = 0  # bumped by every invalidation and every change of ``live``
        self._touches: dict[str, tuple[float, float]] = {}  # uses of copies dropped unwritten

    # -- the hot path
    def fresh(self, sid: str) -> Session | None:
        """The cached session if it may be served without reading the store, else None."""
        if not self.live:
            return None
        e = self.entries.get(sid)
        if e is None or e.fresh_until < self.clock():
            return None
        return e.session

    # -- what the store learns from its reads and writes
    def decoded(self, sid: str, version: int) -> Session | None:
        """The decoded copy of this version, if cached (spares decoding it again)."""
        e = self.entries.get(sid)
        return e.session if e is not None and e.version == version else None

    def known(self, sid: str) -> bool:
        return sid in self.entries

    def remember(self, sid: str, version: int, session: Session, written: float, seq: int) -> None:
        """``session`` (version ``version``) was just read or written; ``seq``: the value of
        :attr:`seq` before the store was asked, so a read that raced an invalidation is not
        trusted. ``written``: the last-seen time the store holds."""
        until = self.clock() + self.max_age if self.live and seq == self.seq and self.max_age > 0 else 0.0
        e = self.entries.get(sid)
        if e is not None and e.session is session:
            e.version, e.fresh_until = version, until
            e.written = max(e.written, written)
            return
        if e is not None:
            session.last_used_at = max(session.last_used_at, e.session.last_used_at)
            written = max(written, e.written)
        elif len(self.entries) >= self.max_entries:
            self.evict(force=True)
            if len(self.entries) >= self.max_entries:  # all fresh: start over, uses kept
                for other, old in self.entries.items():
                    self._keep_touch(other, old)
                self.entries.clear()
        # Always kept: the relay marks its use on this very object.
        self.entries[sid] = Entry(session, version, written, until)

    def wrote_touch(self, sid: str, t: float) -> None:
        e = self.entries.get(sid)
        if e is not None:
            e.written = max(e.written, t)

    def invalidate(self, sid: str, version: int | None = None) -> None:
        """Another writer changed (``version``: the new one) or deleted (None) the session."""
        self.seq += 1
        e = self.entries.get(sid)
        if e is None or (version is not None and e.version >= version):
            return  # not cached, or our own write (already cached at that version)
        del self.entries[sid]
        if version is not None:
            self._keep_touch(sid, e)

    def drop(self, sid: str) -> None:
        """The session is gone (deleted here, or not found in the store)."""
        self.seq += 1
        self.entries.pop(sid, None)
        self._touches.pop(sid, None)

    def blind(self) -> None:
        """The invalidation channel is lost: serve nothing until it is back."""
        self.live = False
        self._stale_all()

    def sighted(self) -> None:
        """The channel is (re)subscribed: messages sent meanwhile may be lost, so every
        copy is checked against the store before it is served again."""
        self.live = True
        self._stale_all()

    def _stale_all(self) -> None:
        self.seq += 1
        for e in self.entries.values():
            e.fresh_until = 0.0

    # -- write-back and housekeeping (the store's sync task)
    def due_touches(self) -> list[Touch]:
        """The uses the store must record now (each is then considered written)."""
        out = [(sid, t, exp) for sid, (t, exp) in self._touches.items()]
        self._touches.clear()
        step = self.touch_interval
        for sid, e in self.entries.items():
            t = e.session.last_used_at
            if t > e.written and t - e.written >= step:
                out.append((sid, t, e.session.expires_at()))
                e.written = t
        return out

    def requeue(self, touches: list[Touch]) -> None:
        """Touches the store failed to write: tried again at the next sync."""
        for sid, t, exp in touches:
            if sid not in self._touches or self._touches[sid][0] < t:
                self._touches[sid] = (t, exp)

    def evict(self, force: bool = False) -> None:
        """Forget copies not checked for ``keep`` seconds (all unchecked ones when ``force``),
        keeping the uses they carry for the next write-back."""
        limit = self.clock() - (0.0 if force else self.keep)
        for sid in [sid for sid, e in self.entries.items() if e.fresh_until < limit]:
            self._keep_touch(sid, self.entries.pop(sid))

    def _keep_touch(self, sid: str, e: Entry) -> None:
        t = e.session.last_used_at
        if t > e.written:
            self._touches[sid] = (t, e.session.expires_at())
