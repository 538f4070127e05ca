"""API Pro Santé Connectée: RFC 8693 token-exchange authorization server and resource services.

``domain`` holds the rules (client authentication, scope/audience resolution, token claims,
revocation, session-data checks) without I/O; ``auth_server`` and ``resources`` are the
thin Starlette edges; ``service`` assembles both servers from one configuration file.
"""
