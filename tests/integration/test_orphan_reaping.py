"""The test harness stops gateway processes that a killed test run left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.deployment import OWNER, reap_orphans

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")


def _sleeper(owner: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                            env={**os.environ, OWNER: str(owner)}, start_new_session=True)


def test_a_gone_runs_processes_are_killed_and_a_live_runs_are_left():
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()  # its pid names a run that is gone
    orphan, ours = _sleeper(finished.pid), _sleeper(os.getpid())
    try:
        reaped = reap_orphans()

        assert orphan.pid in reaped
        assert orphan.wait(timeout=10) == -signal.SIGKILL
        assert ours.pid not in reaped
        assert ours.poll() is None
    finally:
        for process in (orphan, ours):
            process.kill()
            process.wait()
