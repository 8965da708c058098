"""Run the WSGI application under gunicorn with threaded workers."""

from __future__ import annotations

import logging

from gunicorn.app.base import BaseApplication

from gitsrv.config import Settings
from gitsrv.db.engine import Database
from gitsrv.web.app import GitServer
from gitsrv.webhook.delivery import DeliveryWorker

log = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"

_delivery: DeliveryWorker | None = None


def _worker_exit(_server, _worker) -> None:
    if _delivery is not None:
        _delivery.stop()


class GunicornServer(BaseApplication):
    """gunicorn application that builds the gitsrv app inside each worker.

    Building it after the fork gives every worker its own database
    connections and its own webhook delivery thread.
    """

    def __init__(self, settings: Settings, options: dict) -> None:
        self.settings = settings
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)
        if "control_socket_disable" in self.cfg.settings:
            # gunicorn 25.1+ opens a control socket at one fixed path per
            # user, which two servers on one machine would fight over.
            self.cfg.set("control_socket_disable", True)
        self.cfg.set("worker_exit", _worker_exit)

    def load(self):
        global _delivery
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, force=True)
        database = Database(self.settings)
        _delivery = DeliveryWorker(database, self.settings)
        _delivery.start()
        return GitServer(self.settings, database, _delivery)


def serve(
    settings: Settings,
    bind: str,
    workers: int,
    threads: int,
    certfile: str | None,
    keyfile: str | None,
) -> None:
    options = {
        "bind": bind,
        "workers": workers,
        "worker_class": "gthread",
        "threads": threads,
        # A clone of a large repository can stream for minutes; a worker is
        # only restarted when its main loop stops responding, not per request.
        "timeout": 120,
        "graceful_timeout": 30,
        "keepalive": 5,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": "gitsrv",
    }
    if certfile:
        options.update(certfile=certfile, keyfile=keyfile)
    log.info(
        "starting gitsrv on %s://%s with %d workers x %d threads, data in %s",
        "https" if certfile else "http", bind, workers, threads, settings.data_dir,
    )
    if settings.pack_cache:
        log.info("pack cache on: %s, at most %d MiB", settings.pack_cache_dir, settings.pack_cache_max_bytes >> 20)
    else:
        log.info("pack cache off")
    try:
        GunicornServer(settings, options).run()
    finally:
        # gunicorn's arbiter leaves through sys.exit, so log in a finally block.
        log.info("gitsrv stopped")
