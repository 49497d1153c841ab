"""What the gateway's processes log: their own lines, not every SMTP command."""

from __future__ import annotations

import logging

import pytest
from click.testing import CliRunner

from gateway.cli import main

NO_CONFIG = {"HELPDESK_CONFIG": None, "HELPDESK_POLICIES_DIR": None, "HELPDESK_POLICY": None}


@pytest.mark.parametrize("logger", [
    "mail.log",  # aiosmtpd: one INFO line per SMTP command
    "alembic.runtime.plugins",  # Alembic: one INFO line per plugin, at every start
])
@pytest.mark.parametrize(("flags", "level"), [([], logging.WARNING), (["-v"], logging.NOTSET)])
def test_noisy_libraries_log_only_warnings_unless_verbose(
    logger, flags, level, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, [*flags, "policy", "show", "lumenvox"], env=NO_CONFIG)
    assert result.exit_code == 0, result.output
    # NOTSET follows the root logger, which -v sets to DEBUG.
    assert logging.getLogger(logger).level == level
