"""Test IGC-Santé PKI: CA chain, server and ORG AUTH_CLI certificates, CRL, thumbprints."""

from .ca import IssuedCertificate, Pki, PkiError
from .thumbprint import normalize_dn, subject_dn, x5t_s256

__all__ = ["IssuedCertificate", "Pki", "PkiError", "normalize_dn", "subject_dn", "x5t_s256"]
