"""Rules for the proxy's traces (pure): which fields each trace type must carry.

From ANS's contract: every type has ``type``, ``IdRPPS``, ``ipAddress``, ``ports`` (the
caller's source ports), ``timestamp``;
all but ``CONNECT_FAILURE`` also have ``clientId``, ``proxy_id_session`` and
``session_state``; ``apiRequest`` = ``{nomApiPsc, methode, path}`` is present on ``SEND``
and absent on every other type.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

TYPES = ("CONNECT_SUCCESS", "CONNECT_REPLAY", "CONNECT_FAILURE", "SEND", "DISCONNECT")
COMMON = ("type", "IdRPPS", "ipAddress", "ports", "timestamp")
TEXT_FIELDS = ("IdRPPS", "clientId", "proxy_id_session", "session_state", "dn")
SESSION = ("clientId", "proxy_id_session", "session_state")
API_REQUEST = ("nomApiPsc", "methode", "path")


def required_fields(trace_type: str) -> tuple[str, ...]:
    return COMMON if trace_type == "CONNECT_FAILURE" else COMMON + SESSION


def _present(value: Any) -> bool:
    return value is not None and value != "" and value != []


def field_problems(trace: Mapping[str, Any]) -> list[str]:
    """What is wrong with one trace's fields (French, empty when fine)."""
    problems: list[str] = []
    ttype = trace.get("type")
    if ttype not in TYPES:
        return [f"type inconnu : {ttype!r}"]
    for name in required_fields(str(ttype)):
        if not _present(trace.get(name)):
            problems.append(f"{ttype} : champ « {name} » absent")
    if parse_timestamp(trace.get("timestamp")) is None and _present(trace.get("timestamp")):
        problems.append(f"{ttype} : horodatage illisible {trace.get('timestamp')!r}")
    for name in TEXT_FIELDS:
        if _present(trace.get(name)) and not isinstance(trace.get(name), str):
            problems.append(f"{ttype} : « {name} » n'est pas une chaîne ({trace.get(name)!r})")
    ports = trace.get("ports")
    if _present(ports) and not (
        isinstance(ports, list) and all(isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536 for p in ports)
    ):
        problems.append(f"{ttype} : « ports » n'est pas une liste de ports ({ports!r})")
    ip = trace.get("ipAddress")
    if _present(ip):
        try:
            ipaddress.ip_address(str(ip))
        except ValueError:
            problems.append(f"{ttype} : ipAddress n'est pas une adresse IP ({ip!r})")
    return problems


def api_request_problems(trace: Mapping[str, Any]) -> list[str]:
    ttype = trace.get("type")
    api = trace.get("apiRequest")
    if ttype == "SEND":
        if not isinstance(api, Mapping):
            return ["SEND : « apiRequest » absent"]
        return [f"SEND : apiRequest.{n} absent" for n in API_REQUEST if not _present(api.get(n))]
    if api is not None:
        return [f"{ttype} : « apiRequest » présent alors qu'il est réservé aux traces SEND"]
    return []


def parse_timestamp(value: Any) -> dt.datetime | None:
    """ISO 8601 (with or without zone, ``Z`` accepted) or epoch seconds/milliseconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = value / 1000 if value > 1e11 else value
        return dt.datetime.fromtimestamp(seconds, dt.UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def as_list(payload: Any) -> list[dict[str, Any]] | None:
    """The traces of a ``/traces`` answer (a JSON list; ``{"traces": [...]}`` tolerated)."""
    if isinstance(payload, dict):
        payload = payload.get("traces")
    if not isinstance(payload, list):
        return None
    return [t for t in payload if isinstance(t, dict)]


def of_session(traces: Iterable[Mapping[str, Any]], proxy_session_id: str) -> list[Mapping[str, Any]]:
    return [t for t in traces if t.get("proxy_id_session") == proxy_session_id]
