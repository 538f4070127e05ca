"""What ``/readyz`` checks for the PSC sandbox, each named so a 503 says what fails.

- ``store``: the live state answers (SQLite file readable and writable by this worker,
  Redis reachable); without it no CIBA request, token or introspection can be served.
- ``signing_key``: a current key for the configured algorithm is loaded.
- ``trust_list`` (trust-space mode only): the guichet's list is usable (fetched, signature
  valid, not expired); without it every issuing call is refused with ``unauthorized_client``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from confiance.core.health import CheckResult, ReadinessCheck

if TYPE_CHECKING:
    from .app import PscSandbox


def readiness_checks(sb: PscSandbox) -> dict[str, ReadinessCheck]:
    def store() -> CheckResult:
        sb.store.ping()
        return CheckResult(True, sb.config.store_url().split("://")[0].split(":")[0])

    def signing_key() -> CheckResult:
        alg = sb.provider.signing_alg
        return CheckResult(True, f"{alg} kid={sb.keys.signing_key(alg).kid}")

    checks: dict[str, ReadinessCheck] = {"store": store, "signing_key": signing_key}
    trust = sb.trust
    if trust is not None:

        def trust_list() -> CheckResult:
            tl = trust.trust_list()  # raises TrustListUnavailable with the reason
            return CheckResult(True, f"{len(tl.habilitations)} habilitation(s) ({trust.cfg.url})")

        checks["trust_list"] = trust_list
    return checks
