"""Which upstream URL a ``/send/{service}/{endpoint…}`` request may reach.

The relayed path is taken from the *raw* request target (before any decoding) and refused
when it could leave the configured service's base URL once some hop decodes or normalises
it: dot segments (plain or percent-encoded), encoded slashes or backslashes, double
encoding (``%25``), empty segments (``//``, the start of an absolute URL), userinfo
(``@``), control characters (CR/LF header injection), fragments, path parameters (``;``:
Tomcat and Spring read ``/..;/`` as ``/../``, and ``a;b=../x`` hides a dot segment from
checks that stop at ``;``), and escapes that do not decode to valid UTF-8 (overlong forms
such as ``%c0%ae`` for ``.``, truncated sequences, surrogates) or decode to a character
that Unicode normalisation turns into one of these (fullwidth ``．``). What remains is
appended verbatim to the service base URL, so the upstream sees exactly what we checked.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

# RFC 3986 pchar minus what we refuse ("@", and "%" only as a valid escape).
_ALLOWED = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,=:%/]*")
_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# Escapes whose decoded form changes the path structure or smuggles control bytes.
_FORBIDDEN_ESCAPES = re.compile(r"%(2[eEfF]|5[cC]|25|40|0[0-9a-fA-F]|1[0-9a-fA-F]|7[fF]|3[fFbB]|23)")
# What a hop may turn a decoded non-ASCII character into, once normalised (NFKC).
_STRUCTURAL = frozenset("./\\;%?#@:")
_QUERY_ALLOWED = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:%/?@]*")
SERVICE_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class UnsafePath(ValueError):
    """The request target could reach something the configuration did not name."""


@dataclass(frozen=True, slots=True)
class SendTarget:
    service: str
    path: str  # raw, already checked; starts with "/" or is ""
    query: str  # raw query string without "?", already checked


CACHED_TARGET_MAX = 512  # bytes of path + query below which a checked target is remembered


def split_send_target(raw_path: bytes | str, query: bytes | str = b"") -> SendTarget:
    """Parse ``/send/{service}[/{endpoint…}]`` from the raw target; raise :class:`UnsafePath`.

    The same few endpoints come back on every request, so short targets that passed are
    remembered (a pure function of its input; refusals are never cached).
    """
    if len(raw_path) + len(query) <= CACHED_TARGET_MAX:
        return _split_cached(raw_path, query)
    return _split(raw_path, query)


def _split(raw_path: bytes | str, query: bytes | str) -> SendTarget:
    path = raw_path.decode("latin-1") if isinstance(raw_path, bytes) else raw_path
    qs = query.decode("latin-1") if isinstance(query, bytes) else query
    if not path.startswith("/send/"):
        raise UnsafePath("le chemin doit commencer par /send/{service}")
    rest = path[len("/send/") :]
    service, sep, endpoint = rest.partition("/")
    if not SERVICE_RE.fullmatch(service):
        raise UnsafePath("nom de service invalide")
    endpoint = sep + endpoint if sep else ""
    check_endpoint(endpoint)
    if qs:
        check_query(qs)
    return SendTarget(service, endpoint, qs)


_split_cached = functools.lru_cache(maxsize=4096)(_split)


def check_endpoint(endpoint: str) -> None:
    if not endpoint:
        return
    if ";" in endpoint:
        raise UnsafePath("paramètre de chemin (;) interdit")
    if not _ALLOWED.fullmatch(endpoint):
        raise UnsafePath("caractère interdit dans le chemin (@, \\, espace, caractère de contrôle…)")
    if _ESCAPE.search(endpoint):
        raise UnsafePath("séquence d'échappement % invalide")
    if _FORBIDDEN_ESCAPES.search(endpoint):
        raise UnsafePath("caractère encodé interdit dans le chemin (/, \\, ., %, @, ?, #, contrôle)")
    segments = endpoint.split("/")[1:]
    for i, seg in enumerate(segments):
        if seg in (".", ".."):
            raise UnsafePath("segment . ou .. interdit")
        if seg == "" and i != len(segments) - 1:
            raise UnsafePath("segment vide (//) interdit")
    if ":" in segments[0]:
        # "/send/svc/https:..." would read as a scheme to a careless hop; nothing legitimate needs it.
        raise UnsafePath("le premier segment ne peut contenir ':'")
    _check_decoded(endpoint)


def _check_decoded(raw: str) -> None:
    """The escapes must decode to valid UTF-8 that no normalising hop turns into structure."""
    if "%" not in raw:
        return
    try:
        text = unquote_to_bytes(raw).decode("utf-8")  # strict: refuses overlong forms and surrogates
    except UnicodeDecodeError:
        raise UnsafePath("encodage UTF-8 invalide (séquence trop longue, tronquée ou interdite)") from None
    for ch in text:
        if ord(ch) > 0x7F and _STRUCTURAL.intersection(unicodedata.normalize("NFKC", ch)):
            raise UnsafePath("caractère Unicode équivalent à un séparateur interdit")


def check_query(qs: str) -> None:
    if len(qs) > 8192:
        raise UnsafePath("chaîne de requête trop longue")
    if not _QUERY_ALLOWED.fullmatch(qs) or _ESCAPE.search(qs):
        raise UnsafePath("caractère interdit dans la chaîne de requête")
    if re.search(r"%(0[0-9a-fA-F]|1[0-9a-fA-F]|7[fF])", qs):
        raise UnsafePath("caractère de contrôle encodé dans la chaîne de requête")
    if "%" in qs:
        try:
            unquote_to_bytes(qs).decode("utf-8")
        except UnicodeDecodeError:
            raise UnsafePath("encodage UTF-8 invalide dans la chaîne de requête") from None


def upstream_url(base_url: str, target: SendTarget) -> str:
    """Base URL (no trailing slash) + checked path + checked query: no re-encoding, no surprise."""
    url = base_url + target.path
    if target.query:
        url += "?" + target.query
    return url
