"""`confiance up` integration: write the sandbox config and publish its endpoints.

Registers two demo LPS clients, as an editor would get from ANS: an "Espace de Confiance"
client authenticated by its ORG AUTH_CLI certificate (mTLS mandatory) and a "Communauté"
client with a secret. Secrets and the admin token are generated once and kept in the
config file, so restarting `up` keeps every credential published in endpoints.json valid.
"""

from __future__ import annotations

import secrets
import tomllib
from pathlib import Path
from typing import Any

from confiance.core.config import dump_toml
from confiance.core.files import write_atomic
from confiance.core.launch import LaunchContext, ServiceLaunch, confiance_argv
from confiance.pki import normalize_dn

from .app import OIDC, REALM_PATH
from .identities import load_identities_file, seeded_identities

MTLS_CLIENT_ID = "lps-demo-mtls"
SECRET_CLIENT_ID = "lps-demo-secret"
DEMO_STRUCT_ID = "3" + "90000000001017"  # "3" + a fictitious SIRET (valid Luhn key)


def prepare(ctx: LaunchContext) -> ServiceLaunch:
    state = ctx.state_dir / "psc"
    state.mkdir(parents=True, exist_ok=True)
    path = ctx.state_dir / "psc.toml"
    previous: dict[str, Any] = tomllib.loads(path.read_text()) if path.exists() else {}
    opts: dict[str, Any] = dict(ctx.options.get("psc", {}))
    old_clients = {c["client_id"]: c for c in previous.get("clients", [])}
    admin_token = previous.get("admin_token") or secrets.token_urlsafe(32)
    secret = old_clients.get(SECRET_CLIENT_ID, {}).get("secret") or secrets.token_urlsafe(32)
    mtls = ctx.pki.ensure_client("psc-demo-lps", DEMO_STRUCT_ID, "lps-demo")
    base = ctx.url("psc")
    cfg: dict[str, Any] = {
        "host": ctx.host,
        "port": ctx.ports["psc"],
        "base_url": base,
        "admin_token": admin_token,
        "keys_path": str(state / "keys.json"),
        "state_file": str(state / "state.json"),
        "signing_alg": opts.get("signing_alg", "RS256"),
        # SQLite store next to state.json (sessions survive a restart of `up`); more workers on request
        "workers": int(opts.get("workers", 1)),
        "tls": {
            "cert": ctx.server_cert.cert_path,
            "key": ctx.server_cert.key_path,
            "ca_bundle": str(ctx.ca_bundle),
            "crl": str(ctx.crl),
        },
        "lifetimes": opts.get("lifetimes", {}),
        "ecps_default": opts.get("ecps_default", {"mode": "approve", "delay_ms": 1000}),
        "clients": [
            {
                "client_id": MTLS_CLIENT_ID,
                "name": "LPS de démonstration (Espace de Confiance, mTLS)",
                "tls_client_auth_subject_dn": mtls.subject_dn,
                "espace_de_confiance": True,
                # the proxy `up` starts offers the web (code + PKCE) flow for this LPS
                "redirect_uris": [f"{ctx.url('proxy')}/callback"] if "proxy" in ctx.ports else [],
            },
            {
                "client_id": SECRET_CLIENT_ID,
                "name": "LPS de démonstration (secret)",
                "secret": secret,
                "redirect_uris": ["http://127.0.0.1:8080/callback", "https://127.0.0.1:8080/callback"],
                "post_logout_redirect_uris": ["http://127.0.0.1:8080/"],
            },
        ],
    }
    if opts.get("identities_file"):
        cfg["identities_file"] = str(opts["identities_file"])
    cfg["trust_list"] = ctx.trust_list_section(opts, state / "trust-list.json")
    write_atomic(path, dump_toml(cfg), mode=0o600)  # holds the admin token and client secrets

    issuer = base + REALM_PATH
    svc = ctx.service("psc")
    svc.update(
        {
            "url": base,
            "issuer": issuer,
            "discovery": f"{issuer}/.well-known/openid-configuration",
            "token_endpoint": f"{base}{OIDC}/token",
            "ciba_endpoint": f"{base}{OIDC}/ext/ciba/auth",
            "introspection_endpoint": f"{base}{OIDC}/token/introspect",
            "userinfo_endpoint": f"{base}{OIDC}/userinfo",
            "revocation_endpoint": f"{base}{OIDC}/revoke",
            "authorization_endpoint": f"{base}{OIDC}/auth",
            "jwks_uri": f"{base}{OIDC}/certs",
            "end_session_endpoint": f"{base}{OIDC}/logout",
            "admin_token": admin_token,
            "admin_url": f"{base}/sandbox/admin",
            "ecps_url": f"{base}/sandbox/ecps",
            "config": str(path),
            "trust_list_refresh_seconds": (cfg["trust_list"] or {}).get("refresh_seconds"),
        }
    )
    ctx.endpoints.setdefault("lps_clients", []).extend(
        [
            {
                "client_id": MTLS_CLIENT_ID,
                "auth": "tls_client_auth",
                "cert": mtls.cert_path,
                "key": mtls.key_path,
                "secret": None,
                "dn": normalize_dn(mtls.subject_dn),
                "espace_de_confiance": True,
            },
            {
                "client_id": SECRET_CLIENT_ID,
                "auth": "client_secret",
                "cert": None,
                "key": None,
                "secret": secret,
                "dn": None,
                "espace_de_confiance": False,
            },
        ]
    )
    idents = seeded_identities()
    if opts.get("identities_file"):
        idents += load_identities_file(Path(opts["identities_file"]))
    ctx.endpoints.setdefault("identities", []).extend(i.summary() for i in idents)
    return ServiceLaunch(
        name="psc",
        argv=confiance_argv("psc", "serve", "--config", str(path)),
        url=base,
        health_url=f"{issuer}/.well-known/openid-configuration",
    )
