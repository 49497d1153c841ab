"""Deadline benchmark: ``deadlines(policy, facts, now)`` over many cases, on one core, timed.

    python bench/policy.py                       # every shipped policy, 100,000 cases each
    python bench/policy.py --policy vmoso        # one policy (a name or a .yaml path)
    python bench/policy.py --cases 1000000 --seed 7

For each policy it builds N cases spread over 2026 (opening instants uniform
over the year, levels 1-4 uniform, zero to three events each among
``responded``, ``update_sent`` and ``severity_changed``, from a seeded RNG),
then times one pass of ``deadlines`` over all of them with
``time.perf_counter`` and prints: cases, deadlines (``Due`` values)
computed, seconds, deadlines/s and cases/s, beside the target of 50,000
deadlines/s. The policy is loaded before timing, so its calendar's day
cache starts cold, as in a freshly started worker. It prints numbers; it
never asserts them.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.deadlines import CaseEvent, CaseFacts, EventKind, deadlines  # noqa: E402
from gateway.policy.loader import load_policy  # noqa: E402
from gateway.policy.model import Policy  # noqa: E402

POLICIES = ROOT / "config" / "policies"
TARGET = 50_000
"""Deadlines per second on one core."""

YEAR_START = datetime(2026, 1, 1, tzinfo=UTC)
YEAR_SECONDS = 365 * 86_400


def make_cases(count: int, rng: random.Random) -> list[tuple[CaseFacts, datetime]]:
    """``count`` cases with their ``now``: each case is looked at a week after opening,
    so every one of its events has happened."""
    cases = []
    for _ in range(count):
        opened = YEAR_START + timedelta(seconds=rng.randrange(YEAR_SECONDS))
        events: list[CaseEvent] = []
        at = opened
        for _ in range(rng.randint(0, 3)):
            at += timedelta(seconds=rng.randrange(1, 12 * 3600))
            kinds: tuple[EventKind, ...] = ("responded", "update_sent", "severity_changed")
            kind = rng.choice(kinds)
            level = rng.randint(1, 4) if kind == "severity_changed" else None
            events.append(CaseEvent(kind, at, level=level))
        facts = CaseFacts(level=rng.randint(1, 4), opened_at=opened, events=tuple(events))
        cases.append((facts, opened + timedelta(days=7)))
    return cases


def run(policy: Policy, cases: list[tuple[CaseFacts, datetime]]) -> tuple[int, float]:
    """Deadlines computed, and the seconds it took."""
    computed = 0
    started = time.perf_counter()
    for facts, now in cases:
        computed += len(deadlines(policy, facts, now))
    return computed, time.perf_counter() - started


def policy_paths(choice: str | None) -> list[Path]:
    if choice is None:
        return sorted(POLICIES.glob("*.yaml"))
    if choice.endswith((".yaml", ".yml")):
        return [Path(choice)]
    return [POLICIES / f"{choice}.yaml"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=100_000, help="cases per policy")
    parser.add_argument("--policy", default=None,
                        help="one policy: a name in config/policies or a .yaml path")
    parser.add_argument("--seed", type=int, default=2026, help="seed of the case generator")
    args = parser.parse_args()
    print(f"deadlines over {args.cases:,} cases per policy (seed {args.seed}), one core")
    print(f"target: >= {TARGET:,} deadlines/s")
    print(f"{'policy':<10} {'cases':>9} {'deadlines':>10} {'seconds':>8} "
          f"{'deadlines/s':>12} {'cases/s':>10}")
    for path in policy_paths(args.policy):
        policy = load_policy(path)
        cases = make_cases(args.cases, random.Random(args.seed))
        computed, seconds = run(policy, cases)
        rate = computed / seconds
        if computed:
            shown, verdict = f"{rate:>12,.0f}", "  ok" if rate >= TARGET else "  BELOW TARGET"
        else:
            shown, verdict = f"{'-':>12}", "  (the policy states no times)"
        print(f"{policy.name:<10} {len(cases):>9,} {computed:>10,} {seconds:>8.3f} "
              f"{shown} {len(cases) / seconds:>10,.0f}{verdict}")


if __name__ == "__main__":
    main()
