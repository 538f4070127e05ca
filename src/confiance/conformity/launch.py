"""`confiance up` integration: create the tool's signing key and publish its JWKS.

The conformity tool is not a service (nothing to start); ``prepare`` only makes sure the
key exists in the state directory and puts the public JWKS in ``endpoints.json`` so the
guichet can verify deposited reports.
"""

from __future__ import annotations

from confiance.core.launch import LaunchContext, ServiceLaunch

from .report import key_paths, load_keys


def prepare(ctx: LaunchContext) -> ServiceLaunch | None:
    store = load_keys(ctx.state_dir)
    _keys, jwks_path = key_paths(ctx.state_dir)
    ctx.endpoints["conformity"] = {"jwks": store.jwks(), "jwks_path": str(jwks_path)}
    return None
