"""The shared error family, OAuth error classes, base64url and atomic writes."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest

from confiance.api.domain import AccessDenied
from confiance.core import oauth_errors as oe
from confiance.core.config import ConfigError
from confiance.core.encoding import b64url, b64url_decode
from confiance.core.errors import ApiError, ConfianceError
from confiance.core.files import write_atomic
from confiance.core.jose import TokenError
from confiance.pki import PkiError


@pytest.mark.parametrize(
    "exc",
    [
        ConfigError("clé x invalide"),
        TokenError("jeton expiré"),
        PkiError("certificat inconnu"),
        ApiError(404, "not_found", "introuvable"),
        oe.InvalidGrantError("refresh_token invalide"),
        AccessDenied("jeton révoqué"),
    ],
)
def test_every_component_error_is_a_confiance_error_with_code_and_message(exc: ConfianceError) -> None:
    assert isinstance(exc, ConfianceError)
    assert exc.code and exc.code != "error"
    assert exc.message and str(exc) == exc.message


def test_errors_that_were_value_errors_stay_value_errors() -> None:
    for exc in (ConfigError("x"), TokenError("x"), PkiError("x")):
        assert isinstance(exc, ValueError)


def test_api_error_renders_code_message_and_extra() -> None:
    r = ApiError(409, "conflict", "déjà là", field="name").response()
    assert r.status_code == 409
    assert json.loads(bytes(r.body)) == {"code": "conflict", "message": "déjà là", "field": "name"}


@pytest.mark.parametrize(
    ("cls", "code", "status"),
    [
        (oe.InvalidRequestError, "invalid_request", 400),
        (oe.InvalidClientError, "invalid_client", 401),
        (oe.InvalidGrantError, "invalid_grant", 400),
        (oe.UnauthorizedClientError, "unauthorized_client", 400),
        (oe.UnsupportedGrantTypeError, "unsupported_grant_type", 400),
        (oe.InvalidScopeError, "invalid_scope", 400),
        (oe.AccessDeniedError, "access_denied", 400),
        (oe.AuthorizationPendingError, "authorization_pending", 400),
        (oe.SlowDownError, "slow_down", 400),
        (oe.ExpiredTokenError, "expired_token", 400),
        (oe.InvalidTokenError, "invalid_token", 401),
        (oe.InsufficientScopeError, "insufficient_scope", 403),
        (oe.InvalidTargetError, "invalid_target", 400),
        (oe.UnsupportedTokenTypeError, "unsupported_token_type", 400),
        (oe.ServerError, "server_error", 500),
        (oe.TemporarilyUnavailableError, "temporarily_unavailable", 503),
        (oe.UnknownUserIdError, "unknown_user_id", 400),
        (oe.InvalidBindingMessageError, "invalid_binding_message", 400),
    ],
)
def test_one_class_per_rfc_code_with_its_status(cls: type[oe.OAuthError], code: str, status: int) -> None:
    exc = cls("pourquoi")
    assert (exc.error, exc.code, exc.status, exc.description) == (code, code, status, "pourquoi")
    assert oe.REGISTRY[code] is cls
    r = exc.response()
    assert r.status_code == status
    assert json.loads(bytes(r.body)) == {"error": code, "error_description": "pourquoi"}
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["pragma"] == "no-cache"


def test_status_override_and_headers() -> None:
    exc = oe.InvalidRequestError("trop gros", 413, {"Retry-After": "1"})
    r = exc.response(**{"WWW-Authenticate": "Basic"})
    assert r.status_code == 413
    assert r.headers["retry-after"] == "1"
    assert r.headers["www-authenticate"] == "Basic"
    assert r.headers["cache-control"] == "no-store"


def test_of_picks_the_registered_class_or_keeps_an_extension_code() -> None:
    exc = oe.OAuthError.of("slow_down", "doucement")
    assert type(exc) is oe.SlowDownError and exc.status == 400
    other = oe.OAuthError.of("vendor_specific", "autre", 409)
    assert type(other) is oe.OAuthError
    assert (other.error, other.code, other.status) == ("vendor_specific", "vendor_specific", 409)
    assert json.loads(bytes(other.response().body))["error"] == "vendor_specific"


def test_b64url_round_trip_without_padding() -> None:
    for data in (b"", b"a", b"ab", b"abc", bytes(range(256))):
        text = b64url(data)
        assert "=" not in text and "+" not in text and "/" not in text
        assert b64url_decode(text) == data
    assert b64url(b"\xfb\xff") == "-_8"


@pytest.mark.parametrize("bad", ["+_8", "/w", "a", "ab$c", "ab c"])
def test_b64url_decode_refuses_other_alphabets_and_lengths(bad: str) -> None:
    with pytest.raises(ValueError):
        b64url_decode(bad)


def test_write_atomic_replaces_content_with_mode_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "clients.json"
    target.write_text("old")
    write_atomic(target, "nouveau é")
    assert target.read_text(encoding="utf-8") == "nouveau é"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    write_atomic(target, b"secret", mode=0o600)
    assert target.read_bytes() == b"secret"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["clients.json"]


def test_write_atomic_failure_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "crl.pem"
    target.write_text("old")

    def boom(_src: str, _dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, "new")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["crl.pem"]


def test_concurrent_writers_never_share_a_temporary_file(tmp_path: Path) -> None:
    """Each writer's content lands whole: with one shared ``.tmp`` writers clobber each other."""
    target = tmp_path / "state.json"
    payloads = [json.dumps({"writer": i, "pad": "x" * 200_000}) for i in range(8)]
    errors: list[BaseException] = []
    start = threading.Barrier(len(payloads))

    def write(p: str) -> None:
        start.wait()
        try:
            for _ in range(5):
                write_atomic(target, p)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert target.read_text() in payloads
    assert os.listdir(tmp_path) == ["state.json"]


def test_bind_socket_names_the_busy_address() -> None:
    from confiance.core.server import BindError, bind_socket

    first = bind_socket("127.0.0.1", 0)
    try:
        port = first.getsockname()[1]
        with pytest.raises(BindError) as exc:
            bind_socket("127.0.0.1", port)
        assert str(exc.value) == f"impossible d'écouter sur 127.0.0.1:{port} : déjà utilisé"
        assert isinstance(exc.value, OSError) and isinstance(exc.value, ConfianceError)
        assert exc.value.code == "bind_failed"
    finally:
        first.close()


def test_endpoints_json_is_owner_only(tmp_path: Path) -> None:
    from confiance.core import endpoints

    path = endpoints.write(tmp_path, {"services": {"psc": {"admin_token": "secret"}}})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert endpoints.read(tmp_path)["services"]["psc"]["admin_token"] == "secret"


@pytest.mark.parametrize("content", ["{pas du json", '{"keys": [{"jwk": {"kty": "EC"}}]}', '{"clés": []}'])
def test_unreadable_keys_file_is_a_config_error_and_is_not_overwritten(tmp_path: Path, content: str) -> None:
    from confiance.core.jose import KeyStore

    path = tmp_path / "keys.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match="fichier de clés illisible"):
        KeyStore(path, algs=("ES256",))
    assert path.read_text() == content
