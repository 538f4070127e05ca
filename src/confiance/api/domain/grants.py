"""What outlives a request: revoked ``jti`` values and rotating refresh tokens."""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from confiance.core.files import write_atomic

from .exchange import Subject


class RevocationList:
    """Revoked ``jti`` values, each kept until the token it names would have expired anyway.

    The AS and the resource services share one instance (same process, see docs/api.md):
    a revocation is effective on the next resource request, with no polling window. With a
    ``path``, each revocation is appended to a JSON-lines file and reloaded at start, so a
    restart does not bring revoked tokens back to life.
    """

    def __init__(self, path: Path | None = None, now: float | None = None) -> None:
        self._revoked: dict[str, float] = {}
        self._lock = threading.Lock()
        self.path = path
        if path is not None and path.exists():
            current = time.time() if now is None else now
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    item = json.loads(line)
                    jti, exp = str(item["jti"]), float(item["exp"])
                except (ValueError, KeyError, TypeError):
                    continue  # a torn last line after a crash: skip it
                if exp > current:
                    self._revoked[jti] = exp
            self._rewrite()

    def _rewrite(self) -> None:
        assert self.path is not None
        write_atomic(self.path, "".join(json.dumps({"jti": j, "exp": e}) + "\n" for j, e in self._revoked.items()))

    def revoke(self, jti: str, exp: float) -> None:
        with self._lock:
            self._revoked[jti] = exp
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps({"jti": jti, "exp": exp}) + "\n")

    def is_revoked(self, jti: str) -> bool:
        return jti in self._revoked

    def prune(self, now: float) -> int:
        with self._lock:
            dead = [j for j, exp in self._revoked.items() if exp <= now]
            for j in dead:
                del self._revoked[j]
            if dead and self.path is not None:
                self._rewrite()
        return len(dead)

    def __len__(self) -> int:
        return len(self._revoked)


@dataclass
class RefreshGrant:
    """What an API refresh token stands for; bound to the same client and certificate."""

    client_id: str
    cert_x5t: str
    subject: Subject
    scopes: tuple[str, ...]
    audiences: tuple[str, ...]
    expires_at: float
    access_jtis: list[tuple[str, float]] = field(default_factory=list)


class RefreshStore:
    """Opaque, rotating refresh tokens (stored hashed: a memory dump yields no usable token)."""

    def __init__(self) -> None:
        self._grants: dict[str, RefreshGrant] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    def issue(self, grant: RefreshGrant) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._grants[self._key(token)] = grant
        return token

    def take(self, token: str) -> RefreshGrant | None:
        """Remove and return the grant (rotation: a refresh token works once)."""
        with self._lock:
            return self._grants.pop(self._key(token), None)

    def peek(self, token: str) -> RefreshGrant | None:
        return self._grants.get(self._key(token))

    def prune(self, now: float) -> None:
        with self._lock:
            for k in [k for k, g in self._grants.items() if g.expires_at <= now]:
                del self._grants[k]
