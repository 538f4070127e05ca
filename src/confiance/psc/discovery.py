"""The provider's published documents: OIDC discovery and Keycloak's realm document.

Kept apart from the handlers because it is the sandbox's contract with clients: what it
advertises here is what ``tests/psc`` checks it actually does.
"""

from __future__ import annotations

from typing import Any

from .acr import LEVELS
from .clients import SUPPORTED_GRANTS
from .config import REALM, SIGNING_ALGS
from .scopes import SUPPORTED_SCOPES

AUTH_METHODS = ["client_secret_basic", "client_secret_post", "tls_client_auth"]
CLAIMS = [
    "sub",
    "iss",
    "aud",
    "exp",
    "iat",
    "auth_time",
    "acr",
    "authMode",
    "auth_level",
    "nonce",
    "sid",
    "session_state",
    "SubjectNameID",
    "preferred_username",
    "given_name",
    "family_name",
    "email_verified",
    "SubjectOrganization",
    "SubjectOrganizationID",
    "SubjectRole",
    "Secteur_Activite",
    "Mode_Acces_Raison",
    "Acces_Regulation_Medicale",
    "UITVersion",
    "Palier_Authentification",
    "PSI_Locale",
    "otherIds",
    "SubjectRefPro",
]


def discovery(iss: str) -> dict[str, Any]:
    o = f"{iss}/protocol/openid-connect"
    return {
        "issuer": iss,
        "authorization_endpoint": f"{o}/auth",
        "token_endpoint": f"{o}/token",
        "introspection_endpoint": f"{o}/token/introspect",
        "userinfo_endpoint": f"{o}/userinfo",
        "end_session_endpoint": f"{o}/logout",
        "revocation_endpoint": f"{o}/revoke",
        "jwks_uri": f"{o}/certs",
        "backchannel_authentication_endpoint": f"{o}/ext/ciba/auth",
        "grant_types_supported": [*SUPPORTED_GRANTS],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": list(SIGNING_ALGS),
        "userinfo_signing_alg_values_supported": list(SIGNING_ALGS),
        "introspection_endpoint_auth_methods_supported": AUTH_METHODS,
        "revocation_endpoint_auth_methods_supported": AUTH_METHODS,
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "backchannel_authentication_request_signing_alg_values_supported": list(SIGNING_ALGS),
        "backchannel_token_delivery_modes_supported": ["poll"],
        "backchannel_user_code_parameter_supported": False,
        "tls_client_certificate_bound_access_tokens": False,
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": sorted(SUPPORTED_SCOPES),
        "claims_supported": CLAIMS,
        "acr_values_supported": list(LEVELS),
        "claims_parameter_supported": False,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "frontchannel_logout_supported": False,
        "backchannel_logout_supported": False,
        "mtls_endpoint_aliases": {
            "token_endpoint": f"{o}/token",
            "introspection_endpoint": f"{o}/token/introspect",
            "revocation_endpoint": f"{o}/revoke",
            "userinfo_endpoint": f"{o}/userinfo",
            "backchannel_authentication_endpoint": f"{o}/ext/ciba/auth",
            "end_session_endpoint": f"{o}/logout",
        },
    }


def realm_document(issuer: str, public_key_b64: str) -> dict[str, Any]:
    """Keycloak's realm document (``GET /auth/realms/{realm}``), read by some adapters."""
    return {
        "realm": REALM,
        "public_key": public_key_b64,
        "token-service": f"{issuer}/protocol/openid-connect",
        "account-service": f"{issuer}/account",
        "tokens-not-before": 0,
    }
