"""Entry module for Dramatiq worker processes: ``dramatiq workers.main``.

Settings come from ``$HELPDESK_CONFIG`` and ``HELPDESK_*`` variables, as
for every other process; ``helpdesk worker`` sets them and starts Dramatiq.
"""

from __future__ import annotations

from gateway.runtime import build_runtime
from gateway.settings import load_settings
from workers.actors import declare
from workers.broker import make_broker

DRAMATIQ_THREADS = 8
"""Dramatiq's own default threads per process, for a process it was started
with directly (``dramatiq workers.main``) rather than by ``helpdesk worker``,
which sets ``broker.worker_threads`` to its ``--threads``."""

settings = load_settings()
broker = make_broker(settings)
# A connection kept for each of the process's threads, and one for its main thread.
runtime = build_runtime(
    settings, pool_size=max(settings.broker.worker_threads, DRAMATIQ_THREADS) + 1
)
dispatcher = declare(broker, runtime)
