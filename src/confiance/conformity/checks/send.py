"""/send: refused without a valid session; signsessiondata proves exchange, certificate and mapping."""

from __future__ import annotations

import contextlib
import json
import secrets
import uuid
from collections.abc import Mapping

import httpx

from confiance.core.jose import ASYMMETRIC_ALGS, TokenError, verify_jws
from confiance.pki import normalize_dn

from .. import faults
from ..http import raw_request
from ..model import CheckFailed, Evidence, Unverifiable, require
from .campaign import Campaign, error_body_problem, json_object


def check_send_unauthenticated(c: Campaign, ev: Evidence) -> None:
    data = {
        "nationalId": c.cfg.national_id,
        "clientID": c.cfg.client_id,
        "proxy_session_id": "x",
        "session_state": "x",
    }
    attempts: list[tuple[str, str | None]] = [("sans cookie", None), ("cookie forgé", str(uuid.uuid4()))]
    if c.main is not None:
        real = c.main.proxy_session_id
        last = "0" if real[-1] != "0" else "1"
        attempts.append(("cookie d'une session réelle altéré d'un caractère", real[:-1] + last))
    wrong: list[str] = []
    for label, cookie in attempts:
        resp = c.proxy.request(ev, "POST", c.send_path(), json_body=data, cookie=cookie, label=f"POST /send ({label})")
        if resp.status_code != 401:
            wrong.append(f"{label} : HTTP {resp.status_code}")
        elif (problem := error_body_problem(resp)) is not None:
            wrong.append(f"{label} : {problem}")
    require(not wrong, "accès sans session valide non refusé en 401 : " + " ; ".join(wrong))


def verify_signed(c: Campaign, ev: Evidence, resp: httpx.Response, expected: Mapping[str, str]) -> None:
    require(resp.status_code == 200, f"HTTP {resp.status_code} au lieu de 200")
    body = json_object(resp)
    for name, value in expected.items():
        require(body.get(name) == value, f"« {name} » renvoyé {body.get(name)!r}, attendu {value!r}")
    signature = body.get("signature")
    require(isinstance(signature, str) and bool(signature), "« signature » absente")
    assert isinstance(signature, str)
    jwks = c.api.jwks(ev)
    try:
        payload = verify_jws(signature, jwks, algorithms=ASYMMETRIC_ALGS)
    except TokenError as exc:
        raise CheckFailed(f"la signature ne se vérifie pas avec le JWKS de l'API : {exc}") from exc
    try:
        signed = json.loads(payload)
    except ValueError as exc:
        raise CheckFailed("contenu signé illisible") from exc
    require(signed == dict(expected), f"contenu signé inattendu : {signed!r}")
    ev.data("contenu signé par l'API (vérifié avec son JWKS)", signed)


def check_signsessiondata(c: Campaign, ev: Evidence) -> None:
    s = c.need_main()
    c.wait(None, 1.1, "")  # separates CONNECT and SEND timestamps for the time-window check
    resp = c.sign(ev, s, f"POST {c.send_path()}", headers={"X-Forwarded-For": c.cfg.spoofed_ip})
    if resp.status_code not in (502, 503, 504):  # reached the service: a SEND trace is expected
        c.sent = True
        c.sends.append(("POST", c.cfg.service_path))
    verify_signed(c, ev, resp, c.session_data(s))
    c.signed_ok = True


def check_cnf_binding(c: Campaign, ev: Evidence) -> None:
    s = c.need_main()
    if not c.signed_ok:
        raise Unverifiable("prérequis non rempli : aucun appel signsessiondata réussi")
    expected_dn = c.cfg.expected_dn
    if expected_dn is None:
        raise Unverifiable("certificat du clientId inconnu (--client-cert ou endpoints.json)")
    records = [r for r in c.api.access_records(ev, s.proxy_session_id) if r.get("outcome", "ok") == "ok"]
    require(bool(records), "l'API n'a journalisé aucun appel réussi pour cette session")
    for rec in records:
        dn = rec.get("dn")
        require(
            isinstance(dn, str) and normalize_dn(dn) == expected_dn,
            f"certificat présenté à l'API {dn!r} ≠ certificat du clientId {expected_dn!r}",
        )
        cnf_obj = rec.get("cnf")
        cnf = rec.get("cnf_x5t") or (cnf_obj.get("x5t#S256") if isinstance(cnf_obj, dict) else None)
        presented = rec.get("x5t#S256") or rec.get("cert_x5t")
        if cnf is not None and presented is not None:
            require(cnf == presented, "cnf du jeton API ≠ empreinte du certificat présenté")
        if presented is not None and c.cfg.expected_x5t is not None:
            require(presented == c.cfg.expected_x5t, "empreinte du certificat présenté ≠ certificat du clientId")
    ev.note("le service de ressources n'accepte un jeton que si son cnf x5t#S256 est le certificat TLS présenté")


def check_methods(c: Campaign, ev: Evidence) -> None:
    """/send relays every method of the contract, not only POST."""
    s = c.need_main()
    if not c.cfg.get_path:
        raise Unverifiable("aucun chemin GET connu sur le service (--get-path)")
    path = f"/send/{c.cfg.service}/{c.cfg.get_path.lstrip('/')}"
    resp = c.proxy.request(ev, "GET", path, cookie=s.proxy_session_id, label=f"GET {path}")
    if resp.status_code == 200:  # relayed: its SEND trace is expected (traces.api_request)
        c.sends.append(("GET", c.cfg.get_path.lstrip("/")))
    require(resp.status_code == 200, f"GET relayé : HTTP {resp.status_code} au lieu de la réponse du service (200)")
    if c.cfg.get_body:
        require(c.cfg.get_body in resp.text, "GET relayé : la réponse n'est pas celle du service")


PATH_TRICKS = (
    ("segment « .. »", "/../{svc}/{path}"),
    ("segment « . »", "/./{path}"),
    ("« .. » encodé", "/%2e%2e/{path}"),
    ("barre oblique encodée", "/{path}%2F..%2F{path}"),
    ("segment vide", "//{path}"),
    ("antislash encodé", "/..%5C{path}"),
)


def check_path_safety(c: Campaign, ev: Evidence) -> None:
    """A path that could leave the service's base URL once decoded or normalised is refused."""
    s = c.need_main()
    if c.proxy_tls is None:
        raise Unverifiable("contexte TLS de l'outil indisponible")
    wrong: list[str] = []
    for label, shape in PATH_TRICKS:
        target = f"/send/{c.cfg.service}" + shape.format(svc=c.cfg.service, path=c.cfg.service_path)
        status = raw_request(
            ev,
            c.cfg.proxy_url,
            c.proxy_tls,
            "POST",
            target,
            cookie=s.proxy_session_id,
            label=f"POST {target} ({label})",
        )
        if status != 400:
            wrong.append(f"{label} ({target}) : HTTP {status}")
    require(not wrong, "chemins ambigus non refusés en 400 : " + " ; ".join(wrong))
    ev.note(f"{len(PATH_TRICKS)} chemins ambigus refusés en 400 avant tout relais")


LPS_MARKER_COOKIE = "lps_conformite=ne-pas-relayer"
LPS_MARKER_AUTH = "Bearer jeton-du-lps-ne-pas-relayer"


def check_headers_isolated(c: Campaign, ev: Evidence) -> None:
    """The service never receives the LPS's cookie or Authorization: only the proxy's own token."""
    s = c.need_main()
    if not c.signed_ok:
        raise Unverifiable("prérequis non rempli : aucun appel signsessiondata réussi")
    resp = c.proxy.request(
        ev,
        "POST",
        c.send_path(),
        json_body=c.session_data(s),
        headers={
            "Cookie": f"proxy_session_id={s.proxy_session_id}; {LPS_MARKER_COOKIE}",
            "Authorization": LPS_MARKER_AUTH,
        },
        label=f"POST {c.send_path()} (avec Cookie et Authorization du LPS)",
    )
    require(resp.status_code == 200, f"/send avec les en-têtes du LPS : HTTP {resp.status_code} au lieu de 200")
    records = [r for r in c.api.access_records(ev, s.proxy_session_id) if r.get("outcome", "ok") == "ok"]
    if not records or "received_cookie" not in records[-1]:
        raise Unverifiable("le journal des accès de l'API ne dit pas quels en-têtes le service a reçus")
    last = records[-1]
    require(not last.get("received_cookie"), "le service a reçu l'en-tête Cookie du LPS")
    require(
        last.get("authorization_headers") == 1,
        f"le service a reçu {last.get('authorization_headers')} en-têtes Authorization (celui du LPS relayé)",
    )
    ev.note("le service n'a reçu que le jeton du proxy : ni le cookie ni l'Authorization du LPS")


def check_upstream_failures(c: Campaign, ev: Evidence) -> None:
    """A down, silent or broken service is answered 503, 504, 502 with {code, message}."""
    s = c.need_main()
    declared = {k: v for k, v in c.cfg.fault_services.items() if k in faults.EXPECTED}
    if not declared:
        raise Unverifiable(
            "aucun service de panne déclaré : configurez sur le proxy les services « panne », « lent » et "
            "« erreur » pointant vers l'outil, et déclarez-les (--fault-service)"
        )
    missing = [k for k in ("timeout", "broken") if k in declared and k not in c.cfg.fault_ports]
    if missing or (c.cfg.fault_tls is None and any(k in declared for k in ("timeout", "broken"))):
        raise Unverifiable("ports ou certificat des écouteurs de panne non déclarés (--fault-port, --fault-cert)")
    wrong: list[str] = []
    cert, key = c.cfg.fault_tls or (None, None)
    with faults.listeners(c.cfg.fault_ports, cert, key) if cert and key else contextlib.nullcontext():
        for kind, name in sorted(declared.items()):
            path = f"/send/{name}/{c.cfg.service_path}"
            resp = c.proxy.request(
                ev, "POST", path, json_body=c.session_data(s), cookie=s.proxy_session_id, label=f"POST {path} ({kind})"
            )
            expected = faults.EXPECTED[kind]
            if resp.status_code != expected:
                wrong.append(f"{kind} : HTTP {resp.status_code} au lieu de {expected}")
            elif (problem := error_body_problem(resp)) is not None:
                wrong.append(f"{kind} : {problem}")
    require(not wrong, "pannes du service mal signalées : " + " ; ".join(wrong))
    ev.note("service arrêté → 503, muet → 504, réponse non HTTP → 502")


def check_query(c: Campaign, ev: Evidence) -> None:
    """The query string reaches the service as the LPS wrote it."""
    s = c.need_main()
    if not c.signed_ok:
        raise Unverifiable("prérequis non rempli : aucun appel signsessiondata réussi")
    marker = f"conformite={secrets.token_hex(4)}&x=a%2Fb"
    resp = c.proxy.request(
        ev,
        "POST",
        f"{c.send_path()}?{marker}",
        json_body=c.session_data(s),
        cookie=s.proxy_session_id,
        label=f"POST {c.send_path()}?{marker}",
    )
    require(resp.status_code == 200, f"/send avec chaîne de requête : HTTP {resp.status_code} au lieu de 200")
    records = [r for r in c.api.access_records(ev, s.proxy_session_id) if r.get("outcome", "ok") == "ok"]
    if not records or "query" not in records[-1]:
        raise Unverifiable("le journal des accès de l'API ne dit pas quelle chaîne de requête le service a reçue")
    got = records[-1].get("query")
    require(got == marker, f"le service a reçu la chaîne de requête {got!r} au lieu de {marker!r}")
    ev.note("chaîne de requête relayée telle quelle")
