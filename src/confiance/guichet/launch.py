"""`confiance up` integration: the guichet on HTTP port ``ctx.ports["guichet"]`` (8000)."""

from __future__ import annotations

from confiance.core.config import dump_toml
from confiance.core.launch import LaunchContext, ServiceLaunch, confiance_argv


def prepare(ctx: LaunchContext) -> ServiceLaunch:
    """Write ``guichet/guichet.toml`` and publish url, trust_list and jwks in endpoints.json."""
    base = ctx.state_dir / "guichet"
    base.mkdir(parents=True, exist_ok=True)
    url = ctx.url("guichet", scheme="http")
    options = ctx.options.get("guichet", {})
    conformity = ctx.endpoints.get("conformity", {})
    jwks_path = conformity.get("jwks_path") if isinstance(conformity, dict) else None
    cfg = {
        "host": ctx.host,
        "port": ctx.ports["guichet"],
        "public_url": url,
        "data_dir": str(base),
        "pki_dir": str(ctx.pki.dir),
        "demo": bool(options.get("demo", True)),
        "conformity_jwks_file": str(jwks_path) if jwks_path else None,
    }
    cfg_path = base / "guichet.toml"
    cfg_path.write_text(dump_toml(cfg))
    ctx.service("guichet").update(
        {
            "url": url,
            "trust_list": f"{url}/trust-list",
            "jwks": f"{url}/trust-list/jwks",
            "openapi": f"{url}/openapi.json",
        }
    )
    return ServiceLaunch("guichet", confiance_argv("guichet", "serve", "--config", str(cfg_path)), url, f"{url}/health")
