"""Waiting for one socket to be ready, whatever its descriptor's number.

``select.select`` refuses descriptors from FD_SETSIZE (1024) on: a busy
worker holding many database and relay connections can reach that, and the
wait would fail as if its peer had. ``poll`` has no such bound.
"""

from __future__ import annotations

import select


def ready(fd: int, timeout: float, *, write: bool = False) -> bool:
    """Whether ``fd`` becomes readable (or writable) within ``timeout`` seconds; an
    error or hang-up on it counts as ready, for the read or write to report."""
    if not hasattr(select, "poll"):  # not on every platform
        readers, writers = ([], [fd]) if write else ([fd], [])
        return any(select.select(readers, writers, [], max(timeout, 0)))
    poller = select.poll()
    poller.register(fd, select.POLLOUT if write else select.POLLIN)
    return bool(poller.poll(max(timeout, 0) * 1000))
