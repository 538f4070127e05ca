"""`confiance up` integration: write the API config and publish its endpoints.

Registers as API clients the demo LPS certificates the PSC launch published (the proxy
presents the LPS's certificate to the AS) plus a "proxy" client certificate issued here.
The AS introspects PSC tokens with its own mTLS client, which it registers at the PSC
sandbox through the sandbox admin API on first use.
"""

from __future__ import annotations

import secrets
import tomllib
from pathlib import Path
from typing import Any

from cryptography import x509

from confiance.core.config import dump_toml
from confiance.core.launch import LaunchContext, ServiceLaunch, confiance_argv

from .config import SERVICE_NAMES

DEMO_STRUCT_ID = "3" + "44306184100047"  # "3" + a fictitious SIRET
PROXY_CLIENT_ID = "proxy"
AS_PSC_CLIENT_ID = "api-psc-as"


def prepare(ctx: LaunchContext) -> ServiceLaunch:
    state = ctx.state_dir / "api"
    state.mkdir(parents=True, exist_ok=True)
    psc = ctx.service("psc")
    if not psc.get("issuer"):
        raise RuntimeError("l'API PSC a besoin du bac à sable PSC (composant psc avant api)")
    opts: dict[str, Any] = dict(ctx.options.get("api", {}))
    proxy = ctx.pki.ensure_client("api-demo-proxy", DEMO_STRUCT_ID, "proxy-esante-demo")
    as_psc = ctx.pki.ensure_client("api-as-psc", DEMO_STRUCT_ID, "api-psc-introspection")
    scopes = list(SERVICE_NAMES)
    clients: list[dict[str, Any]] = [
        {"client_id": PROXY_CLIENT_ID, "dn": proxy.subject_dn, "scopes": scopes, "description": "Proxy e-Santé de démo"}
    ]
    published = [{"client_id": PROXY_CLIENT_ID, "dn": proxy.subject_dn, "cert": proxy.cert_path, "key": proxy.key_path}]
    for lps in ctx.endpoints.get("lps_clients", []):
        if not lps.get("cert"):
            continue  # a secret-only PSC client has no certificate to bind API tokens to
        dn = lps.get("dn") or x509.load_pem_x509_certificate(Path(lps["cert"]).read_bytes()).subject.rfc4514_string()
        clients.append({"client_id": lps["client_id"], "dn": dn, "scopes": scopes, "description": "LPS de démo"})
        published.append({"client_id": lps["client_id"], "dn": dn, "cert": lps["cert"], "key": lps["key"]})
    as_url, rs_url = ctx.url("api_as"), ctx.url("api_rs")
    # kept across restarts of `up`, like the other generated credentials
    previous = tomllib.loads((ctx.state_dir / "api.toml").read_text()) if (ctx.state_dir / "api.toml").exists() else {}
    rs_admin_token = previous.get("resource_server", {}).get("admin_token") or secrets.token_urlsafe(32)
    cfg: dict[str, Any] = {
        "tls": {
            "cert": ctx.server_cert.cert_path,
            "key": ctx.server_cert.key_path,
            "ca_bundle": str(ctx.ca_bundle),
            "crl": str(ctx.crl),
        },
        "psc": {
            "issuer": psc["issuer"],
            "mode": opts.get("psc_mode", "introspection"),
            "introspection_endpoint": psc.get("introspection_endpoint"),
            "jwks_uri": psc.get("jwks_uri"),
            "client_id": AS_PSC_CLIENT_ID,
            "client_cert": as_psc.cert_path,
            "client_key": as_psc.key_path,
            "client_dn": as_psc.subject_dn,
            "ca_bundle": str(ctx.ca_bundle),
            "sandbox_admin_url": psc.get("admin_url"),
            "sandbox_admin_token": psc.get("admin_token"),
        },
        "authorization_server": {
            "host": ctx.host,
            "port": ctx.ports["api_as"],
            "issuer": as_url,
            "token_alg": opts.get("token_alg", "ES256"),
            "token_lifetime": int(opts.get("token_lifetime", 4 * 3600)),
            "refresh_tokens": bool(opts.get("refresh_tokens", False)),
            "keys_file": str(state / "as-keys.json"),
            "clients_file": str(state / "clients.json"),
            "revocations_file": str(state / "revocations.jsonl"),
        },
        "resource_server": {
            "host": ctx.host,
            "port": ctx.ports["api_rs"],
            "base_url": rs_url,
            "keys_file": str(state / "rs-keys.json"),
            "access_log": str(state / "access-log.jsonl"),
            "admin_token": rs_admin_token,
        },
        "clients": clients,
        # Trust-space mode for the clients onboarded through the guichet (`clients add
        # --trust-list-required`); the ready-made demo clients above stay usable without it.
        "trust_list": ctx.trust_list_section(opts, state / "trust-list.json"),
    }
    path = ctx.state_dir / "api.toml"
    path.write_text(dump_toml(cfg))
    path.chmod(0o600)

    ctx.service("api_as").update(
        {
            "url": as_url,
            "issuer": as_url,
            "token_endpoint": f"{as_url}/token",
            "introspection_endpoint": f"{as_url}/introspect",
            "revocation_endpoint": f"{as_url}/revoke",
            "jwks_uri": f"{as_url}/jwks",
            "metadata": f"{as_url}/.well-known/oauth-authorization-server",
            "clients": published,
            "config": str(path),
        }
    )
    for name in SERVICE_NAMES:
        url = rs_url if name == "signsessiondata" else f"{rs_url}/{name}"
        ctx.service(name).update(
            {
                "url": url,
                "audience": f"{rs_url}/{name}",
                "scopes": [name],
                "token_endpoint": f"{as_url}/token",
                "jwks_uri": f"{rs_url}/.well-known/jwks.json",
                "access_log_url": f"{rs_url}/admin/access-log",
                "admin_token": rs_admin_token,
            }
        )
    return ServiceLaunch(
        name="api",
        argv=confiance_argv("api", "serve", "--config", str(path)),
        url=as_url,
        health_url=f"{as_url}/health",
    )
