"""What the gateway's processes log: their own lines, not every SMTP command."""

from __future__ import annotations

import logging

import pytest
from click.testing import CliRunner

from gateway.cli import main

NO_CONFIG = {"HELPDESK_CONFIG": None, "HELPDESK_POLICIES_DIR": None, "HELPDESK_POLICY": None}


@pytest.mark.parametrize(("flags", "level"), [([], logging.WARNING), (["-v"], logging.NOTSET)])
def test_smtp_command_lines_are_logged_only_when_verbose(flags, level, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, [*flags, "policy", "show", "lumenvox"], env=NO_CONFIG)
    assert result.exit_code == 0, result.output
    # aiosmtpd's logger, which has one INFO line per SMTP command; NOTSET follows the
    # root logger, which -v sets to DEBUG.
    assert logging.getLogger("mail.log").level == level
