"""Authentication levels as PSC answers them in 2026: ``eidas1`` or ``eidas2``.

PSC sets ``acr`` from the means the professional used: since 2026 a CPS card gives
``acr: "eidas2"`` with ``authMode: "CARD"`` and ``auth_level``, where relying parties
configured for eIDAS1 only expected ``eidas1`` (and some, like ANS's own Keycloak extension,
fail on it: ansforge/keycloak-prosanteconnect#43). The sandbox gives each identity its
means (``auth_means``: channel → level) so both levels can be exercised.

``acr_values`` follows OpenID Connect Core §3.1.2.1 and §5.5.1.1: a voluntary request, in
order of preference. A level at least as high as one requested satisfies it (the answer's
``acr`` says what was actually performed, so an ``eidas2`` card answers ``acr_values=eidas1``
with ``acr: eidas2``, as PSC does); a request only for levels higher than the identity can
reach on that channel is refused with ``unmet_authentication_requirements`` (OpenID Connect
Core errata set 2, §3.1.2.6); values naming no level the sandbox knows are an
``invalid_request``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from .errors import AccessDeniedError, InvalidRequestError, UnmetAuthenticationRequirementsError

AcrLevel = Literal["eidas1", "eidas2"]
Channel = Literal["CARD", "MOBILE"]
LEVELS: tuple[str, ...] = ("eidas1", "eidas2")  # lowest first
CHANNELS: tuple[str, ...] = ("CARD", "MOBILE")
# The value PSC sends beside ``authMode`` (observed "1" with eidas2/CARD); ANS does not
# document its meaning, so the sandbox sends it unchanged and relying parties must not rely on it.
AUTH_LEVEL = "1"


def requested(acr_values: str | None) -> tuple[str, ...] | None:
    """The levels asked for, in order of preference (None: no preference)."""
    if acr_values is None:
        return None
    known = tuple(v for v in acr_values.split() if v in LEVELS)
    if not known:
        raise InvalidRequestError(f"acr_values non supporté (attendu : {' ou '.join(LEVELS)})")
    return known


def reached(means: Mapping[Channel, AcrLevel], channel: str) -> str:
    """The level this identity reaches on this channel; refused if it has no such means."""
    level: str | None = next((lv for ch, lv in means.items() if ch == channel), None)
    if level is None:
        raise AccessDeniedError(f"ce professionnel n'a pas de moyen d'authentification {channel}")
    return level


def satisfy(asked: tuple[str, ...] | None, level: str) -> str:
    """The ``acr`` to issue: ``level`` if it meets one of the requested levels, else refused."""
    if asked is not None and LEVELS.index(level) < min(LEVELS.index(a) for a in asked):
        raise UnmetAuthenticationRequirementsError(
            f"niveau {' '.join(asked)} demandé : ce moyen d'authentification n'atteint que {level}"
        )
    return level


def claims(channel: str) -> dict[str, str]:
    """What PSC adds beside ``acr`` in its tokens (access and ID token, and introspection)."""
    return {"authMode": channel, "auth_level": AUTH_LEVEL}
