"""The token endpoint's grants, picked from a table by ``grant_type``.

Each grant is a module with one ``exchange(provider, client, params, now)`` function; the
table is the only place that names them, so adding a grant is adding a module and a row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..clients import CIBA_GRANT, Client
from ..errors import InvalidRequestError, UnauthorizedClientError, UnsupportedGrantTypeError
from . import ciba, code, refresh

if TYPE_CHECKING:
    from ..domain import Provider

Exchange = Callable[["Provider", Client, Mapping[str, str], float], dict[str, Any]]

GRANTS: dict[str, Exchange] = {
    CIBA_GRANT: ciba.exchange,
    "authorization_code": code.exchange,
    "refresh_token": refresh.exchange,
}


def pick(client: Client, params: Mapping[str, str]) -> Exchange:
    """The grant asked for, once the request and the client may use it (RFC 6749 §5.2)."""
    gt = params.get("grant_type")
    if not gt:
        raise InvalidRequestError("grant_type obligatoire")
    grant = GRANTS.get(gt)
    if grant is None:
        raise UnsupportedGrantTypeError("grant_type non supporté")
    if gt not in client.grant_types:
        raise UnauthorizedClientError("grant_type non autorisé pour ce client")
    return grant
