"""Malformed policy files: each is refused with one line naming file, key path and reason.

Every case starts from ``VALID``, a small policy that loads, and changes one
thing, as a support manager editing the file might. The whole message is
asserted, so a reworded or misplaced error shows here.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway.cli import main
from gateway.errors import ConfigError
from gateway.policy.loader import load_policy, parse_policy
from gateway.policy.model import BusinessDays, Clock, Span

VALID = """\
title: Desk Support
calendar:
  timezone: Europe/London
  hours:
    - days: Mon-Fri
      from: "09:00"
      to: "17:30"
  holidays:
    country: GB
default_level: 3
roles:
  support_engineer: Support Engineer
  manager: Support Manager
  director: Director
tiers: [gold]
levels:
  1:
    name: Critical
    description: Production down.
    initial_response: 2 hours
    initial_response_by_tier: {gold: 1 hour}
    progress_updates: {every: 4 hours}
    resolution: 24 hours
    escalation:
      - after: 2 business hours
        notify: manager
      - after: 3 business hours
        notify: director
  2:
    name: Major
    description: Impaired.
    initial_response: 4 business hours
    progress_updates: {every: 1 business day}
  3:
    name: Minor
    description: Other errors.
    initial_response: 1 business day
    progress_updates: {on_events: [path_found, resolved]}
    resolution: {milestone: Next release}
  4:
    name: Other
    description: Questions.
    initial_response: 3 business days
    escalation_on_request: support_engineer
severity:
  workaround_lowers: {from: [1, 2], to: 3, decided_by: [support_engineer]}
eligibility:
  who: all
"""

LEVEL_4 = """\
  4:
    name: Other
    description: Questions.
    initial_response: 3 business days
    escalation_on_request: support_engineer
"""
DURATIONS = '(write e.g. "2 hours", "30 business minutes", "3 business days")'
LEVEL_KEYS = (
    "name, description, initial_response, words, initial_response_by_tier, "
    "progress_updates, resolution, escalation, escalation_on_request, needs_phone"
)


def mutate(old: str, new: str) -> str:
    """``VALID`` with its one ``old`` replaced by ``new``."""
    assert VALID.count(old) == 1, f"{old!r} must occur once in VALID"
    return VALID.replace(old, new)


def error_of(text: str, name: str = "desk.yaml") -> str:
    with pytest.raises(ConfigError) as caught:
        parse_policy(text, name=Path(name).stem, source=name)
    message = str(caught.value)
    assert "\n" not in message, "a policy error is one line"
    return message


def test_the_base_policy_is_valid():
    policy = parse_policy(VALID, name="desk", source="desk.yaml")
    assert policy.level(1).initial_response_for("gold") == Span(timedelta(hours=1), Clock.WALL)
    assert policy.level(4).initial_response == BusinessDays(3)


CASES = [
    # --- times ---------------------------------------------------------------------------
    pytest.param(
        mutate("initial_response: 2 hours", "initial_response: 2 hourz"),
        f'desk.yaml: levels.1.initial_response: "2 hourz" is not a duration {DURATIONS}',
        id="bad-duration",
    ),
    pytest.param(
        mutate("initial_response: 2 hours", "initial_response: 0 hours"),
        'desk.yaml: levels.1.initial_response: "0 hours" must be longer than zero',
        id="zero-duration",
    ),
    pytest.param(
        mutate("initial_response: 2 hours", "initial_response: 2"),
        f"desk.yaml: levels.1.initial_response: 2 is not a duration {DURATIONS}",
        id="bare-number-duration",
    ),
    pytest.param(
        mutate("3 business days", "1.5 business days"),
        'desk.yaml: levels.4.initial_response: "1.5 business days": '
        "business days are counted whole",
        id="fractional-business-days",
    ),
    pytest.param(
        mutate("{every: 1 business day}", "{every: daily}"),
        f'desk.yaml: levels.2.progress_updates.every: "daily" is not a duration {DURATIONS}',
        id="cadence-in-words",
    ),
    # --- levels --------------------------------------------------------------------------
    pytest.param(
        mutate(LEVEL_4, ""),
        "desk.yaml: levels: level 4 missing: a policy has levels 1 to 4",
        id="missing-level",
    ),
    pytest.param(
        mutate("  4:\n", "  5:\n"),
        "desk.yaml: levels.5: 5 is not a level key: levels are 1, 2, 3 and 4",
        id="level-5",
    ),
    pytest.param(
        mutate("default_level: 3", "default_level: 5"),
        "desk.yaml: default_level: 5 is not a level: levels are 1, 2, 3 and 4",
        id="default-level-5",
    ),
    pytest.param(
        mutate("    initial_response: 4 business hours", "    intial_response: 4 business hours"),
        f'desk.yaml: levels.2.intial_response: unknown key "intial_response" (known: {LEVEL_KEYS})',
        id="unknown-key-typo",
    ),
    pytest.param(
        mutate("    name: Major\n", ""),
        "desk.yaml: levels.2.name: is required",
        id="missing-required-key",
    ),
    pytest.param(
        mutate("title: Desk Support", "title: 42"),
        "desk.yaml: title: must be text, not 42",
        id="title-not-text",
    ),
    pytest.param(
        mutate("    escalation_on_request: support_engineer",
               "    escalation_on_request: support_engineer\n    needs_phone: maybe"),
        'desk.yaml: levels.4.needs_phone: "maybe" is not true or false',
        id="flag-not-boolean",
    ),
    # --- calendar ------------------------------------------------------------------------
    pytest.param(
        mutate('to: "17:30"', "to: 17:30"),
        'desk.yaml: calendar.hours.0.to: write times in quotes ("17:30")',
        id="unquoted-time-read-as-1050",
    ),
    pytest.param(
        mutate('from: "09:00"', "from: 9:00"),
        'desk.yaml: calendar.hours.0.from: write times in quotes ("09:00")',
        id="unquoted-time-read-as-540",
    ),
    pytest.param(
        mutate('to: "17:30"', 'to: "17:61"'),
        'desk.yaml: calendar.hours.0.to: "17:61" is not a time of day such as "08:00"',
        id="bad-time",
    ),
    pytest.param(
        mutate('from: "09:00"', 'from: "9am"'),
        'desk.yaml: calendar.hours.0.from: "9am" is not a time of day such as "08:00"',
        id="time-in-words",
    ),
    pytest.param(
        mutate("Mon-Fri", "Mon-Fry"),
        'desk.yaml: calendar.hours.0.days: "Mon-Fry" is not a weekday or range such as Mon-Fri',
        id="bad-weekday",
    ),
    pytest.param(
        mutate("Mon-Fri", "Monkey-Fri"),
        'desk.yaml: calendar.hours.0.days: "Monkey-Fri" is not a weekday or range such as '
        "Mon-Fri",
        id="weekday-lookalike",
    ),
    pytest.param(
        mutate("Europe/London", "Europe/Lundon"),
        'desk.yaml: calendar.timezone: "Europe/Lundon" is not a time zone '
        '(write an IANA name such as "Europe/London")',
        id="unknown-time-zone",
    ),
    pytest.param(
        mutate("country: GB", "country: XX"),
        "desk.yaml: calendar.holidays.country: unknown holiday country or subdivision 'XX': "
        "Country XX not available",
        id="unknown-holiday-country",
    ),
    pytest.param(
        mutate("country: GB", "country: US\n    subdivision: ZZ"),
        "desk.yaml: calendar.holidays.subdivision: unknown holiday country or subdivision "
        "'US/ZZ': Entity `US` does not have subdivision ZZ",
        id="unknown-holiday-subdivision",
    ),
    pytest.param(
        mutate("country: GB", 'country: GB\n    dates: [2026-12-24, "2026-12-25"]'),
        'desk.yaml: calendar.holidays.dates.1: "2026-12-25" is not a date (2026-12-24)',
        id="holiday-date-quoted",
    ),
    pytest.param(
        mutate("country: GB", "country: GB\n    dates: [2026-12-24, 2026-12-25 10:00:00]"),
        "desk.yaml: calendar.holidays.dates.1: 2026-12-25 10:00:00 is not a date (2026-12-24)",
        id="holiday-date-with-time",
    ),
    pytest.param(
        mutate("country: GB", "country: GB\n    dates: [2026-12-32]"),
        'desk.yaml: line 10: not valid YAML: "2026-12-32" is not a date '
        "(day is out of range for month)",
        id="holiday-date-impossible",
    ),
    # --- roles, ladders, updates ---------------------------------------------------------
    pytest.param(
        mutate("notify: director", "notify: boss"),
        'desk.yaml: levels.1.escalation.1.notify: unknown role "boss" '
        "(known: support_engineer, manager, director) (declare it under roles)",
        id="role-not-declared",
    ),
    pytest.param(
        mutate("after: 3 business hours", "after: 1 business hour"),
        "desk.yaml: levels.1.escalation.1.after: steps must come in order, "
        "each later than the last",
        id="ladder-out-of-order",
    ),
    pytest.param(
        mutate("after: 3 business hours", "after: 3 hours"),
        "desk.yaml: levels.1.escalation.1.after: all steps of a ladder count on the same clock",
        id="ladder-mixed-clocks",
    ),
    pytest.param(
        mutate("after: 3 business hours", "after: 1 business day"),
        "desk.yaml: levels.1.escalation.1.after: an escalation waits hours or minutes, not days",
        id="ladder-in-days",
    ),
    pytest.param(
        mutate("[path_found, resolved]", "[path_found, fixed]"),
        'desk.yaml: levels.3.progress_updates.on_events.1: unknown event "fixed" '
        "(known: path_found, resolved)",
        id="unknown-update-event",
    ),
    pytest.param(
        mutate("{every: 4 hours}", "{every: 4 hours, on_events: [resolved]}"),
        'desk.yaml: levels.1.progress_updates: give either "every" (a cadence) '
        'or "on_events" (a list of events)',
        id="both-every-and-on-events",
    ),
    pytest.param(
        mutate("{on_events: [path_found, resolved]}", "{on: [path_found, resolved]}"),
        "desk.yaml: levels.3.progress_updates.true: YAML reads an unquoted on, off, yes or no "
        "as true or false: quote the key",
        id="unquoted-on-key",
    ),
    # --- rules ---------------------------------------------------------------------------
    pytest.param(
        mutate("who: all", "who: known_customers"),
        "desk.yaml: eligibility.others_told: say what senders who are not customers are told",
        id="known-customers-without-others-told",
    ),
    pytest.param(
        mutate("who: all", "who: everyone"),
        'desk.yaml: eligibility.who: unknown value "everyone" (known: all, known_customers)',
        id="unknown-eligibility",
    ),
    pytest.param(
        mutate("to: 3, decided", "to: 1, decided"),
        "desk.yaml: severity.workaround_lowers.to: level 1 must be less urgent than every "
        "level it lowers",
        id="lowering-to-more-urgent",
    ),
    pytest.param(
        mutate("{gold: 1 hour}", "{platinum: 1 hour}"),
        'desk.yaml: levels.1.initial_response_by_tier.platinum: unknown tier "platinum" '
        "(known: gold)",
        id="tier-not-declared",
    ),
    pytest.param(
        mutate("  support_engineer: Support Engineer\n", "  Support Engineer: Support Engineer\n"),
        "desk.yaml: roles.Support Engineer: a role key is lower-case letters, digits and _",
        id="role-key-with-spaces",
    ),
    # --- the file as a whole -------------------------------------------------------------
    pytest.param(
        mutate("title: Desk Support", "title: [Desk Support"),
        "desk.yaml: line 2: not valid YAML: expected ',' or ']', but got ':'",
        id="yaml-syntax-error",
    ),
    pytest.param(
        mutate("  timezone: Europe/London", "\ttimezone: Europe/London"),
        "desk.yaml: line 3: not valid YAML: found character '\\t' that cannot start any token",
        id="yaml-tab-indent",
    ),
    pytest.param(
        mutate("title: Desk Support", "title: Desk\x07Support"),
        "desk.yaml: line 1: not valid YAML: character #x0007 is not allowed",
        id="yaml-control-character",
    ),
    pytest.param(
        mutate("    name: Major\n", "    name: Major\n    name: Major Impact\n"),
        'desk.yaml: line 31: not valid YAML: key "name" is written twice in one mapping',
        id="duplicate-key",
    ),
    pytest.param(
        mutate("  2:\n    name: Major", "  1:\n    name: Major"),
        "desk.yaml: line 29: not valid YAML: key 1 is written twice in one mapping",
        id="duplicate-level",
    ),
    pytest.param(
        "- title: Desk Support\n- levels: {}\n",
        "desk.yaml: the file must hold a mapping of keys, not a list",
        id="file-not-a-mapping",
    ),
    pytest.param(
        "",
        "desk.yaml: is empty: a policy needs title, calendar, default_level and levels",
        id="empty-file",
    ),
    pytest.param(
        "# nothing here yet\n",
        "desk.yaml: is empty: a policy needs title, calendar, default_level and levels",
        id="only-comments",
    ),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_malformed_policy_is_one_line(text, expected):
    assert error_of(text) == expected


def test_there_are_at_least_twenty_cases():
    assert len(CASES) >= 20


def test_the_file_name_is_the_one_the_operator_gave(tmp_path):
    path = tmp_path / "vmoso.yaml"
    path.write_text(mutate("initial_response: 2 hours", "initial_response: 2 hourz"))
    with pytest.raises(ConfigError) as caught:
        load_policy(path)
    assert str(caught.value) == (
        f'vmoso.yaml: levels.1.initial_response: "2 hourz" is not a duration {DURATIONS}'
    )
    assert caught.value.source == "vmoso.yaml"
    assert caught.value.key == "levels.1.initial_response"


def test_non_utf8_file(tmp_path):
    path = tmp_path / "desk.yaml"
    path.write_bytes(mutate("Desk Support", "Café Support").encode("latin-1"))
    with pytest.raises(ConfigError) as caught:
        load_policy(path)
    assert str(caught.value) == (
        "desk.yaml: is not UTF-8 text (byte 0xe9 on line 1): save it as UTF-8"
    )


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        load_policy(path)
    assert str(caught.value) == f"nope.yaml: no such policy file ({path})"


def test_a_utf8_byte_order_mark_is_fine(tmp_path):
    path = tmp_path / "desk.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + VALID.encode())
    assert load_policy(path).title == "Desk Support"


# --- through the command: exit 2, one line, no traceback -------------------------------

CLI_CASES = ["bad-duration", "unquoted-time-read-as-1050", "yaml-syntax-error", "empty-file",
             "duplicate-level", "holiday-date-impossible"]


@pytest.mark.parametrize(
    ("text", "expected"), [case for case in CASES if case.id in CLI_CASES],
    ids=[case.id for case in CASES if case.id in CLI_CASES],
)
def test_policy_check_reports_one_line_and_exits_2(tmp_path, text, expected):
    path = tmp_path / "desk.yaml"
    path.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(main, ["policy", "check", str(path)])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == f"Error: {expected}\n"
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, ConfigError)


@pytest.mark.parametrize("kind", ["non-utf8", "missing"])
def test_policy_check_on_unreadable_files(tmp_path, kind):
    path = tmp_path / "desk.yaml"
    if kind == "non-utf8":
        path.write_bytes(b"title: Caf\xe9\n")
    result = CliRunner().invoke(main, ["policy", "check", str(path)])
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: desk.yaml: ")
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.output


def test_policy_check_in_a_real_process(tmp_path):
    path = tmp_path / "desk.yaml"
    path.write_text(mutate('to: "17:30"', "to: 17:30"), encoding="utf-8")
    helpdesk = Path(sys.executable).with_name("helpdesk")
    command = [str(helpdesk)] if helpdesk.exists() else [sys.executable, "-m", "gateway"]
    done = subprocess.run(
        [*command, "policy", "check", str(path)],
        capture_output=True, text=True, cwd=tmp_path, timeout=60, check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == (
        'Error: desk.yaml: calendar.hours.0.to: write times in quotes ("17:30")\n'
    )
