"""nginx configurations for the proxy benchmark: the mTLS upstream and the reference relay.

Both run with one worker, in their own process, so the relay reference is "one nginx
worker doing proxy_pass over mTLS with a static Bearer header" (issue #5).
"""

from __future__ import annotations

from pathlib import Path

COMMON = """worker_processes 1;
daemon off;
master_process on;
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 4096; }}
"""

UPSTREAM = (
    COMMON
    + """http {{
  access_log off;
  client_body_temp_path {prefix}/tmp;
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_client_certificate {ca};
    ssl_verify_client optional;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {{
      default_type application/json;
      return 200 '{{"ok":true,"service":"bench"}}';
    }}
  }}
}}
"""
)

RELAY = (
    COMMON
    + """http {{
  access_log off;
  client_body_temp_path {prefix}/tmp;
  proxy_temp_path {prefix}/tmp;
  keepalive_requests 1000000;
  upstream up {{
    server 127.0.0.1:{up_port};
    keepalive 128;
  }}
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    location /send/bench/ {{
      proxy_pass https://up/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Cookie "";
      proxy_set_header Authorization "Bearer static-benchmark-token";
      proxy_ssl_certificate {client_cert};
      proxy_ssl_certificate_key {client_key};
      proxy_ssl_trusted_certificate {ca};
      proxy_ssl_verify on;
      proxy_ssl_name localhost;
      proxy_ssl_session_reuse on;
    }}
  }}
}}
"""
)


def write(prefix: Path, template: str, **values: object) -> Path:
    prefix.mkdir(parents=True, exist_ok=True)
    (prefix / "tmp").mkdir(exist_ok=True)
    path = prefix / "nginx.conf"
    path.write_text(template.format(prefix=prefix, **values))
    return path
