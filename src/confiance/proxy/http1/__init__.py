"""HTTP/1.1 machinery that knows nothing of the proxy: a server (``server.py``, one
``Connection`` per client in ``connection.py``, the cold routes through a buffered ASGI
exchange in ``asgi_bridge.py``), a keep-alive client pool (``client.py``), and the outbox
both write through (``outbox.py``). The proxy plugs into it in ``proxy/serve.py``."""
