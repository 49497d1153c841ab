"""What a support policy says, as plain immutable values.

A policy file (``config/policies/*.yaml``) is loaded into these types by
``gateway.policy.loader``; everything downstream (deadlines, the
acknowledgement, ``helpdesk policy show``) reads only these values. They hold
no clock and do no I/O: a time is always counted from an instant the caller
gives, on the policy's calendar.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from gateway.calendar import Calendar


LEVELS = (1, 2, 3, 4)
"""Severity levels: 1 is the most urgent, 4 the least."""


class Clock(StrEnum):
    """How a span of time is counted."""

    WALL = "clock"
    """Around the clock, 24×7, holidays included."""

    BUSINESS = "business"
    """Only inside the business windows of the policy's calendar."""


@dataclass(frozen=True)
class Span:
    """A length of time and the clock it runs on: "2 hours (business hours only)"."""

    amount: timedelta
    clock: Clock


@dataclass(frozen=True)
class BusinessDays:
    """"Within N business days": the same business moment N business days later."""

    days: int


@dataclass(frozen=True)
class Milestone:
    """A target that is an event, not a time: "next minor or major release".

    No timer is ever set for it; it is shown to people as written.
    """

    description: str


Target = Span | BusinessDays
"""A target that falls due at a computable instant."""


@dataclass(frozen=True)
class Cadence:
    """Progress updates at a fixed interval ("every 4 hours", "daily").

    "Daily" in a policy whose people work business hours is one business day
    (the same business moment the next business day), not 24 hours of the
    clock, so ``every`` may be a ``BusinessDays``.
    """

    every: Target


UpdateEvent = Literal["path_found", "resolved"]


@dataclass(frozen=True)
class OnEvents:
    """Progress updates only when something happens to the case.

    LumenVox: "upon determined path to resolution, and then upon actual
    resolution".
    """

    events: tuple[UpdateEvent, ...]


@dataclass(frozen=True)
class EscalationStep:
    """After ``after`` without resolution (counted from opening), tell ``notify``."""

    after: Span
    notify: str


@dataclass(frozen=True)
class Level:
    """One severity level, in the policy's own words."""

    number: int
    name: str
    description: str
    words: tuple[str, ...]
    """What customers write for this level besides its number ("urgent", "emergency")."""

    initial_response: Target | None
    """The target for everyone; ``None`` where the policy states no time."""

    initial_response_by_tier: Mapping[str, Target] = field(default_factory=dict)
    """Contract tiers whose target differs from ``initial_response``."""

    progress_updates: Cadence | OnEvents | None = None
    resolution: Target | Milestone | None = None
    escalation: tuple[EscalationStep, ...] = ()
    """Automatic ladder, in order of ``after``."""

    escalation_on_request: str | None = None
    """Role told when the customer asks to escalate; ``None``: not offered at this level."""

    needs_phone: bool = False
    """A contact phone number is required to work a case at this level."""

    def initial_response_for(self, tier: str | None) -> Target | None:
        """The initial-response target that applies to a customer of ``tier``."""
        if tier is not None and tier in self.initial_response_by_tier:
            return self.initial_response_by_tier[tier]
        return self.initial_response


@dataclass(frozen=True)
class Lowering:
    """A rule that moves cases at ``from_levels`` to level ``to``."""

    from_levels: frozenset[int]
    to: int
    decided_by: tuple[str, ...] = ()
    """Roles that decide it; empty means it applies as soon as the fact is known."""


@dataclass(frozen=True)
class Cap:
    """Cases about ``topic`` are never more urgent than ``most_urgent``.

    Virtuozzo: ".Net and MS-SQL" are at most Severity 2, so a ``[P1]`` about
    MS-SQL is taken as 2.
    """

    topic: str
    words: tuple[str, ...]
    most_urgent: int


@dataclass(frozen=True)
class SeverityRules:
    """Who sets and changes a case's severity, and the automatic moves."""

    customer_sets_initial: bool = True
    changes_need_customer_agreement: bool = False
    workaround_lowers: Lowering | None = None
    unreachable_lowers: Lowering | None = None
    caps: tuple[Cap, ...] = ()


@dataclass(frozen=True)
class Clarification:
    """When the gateway asks the customer before (or while) working the case."""

    ask_when_priority_missing: bool = False
    query_doubtful_priority: bool = False
    """The policy allows asking the customer to explain the priority they chose."""


@dataclass(frozen=True)
class Eligibility:
    """Who may open cases, and what everyone else is told."""

    who: Literal["all", "known_customers"] = "all"
    others_told: str | None = None


@dataclass(frozen=True)
class Policy:
    """A whole support policy, ready to run."""

    name: str
    """The file's stem, as configured: ``vmoso``."""

    title: str
    """The policy's own name for itself: "Vmoso Support"."""

    calendar: Calendar
    levels: Mapping[int, Level]
    default_level: int
    """Level given to a mail that names none."""

    severity: SeverityRules = field(default_factory=SeverityRules)
    clarification: Clarification = field(default_factory=Clarification)
    eligibility: Eligibility = field(default_factory=Eligibility)
    tiers: tuple[str, ...] = ()
    """Contract tiers this policy distinguishes; empty when it has one table for all."""

    roles: Mapping[str, str] = field(default_factory=dict)
    """Role key → the title people know it by ("customer_support_manager" → "Customer
    Support Manager")."""

    def level(self, number: int) -> Level:
        """The level ``number``; raises ``KeyError`` for a level the policy lacks."""
        return self.levels[number]

    def role_title(self, role: str) -> str:
        """How a role is named to people, falling back to its key made readable."""
        return self.roles.get(role, role.replace("_", " ").title())
