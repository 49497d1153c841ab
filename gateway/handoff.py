"""Handing stored mail to the workers: after the ``250``, off the SMTP event loop.

The database is the guarantee: a stored message is handed out by the
recovery sweep whatever becomes of this handoff. The broker is the fast
path, and it may be slow or away (Redis restarting, a network partition):
enqueueing on the SMTP edge's event loop stalled every session of the edge
for the broker's socket timeout, once per mail. Here a thread of its own
enqueues; the ``250`` does not wait for it. After a failure it stops
trying for ``pause`` seconds and leaves what comes meanwhile to the sweep,
so an unreachable broker costs one timeout per pause, not one per mail.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Handoff:
    """Enqueues stored inbound ids from a thread of its own, pausing after a failure."""

    def __init__(
        self,
        enqueue: Callable[[int], None],
        *,
        pause: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._enqueue = enqueue
        self._pause = pause
        self._clock = clock
        self._resume_at: float | None = None
        self._left = 0
        self._queue: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="handoff", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def __call__(self, inbound_id: int) -> None:
        """Queue ``inbound_id`` for the workers; returns at once."""
        self._queue.put(inbound_id)

    def stop(self, timeout: float = 10.0) -> None:
        """Hand over what is queued, then end (what is left then, the sweep takes)."""
        self._queue.put(None)
        self._thread.join(timeout)

    def hand_over(self, inbound_id: int) -> bool:
        """Enqueue ``inbound_id`` unless paused; whether it went to the broker."""
        if self._resume_at is not None:
            if self._clock() < self._resume_at:
                self._left += 1
                return False
            self._resume_at = None
        try:
            self._enqueue(inbound_id)
        except Exception:
            self._left += 1
            self._resume_at = self._clock() + self._pause
            log.exception("inbound %s stored but not enqueued; the recovery sweep will hand "
                          "it out, and what is stored in the next %s s", inbound_id, self._pause)
            return False
        if self._left:
            log.warning("enqueueing again; %s stored meanwhile are left to the recovery sweep",
                        self._left)
            self._left = 0
        return True

    def _run(self) -> None:
        while (inbound_id := self._queue.get()) is not None:
            self.hand_over(inbound_id)
