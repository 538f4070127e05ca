"""The clients file the API AS and the proxy share: format, errors, atomic save, polling."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from confiance.core.clients_file import ClientsFile, load_clients, merge_clients, save_clients
from confiance.core.config import ConfigError, StrictModel


class Client(StrictModel):
    client_id: str
    scopes: list[str] = Field(default_factory=list)
    note: str | None = None


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_missing_file_means_no_clients(tmp_path: Path) -> None:
    assert load_clients(tmp_path / "absent.json", Client) == []


def test_save_then_load_round_trips_owner_only_without_nones(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "clients.json"
    save_clients(path, [Client(client_id="a", scopes=["dmp"]), Client(client_id="b", note="x")])
    data = json.loads(path.read_text())
    assert data == {"clients": [{"client_id": "a", "scopes": ["dmp"]}, {"client_id": "b", "scopes": [], "note": "x"}]}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [c.client_id for c in load_clients(path, Client)] == ["a", "b"]


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ("{not json", "illisible"),
        ("[]", "objet JSON"),
        ('{"clients": [{"client_id": "a"}], "client": []}', "client:"),
        ('{"clients": [{"client_id": "a"}, {"scopes": []}]}', "clients.1.client_id"),
        ('{"clients": [{"client_id": "a", "scope": ["x"]}]}', "clients.0.scope"),
    ],
)
def test_a_bad_file_is_a_config_error_naming_what_is_wrong(tmp_path: Path, content: str, named: str) -> None:
    path = tmp_path / "clients.json"
    path.write_text(content)
    with pytest.raises(ConfigError) as exc:
        load_clients(path, Client)
    assert named in str(exc.value)
    assert str(path) in str(exc.value)


def test_merge_lets_the_caller_choose_who_wins() -> None:
    conf = [Client(client_id="a", note="conf"), Client(client_id="b")]
    reg = [Client(client_id="a", note="reg"), Client(client_id="c")]

    def key(c: Client) -> str:
        return c.client_id

    api_like = merge_clients(conf, reg, key=key, configured_wins=False)
    assert {c.client_id: c.note for c in api_like} == {"a": "reg", "b": None, "c": None}
    proxy_like = merge_clients(conf, reg, key=key, configured_wins=True)
    assert {c.client_id: c.note for c in proxy_like} == {"a": "conf", "b": None, "c": None}


def test_poll_rereads_only_after_the_interval_and_only_when_changed(tmp_path: Path) -> None:
    path = tmp_path / "clients.json"
    clock = Clock()
    watched = ClientsFile(path, Client, check_interval=1.0, clock=clock)
    assert watched.load() == []
    assert watched.poll() is None  # unchanged (still absent)
    save_clients(path, [Client(client_id="a")])
    clock.now += 0.5
    assert watched.poll() is None  # within the interval: not even looked at
    clock.now += 0.6
    got = watched.poll()
    assert got is not None and [c.client_id for c in got] == ["a"]
    clock.now += 2
    assert watched.poll() is None  # unchanged since the last read
    os.unlink(path)
    clock.now += 2
    assert watched.poll() == []  # removed: no registered clients any more


def test_poll_keeps_the_previous_clients_on_a_bad_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "clients.json"
    clock = Clock()
    save_clients(path, [Client(client_id="a")])
    watched = ClientsFile(path, Client, clock=clock)
    assert [c.client_id for c in watched.load()] == ["a"]
    path.write_text('{"clients": [{"oops": 1}]}')
    clock.now += 2
    assert watched.poll() is None
    assert "clients.0.client_id" in caplog.text
    watched.save([Client(client_id="b")])
    clock.now += 2
    got = watched.poll()
    assert got is not None and [c.client_id for c in got] == ["b"]


def test_any_pydantic_model_works(tmp_path: Path) -> None:
    class Loose(BaseModel):
        name: str

    path = tmp_path / "c.json"
    save_clients(path, [Loose(name="x")])
    assert load_clients(path, Loose) == [Loose(name="x")]


def test_last_error_is_kept_for_readiness_until_a_good_read(tmp_path: Path) -> None:
    path = tmp_path / "clients.json"
    clock = Clock()
    watched = ClientsFile(path, Client, clock=clock)
    watched.load()
    assert watched.last_error is None
    path.write_text("{oops")
    clock.now += 2
    watched.poll()
    assert watched.last_error is not None and str(path) in watched.last_error
    save_clients(path, [Client(client_id="a")])
    clock.now += 2
    watched.poll()
    assert watched.last_error is None
