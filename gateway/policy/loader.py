"""Policy files (``config/policies/*.yaml``) read into ``gateway.policy.model`` values.

A support manager writes and reads these files, so every mistake is reported
as one line naming the file, the key path and the reason, in the words of
the file: ``vmoso.yaml: levels.1.initial_response: "2 hourz" is not a
duration``. Unknown keys are errors too: a misspelt key silently ignored
would be a promise silently dropped.

The grammar of times, used by every target, cadence and escalation step:

* ``"2 hours"``, ``"30 minutes"``, ``"2 days"``: on the clock, 24×7;
* ``"2 business hours"``, ``"90 business minutes"``: inside the calendar's
  business windows only;
* ``"3 business days"``: "within three business days", the same business
  moment that many business days later.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any, NoReturn

import yaml

from gateway.calendar import Calendar, CalendarError, Holidays, Window
from gateway.errors import ConfigError
from gateway.policy.model import (
    LEVELS,
    BusinessDays,
    Cadence,
    Cap,
    Clarification,
    Clock,
    Eligibility,
    EscalationStep,
    Level,
    Lowering,
    Milestone,
    OnEvents,
    Policy,
    SeverityRules,
    Span,
    Target,
)

_DURATION = re.compile(
    r"(?P<amount>\d+(?:\.\d+)?)\s*(?P<business>business\s+)?"
    r"(?P<unit>minutes?|mins?|hours?|hrs?|days?)",
    re.IGNORECASE,
)
_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400}
"""Seconds per unit, by the unit's first letter."""
_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_WORDS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_TIME = re.compile(r"(\d{1,2}):(\d{2})")
_UPDATE_EVENTS = ("path_found", "resolved")
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
"""A policy's name, as cases record it (``cases.policy`` holds 64 characters)."""

DURATION_EXAMPLES = '"2 hours", "30 business minutes", "3 business days"'


class _File:
    """Where errors are reported: the file's name as the operator gave it."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, reason: str) -> NoReturn:
        raise ConfigError(self.source, path, reason)


def load_policy(path: Path | str) -> Policy:
    """Read and validate one policy file; its stem is the policy's name.

    Raises ``ConfigError`` (file, key path, reason) for anything unusable,
    including a file that is missing or is not YAML.
    """
    path = Path(path)
    where = _File(path.name)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        where.fail("", f"no such policy file ({path})")
    except UnicodeDecodeError as error:
        line = error.object[: error.start].count(b"\n") + 1
        where.fail("", f"is not UTF-8 text (byte 0x{error.object[error.start]:02x} on line "
                       f"{line}): save it as UTF-8")
    except OSError as error:
        where.fail("", f"cannot be read: {error.strerror or error}")
    return parse_policy(text, name=path.stem, source=path.name)


def load_named(
    name: str, directory: Path, *, named_by: tuple[str, str] = ("settings", "policy")
) -> Policy:
    """The policy called ``name`` (``vmoso``) from ``directory``; ``named_by`` is the
    source and key that named it, for the error when there is no such policy."""
    if not _NAME.fullmatch(name):
        raise ConfigError(*named_by, f"{name!r} is not a policy name (lowercase letters, "
                                     "digits, - and _, at most 64 characters)")
    path = directory / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in directory.glob("*.yaml")) if directory.is_dir() else []
        choices = ", ".join(known) if known else f"none in {directory}"
        raise ConfigError(*named_by, f"no policy {name!r} (known: {choices})")
    return load_policy(path)


def parse_policy(text: str, *, name: str, source: str) -> Policy:
    """A policy from YAML text; ``source`` names it in errors."""
    where = _File(source)
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as error:
        where.fail("", _yaml_problem(text, error))
    if data is None:
        where.fail("", "is empty: a policy needs title, calendar, default_level and levels")
    root = _mapping(where, "", data)
    _only(
        where, "", root,
        required=("title", "calendar", "default_level", "levels"),
        optional=("roles", "tiers", "severity", "clarification", "eligibility"),
    )
    title = _text(where, "title", root["title"])
    roles = _roles(where, root.get("roles") or {})
    tiers = _tiers(where, root.get("tiers") or [])
    calendar = _calendar(where, "calendar", root["calendar"])
    levels = _levels(where, root["levels"], roles, tiers)
    default_level = _level_number(where, "default_level", root["default_level"])
    severity = _severity(where, "severity", root.get("severity") or {}, roles)
    return Policy(
        name=name,
        title=title,
        calendar=calendar,
        levels=levels,
        default_level=default_level,
        severity=severity,
        clarification=_clarification(where, "clarification", root.get("clarification") or {}),
        eligibility=_eligibility(where, "eligibility", root.get("eligibility") or {}),
        tiers=tiers,
        roles=roles,
    )


class _StrictLoader(yaml.SafeLoader):
    """``yaml.safe_load`` that refuses a key written twice in one mapping.

    Plain YAML keeps the last of two equal keys, so a level pasted twice, or
    ``initial_response`` written twice, would silently drop the first promise.
    """


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:  # an unhashable key: construct_mapping reports it
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {_show(key)} is written twice in one mapping",
                key_node.start_mark,
            )
    return loader.construct_mapping(node, deep=True)


def _construct_timestamp(loader: _StrictLoader, node: yaml.ScalarNode) -> object:
    # YAML reads 2026-12-32 as a date and Python refuses it with a bare ValueError.
    try:
        return loader.construct_yaml_timestamp(node)
    except ValueError as error:
        raise yaml.constructor.ConstructorError(
            None, None, f"{_show(node.value)} is not a date ({error})", node.start_mark
        ) from None


_StrictLoader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)
_StrictLoader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp)


def _yaml_problem(text: str, error: yaml.YAMLError) -> str:
    """ "line 3: not valid YAML: <problem>", the line where it can be seen."""
    mark = getattr(error, "problem_mark", None)
    if mark is not None:
        line = mark.line + 1
    elif isinstance(error, yaml.reader.ReaderError):
        line = text[: error.position].count("\n") + 1
    else:
        line = None
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    if isinstance(error, yaml.reader.ReaderError):
        problem = f"character #x{error.character:04x} is not allowed"
    return f"{'' if line is None else f'line {line}: '}not valid YAML: {problem}"


# Times ---------------------------------------------------------------------------------


def parse_target(value: object) -> Target:
    """A time target from its written form; ``ValueError`` with the reason otherwise."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(f"{_show(value)} is not a duration (write e.g. {DURATION_EXAMPLES})")
    match = _DURATION.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"{_show(value)} is not a duration (write e.g. {DURATION_EXAMPLES})")
    amount = float(match["amount"])
    unit = match["unit"].lower()
    business = match["business"] is not None
    if amount <= 0:
        raise ValueError(f"{_show(value)} must be longer than zero")
    if business and unit.startswith("day"):
        if amount != int(amount):
            raise ValueError(f"{_show(value)}: business days are counted whole")
        return BusinessDays(int(amount))
    seconds = amount * _UNIT_SECONDS[unit[0]]
    return Span(timedelta(seconds=seconds), Clock.BUSINESS if business else Clock.WALL)


def _target(where: _File, path: str, value: object) -> Target:
    try:
        return parse_target(value)
    except ValueError as error:
        where.fail(path, str(error))


# Calendar ------------------------------------------------------------------------------


def _calendar(where: _File, path: str, value: object) -> Calendar:
    data = _mapping(where, path, value)
    _only(where, path, data, required=("timezone", "hours"), optional=("holidays",))
    zone = _text(where, f"{path}.timezone", data["timezone"])
    hours = data["hours"]
    if hours == "around_the_clock":
        if data.get("holidays"):
            where.fail(f"{path}.holidays", "a calendar open around the clock has no holidays")
        try:
            return Calendar.around_the_clock(zone)
        except ValueError:
            where.fail(f"{path}.timezone", _not_a_zone(zone))
    if not isinstance(hours, list) or not hours:
        where.fail(f"{path}.hours", 'must be "around_the_clock" or a list of windows')
    windows = [_window(where, f"{path}.hours.{i}", item) for i, item in enumerate(hours)]
    holidays = _holidays(where, f"{path}.holidays", data.get("holidays") or {})
    try:
        return Calendar(zone, windows, holidays)
    except CalendarError as error:
        if error.part == "timezone":
            where.fail(f"{path}.timezone", _not_a_zone(zone))
        where.fail(f"{path}.{_CALENDAR_KEYS.get(error.part, error.part)}", str(error))


_CALENDAR_KEYS = {"windows": "hours"}
"""The calendar's names for its inputs, where the policy file's keys differ."""


def _not_a_zone(zone: str) -> str:
    return f'{_show(zone)} is not a time zone (write an IANA name such as "Europe/London")'


def _window(where: _File, path: str, value: object) -> Window:
    data = _mapping(where, path, value)
    _only(where, path, data, required=("days", "from", "to"))
    start = _time(where, f"{path}.from", data["from"])
    end = _time(where, f"{path}.to", data["to"])
    if start == end:
        where.fail(f"{path}.to", 'equals "from"; for 24×7 write hours: around_the_clock')
    return Window(_days(where, f"{path}.days", data["days"]), start, end)


def _days(where: _File, path: str, value: object) -> frozenset[int]:
    """Weekdays as written: "Mon-Fri", "Mon, Wed, Fri", "Sat", or a list of those."""
    parts = value if isinstance(value, list) else str(value).split(",")
    days: set[int] = set()
    for part in parts:
        piece = str(part).strip().lower()
        ends = [_weekday(p) for p in re.split(r"\s*[-–]\s*", piece)]
        names = [end for end in ends if end is not None]
        if not 1 <= len(ends) <= 2 or len(names) != len(ends):
            where.fail(path, f"{_show(part)} is not a weekday or range such as Mon-Fri")
        first, last = _DAY_NAMES.index(names[0]), _DAY_NAMES.index(names[-1])
        span = range(first, last + 1) if first <= last else [*range(first, 7), *range(last + 1)]
        days.update(span)
    if not days:
        where.fail(path, "names no weekday")
    return frozenset(days)


def _weekday(word: str) -> str | None:
    """ "Mon", "mon.", "Monday", "Thurs" → "mon"/"thu"; ``None`` for anything else."""
    word = word.strip().rstrip(".")
    for name, full in zip(_DAY_NAMES, _DAY_WORDS, strict=True):
        if len(word) >= 3 and full.startswith(word):
            return name
    return None


def _time(where: _File, path: str, value: object) -> time:
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML 1.1 reads an unquoted 17:30 as the number 1050 (base 60).
        where.fail(path, f'write times in quotes ("{value // 60:02d}:{value % 60:02d}")')
    match = _TIME.fullmatch(str(value).strip()) if isinstance(value, str) else None
    if match is None or int(match[1]) > 24 or int(match[2]) > 59:
        where.fail(path, f"{_show(value)} is not a time of day such as \"08:00\"")
    hour, minute = int(match[1]), int(match[2])
    if hour == 24:
        if minute:
            where.fail(path, f"{_show(value)} is not a time of day such as \"08:00\"")
        hour = 0
    return time(hour, minute)


def _holidays(where: _File, path: str, value: object) -> Holidays:
    data = _mapping(where, path, value)
    _only(where, path, data, optional=("country", "subdivision", "dates"))
    country = data.get("country")
    subdivision = data.get("subdivision")
    for key, code in (("country", country), ("subdivision", subdivision)):
        if code is not None and not isinstance(code, str):
            where.fail(f"{path}.{key}", f"{_show(code)} is not a code such as \"US\"")
    dates = data.get("dates") or []
    if not isinstance(dates, list):
        where.fail(f"{path}.dates", "must be a list of dates (2026-12-24)")
    for index, day in enumerate(dates):
        if isinstance(day, datetime) or not isinstance(day, date):
            where.fail(f"{path}.dates.{index}", f"{_show(day)} is not a date (2026-12-24)")
    return Holidays(country=country, subdivision=subdivision, dates=frozenset(dates))


# Levels --------------------------------------------------------------------------------


def _levels(
    where: _File, value: object, roles: Mapping[str, str], tiers: tuple[str, ...]
) -> dict[int, Level]:
    data = _mapping(where, "levels", value)
    levels: dict[int, Level] = {}
    for key, item in data.items():
        number = _level_number(where, f"levels.{key}", key, as_key=True)
        levels[number] = _level(where, f"levels.{number}", number, item, roles, tiers)
    missing = [str(n) for n in LEVELS if n not in levels]
    if missing:
        where.fail("levels", f"level {', '.join(missing)} missing: a policy has levels 1 to 4")
    return dict(sorted(levels.items()))


def _level(
    where: _File, path: str, number: int, value: object,
    roles: Mapping[str, str], tiers: tuple[str, ...],
) -> Level:
    data = _mapping(where, path, value)
    _only(
        where, path, data,
        required=("name", "description", "initial_response"),
        optional=(
            "words", "initial_response_by_tier", "progress_updates", "resolution",
            "escalation", "escalation_on_request", "needs_phone",
        ),
    )
    words = data.get("words") or []
    if not isinstance(words, list) or not all(isinstance(w, str) and w.strip() for w in words):
        where.fail(f"{path}.words", "must be a list of words or phrases")
    initial = data["initial_response"]
    by_tier = _mapping(where, f"{path}.initial_response_by_tier",
                       data.get("initial_response_by_tier") or {})
    for tier in by_tier:
        if tier not in tiers:
            where.fail(f"{path}.initial_response_by_tier.{tier}", _unknown("tier", tier, tiers))
    return Level(
        number=number,
        name=_text(where, f"{path}.name", data["name"]),
        description=_text(where, f"{path}.description", data["description"]),
        words=tuple(w.strip() for w in words),
        initial_response=(
            None if initial is None else _target(where, f"{path}.initial_response", initial)
        ),
        initial_response_by_tier={
            str(tier): _target(where, f"{path}.initial_response_by_tier.{tier}", target)
            for tier, target in by_tier.items()
        },
        progress_updates=_progress(where, f"{path}.progress_updates", data.get("progress_updates")),
        resolution=_resolution(where, f"{path}.resolution", data.get("resolution")),
        escalation=_ladder(where, f"{path}.escalation", data.get("escalation") or [], roles),
        escalation_on_request=_optional_role(
            where, f"{path}.escalation_on_request", data.get("escalation_on_request"), roles
        ),
        needs_phone=_flag(where, f"{path}.needs_phone", data.get("needs_phone", False)),
    )


def _progress(where: _File, path: str, value: object) -> Cadence | OnEvents | None:
    if value is None:
        return None
    data = _mapping(where, path, value)
    _only(where, path, data, optional=("every", "on_events"))
    if ("every" in data) == ("on_events" in data):
        where.fail(path, 'give either "every" (a cadence) or "on_events" (a list of events)')
    if "every" in data:
        return Cadence(_target(where, f"{path}.every", data["every"]))
    events = data["on_events"]
    if not isinstance(events, list) or not events:
        where.fail(f"{path}.on_events", f"must be a list of events: {', '.join(_UPDATE_EVENTS)}")
    for index, event in enumerate(events):
        if event not in _UPDATE_EVENTS:
            where.fail(f"{path}.on_events.{index}", _unknown("event", event, _UPDATE_EVENTS))
    return OnEvents(tuple(events))


def _resolution(where: _File, path: str, value: object) -> Target | Milestone | None:
    if value is None:
        return None
    if isinstance(value, dict):
        _only(where, path, value, required=("milestone",))
        return Milestone(_text(where, f"{path}.milestone", value["milestone"]))
    return _target(where, path, value)


def _ladder(
    where: _File, path: str, value: object, roles: Mapping[str, str]
) -> tuple[EscalationStep, ...]:
    if not isinstance(value, list):
        where.fail(path, "must be a list of steps (after, notify)")
    steps: list[EscalationStep] = []
    for index, item in enumerate(value):
        step_path = f"{path}.{index}"
        data = _mapping(where, step_path, item)
        _only(where, step_path, data, required=("after", "notify"))
        after = _target(where, f"{step_path}.after", data["after"])
        if not isinstance(after, Span):
            where.fail(f"{step_path}.after", "an escalation waits hours or minutes, not days")
        notify = _role(where, f"{step_path}.notify", data["notify"], roles)
        if steps and after.clock != steps[-1].after.clock:
            where.fail(f"{step_path}.after", "all steps of a ladder count on the same clock")
        if steps and after.amount <= steps[-1].after.amount:
            where.fail(f"{step_path}.after", "steps must come in order, each later than the last")
        steps.append(EscalationStep(after, notify))
    return tuple(steps)


# Rules ---------------------------------------------------------------------------------


def _severity(
    where: _File, path: str, value: object, roles: Mapping[str, str]
) -> SeverityRules:
    data = _mapping(where, path, value)
    _only(
        where, path, data,
        optional=(
            "customer_sets_initial", "changes_need_customer_agreement",
            "workaround_lowers", "unreachable_lowers", "caps",
        ),
    )
    caps = data.get("caps") or []
    if not isinstance(caps, list):
        where.fail(f"{path}.caps", "must be a list of caps (topic, words, most_urgent)")
    return SeverityRules(
        customer_sets_initial=_flag(
            where, f"{path}.customer_sets_initial", data.get("customer_sets_initial", True)
        ),
        changes_need_customer_agreement=_flag(
            where, f"{path}.changes_need_customer_agreement",
            data.get("changes_need_customer_agreement", False),
        ),
        workaround_lowers=_lowering(
            where, f"{path}.workaround_lowers", data.get("workaround_lowers"), roles
        ),
        unreachable_lowers=_lowering(
            where, f"{path}.unreachable_lowers", data.get("unreachable_lowers"), roles
        ),
        caps=tuple(_cap(where, f"{path}.caps.{i}", c) for i, c in enumerate(caps)),
    )


def _lowering(
    where: _File, path: str, value: object, roles: Mapping[str, str]
) -> Lowering | None:
    if value is None:
        return None
    data = _mapping(where, path, value)
    _only(where, path, data, required=("from", "to"), optional=("decided_by",))
    levels = data["from"]
    if not isinstance(levels, list) or not levels:
        where.fail(f"{path}.from", "must be a list of levels, e.g. [1, 2]")
    from_levels = frozenset(_level_number(where, f"{path}.from", n) for n in levels)
    to = _level_number(where, f"{path}.to", data["to"])
    if any(n >= to for n in from_levels):
        where.fail(f"{path}.to", f"level {to} must be less urgent than every level it lowers")
    deciders = data.get("decided_by") or []
    if not isinstance(deciders, list):
        where.fail(f"{path}.decided_by", "must be a list of roles")
    return Lowering(
        from_levels=from_levels,
        to=to,
        decided_by=tuple(_role(where, f"{path}.decided_by", r, roles) for r in deciders),
    )


def _cap(where: _File, path: str, value: object) -> Cap:
    data = _mapping(where, path, value)
    _only(where, path, data, required=("topic", "words", "most_urgent"))
    words = data["words"]
    if not isinstance(words, list) or not all(isinstance(w, str) and w.strip() for w in words):
        where.fail(f"{path}.words", "must be a list of words or phrases")
    if not words:
        where.fail(f"{path}.words", "needs at least one word")
    return Cap(
        topic=_text(where, f"{path}.topic", data["topic"]),
        words=tuple(w.strip() for w in words),
        most_urgent=_level_number(where, f"{path}.most_urgent", data["most_urgent"]),
    )


def _clarification(where: _File, path: str, value: object) -> Clarification:
    data = _mapping(where, path, value)
    _only(where, path, data, optional=("ask_when_priority_missing", "query_doubtful_priority"))
    return Clarification(
        ask_when_priority_missing=_flag(
            where, f"{path}.ask_when_priority_missing",
            data.get("ask_when_priority_missing", False),
        ),
        query_doubtful_priority=_flag(
            where, f"{path}.query_doubtful_priority", data.get("query_doubtful_priority", False)
        ),
    )


def _eligibility(where: _File, path: str, value: object) -> Eligibility:
    data = _mapping(where, path, value)
    _only(where, path, data, optional=("who", "others_told"))
    who = data.get("who", "all")
    if who not in ("all", "known_customers"):
        where.fail(f"{path}.who", _unknown("value", who, ("all", "known_customers")))
    told = data.get("others_told")
    if who == "known_customers" and told is None:
        where.fail(f"{path}.others_told", "say what senders who are not customers are told")
    return Eligibility(
        who=who, others_told=None if told is None else _text(where, f"{path}.others_told", told)
    )


def _roles(where: _File, value: object) -> dict[str, str]:
    data = _mapping(where, "roles", value)
    for key, title in data.items():
        if not isinstance(key, str) or not _NAME.fullmatch(key):
            where.fail(f"roles.{key}", "a role key is lower-case letters, digits and _")
        _text(where, f"roles.{key}", title)
    return {str(k): str(v).strip() for k, v in data.items()}


def _tiers(where: _File, value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        where.fail("tiers", "must be a list of contract tier names")
    for index, tier in enumerate(value):
        if not isinstance(tier, str) or not _NAME.fullmatch(tier):
            where.fail(f"tiers.{index}", f"{_show(tier)} is not a tier name (lower-case, _)")
    if len(set(value)) != len(value):
        where.fail("tiers", "names a tier twice")
    return tuple(value)


# Small readers -------------------------------------------------------------------------


def _mapping(where: _File, path: str, value: object) -> dict[Any, Any]:
    if not isinstance(value, dict):
        what = "the file" if not path else "this key"
        where.fail(path, f"{what} must hold a mapping of keys, not {_kind(value)}")
    return value


def _only(
    where: _File, path: str, data: Mapping[Any, Any],
    required: tuple[str, ...] = (), optional: tuple[str, ...] = (),
) -> None:
    prefix = f"{path}." if path else ""
    for key in data:
        if isinstance(key, bool):
            where.fail(
                f"{prefix}{key}".lower(),
                "YAML reads an unquoted on, off, yes or no as true or false: quote the key",
            )
        if key not in required and key not in optional:
            where.fail(f"{prefix}{key}", _unknown("key", key, required + optional))
    for key in required:
        if key not in data:
            where.fail(f"{prefix}{key}", "is required")


def _text(where: _File, path: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        where.fail(path, f"must be text, not {_kind(value)}")
    return " ".join(value.split())


def _flag(where: _File, path: str, value: object) -> bool:
    if not isinstance(value, bool):
        where.fail(path, f"{_show(value)} is not true or false")
    return value


def _level_number(where: _File, path: str, value: object, *, as_key: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value not in LEVELS:
        what = "a level key" if as_key else "a level"
        where.fail(path, f"{_show(value)} is not {what}: levels are 1, 2, 3 and 4")
    return value


def _role(where: _File, path: str, value: object, roles: Mapping[str, str]) -> str:
    if not isinstance(value, str) or value not in roles:
        where.fail(path, _unknown("role", value, tuple(roles)) + " (declare it under roles)")
    return value


def _optional_role(
    where: _File, path: str, value: object, roles: Mapping[str, str]
) -> str | None:
    return None if value is None else _role(where, path, value, roles)


def _unknown(what: str, value: object, known: tuple[Any, ...] | list[Any]) -> str:
    choices = ", ".join(str(k) for k in known) if known else "none declared"
    return f"unknown {what} {_show(value)} (known: {choices})"


def _show(value: object) -> str:
    """A value as the file shows it: strings in double quotes, as the operator typed them."""
    if isinstance(value, str):
        return '"' + value.replace('"', '\\"') + '"'
    if value is None:
        return "nothing"
    return str(value)


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    names: dict[type, str] = {list: "a list", dict: "a mapping", str: "text", bool: "true/false"}
    return names.get(type(value), _show(value))

