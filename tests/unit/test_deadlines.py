"""Deadlines from a policy and a case's facts, on a fake clock.

Every instant is written out; ``now`` is always given, never read. The worked
examples are the ones a support manager checks by hand against the seed:
Vmoso's escalation ladder over a weekend, a holiday and a DST change, and
LumenVox's "within three business days" and its window that runs past
midnight (Mon–Fri 08:00 → 01:00 the next morning, GMT).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import yaml

from gateway.deadlines import CaseEvent, CaseFacts, Due, deadlines, due_at
from gateway.policy.loader import load_policy, parse_policy
from gateway.policy.model import BusinessDays, Clock, Policy, Span
from gateway.settings import PROJECT_ROOT

POLICIES = PROJECT_ROOT / "config" / "policies"
LA = ZoneInfo("America/Los_Angeles")
GMT = ZoneInfo("Etc/GMT")


def la(month: int, day: int, hour: int, minute: int = 0, year: int = 2026) -> datetime:
    """Local time of the Vmoso desk (Pacific)."""
    return datetime(year, month, day, hour, minute, tzinfo=LA)


def gmt(month: int, day: int, hour: int, minute: int = 0, year: int = 2026) -> datetime:
    """Local time of the LumenVox desk (GMT, no summer time)."""
    return datetime(year, month, day, hour, minute, tzinfo=GMT)


def utc(month: int, day: int, hour: int, minute: int = 0, year: int = 2026) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


@pytest.fixture(scope="module")
def vmoso() -> Policy:
    return load_policy(POLICIES / "vmoso.yaml")


@pytest.fixture(scope="module")
def lumenvox() -> Policy:
    return load_policy(POLICIES / "lumenvox.yaml")


def when(dues: tuple[Due, ...]) -> list[tuple[str, str | None, datetime]]:
    """(kind, role, instant) of each deadline, earliest first."""
    return [(due.kind, due.notify, due.at) for due in dues]


def assert_utc(dues: tuple[Due, ...]) -> None:
    for due in dues:
        assert due.at.utcoffset() == timedelta(0), due


# --- Vmoso: a Priority 1 opened on a Friday 30 minutes before close ---------------------


def test_vmoso_priority_1_friday_afternoon_escalates_on_monday(vmoso):
    # "2 hours (business hours only)"; "not resolved within two business hours, the Vmoso
    # Customer Support Manager ... is notified"; "within three business hours, the
    # relevant Vmoso Directors are notified". Desk: Mon–Fri 09:00–17:00 Pacific.
    opened = la(11, 20, 16, 30)  # Friday 2026-11-20, 30 minutes before close
    dues = deadlines(vmoso, CaseFacts(level=1, opened_at=opened), now=opened)
    assert when(dues) == [
        ("initial_response", None, la(11, 23, 10, 30)),             # 30 min Fri + 1.5 h Mon
        ("escalation", "customer_support_manager", la(11, 23, 10, 30)),
        ("escalation", "directors", la(11, 23, 11, 30)),
    ]
    assert_utc(dues)
    assert dues[0].at == utc(11, 23, 18, 30)  # PST is UTC-8
    assert [(d.level, d.since, d.step) for d in dues] == [
        (1, opened, None), (1, opened, 0), (1, opened, 1),
    ]
    assert not any(due.overdue(opened) for due in dues)
    assert all(due.overdue(la(11, 23, 11, 30)) for due in dues)


def test_vmoso_calendar_closes_on_thanksgiving_only(vmoso):
    # US federal holidays: Thanksgiving, Thu 2026-11-26; the Friday after is a working day.
    assert not vmoso.calendar.is_open(la(11, 26, 10))
    assert vmoso.calendar.is_open(la(11, 27, 10))
    assert vmoso.calendar.is_open(la(11, 25, 10))


def test_vmoso_priority_1_across_thanksgiving(vmoso):
    opened = la(11, 25, 16, 30)  # Wednesday before Thanksgiving, 30 minutes before close
    dues = deadlines(vmoso, CaseFacts(level=1, opened_at=opened), now=opened)
    assert when(dues) == [
        ("initial_response", None, la(11, 27, 10, 30)),  # Thursday closed; then Friday
        ("escalation", "customer_support_manager", la(11, 27, 10, 30)),
        ("escalation", "directors", la(11, 27, 11, 30)),
    ]


def test_vmoso_priority_1_across_the_fall_back(vmoso):
    # Clocks go back on Sun 2026-11-01: Friday is PDT (UTC-7), Monday PST (UTC-8).
    opened = la(10, 30, 16, 30)
    assert opened == utc(10, 30, 23, 30)
    dues = deadlines(vmoso, CaseFacts(level=1, opened_at=opened), now=opened)
    assert when(dues) == [
        ("initial_response", None, utc(11, 2, 18, 30)),  # Mon 10:30 PST
        ("escalation", "customer_support_manager", utc(11, 2, 18, 30)),
        ("escalation", "directors", utc(11, 2, 19, 30)),  # Mon 11:30 PST
    ]
    assert dues[2].at.astimezone(LA).strftime("%a %H:%M %Z") == "Mon 11:30 PST"


def test_vmoso_priority_1_across_the_spring_forward(vmoso):
    # Clocks go forward on Sun 2026-03-08: Friday is PST (UTC-8), Monday PDT (UTC-7).
    opened = la(3, 6, 16, 30)
    dues = deadlines(vmoso, CaseFacts(level=1, opened_at=opened), now=opened)
    assert when(dues)[0] == ("initial_response", None, utc(3, 9, 17, 30))  # Mon 10:30 PDT
    assert dues[-1].at.astimezone(LA).strftime("%a %H:%M %Z") == "Mon 11:30 PDT"


def test_vmoso_lower_priorities_have_no_ladder_and_count_business_hours(vmoso):
    opened = la(11, 23, 9)  # Monday opening
    # "16 hours (business hours only)": two full 8-hour days.
    dues = deadlines(vmoso, CaseFacts(level=4, opened_at=opened), now=opened)
    assert when(dues) == [("initial_response", None, la(11, 24, 17))]
    dues = deadlines(vmoso, CaseFacts(level=2, opened_at=la(11, 20, 15)), now=la(11, 20, 15))
    assert when(dues) == [("initial_response", None, la(11, 23, 11))]


# --- LumenVox: "within three business days" ---------------------------------------------


@pytest.mark.parametrize(
    ("opened", "due"),
    [
        # Friday in the window: the same business moment three business days later.
        pytest.param(gmt(11, 20, 10), gmt(11, 25, 10), id="fri-10:00-to-wed-10:00"),
        # Friday 23:30 is still Friday's window (open until Sat 01:00).
        pytest.param(gmt(11, 20, 23, 30), gmt(11, 25, 23, 30), id="fri-23:30-to-wed-23:30"),
        # Saturday noon is closed: counting starts at Monday's opening.
        pytest.param(gmt(11, 21, 12), gmt(11, 26, 8), id="sat-12:00-to-thu-08:00"),
        # Saturday 00:30 still belongs to Friday's window.
        pytest.param(gmt(11, 21, 0, 30), gmt(11, 26, 0, 30), id="sat-00:30-to-thu-00:30"),
    ],
)
def test_lumenvox_severity_4_within_three_business_days(lumenvox, opened, due):
    # "24 Hours (Within three business days) 8am – 1am GMT M-F"
    dues = deadlines(lumenvox, CaseFacts(level=4, opened_at=opened), now=opened)
    # Updates "upon determined path to resolution" and resolution "To be determined":
    # no timers; only the response is due.
    assert when(dues) == [("initial_response", None, due)]


def test_lumenvox_severity_3_within_one_business_day(lumenvox):
    # "8 Hours (Within one business day)"; resolution "Next minor or major release".
    opened = gmt(11, 20, 16)  # Friday
    dues = deadlines(lumenvox, CaseFacts(level=3, opened_at=opened), now=opened)
    assert when(dues) == [("initial_response", None, gmt(11, 23, 16))]


# --- LumenVox severity 1: a business-hour response, then the clock ----------------------


@pytest.mark.parametrize(
    ("opened", "response"),
    [
        # Fri 00:30 is inside Thursday's window (Thu 08:00 → Fri 01:00): 30 minutes
        # there, 30 more from Friday's 08:00 opening.
        pytest.param(gmt(11, 20, 0, 30), gmt(11, 20, 8, 30), id="fri-00:30"),
        # Sat 00:30 is inside Friday's window: the other half hour is Monday's.
        pytest.param(gmt(11, 21, 0, 30), gmt(11, 23, 8, 30), id="sat-00:30"),
        # Mon 00:30 belongs to no window (none opens on Sunday).
        pytest.param(gmt(11, 23, 0, 30), gmt(11, 23, 9), id="mon-00:30"),
        # Fri 01:00 is the close itself: closed, so Friday 08:00 + 1 hour.
        pytest.param(gmt(11, 20, 1), gmt(11, 20, 9), id="fri-01:00"),
        pytest.param(gmt(11, 18, 14), gmt(11, 18, 15), id="wed-14:00"),
    ],
)
def test_lumenvox_severity_1_response_is_one_business_hour(lumenvox, opened, response):
    # "1 hours 8am – 1am GMT M-F"; "Resolution target time: 24 hours" on the clock.
    dues = deadlines(lumenvox, CaseFacts(level=1, opened_at=opened), now=opened)
    # Earliest first: opened late on a Friday night, the 24 hours of the clock run out
    # on Sunday, before Monday's first business hour.
    assert when(dues) == sorted(
        [("initial_response", None, response), ("resolution", None, opened + timedelta(hours=24))],
        key=lambda item: item[2],
    )


def test_lumenvox_severity_1_updates_every_4_hours_on_the_clock_after_first_response(lumenvox):
    # "Resources dedicated: Continuously until Error is resolved Progress Update: every
    # 4 hours Resolution target time: 24 hours"
    opened = gmt(11, 20, 0, 30)
    responded = CaseEvent("responded", gmt(11, 20, 8, 10))
    facts = CaseFacts(level=1, opened_at=opened, events=(responded,))
    assert when(deadlines(lumenvox, facts, now=gmt(11, 20, 8, 10))) == [
        ("progress_update", None, gmt(11, 20, 12, 10)),
        ("resolution", None, gmt(11, 21, 0, 30)),
    ]
    # An update late on Friday: the next one falls in the night, the desk closed or not.
    late = CaseEvent("update_sent", gmt(11, 20, 23))
    facts = CaseFacts(level=1, opened_at=opened, events=(responded, late))
    dues = deadlines(lumenvox, facts, now=gmt(11, 20, 23))
    assert when(dues) == [
        ("resolution", None, gmt(11, 21, 0, 30)),
        ("progress_update", None, gmt(11, 21, 3)),
    ]
    assert dues[1].since == gmt(11, 20, 23)


def test_lumenvox_severity_2_daily_updates_are_business_days(lumenvox):
    # "4 hours 8am – 1am GMT M-F"; "Progress Update: Daily"; "Resolution target time:
    # 48 hours" of work "continuously during LumenVox' normal business hours".
    opened = gmt(11, 20, 22)  # Friday 22:00: three business hours left before Sat 01:00
    assert when(deadlines(lumenvox, CaseFacts(level=2, opened_at=opened), now=opened)) == [
        ("initial_response", None, gmt(11, 23, 9)),  # 3 business hours Fri, 1 on Mon
        # 3 on Friday, 17 on Monday, 17 on Tuesday, 11 on Wednesday from 08:00.
        ("resolution", None, gmt(11, 25, 19)),
    ]
    responded = CaseEvent("responded", gmt(11, 20, 23))
    facts = CaseFacts(level=2, opened_at=opened, events=(responded,))
    # "Daily" from Friday 23:00 is the next business day at the same business moment.
    assert when(deadlines(lumenvox, facts, now=gmt(11, 20, 23))) == [
        ("progress_update", None, gmt(11, 23, 23)),
        ("resolution", None, gmt(11, 25, 19)),
    ]


# --- events -----------------------------------------------------------------------------


def test_severity_raised_counts_the_new_level_from_the_change(lumenvox):
    opened = gmt(11, 23, 9)  # Monday
    raised = CaseEvent("severity_changed", gmt(11, 24, 14), level=1)
    facts = CaseFacts(level=3, opened_at=opened, events=(raised,))
    now = gmt(11, 24, 14)
    dues = deadlines(lumenvox, facts, now=now)
    # 1 business hour from the change, not from the opening: not born overdue.
    assert when(dues) == [
        ("initial_response", None, gmt(11, 24, 15)),
        ("resolution", None, gmt(11, 25, 14)),
    ]
    assert {(due.level, due.since) for due in dues} == {(1, gmt(11, 24, 14))}
    assert not any(due.overdue(now) for due in dues)


def test_severity_raised_after_the_first_answer_starts_the_update_cadence(lumenvox):
    # Once answered, the case owes progress updates, counted from the change.
    opened = gmt(11, 23, 9)
    events = (
        CaseEvent("responded", gmt(11, 23, 10)),
        CaseEvent("severity_changed", gmt(11, 24, 14), level=1),
    )
    dues = deadlines(lumenvox, CaseFacts(level=3, opened_at=opened, events=events),
                     now=gmt(11, 24, 14))
    assert when(dues) == [
        ("progress_update", None, gmt(11, 24, 18)),
        ("resolution", None, gmt(11, 25, 14)),
    ]


def test_severity_lowered_gets_the_lower_levels_full_time(lumenvox):
    opened = gmt(11, 23, 9)
    lowered = CaseEvent("severity_changed", gmt(11, 23, 9, 30), level=4)
    dues = deadlines(lumenvox, CaseFacts(level=1, opened_at=opened, events=(lowered,)),
                     now=gmt(11, 23, 9, 30))
    assert when(dues) == [("initial_response", None, gmt(11, 26, 9, 30))]


def test_a_severity_change_needs_its_level(lumenvox):
    event = CaseEvent("severity_changed", gmt(11, 23, 10))
    with pytest.raises(ValueError, match="needs its new level"):
        deadlines(lumenvox, CaseFacts(level=1, opened_at=gmt(11, 23, 9), events=(event,)),
                  now=gmt(11, 23, 11))


def parallels_with_times() -> Policy:
    """Parallels' rules as shipped, with response times added (its seed states none)."""
    data = yaml.safe_load((POLICIES / "parallels.yaml").read_text(encoding="utf-8"))
    for number, target in {1: "2 hours", 2: "4 hours", 3: "12 hours", 4: "24 hours"}.items():
        data["levels"][number]["initial_response"] = target
    return parse_policy(yaml.safe_dump(data), name="parallels", source="parallels.yaml")


def test_parallels_as_shipped_promises_no_time():
    # The seed states no response, update or resolution time: nothing is ever due.
    parallels = load_policy(POLICIES / "parallels.yaml")
    for level in (1, 2, 3, 4):
        facts = CaseFacts(level=level, opened_at=utc(11, 23, 9))
        assert deadlines(parallels, facts, now=utc(11, 23, 9)) == ()


def test_parallels_workaround_lowers_to_3_by_itself():
    # "Once a workaround is made available, the issue becomes Severity 3 (Normal)."
    parallels = parallels_with_times()
    opened = utc(11, 23, 9)
    workaround = CaseEvent("workaround", utc(11, 23, 10))
    dues = deadlines(parallels, CaseFacts(level=1, opened_at=opened, events=(workaround,)),
                     now=utc(11, 23, 10))
    assert [(d.kind, d.level, d.since, d.at) for d in dues] == [
        ("initial_response", 3, utc(11, 23, 10), utc(11, 23, 22)),
    ]
    # A workaround on a level the rule does not cover changes nothing.
    dues = deadlines(parallels, CaseFacts(level=4, opened_at=opened, events=(workaround,)),
                     now=utc(11, 23, 10))
    assert [(d.kind, d.level, d.at) for d in dues] == [
        ("initial_response", 4, utc(11, 24, 9)),
    ]


def test_lumenvox_workaround_waits_for_the_engineer(lumenvox):
    # "... will be reduced to P3 provided there is no remaining significant impact":
    # decided by the support engineer, who records a severity change.
    opened = gmt(11, 23, 9)
    workaround = CaseEvent("workaround", gmt(11, 23, 9, 20))
    facts = CaseFacts(level=1, opened_at=opened, events=(workaround,))
    before = deadlines(lumenvox, CaseFacts(level=1, opened_at=opened), now=gmt(11, 23, 9, 20))
    assert deadlines(lumenvox, facts, now=gmt(11, 23, 9, 20)) == before
    assert when(before) == [
        ("initial_response", None, gmt(11, 23, 10)),
        ("resolution", None, gmt(11, 24, 9)),
    ]
    decided = CaseEvent("severity_changed", gmt(11, 23, 9, 40), level=3)
    facts = CaseFacts(level=1, opened_at=opened, events=(workaround, decided))
    dues = deadlines(lumenvox, facts, now=gmt(11, 23, 9, 40))
    assert [(d.kind, d.level, d.at) for d in dues] == [
        ("initial_response", 3, gmt(11, 24, 9, 40)),
    ]


def test_resolved_has_nothing_due(lumenvox, vmoso):
    resolved = CaseEvent("resolved", gmt(11, 23, 12))
    facts = CaseFacts(level=1, opened_at=gmt(11, 23, 9), events=(resolved,))
    assert deadlines(lumenvox, facts, now=gmt(11, 23, 12)) == ()
    assert deadlines(vmoso, facts, now=gmt(11, 30, 12)) == ()


def test_reopened_restarts_the_levels_clocks(lumenvox, vmoso):
    opened = gmt(11, 23, 9)
    events = (
        CaseEvent("responded", gmt(11, 23, 9, 10)),
        CaseEvent("resolved", gmt(11, 23, 12)),
        CaseEvent("reopened", gmt(11, 24, 10)),
    )
    dues = deadlines(lumenvox, CaseFacts(level=1, opened_at=opened, events=events),
                     now=gmt(11, 24, 10))
    assert when(dues) == [
        ("progress_update", None, gmt(11, 24, 14)),
        ("resolution", None, gmt(11, 25, 10)),
    ]
    assert {due.since for due in dues} == {gmt(11, 24, 10)}
    # Vmoso: the ladder starts again, even the steps already sent before the reopening.
    events = (
        CaseEvent("escalated", la(11, 23, 11), role="customer_support_manager"),
        CaseEvent("resolved", la(11, 23, 11, 30)),
        CaseEvent("reopened", la(11, 24, 15)),
    )
    dues = deadlines(vmoso, CaseFacts(level=1, opened_at=la(11, 23, 9), events=events),
                     now=la(11, 24, 15))
    assert when(dues) == [
        ("initial_response", None, la(11, 24, 17)),  # Tue 15:00 + 2 business hours: close
        ("escalation", "customer_support_manager", la(11, 24, 17)),
        ("escalation", "directors", la(11, 25, 10)),
    ]


def test_an_escalation_sent_is_not_due_again(vmoso):
    opened = la(11, 23, 9)
    events = (
        CaseEvent("responded", la(11, 23, 9, 45)),
        CaseEvent("escalated", la(11, 23, 11), role="customer_support_manager"),
    )
    facts = CaseFacts(level=1, opened_at=opened, events=events)
    dues = deadlines(vmoso, facts, now=la(11, 23, 11))
    assert when(dues) == [("escalation", "directors", la(11, 23, 12))]
    assert dues[0].step == 1
    # Both sent: nothing left (Vmoso states no updates or resolution time).
    done = (*events, CaseEvent("escalated", la(11, 23, 12), role="directors"))
    assert deadlines(vmoso, CaseFacts(level=1, opened_at=opened, events=done),
                     now=la(11, 23, 12)) == ()


def test_events_after_now_have_not_happened(vmoso):
    opened = la(11, 23, 9)
    events = (
        CaseEvent("responded", la(11, 23, 10)),
        CaseEvent("escalated", la(11, 23, 11), role="customer_support_manager"),
        CaseEvent("resolved", la(11, 23, 12)),
    )
    facts = CaseFacts(level=1, opened_at=opened, events=events)
    assert when(deadlines(vmoso, facts, now=la(11, 23, 9, 30))) == [
        ("initial_response", None, la(11, 23, 11)),
        ("escalation", "customer_support_manager", la(11, 23, 11)),
        ("escalation", "directors", la(11, 23, 12)),
    ]
    assert when(deadlines(vmoso, facts, now=la(11, 23, 10))) == [
        ("escalation", "customer_support_manager", la(11, 23, 11)),
        ("escalation", "directors", la(11, 23, 12)),
    ]
    assert when(deadlines(vmoso, facts, now=la(11, 23, 11))) == [
        ("escalation", "directors", la(11, 23, 12)),
    ]
    assert deadlines(vmoso, facts, now=la(11, 23, 12)) == ()


def test_overdue_deadlines_are_still_listed(vmoso):
    opened = la(11, 23, 9)
    dues = deadlines(vmoso, CaseFacts(level=1, opened_at=opened), now=la(11, 25, 9))
    assert len(dues) == 3
    assert all(due.overdue(la(11, 25, 9)) for due in dues)


TIERED = """\
title: Tiered Support
calendar:
  timezone: Etc/GMT
  hours:
    - days: Mon-Fri
      from: "09:00"
      to: "17:00"
default_level: 3
tiers: [standard, premium]
levels:
  1:
    name: Critical
    description: Down.
    initial_response: 4 business hours
    initial_response_by_tier: {premium: 30 business minutes}
  2: {name: Major, description: Impaired., initial_response: 8 business hours}
  3: {name: Minor, description: Other., initial_response: 2 business days}
  4:
    name: Question
    description: How to.
    initial_response: null
    initial_response_by_tier: {premium: 1 business day}
"""


@pytest.mark.parametrize(
    ("level", "tier", "due"),
    [
        pytest.param(1, "premium", gmt(11, 20, 16, 45), id="premium-30-business-minutes"),
        # 45 minutes on Friday, 3 h 15 min on Monday.
        pytest.param(1, None, gmt(11, 23, 12, 15), id="no-tier-4-business-hours"),
        pytest.param(1, "standard", gmt(11, 23, 12, 15), id="standard-4-business-hours"),
        pytest.param(1, "gold", gmt(11, 23, 12, 15), id="unknown-tier-the-common-target"),
        pytest.param(4, "premium", gmt(11, 23, 16, 15), id="premium-only-target"),
        pytest.param(4, None, None, id="no-target-no-deadline"),
    ],
)
def test_tier_overrides_the_initial_response(level, tier, due):
    policy = parse_policy(TIERED, name="tiered", source="tiered.yaml")
    opened = gmt(11, 20, 16, 15)  # Friday, 45 minutes before close
    dues = deadlines(policy, CaseFacts(level=level, opened_at=opened, tier=tier), now=opened)
    assert when(dues) == ([] if due is None else [("initial_response", None, due)])


def test_the_key_of_a_deadline_is_stable(vmoso):
    # The same instant given in another zone is the same deadline.
    local = deadlines(vmoso, CaseFacts(level=1, opened_at=la(11, 23, 9)), now=la(11, 23, 9))
    in_utc = deadlines(vmoso, CaseFacts(level=1, opened_at=utc(11, 23, 17)), now=utc(11, 23, 17))
    assert [d.key for d in local] == [d.key for d in in_utc] == [
        "initial_response:L1:2026-11-23T17:00:00+00:00",
        "escalation:customer_support_manager:L1:2026-11-23T17:00:00+00:00",
        "escalation:directors:L1:2026-11-23T17:00:00+00:00",
    ]


# --- due_at -----------------------------------------------------------------------------


def test_due_at_wall_clock_is_plain_addition_in_utc(vmoso):
    # 24 hours of the clock across the fall-back is 23 hours of wall time on the dial.
    start = la(10, 31, 12)
    due = due_at(vmoso, start, Span(timedelta(hours=24), Clock.WALL))
    assert due == utc(11, 1, 19)
    assert due.tzinfo is UTC
    assert due.astimezone(LA).strftime("%H:%M %Z") == "11:00 PST"


def test_due_at_business_hours(vmoso, lumenvox):
    assert due_at(vmoso, la(11, 20, 16, 30), Span(timedelta(hours=2), Clock.BUSINESS)) == (
        la(11, 23, 10, 30)
    )
    # Exactly Friday's remaining half hour: due at the close, not at Monday's opening.
    assert due_at(lumenvox, gmt(11, 21, 0, 30), Span(timedelta(minutes=30), Clock.BUSINESS)) == (
        gmt(11, 21, 1)
    )


def test_due_at_business_days(lumenvox):
    assert due_at(lumenvox, gmt(11, 20, 10), BusinessDays(3)) == gmt(11, 25, 10)
    assert due_at(lumenvox, gmt(11, 21, 12), BusinessDays(1)) == gmt(11, 24, 8)


def test_due_at_on_an_around_the_clock_calendar():
    virtuozzo = load_policy(POLICIES / "virtuozzo.yaml")
    start = utc(11, 20, 16, 30)
    assert due_at(virtuozzo, start, Span(timedelta(hours=2), Clock.WALL)) == utc(11, 20, 18, 30)
    assert due_at(virtuozzo, start, Span(timedelta(hours=2), Clock.BUSINESS)) == (
        utc(11, 20, 18, 30)
    )
    assert due_at(virtuozzo, start, BusinessDays(2)) == utc(11, 22, 16, 30)


@pytest.mark.parametrize(
    "target",
    [
        pytest.param(Span(timedelta(hours=2), Clock.WALL), id="wall"),
        pytest.param(Span(timedelta(hours=2), Clock.BUSINESS), id="business"),
        pytest.param(BusinessDays(3), id="business-days"),
    ],
)
def test_due_at_refuses_a_naive_start(lumenvox, target):
    with pytest.raises(ValueError, match="timezone-aware"):
        due_at(lumenvox, datetime(2026, 11, 20, 10), target)


def test_deadlines_refuse_a_naive_opening(lumenvox):
    with pytest.raises(ValueError, match="timezone-aware"):
        deadlines(lumenvox, CaseFacts(level=1, opened_at=datetime(2026, 11, 20, 10)),
                  now=gmt(11, 20, 10))
