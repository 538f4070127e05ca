"""French HTML pages of the sandbox: login ("MIE de test"), e-CPS simulator, logout, errors.

Plain strings with every dynamic value escaped; no template engine needed for four pages.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

from .identities import PROFESSIONS, Identity

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:820px;margin:2rem auto;padding:0 1rem;color:#1e1e1e}
header{border-bottom:3px solid #000091;margin-bottom:1rem}
.banner{background:#fff4e5;border:1px solid #e0a000;padding:.5rem 1rem;margin:1rem 0}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:.4rem;text-align:left}
button{padding:.4rem 1rem;margin-right:.5rem;cursor:pointer}.ok{background:#000091;color:#fff;border:0}
.code{font-size:2rem;font-weight:bold;letter-spacing:.2rem}
"""


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang='fr'><head><meta charset='utf-8'>"
        f"<title>{escape(title)} — Bac à sable Pro Santé Connect</title><style>{_STYLE}</style></head><body>"
        "<header><h1>Pro Santé Connect — bac à sable local</h1></header>"
        "<div class='banner'>Environnement de test : toutes les identités sont <strong>fictives</strong>. "
        "Ne saisissez jamais de données réelles.</div>"
        f"{body}</body></html>"
    )


def _profession(ident: Identity) -> str:
    codes = sorted({e.codeProfession for e in ident.exercices})
    return ", ".join(PROFESSIONS.get(c, c) for c in codes)


def login_page(client: Any, tx_id: str, identities: Iterable[Identity], csrf: str, hint: str | None = None) -> str:
    """``hint`` (the request's ``login_hint``) preselects that identity, as a card reader would."""
    options = "".join(
        f"<option value='{escape(i.national_id)}'{' selected' if i.national_id == hint else ''}>"
        f"{escape(i.family_name)} {escape(i.given_name)} — "
        f"{escape(_profession(i))} ({escape(i.national_id)})</option>"
        for i in identities
    )
    name = escape(client.name or client.client_id)
    body = (
        f"<h2>Connexion avec une identité de test</h2><p>L'application <strong>{name}</strong> "
        "demande votre identification (équivalent carte CPS / e-CPS).</p>"
        "<form method='post'>"
        f"<input type='hidden' name='tx' value='{escape(tx_id)}'>"
        f"<input type='hidden' name='csrf' value='{escape(csrf)}'>"
        "<p><label for='national_id'>Professionnel de santé fictif :</label><br>"
        f"<select id='national_id' name='national_id'>{options}</select></p>"
        "<fieldset><legend>Moyen d'authentification</legend>"
        "<label><input type='radio' name='channel' value='CARD' checked> Carte CPS</label> "
        "<label><input type='radio' name='channel' value='MOBILE'> e-CPS (application mobile)</label>"
        "</fieldset>"
        "<button class='ok' name='action' value='approve'>Se connecter</button>"
        "<button name='action' value='deny'>Refuser</button></form>"
    )
    return _page("Connexion", body)


def ecps_page(rows: Sequence[tuple[Any, Identity | None, str]], now: float, msg: str | None) -> str:
    notice = f"<p><strong>{escape(msg)}</strong></p>" if msg else ""
    if not rows:
        table = "<p>Aucune demande d'authentification en attente.</p>"
    else:
        lines = []
        for req, ident, csrf in rows:
            who = f"{ident.given_name} {ident.family_name}" if ident else req.national_id
            remaining = max(0, int(req.expires_at - now))
            forms = "".join(
                f"<form method='post' action='/sandbox/ecps/{escape(req.id)}/{action}' style='display:inline'>"
                f"<input type='hidden' name='csrf' value='{escape(csrf)}'>"
                f"<button{cls}>{label}</button></form>"
                for action, label, cls in (("approve", "Valider", " class='ok'"), ("deny", "Refuser", ""))
            )
            lines.append(
                f"<tr><td>{escape(who)}<br><small>{escape(req.national_id)}</small></td>"
                f"<td class='code'>{escape(req.binding_message)}</td><td>{escape(req.channel)}</td>"
                f"<td>{escape(req.client_id)}</td><td>{remaining} s</td><td>{forms}</td></tr>"
            )
        table = (
            "<table><tr><th>Professionnel</th><th>Code</th><th>Canal</th><th>Logiciel</th>"
            f"<th>Expire dans</th><th></th></tr>{''.join(lines)}</table>"
        )
    stamp = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%H:%M:%S UTC")
    body = (
        "<h2>Application e-CPS simulée</h2><p>Vérifiez que le code affiché correspond à celui de "
        f"votre logiciel, puis validez ou refusez. (mise à jour {stamp})</p>{notice}{table}"
    )
    return _page("e-CPS simulée", body)


def logged_out(ended: bool) -> str:
    text = "Vous êtes déconnecté de Pro Santé Connect." if ended else "Aucune session active à fermer."
    return _page("Déconnexion", f"<h2>Déconnexion</h2><p>{text}</p>")


def error_page(message: str) -> str:
    return _page("Erreur", f"<h2>Erreur</h2><p>{escape(message)}</p>")
