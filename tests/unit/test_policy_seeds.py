"""The five shipped policies say what their seed documents say.

Every expectation below is written out from the policy's source document
(quoted beside it), never read back from the YAML: a policy file that
drifts from its document fails here. Where a seed states nothing, the
expectation says so and names the configured CHOICE.
"""

from __future__ import annotations

from datetime import time, timedelta
from typing import Any

import pytest

from gateway.calendar import Calendar, Holidays, Window
from gateway.policy.loader import load_policy
from gateway.policy.model import (
    BusinessDays,
    Cadence,
    Clarification,
    Clock,
    Eligibility,
    EscalationStep,
    Level,
    Lowering,
    Milestone,
    OnEvents,
    Policy,
    Span,
)
from gateway.policy.table import render_table
from gateway.settings import PROJECT_ROOT

POLICIES = PROJECT_ROOT / "config" / "policies"
MON_FRI = frozenset(range(5))


def hours(n: float, clock: Clock = Clock.WALL) -> Span:
    return Span(timedelta(hours=n), clock)


def business_hours(n: float) -> Span:
    return Span(timedelta(hours=n), Clock.BUSINESS)


def load(name: str) -> Policy:
    return load_policy(POLICIES / f"{name}.yaml")


def table_of(level: Level) -> dict[str, Any]:
    """The parts of a level a seed's table states."""
    return {
        "name": level.name,
        "initial_response": level.initial_response,
        "initial_response_by_tier": dict(level.initial_response_by_tier),
        "progress_updates": level.progress_updates,
        "resolution": level.resolution,
        "escalation": level.escalation,
        "escalation_on_request": level.escalation_on_request,
        "needs_phone": level.needs_phone,
    }


def row(
    name: str,
    initial_response: Any,
    *,
    progress_updates: Any = None,
    resolution: Any = None,
    escalation: tuple[EscalationStep, ...] = (),
    escalation_on_request: str | None = None,
    needs_phone: bool = False,
) -> dict[str, Any]:
    """One expected row; everything not given is "the seed states none"."""
    return {
        "name": name,
        "initial_response": initial_response,
        "initial_response_by_tier": {},
        "progress_updates": progress_updates,
        "resolution": resolution,
        "escalation": escalation,
        "escalation_on_request": escalation_on_request,
        "needs_phone": needs_phone,
    }


def assert_levels(policy: Policy, expected: dict[int, dict[str, Any]]) -> None:
    assert list(policy.levels) == [1, 2, 3, 4]
    for number, want in expected.items():
        assert policy.level(number).number == number
        assert table_of(policy.level(number)) == want, f"level {number}"


# --- 000: Virtuozzo ---------------------------------------------------------------------


def test_virtuozzo_matches_its_seed():
    policy = load("virtuozzo")
    assert policy.name == "virtuozzo"
    assert policy.title == "Virtuozzo Platform Support"
    assert_levels(policy, {
        # "Level 1 Critical Business Impact: ... Within 2 hours"; "the Team will begin
        # work on the problem within 2 hours of notification" (no business hours named).
        1: row("Critical Business Impact", hours(2)),
        # "Level 2 Significant Business Impact: ... Within 6 hours"
        2: row("Significant Business Impact", hours(6)),
        # "Level 3 Minimal Business Impact: ... Within 12 hours"
        3: row("Minimal Business Impact", hours(12)),
        # "Level 4 Nominal Business Impact: ... Within 24 hours"
        4: row("Nominal Business Impact", hours(24)),
    })
    # The seed names no business hours: targets run on the clock (UTC is a CHOICE
    # that only affects how due times are shown).
    assert policy.calendar == Calendar.around_the_clock("UTC")
    # The seed names no default level. CHOICE: 3, "Questions on product functionality".
    assert policy.default_level == 3
    severity = policy.severity
    # "The customer determines the initial severity level when placing a request for
    # assistance."
    assert severity.customer_sets_initial is True
    # "Severity levels may be changed after initial contact and assessment of the issue
    # from a Support Engineer, providing the customer is in agreement."
    assert severity.changes_need_customer_agreement is True
    # The seed states no automatic lowering on a workaround or an unreachable customer.
    assert severity.workaround_lowers is None
    assert severity.unreachable_lowers is None
    # Level 2: "Maximum severity level for the issues with .Net and MS-SQL due to the
    # technical peculiarities."
    assert_net_and_mssql_capped_at_2(policy)
    # CHOICE (the customer "determines the initial severity level"): ask when it is
    # missing. The seed does not offer to query a doubtful one.
    assert policy.clarification == Clarification(
        ask_when_priority_missing=True, query_doubtful_priority=False
    )
    # "Note: We provide support for Hosting Providers and Enterprize users only. In case
    # Developers face any problems with their applications hosting, they should contact
    # their Hoster's Support."
    assert policy.eligibility.who == "known_customers"
    assert "Hosting Providers and Enterprise users only" in (policy.eligibility.others_told or "")
    assert "hosting provider's support" in (policy.eligibility.others_told or "")
    assert policy.tiers == ()


def assert_net_and_mssql_capped_at_2(policy: Policy) -> None:
    [cap] = policy.severity.caps
    assert cap.topic == ".Net and MS-SQL"
    assert cap.most_urgent == 2
    words = {word.lower() for word in cap.words}
    assert {".net", "ms-sql"} <= words


# --- 001: Parallels ---------------------------------------------------------------------


def test_parallels_matches_its_seed():
    policy = load("parallels")
    assert policy.title == "Parallels Support"
    # The seed states no response, update, resolution or escalation time at any level.
    assert_levels(policy, {
        # "Severity 1 (Urgent)"; "Note #2: For Severity 1 and 2 cases it is required to
        # specify a contact phone number on the web form"
        1: row("Urgent", None, needs_phone=True),
        # "Severity 2 (High)"
        2: row("High", None, needs_phone=True),
        # "Severity 3 (Normal)"
        3: row("Normal", None),
        # "Severity 4 (Enhancement)"
        4: row("Enhancement", None),
    })
    # No business hours named; with no time targets the calendar is moot. CHOICE: 24×7 UTC.
    assert policy.calendar == Calendar.around_the_clock("UTC")
    # No default named. CHOICE: Normal.
    assert policy.default_level == 3
    severity = policy.severity
    # "Parallels support uses the following severity level definitions to classify all
    # support requests": support classifies.
    assert severity.customer_sets_initial is False
    # The seed asks for no agreement to a change.
    assert severity.changes_need_customer_agreement is False
    # Severity 1: "Once a workaround is made available, the issue becomes Severity 3
    # (Normal)." Severity 2: "Once workaround is available and situation is stabilized
    # the issue becomes Severity 3 (Normal)." Nobody decides it: it "becomes" 3.
    assert severity.workaround_lowers == Lowering(frozenset({1, 2}), 3, decided_by=())
    # "If you are unreachable over the phone, Severity can be reduced to 3 (Normal) by
    # the decision of a Support team leader or account manager."
    assert severity.unreachable_lowers == Lowering(
        frozenset({1, 2}), 3, decided_by=("support_team_leader", "account_manager")
    )
    assert policy.role_title("support_team_leader") == "Support Team Leader"
    assert policy.role_title("account_manager") == "Account Manager"
    assert severity.caps == ()
    assert policy.clarification == Clarification(False, False)
    # The seed turns no one away.
    assert policy.eligibility == Eligibility(who="all", others_told=None)


# --- 002: Jelastic ----------------------------------------------------------------------


def test_jelastic_matches_its_seed():
    policy = load("jelastic")
    assert policy.title == "Jelastic Support"
    assert_levels(policy, {
        # "Level 1 | Critical Business Impact: | Within 2 hours |"
        1: row("Critical Business Impact", hours(2)),
        # "Level 2 | Significant Business Impact: ... | Within 6 hours |"
        2: row("Significant Business Impact", hours(6)),
        # "Level 3 | Minimal Business Impact: ... | Within 12 hours |"
        3: row("Minimal Business Impact", hours(12)),
        # "Level 4 | Nominal Business Impact: ... | Within 24 hours |"
        4: row("Nominal Business Impact", hours(24)),
    })
    # No business hours named: on the clock. CHOICE: UTC.
    assert policy.calendar == Calendar.around_the_clock("UTC")
    assert policy.default_level == 3  # CHOICE, as Virtuozzo
    severity = policy.severity
    # "The customer determines the initial severity level when placing a request for
    # assistance."
    assert severity.customer_sets_initial is True
    # "Severity levels may be changed after initial contact and assessment of the issue
    # from a Jelastic Support Engineer, providing the customer is in agreement."
    assert severity.changes_need_customer_agreement is True
    assert severity.workaround_lowers is None
    assert severity.unreachable_lowers is None
    # Level 2: "Maximum severity level for the issues with .Net and MS-SQL due to the
    # technical peculiarities."
    assert_net_and_mssql_capped_at_2(policy)
    assert policy.clarification == Clarification(True, False)
    # "Note: We provide support for Hosting Providers and Enterprize users only."
    assert policy.eligibility.who == "known_customers"
    assert "Hosting Providers and Enterprise users only" in (policy.eligibility.others_told or "")


# --- 003: Vmoso -------------------------------------------------------------------------


def test_vmoso_matches_its_seed():
    policy = load("vmoso")
    assert policy.title == "Vmoso Support"
    on_request = "support_engineer"
    assert_levels(policy, {
        # "Priority 1 – Emergency"; "Target Maximum Initial Response Time: 2 hours
        # (business hours only)"; "If the problem is not resolved within two business
        # hours, the Vmoso Customer Support Manager for your organization is notified
        # ... If the problem is still not resolved within three business hours, the
        # relevant Vmoso Directors are notified". No update cadence or resolution time.
        1: row(
            "Emergency", business_hours(2),
            escalation=(
                EscalationStep(business_hours(2), "customer_support_manager"),
                EscalationStep(business_hours(3), "directors"),
            ),
        ),
        # "Priority 2 – Critical"; "4 hours (business hours only)"; "you can request an
        # escalation of the issue by informing the Support Engineer"
        2: row("Critical", business_hours(4), escalation_on_request=on_request),
        # "Priority 3 – Normal"; "8 hours (business hours only)"; same escalation sentence.
        3: row("Normal", business_hours(8), escalation_on_request=on_request),
        # "Priority 4 – Enhancement Request"; "16 hours (business hours only)"; same.
        4: row("Enhancement Request", business_hours(16), escalation_on_request=on_request),
    })
    assert policy.role_title("customer_support_manager") == "Vmoso Customer Support Manager"
    assert policy.role_title("directors") == "Vmoso Directors"
    assert policy.role_title("support_engineer") == "Support Engineer"
    # "Support service is available in local business hours": neither hours nor place
    # named. CHOICE: Mon–Fri 09:00–17:00 Pacific, US federal holidays.
    assert policy.calendar == Calendar(
        "America/Los_Angeles",
        [Window(MON_FRI, time(9), time(17))],
        Holidays(country="US"),
    )
    # "Priority 3 is for all other cases."
    assert policy.default_level == 3
    severity = policy.severity
    # "You specify the priority when you submit a Support Request."
    assert severity.customer_sets_initial is True
    assert severity.changes_need_customer_agreement is False
    assert severity.workaround_lowers is None
    assert severity.unreachable_lowers is None
    assert severity.caps == ()
    # "We may request clarification and explanation of the priority you specify if we
    # are unsure of the reasons for your priority assessment."
    assert policy.clarification == Clarification(
        ask_when_priority_missing=False, query_doubtful_priority=True
    )
    assert policy.eligibility == Eligibility(who="all", others_told=None)


# --- 004: LumenVox ----------------------------------------------------------------------


def test_lumenvox_matches_its_seed():
    policy = load("lumenvox")
    assert policy.title == "LumenVox Technical Support"
    on_events = OnEvents(("path_found", "resolved"))
    assert_levels(policy, {
        # "1 - Critical | 1 hours 8am – 1am GMT M-F | Resources dedicated: Continuously
        # until Error is resolved Progress Update: every 4 hours Resolution target time:
        # 24 hours"
        1: row(
            "Critical", business_hours(1),
            progress_updates=Cadence(hours(4)), resolution=hours(24),
        ),
        # "2 - Major | 4 hours 8am – 1am GMT M-F | Resources dedicated: Continuously
        # during LumenVox' normal business hours ... Progress Update: Daily Resolution
        # target time: 48 hours"
        2: row(
            "Major", business_hours(4),
            # 48 hours of the business hours the resources work in.
            progress_updates=Cadence(BusinessDays(1)), resolution=business_hours(48),
        ),
        # "3 - Minor | 8 Hours (Within one business day) 8am – 1am GMT M-F | ... Progress
        # Update: Upon determined path to resolution, and then upon actual resolution.
        # Resolution target time: Next minor or major release"
        3: row(
            "Minor", BusinessDays(1),
            progress_updates=on_events, resolution=Milestone("Next minor or major release"),
        ),
        # "4 - Other | 24 Hours (Within three business days) 8am – 1am GMT M-F | ...
        # Progress Update: Upon determined path to resolution, and then upon actual
        # resolution. Resolution target time: To be determined based on development
        # priorities and scheduling."
        4: row(
            "Other", BusinessDays(3),
            progress_updates=on_events,
            resolution=Milestone(
                "To be determined based on development priorities and scheduling"
            ),
        ),
    })
    # "8am – 1am GMT M-F", under every response time; no holidays named.
    assert policy.calendar == Calendar("Etc/GMT", [Window(MON_FRI, time(8), time(1))])
    # "Each Support Request must be assigned a severity level between 1 and 4." No
    # default named. CHOICE: 3 ("Any error in production that does not qualify for
    # severity 1 or 2"), and the customer is asked.
    assert policy.default_level == 3
    assert policy.clarification == Clarification(
        ask_when_priority_missing=True, query_doubtful_priority=False
    )
    severity = policy.severity
    assert severity.customer_sets_initial is True
    assert severity.changes_need_customer_agreement is False
    # "Any error which was originally reported as P1 or P2 but has been temporarily
    # solved with a work-around will be reduced to P3 provided there is no remaining
    # significant impact to production use." The proviso needs a person's judgement.
    assert severity.workaround_lowers == Lowering(
        frozenset({1, 2}), 3, decided_by=("support_engineer",)
    )
    assert severity.unreachable_lowers is None
    assert severity.caps == ()
    # "Customers will be entitled to response times based on their contractual service
    # level agreement" — but the seed prints one table and names no tier.
    assert policy.tiers == ()
    assert policy.eligibility == Eligibility(who="all", others_told=None)


# --- "Critical" is not one level ---------------------------------------------------------


def test_critical_is_level_1_in_lumenvox_and_level_2_in_vmoso():
    # LumenVox: "1 - Critical"; Vmoso: "Priority 2 – Critical" (its 1 is "Emergency").
    lumenvox, vmoso = load("lumenvox"), load("vmoso")
    by_name = {
        name: {n for n, level in policy.levels.items() if level.name == "Critical"}
        for name, policy in (("lumenvox", lumenvox), ("vmoso", vmoso))
    }
    assert by_name == {"lumenvox": {1}, "vmoso": {2}}
    assert "critical" in lumenvox.level(1).words
    assert "critical" in vmoso.level(2).words
    assert "critical" not in vmoso.level(1).words


# --- the table a manager reads ----------------------------------------------------------


def read_grid(text: str) -> dict[str, dict[str, str]]:
    """The levels table of ``render_table`` read back as a person reads it: level →
    column → the cell's text, its wrapped lines joined."""
    lines = text.splitlines()
    rule = next(i for i, line in enumerate(lines) if line.startswith("-----"))
    bounds = []
    position = 0
    for dashes in lines[rule].split("  "):
        bounds.append((position, position + len(dashes)))
        position += len(dashes) + 2
    headers = [lines[rule - 1][s:e].strip() for s, e in bounds]
    rows: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in lines[rule + 1:]:
        if not line.strip():
            break
        cells = [line[s:e].strip() for s, e in bounds]
        if cells[0]:
            current = rows.setdefault(cells[0], {h: [] for h in headers})
        for header, cell in zip(headers, cells, strict=True):
            if cell:
                current[header].append(cell)
    return {
        number: {header: _join(pieces) for header, pieces in columns.items()}
        for number, columns in rows.items()
    }


def _join(pieces: list[str]) -> str:
    text = ""
    for piece in pieces:
        glue = "" if not text or text.endswith("-") else " "
        text += glue + piece
    return text


COLUMNS = ("Name", "Initial response", "Progress updates", "Resolution target", "Escalation")
EVENTS = "when a path to resolution is found, then when resolved"

TABLES = {
    "virtuozzo": (
        "Virtuozzo Platform Support (virtuozzo)",
        "Business hours: around the clock (24×7), UTC",
        {
            "1": ("Critical Business Impact", "2 hours", "not stated", "not stated", "none"),
            "2": ("Significant Business Impact", "6 hours", "not stated", "not stated", "none"),
            "3": ("Minimal Business Impact", "12 hours", "not stated", "not stated", "none"),
            "4": ("Nominal Business Impact", "24 hours", "not stated", "not stated", "none"),
        },
    ),
    "parallels": (
        "Parallels Support (parallels)",
        "Business hours: around the clock (24×7), UTC",
        {
            "1": ("Urgent", "not stated", "not stated", "not stated", "none"),
            "2": ("High", "not stated", "not stated", "not stated", "none"),
            "3": ("Normal", "not stated", "not stated", "not stated", "none"),
            "4": ("Enhancement", "not stated", "not stated", "not stated", "none"),
        },
    ),
    "jelastic": (
        "Jelastic Support (jelastic)",
        "Business hours: around the clock (24×7), UTC",
        {
            "1": ("Critical Business Impact", "2 hours", "not stated", "not stated", "none"),
            "2": ("Significant Business Impact", "6 hours", "not stated", "not stated", "none"),
            "3": ("Minimal Business Impact", "12 hours", "not stated", "not stated", "none"),
            "4": ("Nominal Business Impact", "24 hours", "not stated", "not stated", "none"),
        },
    ),
    "vmoso": (
        "Vmoso Support (vmoso)",
        "Business hours: Mon–Fri 09:00–17:00, America/Los_Angeles; public holidays: US",
        {
            "1": (
                "Emergency", "2 business hours", "not stated", "not stated",
                "after 2 business hours: Vmoso Customer Support Manager; "
                "after 3 business hours: Vmoso Directors",
            ),
            "2": ("Critical", "4 business hours", "not stated", "not stated",
                  "on request: Support Engineer"),
            "3": ("Normal", "8 business hours", "not stated", "not stated",
                  "on request: Support Engineer"),
            "4": ("Enhancement Request", "16 business hours", "not stated", "not stated",
                  "on request: Support Engineer"),
        },
    ),
    "lumenvox": (
        "LumenVox Technical Support (lumenvox)",
        "Business hours: Mon–Fri 08:00–01:00 (next day), Etc/GMT; no holidays",
        {
            "1": ("Critical", "1 business hour", "every 4 hours", "24 hours", "none"),
            "2": ("Major", "4 business hours", "every business day", "48 business hours",
                  "none"),
            "3": ("Minor", "within 1 business day", EVENTS, "Next minor or major release",
                  "none"),
            "4": ("Other", "within 3 business days", EVENTS,
                  "To be determined based on development priorities and scheduling", "none"),
        },
    ),
}


@pytest.mark.parametrize("name", list(TABLES))
def test_render_table_reads_as_the_seed(name):
    title, hours_line, rows = TABLES[name]
    text = render_table(load(name))
    lines = text.splitlines()
    assert lines[0] == title
    assert lines[1] == hours_line
    grid = read_grid(text)
    assert grid == {
        number: {"Level": number, **dict(zip(COLUMNS, cells, strict=True))}
        for number, cells in rows.items()
    }


def test_render_table_states_the_rules():
    vmoso = render_table(load("vmoso"))
    assert "- No severity in the subject: level 3 (Normal)." in vmoso
    assert ("- Escalation on the customer's request at levels 2, 3 and 4: "
            "the Support Engineer is told.") in vmoso
    assert "- Support may ask the customer to explain a doubtful priority." in vmoso
    parallels = render_table(load("parallels"))
    assert "- A workaround lowers levels 1 and 2 to level 3." in parallels
    assert ("- An unreachable customer lowers levels 1 and 2 to level 3, decided by the "
            "Support Team Leader or Account Manager.") in parallels
    assert "- A contact phone number is required at levels 1 and 2." in parallels
    virtuozzo = render_table(load("virtuozzo"))
    assert ("- Issues with .Net and MS-SQL are at most level 2 (Significant Business Impact)."
            in virtuozzo)
    assert "- Severity changes need the customer's agreement." in virtuozzo
    assert "- Known customers only; others are told: We provide support" in virtuozzo
    lumenvox = render_table(load("lumenvox"))
    assert ("- A workaround lowers levels 1 and 2 to level 3, decided by the Support Engineer."
            in lumenvox)
