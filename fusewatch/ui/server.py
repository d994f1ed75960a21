"""Run the UI: state + label store + feed + web app under uvicorn (in a thread or in the foreground).

Refuses to bind beyond loopback unless ``ui.token`` and TLS (``ui.tls_certfile``/``tls_keyfile``)
are configured.
"""

from __future__ import annotations

import logging
import threading
import time

from fusewatch.errors import ConfigError

log = logging.getLogger("fusewatch.ui")


class UiServer:
    """``UiServer(cfg, transport).start()`` → serving in a background thread; ``.url``; ``.stop()``."""

    def __init__(self, cfg, transport):
        from fusewatch.extras import require

        require("uvicorn", "fusewatch ui")
        require("starlette", "fusewatch ui")
        why = cfg.ui.needs_guard()
        if why:
            raise ConfigError(why)
        from fusewatch.ui.app import build_app
        from fusewatch.ui.feed import Feed
        from fusewatch.ui.labels import LabelStore
        from fusewatch.ui.state import LiveState

        self.cfg = cfg
        self.state = LiveState(cfg.ui.score_history, cfg.ui.max_alerts)
        self.store = LabelStore(cfg.ui.data_dir)
        self.feed = Feed(cfg, self.state, transport)
        self.app = build_app(cfg, self.state, self.store)
        self.server = None
        self.thread: threading.Thread | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.cfg.ui.tls_certfile else "http"
        host = self.cfg.ui.host if ":" not in self.cfg.ui.host else f"[{self.cfg.ui.host}]"
        return f"{scheme}://{host}:{self.port}/"

    def _uvicorn(self):
        import uvicorn

        ui = self.cfg.ui
        conf = uvicorn.Config(
            self.app,
            host=ui.host,
            port=ui.port,
            ssl_certfile=ui.tls_certfile,
            ssl_keyfile=ui.tls_keyfile,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(conf)
        self.server.install_signal_handlers = lambda: None  # the CLI owns the signals
        return self.server

    def start(self) -> UiServer:
        self.feed.start()
        srv = self._uvicorn()
        self.thread = threading.Thread(target=srv.run, name="ui-http", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not srv.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.feed.stop()
                raise ConfigError(f"ui: could not listen on {self.cfg.ui.host}:{self.cfg.ui.port}")
            time.sleep(0.05)
        self.port = srv.servers[0].sockets[0].getsockname()[1]
        log.info("ui: serving %s", self.url)
        return self

    def wait(self, stop: threading.Event) -> None:
        while not stop.is_set() and self.thread and self.thread.is_alive():
            stop.wait(0.5)

    def stop(self) -> None:
        if self.server:
            self.server.should_exit = True
        if self.thread:
            self.thread.join(timeout=10)
        self.feed.stop()
        self.store.close()
