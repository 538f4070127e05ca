"""`confiance up` integration: write the proxy config and publish how to use it.

The proxy holds the credentials of the demo LPS clients the PSC launch published (their
ORG AUTH_CLI certificate, or their secret) and relays to every API service the API
launch published. Traces go to SQLite in the state dir; the admin token that protects
``/traces`` is generated once and kept, and published in ``endpoints.json`` under
``services.proxy.traces_auth``.
"""

from __future__ import annotations

import secrets
import tomllib
from typing import Any

from confiance.core.config import dump_toml
from confiance.core.launch import LaunchContext, ServiceLaunch, confiance_argv

SERVICE_KEYS = ("signsessiondata", "insi", "dmp")


def prepare(ctx: LaunchContext) -> ServiceLaunch:
    state = ctx.state_dir / "proxy"
    state.mkdir(parents=True, exist_ok=True)
    path = ctx.state_dir / "proxy.toml"
    previous: dict[str, Any] = tomllib.loads(path.read_text()) if path.exists() else {}
    opts: dict[str, Any] = dict(ctx.options.get("proxy", {}))
    admin_token = previous.get("traces", {}).get("admin_token") or secrets.token_urlsafe(32)
    psc = ctx.service("psc")
    if not psc.get("discovery"):
        raise RuntimeError("le proxy a besoin du bac à sable PSC (composant psc avant proxy)")
    base = ctx.url("proxy")
    clients = []
    for lps in ctx.endpoints.get("lps_clients", []):
        if lps.get("cert"):
            clients.append(
                {
                    "client_id": lps["client_id"],
                    "auth": "mtls",
                    "cert": lps["cert"],
                    "key": lps["key"],
                    # where the browser lands after a web login: the editor's web LPS in development
                    # (nothing listens there by default; the session cookie is set before the redirect)
                    "web_redirect_url": opts.get("web_lps_url", "https://127.0.0.1:8080/"),
                }
            )
        elif lps.get("secret"):
            clients.append({"client_id": lps["client_id"], "auth": "secret", "secret": lps["secret"]})
    if not clients:
        raise RuntimeError("aucun client LPS publié par le bac à sable PSC")
    api_as = ctx.endpoints.get("services", {}).get("api_as", {})
    services: dict[str, Any] = {}
    for name in SERVICE_KEYS:
        svc = ctx.endpoints.get("services", {}).get(name)
        if not svc or not svc.get("url"):
            continue
        services[name] = {
            "base_url": svc["url"],
            "token_endpoint": svc.get("token_endpoint") or api_as.get("token_endpoint"),
            "revocation_endpoint": api_as.get("revocation_endpoint"),
            "scope": " ".join(svc.get("scopes", [name])),
            "audience": svc.get("audience"),
        }
    cfg: dict[str, Any] = {
        "lps_clients_file": str(state / "lps-clients.json"),
        "server": {
            "host": ctx.host,
            "port": ctx.ports["proxy"],
            "cert": ctx.server_cert.cert_path,
            "key": ctx.server_cert.key_path,
            "public_url": base,
            "proxy_id": "confiance-proxy-demo",
            "trusted_proxies": opts.get("trusted_proxies", []),
        },
        "outbound": {"ca_bundle": str(ctx.ca_bundle)},
        "psc": {"discovery_url": psc["discovery"]},
        "lps_clients": clients,
        "services": services,
        "sessions": {
            "store": opts.get("session_store", "memory"),
            **({"url": opts["session_url"]} if opts.get("session_url") else {}),
        },
        "traces": {
            "url": opts.get("traces_url", f"sqlite:///{state / 'traces.db'}"),
            "admin_token": admin_token,
            "conformity_mode": bool(opts.get("conformity_mode", False)),
            # Signed checkpoints (docs/proxy.md): required with PostgreSQL, harmless otherwise.
            "checkpoint_key": str(state / "trace-checkpoint-key.json"),
            "witness": str(opts.get("traces_witness", state / "trace-witness.jsonl")),
        },
    }
    path.write_text(dump_toml(cfg))
    path.chmod(0o600)
    ctx.service("proxy").update(
        {
            "url": base,
            "connect": f"{base}/connect",
            "disconnect": f"{base}/disconnect",
            "send": f"{base}/send/{{service}}/{{path}}",
            "traces": f"{base}/traces",
            "traces_auth": {
                "type": "bearer",
                "header": "Authorization",
                "value": f"Bearer {admin_token}",
                "token": admin_token,
                "conformity_mode": cfg["traces"]["conformity_mode"],
            },
            "authorize": f"{base}/authorize?clientId={{clientId}}",
            "metrics": f"{base}/metrics",
            "health": f"{base}/healthz",
            "ready": f"{base}/readyz",
            "cookie": "proxy_session_id",
            "lps_client_ids": [c["client_id"] for c in clients],
            "services": sorted(services),
            "config": str(path),
        }
    )
    return ServiceLaunch(
        name="proxy",
        argv=confiance_argv("proxy", "serve", "--config", str(path)),
        url=base,
        health_url=f"{base}/healthz",
    )
