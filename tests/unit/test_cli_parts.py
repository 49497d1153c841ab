"""The gateway's commands refuse to start, in one line, with what could not work: a part
run apart without a broker to reach the others, a URL no part could use."""

from __future__ import annotations

import os

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


@pytest.mark.parametrize(("option", "value"), [("--threads", "0"), ("--processes", "0"),
                                               ("--threads", "65")])
def test_workers_that_could_take_no_mail_are_refused(tmp_path, monkeypatch, option, value):
    """Dramatiq starts with no process or no thread, and then takes nothing, silently."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["worker", option, value], env={
        "HELPDESK_CONFIG": None, "HELPDESK_BROKER_URL": "redis://127.0.0.1:6379/6"})
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}': {value} is not in the range" in result.output


@pytest.mark.parametrize("command", [["serve"], ["status"], ["db", "upgrade"], ["sweeper"]])
@pytest.mark.parametrize(("variable", "value"), [
    ("HELPDESK_DATABASE_URL", "nonsense"), ("HELPDESK_DATABASE_URL", "mysql://x@y/z"),
    ("HELPDESK_BROKER_URL", "nonsense"),
])
def test_a_url_no_part_could_use_stops_every_command_in_one_line(tmp_path, monkeypatch,
                                                                  command, variable, value):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, command, env={
        "HELPDESK_CONFIG": None, "HELPDESK_BROKER_URL": "redis://127.0.0.1:6379/6",
        "HELPDESK_DATABASE_URL": f"sqlite:///{tmp_path}/h.sqlite3", variable: value})
    assert result.exit_code == 2, result.output
    [line] = result.output.splitlines()
    assert line.startswith(f"Error: {variable}: {variable[9:].lower().replace('_', '.', 1)}: ")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("variable", "value", "said"), [
    ("HELPDESK_POLICY", "nope",
     "policy: no policy 'nope' (known: jelastic, lumenvox, parallels, virtuozzo, vmoso)"),
    ("HELPDESK_POLICIES_DIR", "/nonexistent", "policies_dir: '/nonexistent': no such folder"),
    ("HELPDESK_TEMPLATES_DIR", "/nonexistent", "templates_dir: '/nonexistent': no such folder"),
])
def test_workers_whose_policy_cannot_be_loaded_are_refused_before_dramatiq_starts(
    tmp_path, monkeypatch, variable, value, said
):
    # Each Dramatiq process would otherwise stop with a traceback of its own
    monkeypatch.chdir(tmp_path)
    started: list[tuple[object, ...]] = []
    monkeypatch.setattr(os, "execv", lambda *args: started.append(args))
    result = CliRunner().invoke(main, ["worker"], env={
        "HELPDESK_CONFIG": None, "HELPDESK_BROKER_URL": "redis://127.0.0.1:6379/6",
        variable: value})
    assert result.exit_code == 2, result.output
    assert result.output.splitlines() == [f"Error: {variable}: {said}"]
    assert started == []
