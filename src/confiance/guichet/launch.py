"""`confiance up` integration: the guichet on HTTP port ``ctx.ports["guichet"]`` (8000)."""

from __future__ import annotations

from confiance.core.launch import LaunchContext, ServiceLaunch, confiance_argv


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def prepare(ctx: LaunchContext) -> ServiceLaunch:
    """Write ``guichet/guichet.toml`` and publish url, trust_list and jwks in endpoints.json."""
    base = ctx.state_dir / "guichet"
    base.mkdir(parents=True, exist_ok=True)
    url = ctx.url("guichet", scheme="http")
    options = ctx.options.get("guichet", {})
    lines = [
        f"host = {_toml_str(ctx.host)}",
        f"port = {ctx.ports['guichet']}",
        f"public_url = {_toml_str(url)}",
        f"data_dir = {_toml_str(str(base))}",
        f"pki_dir = {_toml_str(str(ctx.pki.dir))}",
        f"demo = {'true' if options.get('demo', True) else 'false'}",
    ]
    conformity = ctx.endpoints.get("conformity", {})
    jwks_path = conformity.get("jwks_path") if isinstance(conformity, dict) else None
    if jwks_path:
        lines.append(f"conformity_jwks_file = {_toml_str(str(jwks_path))}")
    cfg_path = base / "guichet.toml"
    cfg_path.write_text("\n".join(lines) + "\n")
    ctx.service("guichet").update(
        {
            "url": url,
            "trust_list": f"{url}/trust-list",
            "jwks": f"{url}/trust-list/jwks",
            "openapi": f"{url}/openapi.json",
        }
    )
    return ServiceLaunch("guichet", confiance_argv("guichet", "serve", "--config", str(cfg_path)), url, f"{url}/health")
