"""Runs the FastAPI app under uvicorn in a background thread on a socket bound up front.

Binding the socket ourselves gives the real port at once (``port=0`` in tests) and lets the
process own signal handling: uvicorn installs no handlers outside the main thread.
"""

from __future__ import annotations

import socket
import threading
import time

import uvicorn
from fastapi import FastAPI

from service.settings import GatewaySettings


class HttpServer:
    def __init__(self, app: FastAPI, settings: GatewaySettings, host: str | None = None, port: int | None = None):
        host = settings.host if host is None else host
        # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on sockets whose proto says TCP, and
        # without it keep-alive responses wait ~40 ms for the client's delayed ACK.
        self.socket = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM,
                                    socket.IPPROTO_TCP)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        address = (host, settings.http_port if port is None else port)
        try:
            self.socket.bind(address)
        except OSError as exc:
            self.socket.close()
            raise OSError(exc.errno, f"HTTP cannot listen on {host}:{address[1]}: {exc.strerror}") from None
        self.port = self.socket.getsockname()[1]
        self.tls = settings.tls_cert is not None and settings.tls_key is not None
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=settings.shutdown_grace_s,
                                ssl_certfile=settings.tls_cert if self.tls else None,
                                ssl_keyfile=settings.tls_key if self.tls else None)
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]},
                                        name="http-server", daemon=True)

    def start(self, timeout_s: float = 15.0) -> "HttpServer":
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the HTTP server did not start")
            time.sleep(0.01)
        return self

    def stop(self, grace_s: float) -> None:
        """Stop accepting; requests in flight finish (up to ``grace_s``) before the thread ends."""
        self.server.should_exit = True
        self._thread.join(grace_s + 5.0)
        self.socket.close()
