"""Confiance: the Espace de Confiance Pro Santé Connect in one Python project."""

__version__ = "0.1.0"
