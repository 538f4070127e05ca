"""Guichet EDC PSC: the habilitation registry of the Espace de Confiance Pro Santé Connect.

Layers (outer ones import inner ones, never the reverse):
- ``domain/``: pure rules (identifiers, state machines, dependencies, evidence checks,
  référentiel, parcours) — no I/O, unit-tested fast;
- ``db``/``files``/``audit``: storage (SQLAlchemy 2 + Alembic, content-addressed files,
  hash-chained audit trail);
- ``service``: application services (one transaction per call, permission checks, audit);
  both the JSON API (``api``) and the web UI call it;
- ``api``/``cli``/``launch``: the thin edges.
"""
