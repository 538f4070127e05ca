"""Logging setup: one line per event, never a secret or token (callers log ids, not values)."""

from __future__ import annotations

import logging
import sys


def setup(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    # one INFO line per outbound request (trust-list refreshes, introspection) drowns the logs
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))
