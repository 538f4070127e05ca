"""The registry of checks, run in this order against one proxy (one module per group)."""

from __future__ import annotations

from .beyond import check_auth_code, check_idle, check_refresh, check_tls_legacy
from .campaign import Campaign, CheckDef, CheckFn, Session
from .connect import (
    check_binding,
    check_connect,
    check_denied,
    check_malformed,
    check_no_answer,
    check_other_lps,
    check_psc_unavailable,
    check_replay,
    check_session_state,
    check_unknown_client,
)
from .disconnect import check_api_tokens_revoked, check_disconnect, check_psc_session_ended
from .exposure import check_cookie_attributes, check_psc_tokens
from .send import (
    check_cnf_binding,
    check_headers_isolated,
    check_methods,
    check_path_safety,
    check_query,
    check_send_unauthenticated,
    check_signsessiondata,
    check_upstream_failures,
)
from .session import check_absolute_timeout, check_id_random, check_idle_timeout
from .traces import (
    check_trace_access,
    check_trace_api_request,
    check_trace_dn,
    check_trace_fields,
    check_trace_ip,
    check_trace_window,
)

__all__ = ["CHECKS", "Campaign", "CheckDef", "CheckFn", "Session"]

CHECKS: tuple[CheckDef, ...] = (
    CheckDef(
        "connect.ciba",
        "Connexion CIBA",
        "POST /connect → 200, corps {proxy_session_id, session_state} et cookie proxy_session_id identique.",
        check_connect,
    ),
    CheckDef(
        "connect.binding",
        "Code et canal transmis à PSC",
        "Le bindingMessage du LPS et son canal (CARD/MOBILE) parviennent à PSC tels quels.",
        check_binding,
    ),
    CheckDef(
        "connect.replay",
        "Rejeu de la connexion",
        "/connect avec le cookie d'une session vivante → 304 sans corps ni nouvelle authentification PSC ; "
        "même utilisateur et même LPS sans ce cookie → nouvelle connexion (200).",
        check_replay,
    ),
    CheckDef(
        "connect.other_lps",
        "Sessions distinctes par LPS",
        "La session d'un utilisateur avec un LPS ne vaut pas pour un autre : /connect d'un second LPS → 200, jamais 304.",
        check_other_lps,
    ),
    CheckDef(
        "connect.unknown_client",
        "clientId ou utilisateur inconnu",
        "/connect avec un clientId inconnu, ou un nationalId inconnu de PSC → 404 et corps {code, message, metadata}.",
        check_unknown_client,
    ),
    CheckDef(
        "connect.malformed",
        "Requêtes de connexion mal formées",
        "Chaque champ absent ou mal formé (nationalId, bindingMessage à deux chiffres, clientId, channel CARD|MOBILE) → 400 avec corps.",
        check_malformed,
    ),
    CheckDef(
        "send.unauthenticated",
        "/send sans session valide",
        "/send sans cookie, avec un cookie forgé ou altéré → 401 {code, message}.",
        check_send_unauthenticated,
    ),
    CheckDef(
        "send.signsessiondata",
        "signsessiondata : échange de jeton et correspondance des sessions",
        "POST /send/{service}/signsessiondata → signature vérifiée avec le JWKS de l'API ; nationalId, clientID, "
        "proxy_session_id et session_state exacts.",
        check_signsessiondata,
    ),
    CheckDef(
        "send.methods",
        "/send relaie toutes les méthodes",
        "GET /send/{service}/… est relayé au service (pas seulement POST).",
        check_methods,
    ),
    CheckDef(
        "send.path_safety",
        "/send : chemins ambigus refusés",
        "Segments « . »/« .. » (clairs ou encodés), barres obliques encodées, segments vides → 400, jamais relayés.",
        check_path_safety,
    ),
    CheckDef(
        "send.headers_isolated",
        "/send : en-têtes du LPS non relayés",
        "Le service ne reçoit ni le Cookie ni l'Authorization du LPS, seulement le jeton échangé par le proxy.",
        check_headers_isolated,
    ),
    CheckDef(
        "send.query",
        "/send : chaîne de requête relayée",
        "La chaîne de requête de /send parvient au service telle que le LPS l'a écrite.",
        check_query,
    ),
    CheckDef(
        "send.upstream_failures",
        "/send : pannes du service signalées",
        "Service arrêté → 503, sans réponse → 504, réponse non HTTP → 502, avec {code, message} (jamais 500).",
        check_upstream_failures,
        mandatory=False,
    ),
    CheckDef(
        "connect.session_state",
        "session_state = session PSC",
        "Le session_state renvoyé est celui de la session PSC créée par le bac à sable pour cet utilisateur et ce client.",
        check_session_state,
    ),
    CheckDef(
        "api.cnf_binding",
        "Jeton API lié au certificat du clientId",
        "Le jeton API utilisé par le proxy est lié (cnf x5t#S256) au certificat présenté, celui du clientId.",
        check_cnf_binding,
    ),
    CheckDef(
        "disconnect",
        "Déconnexion",
        "DELETE /disconnect → 200 et cookie effacé ; /send ensuite → 401 ; seconde déconnexion → 401.",
        check_disconnect,
    ),
    CheckDef(
        "disconnect.psc_session",
        "Fin de la session PSC",
        "Après la déconnexion, la session PSC est terminée au bac à sable (end-session avec id_token_hint).",
        check_psc_session_ended,
    ),
    CheckDef(
        "disconnect.api_tokens_revoked",
        "Jetons API révoqués à la déconnexion",
        "Après /disconnect, les jetons API obtenus pour la session sont révoqués auprès du serveur d'autorisation.",
        check_api_tokens_revoked,
    ),
    CheckDef(
        "connect.denied",
        "Refus sur l'e-CPS",
        "L'utilisateur refuse sur l'e-CPS → statut d'échec, aucune session.",
        check_denied,
    ),
    CheckDef(
        "connect.psc_unavailable",
        "PSC indisponible",
        "Bac à sable PSC mis en panne par l'outil : /connect → 503 avec {code, message} (jamais 500), sans session ; "
        "panne levée : /connect → 200.",
        check_psc_unavailable,
    ),
    CheckDef(
        "connect.no_answer",
        "e-CPS sans réponse",
        "L'utilisateur ne répond jamais → statut d'échec à l'expiration de la demande CIBA, aucune session.",
        check_no_answer,
        slow=True,
    ),
    CheckDef(
        "traces.access",
        "Traces : accès protégé",
        "GET /traces sans authentification → 401/403 (sauf mode conformité déclaré par l'opérateur).",
        check_trace_access,
    ),
    CheckDef(
        "traces.fields",
        "Traces : présence et champs",
        "CONNECT_SUCCESS, CONNECT_REPLAY, SEND, DISCONNECT et CONNECT_FAILURE existent avec les champs requis par leur type.",
        check_trace_fields,
    ),
    CheckDef(
        "traces.api_request",
        "Traces : apiRequest",
        "apiRequest {nomApiPsc, methode, path} présent sur SEND et absent de tout autre type.",
        check_trace_api_request,
    ),
    CheckDef(
        "traces.dn",
        "Traces : DN du certificat",
        "dn = DN du certificat du clientId sur les traces d'un client mTLS.",
        check_trace_dn,
    ),
    CheckDef(
        "traces.ip_address",
        "Traces : adresse IP non falsifiable",
        "ipAddress ne reprend pas un X-Forwarded-For envoyé par un appelant qui n'est pas un relais de confiance.",
        check_trace_ip,
    ),
    CheckDef(
        "traces.window",
        "Traces : filtrage par fenêtre de temps",
        "GET /traces?start=&end= ne renvoie que les traces de la fenêtre.",
        check_trace_window,
    ),
    CheckDef(
        "session.id_random",
        "Identifiants de session imprévisibles",
        "Sur un échantillon, proxy_session_id porte ≥ 122 bits aléatoires : pas de bits figés, de voisins ni de suite.",
        check_id_random,
    ),
    CheckDef(
        "session.idle_timeout",
        "Expiration par inactivité (délai du proxy)",
        "Avec le délai court déclaré par l'opérateur : session vivante à mi-délai, /send → 401 après le délai.",
        check_idle_timeout,
        slow=True,
        mandatory=False,
    ),
    CheckDef(
        "session.absolute_timeout",
        "Durée de vie absolue de la session",
        "Avec la durée courte déclarée par l'opérateur : une session tenue active est close au-delà → 401.",
        check_absolute_timeout,
        slow=True,
        mandatory=False,
    ),
    CheckDef(
        "beyond.refresh",
        "Au-delà d'ANS : rafraîchissement du jeton PSC",
        "Le jeton d'accès PSC expiré en cours de session est rafraîchi : /send réussit avec la même session PSC.",
        check_refresh,
        slow=True,
    ),
    CheckDef(
        "beyond.idle_expiry",
        "Au-delà d'ANS : expiration par inactivité",
        "La session PSC expirée par inactivité termine la session du proxy : /send → 401.",
        check_idle,
        slow=True,
    ),
    CheckDef(
        "beyond.auth_code",
        "Au-delà d'ANS : flux authorization code",
        "Si proposé : redirection vers PSC avec PKCE S256, state et nonce ; callback au state forgé refusé.",
        check_auth_code,
    ),
    CheckDef(
        "tls.legacy_refused",
        "TLS 1.0/1.1 refusés",
        "Le proxy refuse TLS 1.0 et 1.1 (sonde capable de les parler) et accepte TLS 1.2.",
        check_tls_legacy,
    ),
    CheckDef(
        "exposure.cookies",
        "Cookies de session Secure et HttpOnly",
        "Chaque Set-Cookie proxy_session_id reçu pendant la campagne (CIBA, web, effacement) porte Secure et HttpOnly.",
        check_cookie_attributes,
    ),
    CheckDef(
        "exposure.psc_tokens",
        "Aucun jeton PSC remis au LPS",
        "Aucune réponse du proxy ne contient de jeton d'accès, d'ID ou de rafraîchissement PSC.",
        check_psc_tokens,
    ),
)
