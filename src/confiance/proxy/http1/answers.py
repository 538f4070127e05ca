"""What a handler gives back (:data:`Answer`) and how the server refuses (:class:`HttpError`)."""

from __future__ import annotations

import json
from collections.abc import Callable

from confiance.core.errors import ConfianceError

Answer = tuple[int, list[tuple[bytes, bytes]], bytes]  # status, headers (with length), body
Respond = Callable[[Answer], None]


class HttpError(ConfianceError):
    """A refusal by the HTTP layer itself (malformed or oversized request): status, a
    stable code and a message for the caller. The server's ``render_error`` turns it into
    the answer's bytes, so the application decides its error format."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message, code=code)
        self.status = status


INTERNAL_ERROR = HttpError(500, "INTERNAL_ERROR", "erreur interne du serveur")


def json_error(exc: HttpError) -> Answer:
    """The default rendering of a refusal: ``{"code", "message"}`` as JSON."""
    body = json.dumps({"code": exc.code, "message": exc.message}, ensure_ascii=False).encode()
    return exc.status, [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))], body


class Refused(Exception):
    """Raised from a parser callback with the answer that refuses the request (an
    application's verdict on a head, already rendered)."""

    def __init__(self, answer: Answer) -> None:
        super().__init__(answer[0])
        self.answer = answer
