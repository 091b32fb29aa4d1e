"""The running parts of one server: its checked config, the store, the served backends and the workers.

Building a `Server` does every check that can fail in one line (names, the
API key rule, ``--out``, the store and its lock) and loads nothing; `start`
requeues what a dead server left in progress, cleans the debris of killed
writes and starts one worker per device, which load their pipelines. On a
store shared by several servers a thread keeps requeueing the jobs of servers
that die meanwhile (every ``store.recover_interval`` seconds).
"""

from __future__ import annotations

import logging
import threading
import time

from ..fileio import check_writable, sweep
from ..plugins import get_backend
from .config import ServeConfig
from .files import make_folders
from .metrics import Metrics
from .store import StoreUnavailable
from .store_url import open_store
from .worker import Worker

log = logging.getLogger(__name__)


class Server:
    def __init__(self, config: ServeConfig):
        self.config = config.check()
        self.backends = {name: get_backend(name) for name in config.backends}
        self.devices = config.worker_devices()
        config.out.mkdir(parents=True, exist_ok=True)
        check_writable(config.out)
        make_folders(config.out)
        self.store = open_store(config.store, config.out)
        self.wake = threading.Event()
        self.workers: list[Worker] = []
        self.metrics = Metrics(self.store, lambda: self.workers)
        self.started_at = int(time.time())
        self._stopping = threading.Event()
        self._janitor: threading.Thread | None = None

    @property
    def ready(self) -> bool:
        return bool(self.workers) and all(w.ready for w in self.workers)

    def start(self) -> None:
        recovered = self.store.recover()
        if recovered:
            log.info("requeued %d job(s) a stopped server left in progress: %s", len(recovered), ", ".join(recovered))
        for folder in ("videos", "inputs"):
            sweep(self.config.out / folder)
        self.workers = [Worker(i, device, self.config, self.store, self.metrics, self.backends, self.wake)
                        for i, device in enumerate(self.devices)]
        for w in self.workers:
            w.start()
        if self.store.recover_interval:
            self._janitor = threading.Thread(target=self._recover_while_running, name="vidcore-recover", daemon=True)
            self._janitor.start()

    def _recover_while_running(self) -> None:
        while not self._stopping.wait(self.store.recover_interval):
            try:
                recovered = self.store.recover()
            except StoreUnavailable as exc:
                log.warning("cannot look for the jobs of stopped servers: %s", exc)
                continue
            if recovered:
                log.info("requeued %d job(s) of a server that stopped: %s", len(recovered), ", ".join(recovered))
                self.wake.set()

    def cancel(self, job_id: str) -> None:
        for w in self.workers:
            w.cancel(job_id)

    def stop(self, timeout: float = 60.0) -> None:
        """Stop the workers (a running job goes back to the queue) and close the store."""
        self._stopping.set()
        if self._janitor is not None:
            self._janitor.join(timeout)
        for w in self.workers:
            w.stop()
        for w in self.workers:
            w.join(timeout)
        waiting = self.store.counts()["queued"]
        self.store.close()
        log.info("stopped; %d job(s) wait in the store for the next start", waiting)
