"""Domain errors carry a stable code and a French message that can be shown as is."""

from __future__ import annotations


class DomainError(ValueError):
    """A business rule refused an operation; nothing was changed."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class IllegalTransition(DomainError):
    """A state-machine transition that is not allowed from the current state."""
