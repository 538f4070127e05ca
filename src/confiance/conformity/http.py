"""HTTP(S) exchanges that leave evidence.

Every request the tool sends to the proxy (or to a sandbox/API admin endpoint) goes through
:class:`Recorder`, which stores a redacted copy of the request and the response in the
current check's evidence. Cookies are set explicitly per request and the client's cookie
jar stores nothing, so no check can accidentally reuse another's session.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from http.cookiejar import CookieJar, DefaultCookiePolicy
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import urlsplit

import httpx

from .model import MAX_BODY_CHARS, Evidence, truncate

COOKIE_NAME = "proxy_session_id"
# Bodies are evidence, not archives: a proxy answering megabytes must not bloat the report.
MAX_JSON_CHARS = 20_000
_SHOWN_REQUEST_HEADERS = ("content-type", "cookie", "authorization", "x-forwarded-for")
_SHOWN_RESPONSE_HEADERS = ("content-type", "content-length", "set-cookie", "location", "www-authenticate")


def _mask_cookie_header(value: str) -> str:
    """Show cookie names and attributes, never values (a session id is a bearer credential)."""
    out = []
    for part in value.split(";"):
        name, sep, _val = part.strip().partition("=")
        low = name.lower()
        if sep and low not in ("path", "domain", "expires", "max-age", "samesite"):
            out.append(f"{name}={'«vide»' if not _val else '«masqué»'}")
        else:
            out.append(part.strip())
    return "; ".join(out)


def _body_text(content: bytes, content_type: str | None) -> Any:
    if not content:
        return ""
    text = content.decode("utf-8", errors="replace")
    if content_type and "json" in content_type and len(text) <= MAX_JSON_CHARS:
        try:
            return json.loads(text)
        except ValueError:
            pass
    return truncate(text, MAX_JSON_CHARS if content_type and "json" in content_type else MAX_BODY_CHARS)


def set_cookies(resp: httpx.Response) -> dict[str, SimpleCookie]:
    """Parsed ``Set-Cookie`` headers by cookie name (last one wins)."""
    out: dict[str, SimpleCookie] = {}
    for raw in resp.headers.get_list("set-cookie"):
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(raw)
        except CookieError:
            continue
        for name in jar:
            out[name] = jar
    return out


def session_cookie(resp: httpx.Response) -> str | None:
    """Value of the ``proxy_session_id`` cookie the response sets, if any (empty → None)."""
    jar = set_cookies(resp).get(COOKIE_NAME)
    if jar is None:
        return None
    return jar[COOKIE_NAME].value or None


def cookie_erased(resp: httpx.Response) -> bool:
    """True when the response deletes ``proxy_session_id`` (empty value, Max-Age≤0 or past Expires)."""
    jar = set_cookies(resp).get(COOKIE_NAME)
    if jar is None:
        return False
    morsel = jar[COOKIE_NAME]
    if not morsel.value:
        return True
    max_age = morsel["max-age"]
    if max_age:
        try:
            return int(max_age) <= 0
        except ValueError:
            return False
    expires = morsel["expires"]
    if expires:
        from email.utils import parsedate_to_datetime

        try:
            return parsedate_to_datetime(expires).timestamp() < time.time()
        except (TypeError, ValueError):
            return False
    return False


def no_cookie_jar() -> CookieJar:
    """A jar that stores nothing: every cookie the tool sends is set explicitly per request,
    so concurrent requests (session sampling) can never pick up another one's session."""
    return CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))


class Recorder:
    """Sends requests with one httpx client and writes each exchange into the evidence.

    With ``keep=True`` it also keeps every response (unredacted, in memory only) so that
    checks run at the end can inspect everything the LPS side received: cookie
    attributes, tokens that must never leave the proxy.
    """

    def __init__(self, client: httpx.Client, base_url: str, *, keep: bool = False) -> None:
        self.client = client
        self.base_url = base_url.rstrip("/")
        self.keep = keep
        self.seen: list[tuple[str, httpx.Response]] = []
        self._lock = threading.Lock()

    def request(
        self,
        ev: Evidence | None,
        method: str,
        path_or_url: str,
        *,
        label: str = "",
        json_body: Any = None,
        content: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        cookie: str | None = None,
        params: dict[str, str] | None = None,
        timeout: float | None = None,
        follow_redirects: bool = False,
    ) -> httpx.Response:
        url = path_or_url if path_or_url.startswith(("http://", "https://")) else self.base_url + path_or_url
        hdrs = dict(headers or {})
        if cookie is not None:
            hdrs["Cookie"] = f"{COOKIE_NAME}={cookie}"
        kwargs: dict[str, Any] = {"headers": hdrs, "params": params, "follow_redirects": follow_redirects}
        if timeout is not None:
            kwargs["timeout"] = timeout
        if json_body is not None:
            kwargs["json"] = json_body
        elif content is not None:
            kwargs["content"] = content
        started = time.monotonic()
        try:
            resp = self.client.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            if ev is not None:
                ev.exchange(
                    {
                        "label": label,
                        "request": {"method": method, "url": url},
                        "error": f"{type(exc).__name__}: {exc}",
                    }
                )
            raise
        if self.keep:
            with self._lock:
                self.seen.append((label or f"{method} {url}", resp))
        if ev is not None:
            ev.exchange(self._record(label, resp, int((time.monotonic() - started) * 1000)))
        return resp

    @staticmethod
    def _record(label: str, resp: httpx.Response, elapsed_ms: int) -> dict[str, Any]:
        req = resp.request
        req_headers = {k: v for k, v in req.headers.items() if k.lower() in _SHOWN_REQUEST_HEADERS}
        if "cookie" in req_headers:
            req_headers["cookie"] = _mask_cookie_header(req_headers["cookie"])
        resp_headers: dict[str, Any] = {}
        for k in _SHOWN_RESPONSE_HEADERS:
            values = resp.headers.get_list(k)
            if values:
                if k == "set-cookie":
                    resp_headers[k] = [_mask_cookie_header(v) for v in values]
                else:
                    resp_headers[k] = values[0] if len(values) == 1 else values
        return {
            "label": label,
            "request": {
                "method": req.method,
                "url": str(req.url),
                "headers": req_headers,
                "body": _body_text(req.content, req.headers.get("content-type")),
            },
            "response": {
                "status": resp.status_code,
                "headers": resp_headers,
                "body": _body_text(resp.content, resp.headers.get("content-type")),
                "elapsed_ms": elapsed_ms,
            },
        }


def raw_request(
    ev: Evidence | None,
    base_url: str,
    ctx: ssl.SSLContext,
    method: str,
    target: str,
    *,
    cookie: str | None,
    label: str,
    timeout: float = 15.0,
) -> int:
    """Send one request line exactly as written and return the status code.

    HTTP clients normalise dot segments before sending; path-safety probes must reach the
    proxy byte for byte, so they go over a plain TLS socket.
    """
    parts = urlsplit(base_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 443
    lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close", "Content-Length: 2"]
    if cookie is not None:
        lines.append(f"Cookie: {COOKIE_NAME}={cookie}")
    lines.append("Content-Type: application/json")
    payload = ("\r\n".join(lines) + "\r\n\r\n{}").encode()
    with (
        socket.create_connection((host, port), timeout=timeout) as sock,
        ctx.wrap_socket(sock, server_hostname=host) as tls,
    ):
        tls.sendall(payload)
        data = b""
        while b"\r\n" not in data:
            chunk = tls.recv(4096)
            if not chunk:
                break
            data += chunk
    status_line = data.split(b"\r\n", 1)[0].decode("latin-1")
    try:
        status = int(status_line.split(" ")[1])
    except (IndexError, ValueError):
        status = 0
    if ev is not None:
        ev.exchange({"label": label, "request": {"method": method, "target": target}, "response": {"status": status}})
    return status
