"""The checks of a CIBA backchannel authentication request, one named rule each.

In the style of node-oidc-provider's ``check_*`` actions: each function reads the request
(``BackchannelRequest``), raises the OAuth error the rule calls for, or records what it
established (scopes, identity, expiry…) for the next ones. ``CIBA_CHECKS`` runs them in a
fixed order, which is also the order in which errors win when a request breaks several
rules. Adding a rule is adding a function and a line in the tuple.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from . import acr
from .acr import CHANNELS
from .clients import CIBA_GRANT, Client
from .errors import (
    InvalidBindingMessageError,
    InvalidRequestError,
    InvalidScopeError,
    UnauthorizedClientError,
    UnknownUserIdError,
)
from .identities import Identity
from .scopes import parse_scopes

BINDING_RE = re.compile(r"^[0-9]{2}$")
ACR = "eidas1"  # what PSC's documentation tells relying parties to request


@dataclass
class BackchannelRequest:
    """One backchannel request as the checks see it, and what they established."""

    client: Client
    params: Mapping[str, str]
    known_identities: Mapping[str, Identity]
    default_expiry: float
    scopes: set[str] = field(default_factory=set)
    acr_requested: tuple[str, ...] | None = None
    acr: str = "eidas1"
    national_id: str = ""
    binding_message: str = ""
    channel: str = "CARD"
    expiry: float = 0.0


def check_client_may_use_ciba(req: BackchannelRequest) -> None:
    if CIBA_GRANT not in req.client.grant_types:
        raise UnauthorizedClientError("client non autorisé pour CIBA")


def check_scope(req: BackchannelRequest) -> None:
    req.scopes = parse_scopes(req.params.get("scope"))
    if "openid" not in req.scopes:
        raise InvalidScopeError("le scope doit contenir openid")


def check_acr_values(req: BackchannelRequest) -> None:
    req.acr_requested = acr.requested(req.params.get("acr_values"))


def check_login_hint_only(req: BackchannelRequest) -> None:
    """PSC identifies the professional by ``login_hint`` alone (CIBA §7.1 allows one hint)."""
    for unsupported in ("login_hint_token", "id_token_hint"):
        if unsupported in req.params:
            raise InvalidRequestError(f"{unsupported} non supporté : utiliser login_hint")


def check_poll_mode(req: BackchannelRequest) -> None:
    if "client_notification_token" in req.params:
        raise InvalidRequestError("seul le mode poll est supporté")


def check_login_hint(req: BackchannelRequest) -> None:
    hint = req.params.get("login_hint")
    if not hint:
        raise InvalidRequestError("login_hint (identifiant national) obligatoire")
    if hint not in req.known_identities:
        raise UnknownUserIdError("identifiant national inconnu")
    req.national_id = hint


def check_binding_message(req: BackchannelRequest) -> None:
    binding = req.params.get("binding_message")
    if binding is None or not BINDING_RE.fullmatch(binding):
        raise InvalidBindingMessageError("binding_message doit être composé de deux chiffres (00 à 99)")
    req.binding_message = binding


def check_channel(req: BackchannelRequest) -> None:
    channel = req.params.get("channel", "CARD")
    if channel not in CHANNELS:
        raise InvalidRequestError("channel doit valoir CARD ou MOBILE")
    req.channel = channel


def check_means_of_authentication(req: BackchannelRequest) -> None:
    """The level comes from the identity's means on this channel (CPS card, e-CPS)."""
    req.acr = acr.reached(req.known_identities[req.national_id].auth_means, req.channel)


def check_acr_reachable(req: BackchannelRequest) -> None:
    req.acr = acr.satisfy(req.acr_requested, req.acr)


def check_requested_expiry(req: BackchannelRequest) -> None:
    """CIBA §7.1: a positive integer; the sandbox never grants longer than its own lifetime."""
    req.expiry = req.default_expiry
    if "requested_expiry" not in req.params:
        return
    try:
        asked = int(req.params["requested_expiry"])
    except ValueError:
        raise InvalidRequestError("requested_expiry doit être un entier") from None
    if asked <= 0:
        raise InvalidRequestError("requested_expiry doit être positif")
    req.expiry = min(req.expiry, asked)


CibaCheck = Callable[[BackchannelRequest], None]
CIBA_CHECKS: tuple[CibaCheck, ...] = (
    check_client_may_use_ciba,
    check_scope,
    check_acr_values,
    check_login_hint_only,
    check_poll_mode,
    check_login_hint,
    check_binding_message,
    check_channel,
    check_means_of_authentication,
    check_acr_reachable,
    check_requested_expiry,
)


def run_checks(req: BackchannelRequest, checks: tuple[CibaCheck, ...] = CIBA_CHECKS) -> BackchannelRequest:
    for check in checks:
        check(req)
    return req
