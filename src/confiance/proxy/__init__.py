"""Proxy e-Santé: the ANS contract (connect, send, disconnect, traces) plus what production needs.

Layers: ``domain`` and ``pathsafety`` are pure (no I/O); ``sessions`` and ``traces`` are
storage adapters; ``oauth`` talks to PSC and the API authorization servers; ``core``
orchestrates; ``app`` is the thin ASGI edge.
"""
