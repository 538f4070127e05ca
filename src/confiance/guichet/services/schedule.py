"""The periodic job of the guichet (``tick``): expiry at the end of validity, expiry notices
at 90 and 30 days, renewal reminders while no renewal is filed; and the in-process schedule
that runs it. The time is the service's clock, or the ``at`` the caller gives (the CLI's
``--at``), never the wall clock directly, so tests move time instead of waiting for it."""

from __future__ import annotations

import datetime as dt
import logging
import threading

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import schemas as sc
from ..db import Candidature, Habilitation
from ..domain import schedule as sched
from ..domain import workflow as wf
from ..domain.model import AnsRole, HabilitationStatus
from . import base, habilitations
from .base import Principal, ServiceCore

log = logging.getLogger("confiance.guichet.schedule")


def tick(svc: ServiceCore, actor: Principal | None = None, now: dt.datetime | None = None) -> sc.SweepOut:
    """One run of the job at ``now`` (default: the service's clock). Idempotent: notices are
    deduplicated per habilitation, threshold and expiry date."""

    def op(s: Session) -> sc.SweepOut:
        if actor is not None:
            base.require_ans(actor, AnsRole.ADMIN)
        t = now or svc.clock()
        renewing = {
            c.renews_habilitation_id
            for c in s.execute(
                select(Candidature).where(
                    Candidature.renews_habilitation_id.is_not(None),
                    Candidature.status.in_(sorted(st.value for st in wf.IN_PROGRESS)),
                )
            ).scalars()
        }
        expired, flagged, sent, reminders = [], [], 0, 0
        for h in s.execute(select(Habilitation).where(Habilitation.status == HabilitationStatus.VALID.value)).scalars():
            until = h.valid_until.date().isoformat()
            if h.valid_until <= t:
                h.status = HabilitationStatus.EXPIRED.value
                h.status_reason = "arrivée à échéance"
                expired.append(h.id)
                svc.audit(
                    s,
                    actor,
                    "habilitation.expirer",
                    f"habilitation:{h.id}",
                    before={"status": HabilitationStatus.VALID.value},
                    after={"status": HabilitationStatus.EXPIRED.value},
                )
                svc.notify(
                    s,
                    "expiration",
                    f"Habilitation n° {h.id} ({h.role}) expirée le {until}",
                    "Déposez une candidature de renouvellement pour retrouver une habilitation valide.",
                    org_id=h.organisation_id,
                    candidature_id=h.candidature_id,
                    dedup=f"exp0:{h.id}:{until}",
                )
                sent += 1
                continue
            left = (h.valid_until - t).days
            for notice in sched.due_thresholds(left, sched.EXPIRY_NOTICE_DAYS):
                if svc.notify(
                    s,
                    f"expiration_{notice}j",
                    f"Habilitation n° {h.id} ({h.role}) : expiration dans {left} jours",
                    f"Elle expire le {until} : pensez à la renouveler.",
                    org_id=h.organisation_id,
                    candidature_id=h.candidature_id,
                    dedup=f"exp{notice}:{h.id}:{until}",
                ):
                    sent += 1
            if h.id in renewing:
                continue
            for reminder in sched.due_thresholds(left, sched.RENEWAL_REMINDER_DAYS):
                if svc.notify(
                    s,
                    "rappel_renouvellement",
                    f"Habilitation n° {h.id} ({h.role}) : aucun renouvellement en cours",
                    f"Elle expire le {until} (dans {left} jours) et aucune candidature de renouvellement "
                    "n'est déposée : renouvelez-la depuis la page Habilitations.",
                    org_id=h.organisation_id,
                    candidature_id=h.candidature_id,
                    dedup=f"renew{reminder}:{h.id}:{until}",
                ):
                    reminders += 1
        s.flush()
        for hid in expired:
            flagged += habilitations.cascade(svc, s, [hid], f"s'appuie sur l'habilitation n° {hid} expirée")
        return sc.SweepOut(
            expired=expired, flagged_at_risk=sorted(set(flagged)), notifications=sent, reminders=reminders
        )

    return svc.run(op)


class Schedule:
    """Runs ``tick`` every ``interval`` seconds in a daemon thread until ``stop()``.

    Inside the service, so any host of it (``serve``, ``confiance up``, the demo) keeps
    habilitations expiring on time. A failed run is logged and the next one still happens."""

    def __init__(self, svc: ServiceCore, interval: float) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.svc = svc
        self.interval = interval
        self.runs = 0
        self.ran = threading.Event()  # set after each run (tests wait on it, never on time)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="guichet-tick", daemon=True)

    def start(self) -> Schedule:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                tick(self.svc)
            except Exception:  # keep the schedule alive; the failure is in the log
                log.exception("échec du passage périodique (tick) du guichet")
            self.runs += 1
            self.ran.set()
            self._stop.wait(self.interval)


def start_schedule(svc: ServiceCore, interval: float) -> Schedule:
    return Schedule(svc, interval).start()
