"""Which request headers of an LPS reach a health API: an allow-list, not a deny-list.

Why: a deny-list must name every header some upstream server or framework gives a meaning
to, and misses the next one (``X-Original-URL`` rewrites the path in some frameworks,
``X-HTTP-Method-Override`` the method, ``X-Forwarded-Client-Cert`` and ``X-SSL-Client-Cert``
claim a client certificate, ``True-Client-IP`` an address). An allow-list forwards what a
health API needs to understand a request and nothing else. The default set is end-to-end
headers (RFC 9110) for content negotiation, conditional requests and tracing; a service
may add its own names (``[services.X] forward_headers``), never one of :data:`NEVER`.

Always removed besides: headers named in the request's ``Connection`` header (RFC 9110
§7.6.1). The proxy writes ``Host``, ``Authorization`` and ``Content-Length`` itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

DEFAULT_REQUEST_HEADERS = frozenset(
    {
        b"accept",
        b"accept-charset",
        b"accept-encoding",
        b"accept-language",
        b"cache-control",
        b"content-encoding",
        b"content-language",
        b"content-type",
        b"if-match",
        b"if-modified-since",
        b"if-none-exist",  # FHIR conditional create
        b"if-none-match",
        b"if-range",
        b"if-unmodified-since",
        b"prefer",  # FHIR return preference
        b"range",
        b"traceparent",  # W3C trace context
        b"tracestate",
        b"user-agent",
        b"x-request-id",
    }
)

# Never forwarded, even when a service's configuration names them: hop-by-hop, the proxy's
# own credentials and framing, and what claims an identity, an address, a hop, a path or a
# method to the upstream.
NEVER = frozenset(
    {
        b"host",
        b"cookie",
        b"authorization",
        b"proxy-authorization",
        b"proxy-authenticate",
        b"proxy-connection",
        b"connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
        b"expect",
        b"forwarded",
        b"via",
        b"true-client-ip",
        b"client-ip",
        b"cf-connecting-ip",
        b"client-cert",
        b"client-cert-chain",
        b"x-real-ip",
        b"x-client-ip",
        b"x-cluster-client-ip",
        b"x-http-method-override",
        b"x-http-method",
        b"x-method-override",
        b"x-rewrite-url",
        b"x-arr-ssl",
        b"x-client-cert",
        b"x-client-certificate",
        b"x-forwarded-client-cert",
        b"x-ssl-client-cert",
    }
)
NEVER_PREFIXES = (b"x-forwarded-", b"x-original-", b"x-ssl-", b"x-client-", b"x-amzn-", b"proxy-", b"ssl-")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-z]+")


def refusal(name: str) -> str | None:
    """Why ``name`` may not be added to a service's forwarded headers, or None."""
    if not _TOKEN.fullmatch(name):
        return f"nom d'en-tête invalide {name!r} (minuscules, jeton HTTP)"
    raw = name.encode()
    if raw in NEVER or raw.startswith(NEVER_PREFIXES):
        return f"l'en-tête {name!r} n'est jamais transmis à un service"
    return None


def forwarded(extra: Iterable[str] = ()) -> frozenset[bytes]:
    """The request headers a service receives: the default set plus its own (validated)."""
    return DEFAULT_REQUEST_HEADERS | frozenset(n.encode() for n in extra)


def connection_tokens(values: list[bytes]) -> frozenset[bytes]:
    """Header names listed in ``Connection`` (they are hop-by-hop: never forwarded)."""
    return frozenset(t.strip().lower() for v in values for t in v.split(b",") if t.strip())
