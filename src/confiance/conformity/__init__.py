"""Outil de conformité: certifies any Proxy e-Santé over HTTP(S) and signs its report.

The tool never imports the proxy it tests: it speaks to it, to the PSC sandbox and to the
API services only over HTTP(S), exactly as it would test another vendor's proxy.
"""

TOOL_NAME = "confiance-conformite"
