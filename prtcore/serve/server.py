"""Running the app on uvicorn: in the foreground (`prt serve`: SIGTERM or Ctrl-C stops accepting connections and
finishes the requests in flight first), or in a thread (tests, `prt bench --serve`). Port 0 takes a free port;
the socket listens before anything is announced, so a client may connect as soon as it reads the address."""

from __future__ import annotations

import socket
import threading
import time


def listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        from ..errors import ConfigError

        raise ConfigError(f"--host {host} --port {port}: cannot listen there ({e.strerror or e})") from None
    sock.listen(256)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def uvicorn_server(app, *, grace: float | None = None):
    import uvicorn

    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=grace)
    return uvicorn.Server(config)


def serve(app, host: str, port: int, *, grace: float | None = None, announce=print) -> None:
    """Serve `app` until SIGTERM or SIGINT; `announce(url)` once clients may connect."""
    sock = listening_socket(host, port)
    announce(url_of(sock))
    uvicorn_server(app, grace=grace).run(sockets=[sock])


class Background:
    """`app` served from a thread on a free loopback port, for the length of a `with` block:

        with Background(create_app(service)) as server:
            httpx.get(server.url + "/v1/models")
    """

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        self.app, self.host, self.port = app, host, port
        self.server = self.thread = self.url = None

    def __enter__(self) -> "Background":
        sock = listening_socket(self.host, self.port)
        self.url = url_of(sock)
        self.server = uvicorn_server(self.app)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True,
                                       name="prt-serve-http")
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)
