"""Application services of the guichet, one module per use-case family (see ``facade.py``)."""

from .base import Principal, ServiceError, ServiceSettings
from .facade import GuichetService
from .verifiers import JwksFileReportVerifier, JwksReportVerifier

__all__ = [
    "GuichetService",
    "JwksFileReportVerifier",
    "JwksReportVerifier",
    "Principal",
    "ServiceError",
    "ServiceSettings",
]
