"""Optional webhook alerts: a JSON POST on event start and end, with bounded retries, off the scoring path.

The queue is bounded: when the receiver is down for long, the oldest alerts are dropped (and counted) rather
than the service's memory growing; the events themselves are in the database whatever happens here.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger("statevad.serve")


class Webhook(threading.Thread):
    def __init__(self, url: str, retries: int = 3, timeout_s: float = 5.0, backoff_s: float = 1.0,
                 max_queue: int = 256) -> None:
        super().__init__(name="webhook", daemon=True)
        self.url, self.retries, self.timeout_s, self.backoff_s = url, retries, timeout_s, backoff_s
        self.where = urlsplit(url).hostname or "?"  # logs name the host only: a URL may carry a secret
        self._q: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=max_queue)
        self._closing = threading.Event()
        self.sent = self.failed = self.dropped = 0

    def notify(self, kind: str, doc: dict[str, Any]) -> None:
        try:
            self._q.put_nowait({"type": kind, **doc})
        except queue.Full:
            self.dropped += 1

    def run(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            self._post(item)

    def _post(self, item: dict[str, Any]) -> None:
        body = json.dumps(item).encode("utf-8")
        for attempt in range(self.retries + 1):
            req = urllib.request.Request(self.url, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310 - http(s) checked
                    if 200 <= resp.status < 300:
                        self.sent += 1
                        return
            except (urllib.error.URLError, OSError, ValueError) as exc:
                log.warning("webhook to %s failed (attempt %d): %s", self.where, attempt + 1,
                            type(exc).__name__)
            if attempt < self.retries and self._closing.wait(self.backoff_s * 2 ** attempt):
                break  # shutting down: give up the retries
        self.failed += 1

    def close(self, timeout: float = 10) -> None:
        self._closing.set()
        try:
            self._q.put_nowait(None)
        except queue.Full:
            pass
        self.join(timeout)
