"""Sessions: ids nobody can guess, idle and absolute expiry measured by the tool itself.

Expiry is measured, never assumed: the operator configures short timeouts for the
campaign and declares them (``--idle-timeout``, ``--absolute-timeout``); without them the
checks are "non vérifiable". Time passes only through :meth:`Campaign.wait`, which tests
replace with a clock they move.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from .. import randomness
from ..model import Evidence, Unverifiable, require
from .campaign import Campaign, Session


def check_id_random(c: Campaign, ev: Evidence) -> None:
    missing = c.cfg.id_sample - len(c.session_ids)
    if missing > 0:
        # Concurrent logins of the same user and LPS without cookie: each is a new session.
        with ThreadPoolExecutor(min(4, missing)) as pool:
            list(
                pool.map(
                    lambda i: c.new_session(ev, c.cfg.national_id, f"POST /connect (échantillon {i + 1})"),
                    range(missing),
                )
            )
        for sid in list(c.open_sessions):
            if c.main is None or sid != c.main.proxy_session_id:
                c.disconnect(None, sid, "DELETE /disconnect (échantillon)")
    sample = c.session_ids[: max(c.cfg.id_sample, len(c.session_ids))]
    require(len(sample) >= 4, f"échantillon trop petit ({len(sample)} identifiants)")
    ev.data("identifiants de session émis (dans l'ordre)", sample)
    found = randomness.problems(sample)
    require(not found, "identifiants de session prévisibles : " + " ; ".join(found))
    ev.note(f"{len(sample)} identifiants : ≥ {randomness.MIN_BITS} bits, sans bits figés, sans suite ni voisins")


def _declared(value: float | None, flag: str, c: Campaign) -> float:
    if value is None:
        raise Unverifiable(
            f"délai non déclaré : configurez un délai court sur le proxy pour la campagne et déclarez-le ({flag})"
        )
    if value > c.cfg.max_wait:
        raise Unverifiable(f"délai déclaré ({value:g} s) trop long pour être attendu (≤ {c.cfg.max_wait:g} s)")
    return value


def _touch(c: Campaign, ev: Evidence, s: Session, label: str) -> int:
    """One signsessiondata call, kept in the evidence as one line (reports stay < 128 KiB)."""
    status = c.sign(None, s, label).status_code
    ev.note(f"{label} : HTTP {status}")
    return status


def check_idle_timeout(c: Campaign, ev: Evidence) -> None:
    idle = _declared(c.cfg.idle_timeout, "--idle-timeout", c)
    s = c.new_session(ev, c.cfg.national_id, "POST /connect (inactivité du proxy)")
    try:
        first = _touch(c, ev, s, "POST /send (session active)")
        require(first == 200, f"/send sur session active : HTTP {first}")
        c.wait(ev, idle / 2, "la moitié du délai d'inactivité")
        alive = _touch(c, ev, s, f"POST /send après {idle / 2:g} s d'inactivité")
        require(alive == 200, f"session close avant le délai d'inactivité déclaré : HTTP {alive}")
        c.wait(ev, idle + 1.0, "le délai d'inactivité déclaré, plus 1 s")
        late = _touch(c, ev, s, f"POST /send après {idle + 1:.0f} s d'inactivité")
        require(late == 401, f"session toujours active après le délai d'inactivité : HTTP {late}")
    finally:
        if s.proxy_session_id in c.open_sessions:
            c.disconnect(ev, s.proxy_session_id, "DELETE /disconnect (nettoyage)")


def check_absolute_timeout(c: Campaign, ev: Evidence) -> None:
    absolute = _declared(c.cfg.absolute_timeout, "--absolute-timeout", c)
    idle = c.cfg.idle_timeout
    # Touch often enough that idleness never ends the session (a third of the idle timeout),
    # and wait past the lifetime from the last touch by less than half the idle timeout.
    step = min(absolute / 4, idle / 3 if idle else absolute / 4)
    grace = min(1.0, step / 2)
    s = c.new_session(ev, c.cfg.national_id, "POST /connect (durée de vie absolue)")
    try:
        elapsed = 0.0
        while True:
            status = _touch(c, ev, s, f"POST /send à {elapsed:g} s")
            require(status == 200, f"session active close à {elapsed:g} s, avant sa durée de vie : HTTP {status}")
            if elapsed + step >= absolute:
                break
            c.wait(ev, step, "session tenue active")
            elapsed += step
        c.wait(ev, absolute + grace - elapsed, "jusqu'au-delà de la durée de vie absolue déclarée")
        late = _touch(c, ev, s, f"POST /send après {absolute + grace:g} s de session active")
        require(late == 401, f"session active au-delà de sa durée de vie absolue : HTTP {late}")
    finally:
        if s.proxy_session_id in c.open_sessions:
            c.disconnect(ev, s.proxy_session_id, "DELETE /disconnect (nettoyage)")
