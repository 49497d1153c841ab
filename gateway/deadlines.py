"""Every moment that matters next for a case, from the policy and what has happened.

Pure: a policy, the case's facts (level, tier, opened_at, its events so far)
and ``now`` in; ``Due`` values out. The scheduler turns them into timers and
the acknowledgement quotes the first one; neither does any arithmetic of its
own.

How the policy's words are read:

* A level's clocks (initial response, escalation ladder, resolution) run
  from the moment the case got that level: its opening, or the severity
  change. "Within 2 hours of notification" of a Level 1 starts when support
  was told it is a Level 1; a case raised from 3 to 1 after a day is not
  born overdue, and a case lowered gets the lower level's full time.
* The initial response is due until an engineer first answers; progress
  updates on a cadence are due one interval after the last contact (the
  first answer or the last update) and only once the case has been
  answered; updates "on events" set no timer.
* Escalation steps count from the level's start ("not resolved within two
  business hours") and each is due once: a step already sent is not due
  again until the level changes.
* A workaround lowers the level by itself only where the policy's rule is
  decided by no one; otherwise the person who decides records a severity
  change. A resolved case has nothing due; a reopened one starts its
  level's clocks again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from gateway.policy.model import BusinessDays, Cadence, Clock, Milestone, Policy, Target

EventKind = Literal[
    "responded", "update_sent", "severity_changed", "workaround", "path_found",
    "resolved", "reopened", "escalated",
]
DueKind = Literal["initial_response", "progress_update", "escalation", "resolution"]


@dataclass(frozen=True)
class CaseEvent:
    """Something that happened to a case, as far as deadlines care."""

    kind: EventKind
    at: datetime
    level: int | None = None
    """``severity_changed``: the new level."""
    role: str | None = None
    """``escalated``: the role that was told."""


@dataclass(frozen=True)
class CaseFacts:
    """What deadlines are worked out from."""

    level: int
    """The level the case was opened with."""
    opened_at: datetime
    tier: str | None = None
    events: tuple[CaseEvent, ...] = ()
    """In the order they happened."""


@dataclass(frozen=True)
class Due:
    """One moment that matters: what falls due, when, and for whom."""

    kind: DueKind
    at: datetime
    level: int
    since: datetime
    """When the clock of this deadline started (the level's start, or the last contact)."""
    notify: str | None = None
    """``escalation``: the role to tell."""
    step: int | None = None
    """``escalation``: the step's index in the level's ladder."""

    def overdue(self, now: datetime) -> bool:
        return self.at <= now

    @property
    def key(self) -> str:
        """Stable identity of this deadline: the same deadline always has the same key,
        so a timer set twice, or fired twice, acts once."""
        what = f"{self.kind}:{self.notify}" if self.notify else self.kind
        # In UTC: the same instant given in another zone is the same deadline.
        return f"{what}:L{self.level}:{self.since.astimezone(UTC).isoformat()}"


def due_at(policy: Policy, start: datetime, target: Target) -> datetime:
    """The instant ``target`` falls due when counted from ``start``, in UTC."""
    if isinstance(target, BusinessDays):
        return policy.calendar.add_business_days(start, target.days)
    if target.clock is Clock.BUSINESS:
        return policy.calendar.add(start, target.amount)
    if start.tzinfo is None:
        raise ValueError(f"start must be a timezone-aware datetime, got {start!r}")
    return start.astimezone(UTC) + target.amount


def deadlines(policy: Policy, facts: CaseFacts, now: datetime) -> tuple[Due, ...]:
    """Everything due next for the case, earliest first (overdue ones included).

    ``now`` bounds the events considered: an event recorded later than
    ``now`` (a clock skew between hosts) has not happened yet.
    """
    state = _replay(policy, facts, now)
    if state.resolved:
        return ()
    level = policy.level(state.level)
    since = state.level_since
    found: list[Due] = []
    if state.responded_at is None:
        target = level.initial_response_for(facts.tier)
        if target is not None:
            found.append(Due("initial_response", due_at(policy, since, target), state.level, since))
    elif isinstance(level.progress_updates, Cadence):
        contact = max(state.last_contact or since, since)
        found.append(Due(
            "progress_update", due_at(policy, contact, level.progress_updates.every),
            state.level, contact,
        ))
    for index, step in enumerate(level.escalation):
        if step.notify not in state.escalated:
            found.append(Due(
                "escalation", due_at(policy, since, step.after), state.level, since,
                notify=step.notify, step=index,
            ))
    if level.resolution is not None and not isinstance(level.resolution, Milestone):
        found.append(Due("resolution", due_at(policy, since, level.resolution), state.level, since))
    found.sort(key=lambda due: due.at)
    return tuple(found)


@dataclass
class _State:
    level: int
    level_since: datetime
    responded_at: datetime | None = None
    last_contact: datetime | None = None
    resolved: bool = False
    escalated: frozenset[str] = frozenset()


def _replay(policy: Policy, facts: CaseFacts, now: datetime) -> _State:
    """The case as it stands after its events, in the order given."""
    state = _State(level=facts.level, level_since=facts.opened_at)
    lowering = policy.severity.workaround_lowers
    for event in facts.events:
        if event.at > now:
            continue
        kind = event.kind
        if kind == "responded":
            state.responded_at = state.responded_at or event.at
            state.last_contact = event.at
        elif kind == "update_sent":
            state.last_contact = event.at
        elif kind == "severity_changed":
            if event.level is None:
                raise ValueError("a severity_changed event needs its new level")
            _set_level(state, event.level, event.at)
        elif kind == "workaround":
            if lowering and not lowering.decided_by and state.level in lowering.from_levels:
                _set_level(state, lowering.to, event.at)
        elif kind == "resolved":
            state.resolved = True
        elif kind == "reopened":
            state.resolved = False
            _set_level(state, state.level, event.at)
        elif kind == "escalated" and event.role is not None:
            state.escalated = state.escalated | {event.role}
    return state


def _set_level(state: _State, level: int, at: datetime) -> None:
    state.level = level
    state.level_since = at
    state.escalated = frozenset()

