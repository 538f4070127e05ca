"""Time-driven rules of a habilitation's life: which notice is due, given how many days are
left. Pure (the clock is the caller's), so the periodic job and its tests agree."""

from __future__ import annotations

from collections.abc import Sequence

# Expiry notices: at 90 and at 30 days (parcours.yaml validity is 3 years).
EXPIRY_NOTICE_DAYS = (90, 30)
# Renewal reminders while no renewal candidature is in progress.
RENEWAL_REMINDER_DAYS = (60, 14)


def due_thresholds(days_left: int, thresholds: Sequence[int]) -> list[int]:
    """Every threshold already reached (the job deduplicates each one, so it is sent once,
    and a late first run still sends every notice the holder should have had)."""
    return [t for t in thresholds if days_left <= t]
