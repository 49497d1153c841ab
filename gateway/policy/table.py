"""A policy in the words of its document: the table a support manager holds beside it.

``helpdesk policy show`` prints ``render_table``; the acknowledgement says a
target with ``describe_target``. Both read only ``gateway.policy.model``
values, so what customers are told is exactly what is configured.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Sequence
from datetime import timedelta

from gateway.policy.model import (
    BusinessDays,
    Cadence,
    Clock,
    EscalationStep,
    Level,
    Milestone,
    OnEvents,
    Policy,
    Target,
)

_EVENT_WORDS = {
    "path_found": "when a path to resolution is found",
    "resolved": "when resolved",
}
_HEADERS = ("Level", "Name", "Initial response", "Progress updates", "Resolution target",
            "Escalation")
_CELL_WIDTH = 30
NOT_STATED = "not stated"


def describe_duration(amount: timedelta) -> str:
    """ "4 hours", "30 minutes", "1 hour 30 minutes": as a policy document writes it;
    seconds too under an hour ("45 seconds"), where they are not lost in rounding
    (and under a second, "0.5 seconds")."""
    if timedelta(0) <= amount < timedelta(seconds=1):
        return f"{amount.total_seconds():g} seconds"
    minutes, seconds = divmod(int(amount.total_seconds()), 60)
    hours, rest = divmod(minutes, 60)
    parts = []
    if hours:
        parts.append(plural(hours, "hour"))
    if rest or not (hours or seconds):
        parts.append(plural(rest, "minute"))
    if seconds and not hours:
        parts.append(plural(seconds, "second"))
    return " ".join(parts)


def describe_target(target: Target | Milestone) -> str:
    """ "1 business hour", "24 hours", "within 3 business days", or a milestone as written."""
    if isinstance(target, Milestone):
        return target.description
    if isinstance(target, BusinessDays):
        return f"within {plural(target.days, 'business day')}"
    text = describe_duration(target.amount)
    if target.clock is Clock.BUSINESS:
        number, _, unit = text.partition(" ")
        text = f"{number} business {unit}"
    return text


def describe_updates(updates: Cadence | OnEvents | None) -> str:
    """ "every 4 hours", "every business day", "when a path to resolution is found, ..."."""
    if updates is None:
        return NOT_STATED
    if isinstance(updates, OnEvents):
        return ", then ".join(_EVENT_WORDS[event] for event in updates.events)
    every = updates.every
    if isinstance(every, BusinessDays):
        return "every business day" if every.days == 1 else f"every {every.days} business days"
    return f"every {describe_target(every)}"


def describe_ladder(policy: Policy, steps: Sequence[EscalationStep]) -> str:
    """ "after 2 business hours: Customer Support Manager; after 3 business hours: Directors"."""
    if not steps:
        return "none"
    return "; ".join(
        f"after {describe_target(step.after)}: {policy.role_title(step.notify)}"
        for step in steps
    )


def describe_escalation(policy: Policy, level: Level) -> str:
    """The automatic ladder, and who is told when the customer asks to escalate."""
    parts = [describe_ladder(policy, level.escalation)] if level.escalation else []
    if level.escalation_on_request:
        parts.append(f"on request: {policy.role_title(level.escalation_on_request)}")
    return "; ".join(parts) or "none"


def describe_initial_response(policy: Policy, level: Level) -> str:
    """The initial-response target, with the tiers that differ from it."""
    text = describe_target(level.initial_response) if level.initial_response else NOT_STATED
    for tier in policy.tiers:
        if tier in level.initial_response_by_tier:
            text += f"; {tier}: {describe_target(level.initial_response_by_tier[tier])}"
    return text


def render_table(policy: Policy) -> str:
    """The whole policy as text: heading, the levels table, then its rules."""
    rows = [
        (
            str(level.number),
            level.name,
            describe_initial_response(policy, level),
            describe_updates(level.progress_updates),
            describe_target(level.resolution) if level.resolution else NOT_STATED,
            describe_escalation(policy, level),
        )
        for level in policy.levels.values()
    ]
    lines = [
        f"{policy.title} ({policy.name})",
        f"Business hours: {policy.calendar.describe()}",
        "",
        *_grid(_HEADERS, rows),
        "",
        "Rules:",
        *(f"- {rule}" for rule in policy_rules(policy)),
    ]
    return "\n".join(lines) + "\n"


def policy_rules(policy: Policy) -> list[str]:
    """The policy's rules besides the table, one sentence each."""
    rules = [f"No severity in the subject: level {policy.default_level} "
             f"({policy.level(policy.default_level).name})."]
    severity = policy.severity
    rules.append(
        "The customer sets the initial severity."
        if severity.customer_sets_initial else "Support sets the initial severity."
    )
    rules.append(
        "Severity changes need the customer's agreement."
        if severity.changes_need_customer_agreement
        else "Severity changes do not need the customer's agreement."
    )
    for what, lowering in (("A workaround", severity.workaround_lowers),
                           ("An unreachable customer", severity.unreachable_lowers)):
        if lowering is not None:
            rule = (f"{what} lowers {_levels(lowering.from_levels)} to level {lowering.to}")
            if lowering.decided_by:
                deciders = " or ".join(policy.role_title(r) for r in lowering.decided_by)
                rule += f", decided by the {deciders}"
            rules.append(rule + ".")
    for cap in severity.caps:
        rules.append(f"Issues with {cap.topic} are at most level {cap.most_urgent} "
                     f"({policy.level(cap.most_urgent).name}).")
    phone = [level.number for level in policy.levels.values() if level.needs_phone]
    if phone:
        rules.append(f"A contact phone number is required at {_levels(phone)}.")
    on_request: dict[str, list[int]] = {}
    for level in policy.levels.values():
        if level.escalation_on_request:
            on_request.setdefault(level.escalation_on_request, []).append(level.number)
    for role, numbers in on_request.items():
        rules.append(f"Escalation on the customer's request at {_levels(numbers)}: "
                     f"the {policy.role_title(role)} is told.")
    if policy.clarification.ask_when_priority_missing:
        rules.append("A request without a severity is asked for one.")
    if policy.clarification.query_doubtful_priority:
        rules.append("Support may ask the customer to explain a doubtful priority.")
    if policy.eligibility.who == "known_customers":
        rules.append(f"Known customers only; others are told: {policy.eligibility.others_told}")
    else:
        rules.append("Every sender is served.")
    return rules


def _levels(numbers: Iterable[int]) -> str:
    ordered = sorted(numbers)
    if len(ordered) == 1:
        return f"level {ordered[0]}"
    return "levels " + ", ".join(str(n) for n in ordered[:-1]) + f" and {ordered[-1]}"


def plural(count: int, unit: str) -> str:
    """ "1 hour", "2 hours": a count with its unit, as English writes it."""
    return f"{count} {unit}" if count == 1 else f"{count} {unit}s"


def _grid(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A plain-text table; long cells wrap inside their column."""
    wrapped = [
        [textwrap.wrap(cell, _CELL_WIDTH) or [""] for cell in row] for row in rows
    ]
    widths = [
        max(len(headers[i]), *(len(line) for row in wrapped for line in row[i]))
        for i in range(len(headers))
    ]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))

    out = [line(headers).rstrip(), "  ".join("-" * w for w in widths)]
    for row in wrapped:
        for i in range(max(len(cell) for cell in row)):
            out.append(line([cell[i] if i < len(cell) else "" for cell in row]).rstrip())
    return out
