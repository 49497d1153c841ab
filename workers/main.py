"""Entry module for Dramatiq worker processes: ``dramatiq workers.main``.

Settings come from ``$HELPDESK_CONFIG`` and ``HELPDESK_*`` variables, as
for every other process; ``helpdesk worker`` sets them and starts Dramatiq.
"""

from __future__ import annotations

from gateway.runtime import build_runtime
from gateway.settings import load_settings
from workers.actors import declare
from workers.broker import make_broker

settings = load_settings()
broker = make_broker(settings)
runtime = build_runtime(settings)
dispatcher = declare(broker, runtime)
