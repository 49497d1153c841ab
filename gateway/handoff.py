"""Handing stored mail to the workers: after the ``250``, off the SMTP event loop.

The database is the guarantee: a stored message is handed out by the
recovery sweep whatever becomes of this handoff. The broker is the fast
path, and it may be slow or away (Redis restarting, a network partition):
enqueueing on the SMTP edge's event loop stalled every session of the edge
for the broker's socket timeout, once per mail. Here a thread of its own
enqueues; the ``250`` does not wait for it.

After a failure it stops trying for ``pause`` seconds, so an unreachable
broker costs one timeout per pause, not one per mail. What is stored
meanwhile is kept (up to ``keep`` ids) and handed over, in order, once the
pause is over and the broker takes mail again: a broker back within seconds
delays the mail by seconds, where the sweep would take up to its
``stale_after`` plus its interval (90 s by default). Ids beyond ``keep``,
the oldest first, are left to the sweep, which finds them soonest. An id
that both hand out is processed once (the pipeline is idempotent).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable

from gateway.outages import log_failure

log = logging.getLogger(__name__)


class Handoff:
    """Enqueues stored inbound ids from a thread of its own; after a failure, pauses,
    keeping what comes meanwhile for when the broker is back."""

    def __init__(
        self,
        enqueue: Callable[[int], None],
        *,
        pause: float = 10.0,
        keep: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._enqueue = enqueue
        self._pause = pause
        self._clock = clock
        self._resume_at: float | None = None
        self._kept: deque[int] = deque(maxlen=keep)
        self._dropped = 0
        self._queue: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="handoff", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def __call__(self, inbound_id: int) -> None:
        """Queue ``inbound_id`` for the workers; returns at once."""
        self._queue.put(inbound_id)

    def stop(self, timeout: float = 10.0) -> None:
        """Hand over what is queued (and what is kept, unless paused), then end;
        what is left then, the sweep takes."""
        self._queue.put(None)
        self._thread.join(timeout)

    @property
    def kept(self) -> int:
        """Ids stored during a pause, waiting for the broker."""
        return len(self._kept)

    def hand_over(self, inbound_id: int | None = None) -> bool:
        """Keep ``inbound_id`` (if given) behind those already kept, and enqueue them all
        in order unless paused; whether none is left waiting."""
        if inbound_id is not None:
            if len(self._kept) == self._kept.maxlen:
                self._dropped += 1  # the oldest goes to the sweep
            self._kept.append(inbound_id)
        if self._resume_at is not None and self._clock() < self._resume_at:
            return False
        resuming, self._resume_at = self._resume_at is not None, None
        handed = 0
        while self._kept:
            first = self._kept[0]
            try:
                self._enqueue(first)
            except Exception as error:
                self._resume_at = self._clock() + self._pause
                log_failure(log, error, "inbound %s stored but not enqueued; trying again in "
                            "%s s with what is stored meanwhile (%s waiting; the recovery "
                            "sweep hands them out otherwise)", first, self._pause,
                            len(self._kept))
                return False
            self._kept.popleft()
            handed += 1
        if resuming:
            meanwhile = handed - (inbound_id is not None)  # not the one that came just now
            log.warning("enqueueing again: %s stored meanwhile handed over%s", meanwhile,
                        f"; {self._dropped} more left to the recovery sweep"
                        if self._dropped else "")
            self._dropped = 0
        return True

    def _until_resume(self) -> float | None:
        """How long the thread may wait for new mail before handing over the kept."""
        if not self._kept or self._resume_at is None:
            return None
        return max(self._resume_at - self._clock(), 0.0)

    def _run(self) -> None:
        while True:
            try:
                inbound_id = self._queue.get(timeout=self._until_resume())
            except queue.Empty:  # the pause is over and no mail came: the kept ones
                self.hand_over()
                continue
            if inbound_id is None:
                self.hand_over()
                return
            self.hand_over(inbound_id)
