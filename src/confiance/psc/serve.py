"""Run the sandbox: one process, or a parent and N worker processes on one socket.

Why processes: the work of a token response is RSA signing, which holds one core per
process; a team's sandbox needs every core. The parent binds the listening socket once,
makes sure the signing keys, the store's schema and its shared secrets exist (so workers
never race to create them), then starts ``N`` workers that inherit the socket and accept
from it; the kernel spreads connections between them. State is in the store they share
(SQLite or Redis), so any worker can answer any request. A worker that dies is started
again; SIGTERM/SIGINT stop them all.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from confiance.core.config import ConfigError
from confiance.core.jose import KeyStore
from confiance.core.server import ServiceConfig, bind_socket, make_server
from confiance.core.tls import ClientAuth, ServerTLS

from .config import SIGNING_ALGS, PscConfig
from .store import open_store

log = logging.getLogger("confiance.psc.serve")


def service_config(cfg: PscConfig) -> ServiceConfig:
    tls = None
    if cfg.tls is not None:
        tls = ServerTLS(
            cert=cfg.tls.cert,
            key=cfg.tls.key,
            ca_bundle=cfg.tls.ca_bundle,
            crl=cfg.tls.crl,
            client_auth=ClientAuth.OPTIONAL if cfg.tls.ca_bundle else ClientAuth.NONE,
        )
    return ServiceConfig(host=cfg.host, port=cfg.port, tls=tls, limit_concurrency=4096)


def check_workers(cfg: PscConfig, workers: int) -> None:
    """Several workers need state they can share: a store other than memory, keys on disk."""
    if workers <= 1:
        return
    if cfg.store_url() == "memory":
        raise ConfigError(
            "plusieurs workers partagent l'état : configurez store (sqlite:///… ou redis://…) ou state_file"
        )
    if cfg.keys_path is None:
        raise ConfigError("plusieurs workers signent avec les mêmes clés : configurez keys_path")


def run_worker(cfg: PscConfig, sock: socket.socket) -> None:
    """One worker: build the sandbox and serve on the inherited socket until told to stop."""
    from .app import PscSandbox

    sandbox = PscSandbox(cfg)
    make_server(sandbox.app, service_config(cfg)).run(sockets=[sock])


def serve(cfg: PscConfig, config_path: Path, workers: int, announce: bool = True) -> None:
    check_workers(cfg, workers)
    sock = bind_socket(cfg.host, cfg.port)
    port = sock.getsockname()[1]
    if announce:
        scheme = "https" if cfg.tls else "http"
        print(f"Bac à sable PSC : {scheme}://{cfg.host}:{port} ({workers} worker(s))", flush=True)
    if workers <= 1:
        run_worker(cfg, sock)
        return
    KeyStore(cfg.keys_path, algs=SIGNING_ALGS)  # create the keys file once, before the workers read it
    store = open_store(cfg.store_url(), cfg.store_prefix)
    for name in ("refresh_key", "form_key"):
        store.secret(name, lambda: secrets.token_bytes(32))
    store.close()
    if Supervisor(config_path, sock, workers).run() != 0:
        raise SystemExit(1)


class Supervisor:
    """Starts the workers, restarts one that dies, stops them all on SIGTERM/SIGINT."""

    def __init__(self, config_path: Path, sock: socket.socket, workers: int) -> None:
        self.config_path = config_path
        self.sock = sock
        self.n = workers
        self.stopping = threading.Event()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.started: list[float] = []
        self.quick_exits = 0

    def _start(self) -> subprocess.Popen[bytes]:
        fd = self.sock.fileno()
        argv = [sys.executable, "-m", "confiance", "psc", "worker", "--config", str(self.config_path), "--fd", str(fd)]
        return subprocess.Popen(argv, pass_fds=[fd])

    def _stop(self, *_args: object) -> None:
        self.stopping.set()

    def run(self) -> int:
        """Until SIGTERM/SIGINT (0), or 1 when workers keep dying at start (a broken setup)."""
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        self.procs = [self._start() for _ in range(self.n)]
        self.started = [time.monotonic()] * self.n
        try:
            while not self.stopping.wait(0.5):
                for i, proc in enumerate(self.procs):
                    if proc.poll() is None:
                        continue
                    quick = time.monotonic() - self.started[i] < 10
                    self.quick_exits = self.quick_exits + 1 if quick else 0
                    if self.quick_exits >= 3 * self.n:
                        log.error("workers exit as soon as they start (last status %s): stopping", proc.returncode)
                        return 1
                    log.warning("worker %s exited with %s; starting it again", proc.pid, proc.returncode)
                    self.procs[i] = self._start()
                    self.started[i] = time.monotonic()
            return 0
        finally:
            for proc in self.procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in self.procs:
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
            self.sock.close()


def worker_socket(fd: int) -> socket.socket:
    sock = socket.socket(fileno=fd)
    os.set_inheritable(fd, False)
    return sock
