"""Shared plumbing every component may import: TLS, HTTP clients, JOSE, storage, errors."""
