"""`confiance up` wiring, config validation errors, and `confiance proxy traces verify`."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from confiance.cli import app as cli_app
from confiance.core.config import ConfigError
from confiance.core.launch import DEFAULT_PORTS, LaunchContext
from confiance.pki import Pki
from confiance.proxy import config as proxy_config
from confiance.proxy.traces import TraceStore


def test_launch_writes_valid_config_and_endpoints(tmp_path: Path) -> None:
    pki = Pki.init(tmp_path / "pki")
    ctx = LaunchContext(
        state_dir=tmp_path,
        pki=pki,
        server_cert=pki.ensure_server("localhost"),
        ports=dict(DEFAULT_PORTS),
        endpoints={"services": {}, "lps_clients": [], "identities": []},
    )
    for mod in ("confiance.psc.launch", "confiance.api.launch", "confiance.proxy.launch"):
        launch = importlib.import_module(mod).prepare(ctx)
    assert launch.argv[-4:] == ["proxy", "serve", "--config", str(tmp_path / "proxy.toml")]
    assert launch.url == "https://127.0.0.1:8443"
    cfg = proxy_config.load(tmp_path / "proxy.toml")
    assert set(cfg.services) == {"signsessiondata", "insi", "dmp"}
    assert {c.auth for c in cfg.lps_clients} == {"mtls", "secret"}
    proxy = ctx.endpoints["services"]["proxy"]
    assert proxy["url"] == "https://127.0.0.1:8443"
    assert proxy["traces_auth"]["value"] == f"Bearer {cfg.traces.admin_token}"
    # A second `up` keeps the admin token (tools keep working across restarts).
    importlib.import_module("confiance.proxy.launch").prepare(ctx)
    assert proxy_config.load(tmp_path / "proxy.toml").traces.admin_token == cfg.traces.admin_token


BASE = """
[server]
cert = "{cert}"
key = "{key}"
[outbound]
ca_bundle = "{ca}"
[psc]
discovery_url = "https://127.0.0.1:9443/auth/realms/esante-wallet/.well-known/openid-configuration"
[[lps_clients]]
client_id = "lps"
auth = "secret"
secret = "s3cret-s3cret"
"""


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ("[sessions]\nstroe = 'memory'\n", "sessions.stroe"),
        ("[sessions]\nstore = 'redis'\n", "sessions"),
        ("[traces]\nurl = 'mysql://x'\n", "traces.url"),
        ("[services.bad]\nbase_url = 'http://x'\ntoken_endpoint = 'https://as/token'\n", "services.bad.base_url"),
        ("[services.ok]\nbase_url = 'https://x@evil'\ntoken_endpoint = 'https://as/token'\n", "services.ok.base_url"),
        ("[server.extra]\n", "server.extra"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, server_cert, pki, extra: str, key: str) -> None:
    p = tmp_path / "p.toml"
    p.write_text(BASE.format(cert=server_cert.cert_path, key=server_cert.key_path, ca=pki.ca_bundle) + extra)
    with pytest.raises(ConfigError) as ei:
        proxy_config.load(p)
    assert key in str(ei.value)


def test_config_missing_file_named(tmp_path: Path, server_cert, pki) -> None:
    p = tmp_path / "p.toml"
    p.write_text(BASE.format(cert="/nonexistent.pem", key=server_cert.key_path, ca=pki.ca_bundle))
    with pytest.raises(ConfigError) as ei:
        proxy_config.load(p)
    assert "server.cert" in str(ei.value)
    r = CliRunner().invoke(cli_app, ["proxy", "check-config", "--config", str(p)])
    assert r.exit_code == 2 and "server.cert" in r.output


def test_trace_deletions_detected(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/t.db"
    store = TraceStore(url)
    for i in range(4):  # one block per append
        store.append([(1000.0 + i, {"type": "SEND", "n": i})])
    assert store.verify().ok
    with store.engine.begin() as c:
        c.execute(sa.text("DELETE FROM proxy_trace_blocks WHERE seq = 4"))  # the newest one
    assert not store.verify().ok
    store2 = TraceStore(f"sqlite:///{tmp_path}/t2.db")
    for i in range(4):
        store2.append([(1000.0 + i, {"type": "SEND", "n": i})])
    with store2.engine.begin() as c:
        c.execute(sa.text("DELETE FROM proxy_trace_blocks WHERE seq = 2"))  # one in the middle
    check = store2.verify()
    assert not check.ok and check.first_bad == 1
    store3 = TraceStore(f"sqlite:///{tmp_path}/t3.db")
    store3.append([(1000.0, {"type": "SEND", "n": 0}), (1001.0, {"type": "SEND", "n": 1})])
    with store3.engine.begin() as c:  # a change that leaves the JSON equivalent is still caught
        c.execute(sa.text("UPDATE proxy_trace_blocks SET body = replace(body, ',', ', ')"))
    assert not store3.verify().ok


def test_workers_need_a_shared_store(tmp_path: Path, server_cert, pki) -> None:
    p = tmp_path / "p.toml"
    text = BASE.format(cert=server_cert.cert_path, key=server_cert.key_path, ca=pki.ca_bundle)
    p.write_text(text.replace("[server]\n", "[server]\nworkers = 2\n"))
    with pytest.raises(ConfigError) as ei:
        proxy_config.load(p)
    assert "workers" in str(ei.value)
    p.write_text(
        text.replace("[server]\n", "[server]\nworkers = 2\n")
        + f"[sessions]\nstore = 'sqlite'\nurl = 'sqlite:///{tmp_path}/s.db'\n"
    )
    assert proxy_config.load(p).server.workers == 2
