"""The ``statevad serve`` process: the camera workers, the recorder, the webhook and uvicorn, and their end.

SIGTERM or Ctrl-C stops uvicorn (it stops accepting requests and closes the live streams), then every worker
finishes the frames it has read (their open events are closed and recorded, exactly as at the end of a file),
the recorder writes what is queued, and the database is closed: a restart finds everything.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from typing import Any

import uvicorn

from statevad.allocator import return_large_blocks
from statevad.errors import UserError
from statevad.serve.api import create_app
from statevad.serve.config import ServeConfig
from statevad.serve.db import Database
from statevad.serve.media import MediaStore
from statevad.serve.webhook import Webhook
from statevad.serve.worker import CameraWorker, MemoryReleaser, Recorder

log = logging.getLogger("statevad.serve")


class Service:
    def __init__(self, cfg: ServeConfig) -> None:
        self.cfg = cfg
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        self.db = Database(cfg.database_url())
        self.media = MediaStore(cfg.media_dir)
        self.token = cfg.token
        self.recorder = Recorder()
        self.webhook = Webhook(cfg.webhook, cfg.webhook_retries) if cfg.webhook else None
        notify = self.webhook.notify if self.webhook else None
        self.workers: dict[str, Any] = {
            c.name: CameraWorker(c, self.db, self.media, self.recorder, reconnect_max_s=cfg.reconnect_max_s,
                                 notify=notify) for c in cfg.cameras}
        self.closing = threading.Event()  # the HTTP side is stopping: live streams end
        self.releaser = MemoryReleaser(cfg.release_memory_s) if cfg.release_memory_s > 0 else None

    def stopping(self) -> bool:
        return self.closing.is_set()

    def start(self) -> None:
        self.recorder.start()
        if self.webhook is not None:
            self.webhook.start()
        for w in self.workers.values():
            w.start()
        if self.releaser is not None:
            self.releaser.start()

    def stop(self, timeout: float = 120) -> None:
        """Finish every worker's frames, then the queued writes; close the database."""
        self.closing.set()
        if self.releaser is not None:
            self.releaser.stop()
        for w in self.workers.values():
            w.stop()
        for w in self.workers.values():
            w.join(timeout)
        self.recorder.close(timeout)
        if self.webhook is not None:
            self.webhook.close()
        for w in self.workers.values():  # the soak benchmark reads these lines: events found vs stored
            s = w.snapshot()
            log.info("camera %s: %d frames scored, %d events found, %d frames dropped", s["name"],
                     s["frames"], s["events"], s["dropped"])
        log.info("recorder: %d failed writes; database holds %d events", self.recorder.failed,
                 self.db.count_events())
        self.db.close()


class _Server(uvicorn.Server):
    """uvicorn that also ends the live streams when asked to stop (it would wait for them to end)."""

    def __init__(self, config: uvicorn.Config, svc: Service) -> None:
        super().__init__(config)
        self.svc = svc

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.svc.closing.set()
        super().handle_exit(sig, frame)


def run(cfg: ServeConfig) -> int:
    """Serve until SIGTERM / Ctrl-C; returns the exit code (0 after a clean stop)."""
    import torch

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(cfg.torch_threads)  # one core per camera: the cameras are the parallelism
    # a service runs for days: large blocks are mapped and returned instead of kept in a fragmenting heap
    # (the CLI's keep_freed_memory suits a command that ends; see statevad.allocator)
    return_large_blocks()
    svc = Service(cfg)
    app = create_app(svc)
    server = _Server(uvicorn.Config(app, host=cfg.host, port=cfg.port, access_log=False, log_level="info",
                                    timeout_graceful_shutdown=3, lifespan="off"), svc)
    # uvicorn re-raises the signal that stopped it once it has restored the handlers it found: with these
    # in place that lands here (a no-op) instead of killing the process before the workers have finished.
    old = {s: signal.signal(s, lambda *_: None) for s in (signal.SIGINT, signal.SIGTERM)}
    where = f"http://{cfg.host}:{cfg.port}/"
    print(f"statevad serve: {len(svc.workers)} camera(s), database {svc.db.kind}, dashboard at {where}",
          file=sys.stderr, flush=True)
    svc.start()
    try:
        server.run()
    except SystemExit:
        raise UserError(f"cannot listen on {cfg.host}:{cfg.port} (the port is in use, or the address is not "
                        "this machine's): give another --port or --host") from None
    finally:
        log.info("stopping: finishing the frames read and the queued writes")
        svc.stop()
        for s, h in old.items():
            signal.signal(s, h)
    log.info("stopped cleanly")
    return 0
