"""The parts of the gateway run apart refuse to start without a broker to reach the others."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from gateway.cli import main


@pytest.mark.parametrize(("command", "part"), [
    ("smtp", "the SMTP server"), ("sweeper", "the recovery sweep"), ("worker", "the workers"),
])
def test_a_part_run_apart_without_a_broker_is_refused_in_one_line(tmp_path, monkeypatch,
                                                                  command, part):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, [command], env={
        "HELPDESK_CONFIG": None, "HELPDESK_BROKER_URL": "",
        "HELPDESK_DATABASE_URL": f"sqlite:///{tmp_path}/h.sqlite3"})
    assert result.exit_code == 2, result.output
    assert result.output.splitlines() == [
        f"Error: broker.url is empty: `helpdesk serve` runs {part} inside itself; "
        f"set HELPDESK_BROKER_URL to run {part} apart"]
    assert list(tmp_path.iterdir()) == []  # nothing started, nothing made
