"""Records to bytes and back (orjson), shared by the SQLite and Redis stores."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson

from .records import AuthCode, CibaRequest, Grant, LoginTransaction, Session

R = TypeVar("R", Session, Grant, CibaRequest, AuthCode, LoginTransaction)

KINDS: dict[str, type[Any]] = {
    "session": Session,
    "grant": Grant,
    "ciba": CibaRequest,
    "code": AuthCode,
    "login": LoginTransaction,
}


def dump(record: Any) -> bytes:
    return orjson.dumps(record)


def load(cls: type[R], data: bytes | str) -> R:
    return cls(**orjson.loads(data))
