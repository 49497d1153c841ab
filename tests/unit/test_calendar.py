"""Business-time calendar: properties over realistic calendars, worked examples, bad input.

The properties are checked on a fixed set of calendars people actually run (an
overnight desk in Etc/GMT, office hours with public holidays in New York and
London, a split day in Berlin, a night desk in Sydney across its DST changes,
windows that touch a DST gap) at instants drawn over a dozen years, pulled
towards DST changes, year ends and window edges. Several of them are checked
against a slow reference written here from the module's contract alone: the
open set is the union of every window opening on a non-holiday date, a
skipped wall time is read as the first wall minute that exists after it, a
repeated one as its first occurrence.

The worked examples were computed by hand; the comment beside each says how.
"""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

import holidays as holidays_library
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.calendar import Calendar, Holidays, Window

US = timedelta(microseconds=1)
H = timedelta(hours=1)
WEEKDAYS = frozenset(range(5))
ALL_WEEK = frozenset(range(7))


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0,
        second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


# The calendars ---------------------------------------------------------------------------

LUMENVOX = Calendar("Etc/GMT", [Window(WEEKDAYS, time(8), time(1))], Holidays("GB"))
NEW_YORK = Calendar("America/New_York", [Window(WEEKDAYS, time(9), time(17))], Holidays("US"))
LONDON = Calendar("Europe/London", [Window(WEEKDAYS, time(9), time(17, 30))], Holidays("GB", "ENG"))
BERLIN_SPLIT = Calendar(
    "Europe/Berlin",
    [Window(WEEKDAYS, time(9), time(12, 30)), Window(WEEKDAYS, time(13, 30), time(17, 30))],
    Holidays("DE", "BE"),
)
SYDNEY_NIGHTS = Calendar(
    "Australia/Sydney", [Window(ALL_WEEK, time(22), time(6))], Holidays("AU", "NSW")
)
# 01:30–03:30 straddles the spring-forward gap (London 01:00–02:00, New York
# 02:00–03:00) and the repeated hour at fall-back.
LONDON_DST_GAP = Calendar("Europe/London", [Window(ALL_WEEK, time(1, 30), time(3, 30))])
NEW_YORK_DST_GAP = Calendar("America/New_York", [Window(ALL_WEEK, time(1, 30), time(3, 30))])
# Wholly inside New York's spring-forward gap: empty on that Sunday.
NEW_YORK_IN_GAP = Calendar("America/New_York", [Window(ALL_WEEK, time(2), time(2, 30))])
# Windows that overlap on one date and across midnight: counted once.
NEW_YORK_OVERLAPS = Calendar(
    "America/New_York",
    [
        Window(WEEKDAYS, time(18), time(2)),
        Window(frozenset(range(1, 6)), time(1), time(9)),
        Window(WEEKDAYS, time(8, 30), time(12)),
    ],
    Holidays("US"),
)
# 23-hour windows ten hours behind UTC: a window reaches two UTC dates past the
# date it opens on (Wednesday 20:00 HST is Thursday 06:00 UTC; it closes Thursday
# 19:00 HST, Friday 05:00 UTC).
HONOLULU_LONG_SHIFTS = Calendar(
    "Pacific/Honolulu", [Window(frozenset({0, 2, 4}), time(20), time(19))]
)
ALWAYS_LONDON = Calendar.around_the_clock("Europe/London")

CALENDARS = [
    LUMENVOX,
    NEW_YORK,
    LONDON,
    BERLIN_SPLIT,
    SYDNEY_NIGHTS,
    LONDON_DST_GAP,
    NEW_YORK_DST_GAP,
    NEW_YORK_IN_GAP,
    NEW_YORK_OVERLAPS,
    HONOLULU_LONG_SHIFTS,
    ALWAYS_LONDON,
]


# A slow reference, from the contract alone -------------------------------------------------


@functools.cache
def _public_holidays(country: str, subdivision: str | None, year: int) -> frozenset[date]:
    return frozenset(holidays_library.country_holidays(country, subdiv=subdivision, years=year))


def _closed(cal: Calendar, day: date) -> bool:
    given_holidays = cal.holidays
    if day in given_holidays.dates:
        return True
    return given_holidays.country is not None and day in _public_holidays(
        given_holidays.country, given_holidays.subdivision, day.year
    )


def _exists(zone: ZoneInfo, wall: datetime) -> bool:
    return wall.replace(tzinfo=zone).astimezone(UTC).astimezone(zone).replace(tzinfo=None) == wall


def _instant(zone: ZoneInfo, wall: datetime) -> datetime:
    """A wall time's instant: its first occurrence, or for a skipped one the first wall
    minute after it that exists (the transitions of these zones fall on whole minutes)."""
    if not _exists(zone, wall):
        wall = wall.replace(second=0, microsecond=0) + timedelta(minutes=1)
        while not _exists(zone, wall):
            wall += timedelta(minutes=1)
    return wall.replace(tzinfo=zone).astimezone(UTC)


def _union(spans: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    merged: list[tuple[datetime, datetime]] = []
    for s, e in sorted(spans):
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return merged


@functools.cache
def ref_raw(cal: Calendar, day: date) -> tuple[tuple[datetime, datetime], ...]:
    """The business time of the windows opening on ``day``, merged."""
    if _closed(cal, day):
        return ()
    zone = ZoneInfo(cal.timezone)
    spans = []
    for window in cal.windows:
        if day.weekday() not in window.days:
            continue
        end_day = day + timedelta(days=1) if window.end <= window.start else day
        s = _instant(zone, datetime.combine(day, window.start))
        e = _instant(zone, datetime.combine(end_day, window.end))
        if s < e:
            spans.append((s, e))
    return tuple(_union(spans))


@functools.cache
def ref_day(cal: Calendar, day: date) -> tuple[tuple[datetime, datetime], ...]:
    """``day``'s business time less what the previous date's windows already cover."""
    pieces = list(ref_raw(cal, day))
    for cs, ce in ref_raw(cal, day - timedelta(days=1)):
        kept = []
        for s, e in pieces:
            if ce <= s or cs >= e:
                kept.append((s, e))
                continue
            if s < cs:
                kept.append((s, cs))
            if ce < e:
                kept.append((ce, e))
        pieces = kept
    return tuple(pieces)


def _local_date(cal: Calendar, t: datetime) -> date:
    return t.astimezone(ZoneInfo(cal.timezone)).date()


def ref_spans(cal: Calendar, a: datetime, b: datetime) -> list[tuple[datetime, datetime]]:
    """The open set around ``[a, b]``: the union of every date's windows."""
    first = _local_date(cal, a) - timedelta(days=2)
    last = _local_date(cal, b) + timedelta(days=1)
    spans: list[tuple[datetime, datetime]] = []
    while first <= last:
        spans.extend(ref_raw(cal, first))
        first += timedelta(days=1)
    return _union(spans)


def ref_is_open(cal: Calendar, t: datetime) -> bool:
    return any(s <= t < e for s, e in ref_spans(cal, t, t))


def ref_elapsed(cal: Calendar, a: datetime, b: datetime) -> timedelta:
    total = timedelta(0)
    for s, e in ref_spans(cal, a, b):
        if min(e, b) > max(s, a):
            total += min(e, b) - max(s, a)
    return total


def ref_owner(cal: Calendar, t: datetime) -> date:
    """The business day whose (cut) business time holds the open instant ``t``."""
    local = _local_date(cal, t)
    for back in (2, 1, 0, -1):
        day = local - timedelta(days=back)
        if any(s <= t < e for s, e in ref_day(cal, day)):
            return day
    raise AssertionError(f"{t} is not open")


def _length(spans: tuple[tuple[datetime, datetime], ...]) -> timedelta:
    return sum((e - s for s, e in spans), timedelta(0))


def ref_next_business_day(cal: Calendar, day: date) -> date:
    day += timedelta(days=1)
    while not _length(ref_day(cal, day)):
        day += timedelta(days=1)
    return day


def ref_add_business_days(cal: Calendar, opened: datetime, n: int) -> datetime:
    """``n`` business days after the open instant ``opened``, at the same open offset."""
    day = ref_owner(cal, opened)
    offset = sum((min(e, opened) - s for s, e in ref_day(cal, day) if s < opened), timedelta(0))
    for _ in range(n):
        day = ref_next_business_day(cal, day)
    spans = ref_day(cal, day)
    for s, e in spans:
        if offset < e - s:
            return s + offset
        offset -= e - s
    return spans[-1][1]


# Strategies -----------------------------------------------------------------------------

FIRST_YEAR, LAST_YEAR = 2019, 2031


def _offset_changes(zone_name: str) -> list[datetime]:
    """Naive UTC midnights of the days on which ``zone_name`` changes its offset."""
    zone = ZoneInfo(zone_name)
    day = datetime(FIRST_YEAR, 1, 1, tzinfo=UTC)
    end = datetime(LAST_YEAR + 1, 1, 1, tzinfo=UTC)
    offset = day.astimezone(zone).utcoffset()
    changes = []
    while day < end:
        day += timedelta(days=1)
        now = day.astimezone(zone).utcoffset()
        if now != offset:
            changes.append(day.replace(tzinfo=None) - timedelta(days=1))
            offset = now
    return changes


SPECIAL_MOMENTS = sorted(
    {
        *(
            moment
            for zone in ("Europe/London", "America/New_York", "Australia/Sydney")
            for moment in _offset_changes(zone)
        ),
        *(datetime(year, 1, 1) for year in range(FIRST_YEAR + 1, LAST_YEAR + 1)),
    }
)


def _near(moment: datetime) -> st.SearchStrategy[datetime]:
    return st.datetimes(
        min_value=moment - timedelta(days=3),
        max_value=moment + timedelta(days=3),
        timezones=st.just(UTC),
    )


INSTANTS = st.one_of(
    st.datetimes(
        min_value=datetime(FIRST_YEAR, 1, 1),
        max_value=datetime(LAST_YEAR, 12, 28),
        timezones=st.just(UTC),
    ),
    st.sampled_from(SPECIAL_MOMENTS).flatmap(_near),
)

DURATIONS = st.one_of(
    st.timedeltas(min_value=timedelta(0), max_value=timedelta(hours=150)),
    st.sampled_from(
        [US, timedelta(minutes=30), H, 2 * H, 7 * H, 8 * H, timedelta(hours=8, minutes=30), 40 * H]
    ),
)

INPUT_ZONES: list[tzinfo] = [
    UTC,
    ZoneInfo("America/New_York"),
    ZoneInfo("Europe/London"),
    ZoneInfo("Asia/Kathmandu"),
    timezone(timedelta(hours=-3, minutes=-30)),
]


@st.composite
def instants_for(draw: st.DrawFn, cal: Calendar) -> datetime:
    """An instant, often snapped onto (or a microsecond off) an opening or a close."""
    t = draw(INSTANTS)
    how = draw(st.sampled_from(["anywhere", "anywhere", "opening", "close"]))
    spans = ref_spans(cal, t, t) if how != "anywhere" else []
    if not spans:
        return t
    s, e = draw(st.sampled_from(spans))
    return (s if how == "opening" else e) + draw(st.sampled_from([-US, timedelta(0), US]))


CALENDAR_STRATEGY = st.sampled_from(CALENDARS)
PROPERTY = settings(max_examples=300, deadline=None)


def assert_utc(moment: datetime) -> None:
    assert isinstance(moment, datetime)
    assert moment.tzinfo is UTC, moment


def assert_open_or_close(cal: Calendar, moment: datetime) -> None:
    assert cal.is_open(moment) or cal.is_open(moment - US), (
        f"{moment} is neither open nor a window's close"
    )


# Properties -----------------------------------------------------------------------------


@PROPERTY
@given(st.data())
def test_is_open_matches_the_reference(data):
    cal = data.draw(CALENDAR_STRATEGY)
    t = data.draw(instants_for(cal))
    assert cal.is_open(t) == ref_is_open(cal, t)


@PROPERTY
@given(st.data())
def test_elapsed_matches_the_reference_over_days(data):
    cal = data.draw(CALENDAR_STRATEGY)
    a = data.draw(instants_for(cal))
    b = a + data.draw(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=6)))
    assert cal.elapsed(a, b) == ref_elapsed(cal, a, b)


@PROPERTY
@given(st.data())
def test_add_then_elapsed_gives_the_amount_back(data):
    cal = data.draw(CALENDAR_STRATEGY)
    start = data.draw(instants_for(cal))
    amount = data.draw(DURATIONS)
    deadline = cal.add(start, amount)
    assert_utc(deadline)
    assert deadline >= start
    assert cal.elapsed(start, deadline) == amount


@PROPERTY
@given(st.data())
def test_a_deadline_is_open_or_a_close_and_the_earliest_such_instant(data):
    cal = data.draw(CALENDAR_STRATEGY)
    start = data.draw(instants_for(cal))
    amount = data.draw(DURATIONS.filter(bool))
    deadline = cal.add(start, amount)
    assert_open_or_close(cal, deadline)
    # Earliest: a microsecond sooner, the amount is not yet used up.
    assert cal.elapsed(start, deadline - US) < amount


@PROPERTY
@given(st.data())
def test_add_is_monotone_in_the_amount(data):
    cal = data.draw(CALENDAR_STRATEGY)
    start = data.draw(instants_for(cal))
    shorter, longer = sorted([data.draw(DURATIONS), data.draw(DURATIONS)])
    assert cal.add(start, shorter) <= cal.add(start, longer)


@PROPERTY
@given(st.data())
def test_add_is_monotone_in_the_start(data):
    cal = data.draw(CALENDAR_STRATEGY)
    earlier = data.draw(instants_for(cal))
    later = earlier + data.draw(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=4)))
    amount = data.draw(DURATIONS)
    assert cal.add(earlier, amount) <= cal.add(later, amount)


@PROPERTY
@given(st.data())
def test_elapsed_is_additive(data):
    cal = data.draw(CALENDAR_STRATEGY)
    a, b, c = sorted(data.draw(instants_for(cal)) for _ in range(3))
    whole = cal.elapsed(a, c)
    assert whole == cal.elapsed(a, b) + cal.elapsed(b, c)
    assert timedelta(0) <= whole <= c - a
    # Backwards is empty, never negative.
    assert cal.elapsed(c, a) == (timedelta(0) if a < c else whole)


@PROPERTY
@given(st.data())
def test_next_open_is_the_first_open_instant(data):
    cal = data.draw(CALENDAR_STRATEGY)
    t = data.draw(instants_for(cal))
    opens = cal.next_open(t)
    assert_utc(opens)
    assert opens >= t
    assert cal.is_open(opens)
    assert cal.elapsed(t, opens) == timedelta(0)
    if opens > t:
        assert not cal.is_open(opens - US)
        assert not cal.is_open(t)
    else:
        assert cal.is_open(t)


@PROPERTY
@given(st.data(), st.integers(min_value=0, max_value=12))
def test_add_business_days_lands_n_business_days_on(data, n):
    cal = data.draw(CALENDAR_STRATEGY)
    start = data.draw(instants_for(cal))
    result = cal.add_business_days(start, n)
    assert_utc(result)
    opened = cal.next_open(start)
    if n == 0:
        assert result == opened
        return
    assert result > start
    assert_open_or_close(cal, result)
    assert result == ref_add_business_days(cal, opened, n)
    # Count the business days (dates with business time of their own) after the
    # start's business day up to the result's: exactly n. At a clamped close or
    # an opening with no offset the result may touch a neighbour's time, so it
    # belongs to any date whose business time it lies in or bounds.
    first = ref_owner(cal, opened)
    local = _local_date(cal, result)
    owners = [
        day
        for day in (local - timedelta(days=back) for back in (2, 1, 0, -1))
        if any(s <= result <= e for s, e in ref_day(cal, day))
    ]
    counts = set()
    for owner in owners:
        days, day = 0, first
        while day < owner:
            day += timedelta(days=1)
            days += bool(ref_day(cal, day))
        counts.add(days)
    assert n in counts


@PROPERTY
@given(st.data(), st.sampled_from(INPUT_ZONES))
def test_results_are_utc_whatever_the_input_zone(data, zone):
    cal = data.draw(CALENDAR_STRATEGY)
    t = data.draw(instants_for(cal))
    local = t.astimezone(zone)
    amount = data.draw(DURATIONS)
    assert cal.is_open(local) == cal.is_open(t)
    for got, want in [
        (cal.next_open(local), cal.next_open(t)),
        (cal.add(local, amount), cal.add(t, amount)),
        (cal.add(local, timedelta(0)), t),
        (cal.add_business_days(local, 2), cal.add_business_days(t, 2)),
    ]:
        assert_utc(got)
        assert got == want
    # (local + amount would be wall-clock arithmetic: convert the UTC sum instead.)
    assert cal.elapsed(local, (t + amount).astimezone(zone)) == cal.elapsed(t, t + amount)


@settings(max_examples=40, deadline=None)
@given(
    CALENDAR_STRATEGY, st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1))
)
def test_naive_instants_are_refused(cal, naive):
    aware = naive.replace(tzinfo=UTC)
    calls = [
        lambda: cal.is_open(naive),
        lambda: cal.next_open(naive),
        lambda: cal.add(naive, H),
        lambda: cal.add(naive, timedelta(0)),
        lambda: cal.elapsed(naive, aware),
        lambda: cal.elapsed(aware, naive),
        lambda: cal.add_business_days(naive, 1),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="must be a timezone-aware datetime"):
            call()


# Worked examples ------------------------------------------------------------------------


def test_lumenvox_friday_evening_runs_past_midnight_then_waits_for_monday():
    # Friday 2024-03-08 23:30 GMT: Friday's window runs to Saturday 01:00, so
    # 1.5 h are used by then; the remaining 0.5 h starts Monday 08:00.
    assert LUMENVOX.add(utc(2024, 3, 8, 23, 30), 2 * H) == utc(2024, 3, 11, 8, 30)
    assert LUMENVOX.elapsed(utc(2024, 3, 8, 23, 30), utc(2024, 3, 11, 8, 30)) == 2 * H
    # Using up exactly Friday's last two hours ends at its close, not at Monday's opening.
    assert LUMENVOX.add(utc(2024, 3, 8, 23), 2 * H) == utc(2024, 3, 9, 1)
    assert LUMENVOX.is_open(utc(2024, 3, 9, 1) - US)
    assert not LUMENVOX.is_open(utc(2024, 3, 9, 1))
    # After midnight: Saturday 00:30 is Friday's; Monday 00:30 would be Sunday's (none);
    # Tuesday 00:30 is Monday's.
    assert LUMENVOX.is_open(utc(2024, 3, 9, 0, 30))
    assert not LUMENVOX.is_open(utc(2024, 3, 11, 0, 30))
    assert LUMENVOX.is_open(utc(2024, 3, 12, 0, 30))
    assert LUMENVOX.next_open(utc(2024, 3, 9, 1)) == utc(2024, 3, 11, 8)
    # A business day is 17 h: Monday 08:00 to Tuesday 01:00.
    assert LUMENVOX.elapsed(utc(2024, 3, 11), utc(2024, 3, 12, 6)) == 17 * H


def test_a_holiday_on_the_opening_date_closes_the_whole_overnight_window():
    # GB: Christmas Wed 2024-12-25 and Boxing Day Thu 12-26. Tuesday's window runs
    # to Wednesday 01:00 untouched; Wednesday's and Thursday's (to Friday 01:00) are
    # closed; Friday's opens 08:00 and runs to Saturday 01:00.
    assert LUMENVOX.is_open(utc(2024, 12, 25, 0, 30))
    assert not LUMENVOX.is_open(utc(2024, 12, 26, 0, 30))
    assert not LUMENVOX.is_open(utc(2024, 12, 27, 0, 30))
    assert LUMENVOX.is_open(utc(2024, 12, 28, 0, 30))
    # Tuesday 23:00 + 3 h: 2 h to Wednesday 01:00, then 1 h from Friday 08:00.
    assert LUMENVOX.add(utc(2024, 12, 24, 23), 3 * H) == utc(2024, 12, 27, 9)
    assert LUMENVOX.next_open(utc(2024, 12, 25, 1)) == utc(2024, 12, 27, 8)
    # Good Friday 2024-03-29: Thursday's window still runs to Friday 01:00.
    assert LUMENVOX.add(utc(2024, 3, 28, 23), 2 * H) == utc(2024, 3, 29, 1)
    assert not LUMENVOX.is_open(utc(2024, 3, 29, 12))
    assert not LUMENVOX.is_open(utc(2024, 3, 30, 0, 30))


def test_holidays_given_as_explicit_dates():
    cal = Calendar(
        "Etc/GMT",
        [Window(WEEKDAYS, time(8), time(1))],
        Holidays(dates=frozenset({date(2024, 5, 14)})),
    )
    # Closed Tuesday 2024-05-14: Monday's window still runs to Tuesday 01:00;
    # Tuesday's (to Wednesday 01:00) is closed.
    assert cal.is_open(utc(2024, 5, 14, 0, 30))
    assert not cal.is_open(utc(2024, 5, 14, 8))
    assert not cal.is_open(utc(2024, 5, 15, 0, 30))
    assert cal.add(utc(2024, 5, 13, 23), 2 * H) == utc(2024, 5, 14, 1)
    assert cal.add(utc(2024, 5, 13, 23), 3 * H) == utc(2024, 5, 15, 9)
    assert cal.add_business_days(utc(2024, 5, 13, 10), 1) == utc(2024, 5, 15, 10)
    assert cal.describe() == "Mon–Fri 08:00–01:00 (next day), Etc/GMT; also closed 2024-05-14"


def _every_day(zone: str, start: time, end: time) -> Calendar:
    return Calendar(zone, [Window(ALL_WEEK, start, end)])


# (calendar, the date the window opens, its opening and close in UTC). The hour
# changes: London 2024-03-31 01:00 GMT → 02:00 BST and 2024-10-27 02:00 BST →
# 01:00 GMT; New York 2024-03-10 02:00 EST → 03:00 EDT and 2024-11-03 02:00 EDT →
# 01:00 EST; Sydney 2024-10-06 02:00 AEST → 03:00 AEDT and 2024-04-07 03:00 AEDT
# → 02:00 AEST.
DST_DAYS = [
    # 09:00–17:00 is 8 h on either side of a change: it only moves in UTC.
    pytest.param(
        _every_day("Europe/London", time(9), time(17)),
        date(2024, 3, 30),
        utc(2024, 3, 30, 9),
        utc(2024, 3, 30, 17),
        id="london-day-before-spring",
    ),
    pytest.param(
        _every_day("Europe/London", time(9), time(17)),
        date(2024, 3, 31),
        utc(2024, 3, 31, 8),
        utc(2024, 3, 31, 16),
        id="london-day-spring",
    ),
    pytest.param(
        _every_day("Europe/London", time(9), time(17)),
        date(2024, 10, 27),
        utc(2024, 10, 27, 9),
        utc(2024, 10, 27, 17),
        id="london-day-fall",
    ),
    pytest.param(
        _every_day("America/New_York", time(9), time(17)),
        date(2024, 3, 10),
        utc(2024, 3, 10, 13),
        utc(2024, 3, 10, 21),
        id="new-york-day-spring",
    ),
    pytest.param(
        _every_day("America/New_York", time(9), time(17)),
        date(2024, 11, 3),
        utc(2024, 11, 3, 14),
        utc(2024, 11, 3, 22),
        id="new-york-day-fall",
    ),
    # 20:00–04:00 opening the night before a change: 7 h at spring, 9 h at fall.
    pytest.param(
        _every_day("Europe/London", time(20), time(4)),
        date(2024, 3, 30),
        utc(2024, 3, 30, 20),
        utc(2024, 3, 31, 3),
        id="london-night-spring",
    ),
    pytest.param(
        _every_day("Europe/London", time(20), time(4)),
        date(2024, 3, 31),
        utc(2024, 3, 31, 19),
        utc(2024, 4, 1, 3),
        id="london-night-after-spring",
    ),
    pytest.param(
        _every_day("Europe/London", time(20), time(4)),
        date(2024, 10, 26),
        utc(2024, 10, 26, 19),
        utc(2024, 10, 27, 4),
        id="london-night-fall",
    ),
    pytest.param(
        _every_day("America/New_York", time(20), time(4)),
        date(2024, 3, 9),
        utc(2024, 3, 10, 1),
        utc(2024, 3, 10, 8),
        id="new-york-night-spring",
    ),
    pytest.param(
        _every_day("America/New_York", time(20), time(4)),
        date(2024, 11, 2),
        utc(2024, 11, 3),
        utc(2024, 11, 3, 9),
        id="new-york-night-fall",
    ),
    pytest.param(
        SYDNEY_NIGHTS,
        date(2024, 10, 5),
        utc(2024, 10, 5, 12),
        utc(2024, 10, 5, 19),
        id="sydney-night-spring",
    ),
    pytest.param(
        SYDNEY_NIGHTS,
        date(2024, 4, 6),
        utc(2024, 4, 6, 11),
        utc(2024, 4, 6, 20),
        id="sydney-night-fall",
    ),
    # 01:30–03:30 opening inside the gap opens when the clocks jump; opening in the
    # repeated hour opens at its first occurrence.
    pytest.param(
        LONDON_DST_GAP,
        date(2024, 3, 31),  # 02:00 BST – 03:30 BST
        utc(2024, 3, 31, 1),
        utc(2024, 3, 31, 2, 30),
        id="london-gap-spring",
    ),
    pytest.param(
        LONDON_DST_GAP,
        date(2024, 10, 27),  # 01:30 BST – 03:30 GMT
        utc(2024, 10, 27, 0, 30),
        utc(2024, 10, 27, 3, 30),
        id="london-gap-fall",
    ),
    pytest.param(
        NEW_YORK_DST_GAP,
        date(2024, 3, 10),  # 01:30 EST – 03:30 EDT
        utc(2024, 3, 10, 6, 30),
        utc(2024, 3, 10, 7, 30),
        id="new-york-gap-spring",
    ),
    pytest.param(
        NEW_YORK_DST_GAP,
        date(2024, 11, 3),  # 01:30 EDT – 03:30 EST
        utc(2024, 11, 3, 5, 30),
        utc(2024, 11, 3, 8, 30),
        id="new-york-gap-fall",
    ),
]


@pytest.mark.parametrize(("cal", "day", "opens", "closes"), DST_DAYS)
def test_windows_on_dst_change_days(cal, day, opens, closes):
    # Every neighbouring window is at least 16 h away, so an hour either side is closed.
    length = closes - opens
    assert cal.next_open(opens - H) == opens
    assert not cal.is_open(opens - US)
    assert cal.is_open(opens)
    assert cal.is_open(closes - US)
    assert not cal.is_open(closes)
    assert cal.elapsed(opens - H, closes + H) == length
    assert cal.add(opens, length) == closes
    assert cal.add(opens - H, length + US) > closes + H
    assert day.weekday() in cal.windows[0].days


def test_a_window_wholly_inside_the_gap_is_empty_that_day():
    # 02:00–02:30 does not exist in New York on Sunday 2024-03-10.
    assert NEW_YORK_IN_GAP.next_open(utc(2024, 3, 9, 7)) == utc(2024, 3, 9, 7)  # 02:00 EST
    assert NEW_YORK_IN_GAP.next_open(utc(2024, 3, 9, 7, 30)) == utc(2024, 3, 11, 6)  # 02:00 EDT
    assert NEW_YORK_IN_GAP.elapsed(utc(2024, 3, 9, 8), utc(2024, 3, 11, 6)) == timedelta(0)
    # So Sunday is no business day: one business day after Saturday 02:10 EST is Monday 02:10 EDT.
    assert NEW_YORK_IN_GAP.add_business_days(utc(2024, 3, 9, 7, 10), 1) == utc(2024, 3, 11, 6, 10)


def test_year_end_with_us_holidays():
    # Tue 2024-12-31 16:00 EST + 2 h: 1 h on Tuesday, New Year's Day closed,
    # 1 h from Thursday 2025-01-02 09:00 EST (14:00 UTC).
    assert NEW_YORK.add(utc(2024, 12, 31, 21), 2 * H) == utc(2025, 1, 2, 15)
    assert NEW_YORK.elapsed(utc(2024, 12, 31, 14), utc(2025, 1, 2, 22)) == 16 * H
    assert NEW_YORK.add_business_days(utc(2024, 12, 31, 15), 1) == utc(2025, 1, 2, 15)
    # 2022-01-01 is a Saturday, observed on Friday 2021-12-31: Thursday 16:00 EST
    # + 2 h ends Monday 2022-01-03 10:00 EST.
    assert NEW_YORK.add(utc(2021, 12, 30, 21), 2 * H) == utc(2022, 1, 3, 15)
    # Christmas 2021 is a Saturday, observed Friday 12-24: from Thursday's close
    # the desk next opens Monday 12-27 09:00 EST.
    assert NEW_YORK.next_open(utc(2021, 12, 23, 22)) == utc(2021, 12, 27, 14)


def test_within_three_business_days_from_a_friday():
    # Fri 2024-03-08 11:00 EST → Mon, Tue, Wed → Wed 03-13 11:00 EDT (clocks changed Sunday).
    assert NEW_YORK.add_business_days(utc(2024, 3, 8, 16), 3) == utc(2024, 3, 13, 15)
    # After Friday's close the count starts at Monday's opening, 09:00 EDT.
    assert NEW_YORK.add_business_days(utc(2024, 3, 8, 23), 3) == utc(2024, 3, 14, 13)
    assert NEW_YORK.add_business_days(utc(2024, 3, 9, 15), 3) == utc(2024, 3, 14, 13)
    assert NEW_YORK.add_business_days(utc(2024, 3, 8, 23), 0) == utc(2024, 3, 11, 13)
    # Fri 2024-12-20 10:00 EST → Mon 23, Tue 24, (Christmas), Thu 26 10:00 EST.
    assert NEW_YORK.add_business_days(utc(2024, 12, 20, 15), 3) == utc(2024, 12, 26, 15)
    # LumenVox: Friday 23:30 is Friday's window, 15.5 h in; Saturday 00:30 too, 16.5 h in.
    assert LUMENVOX.add_business_days(utc(2024, 3, 8, 23, 30), 3) == utc(2024, 3, 13, 23, 30)
    assert LUMENVOX.add_business_days(utc(2024, 3, 9, 0, 30), 1) == utc(2024, 3, 12, 0, 30)


def test_add_business_days_on_a_split_day_and_a_short_day():
    # Berlin, Mon 2024-06-10 12:30 CEST is the lunch close: counting starts 13:30
    # CEST, 3.5 h in, which on Tuesday ends the morning window, so the result is the
    # afternoon's opening, 13:30 CEST (11:30 UTC).
    assert BERLIN_SPLIT.next_open(utc(2024, 6, 10, 10, 30)) == utc(2024, 6, 10, 11, 30)
    assert BERLIN_SPLIT.add_business_days(utc(2024, 6, 10, 10, 30), 1) == utc(2024, 6, 11, 11, 30)
    # 3.5 h in the morning and 4 h in the afternoon.
    assert BERLIN_SPLIT.elapsed(utc(2024, 6, 10), utc(2024, 6, 11)) == timedelta(
        hours=7, minutes=30
    )
    # New York 01:30–03:30: Sat 2024-03-09 03:00 EST is 1.5 h in; Sunday's window is
    # 1 h long (01:30 EST – 03:30 EDT), so the result is clamped to its close; Monday's
    # is whole again: 01:30 EDT + 1.5 h.
    start = utc(2024, 3, 9, 8)
    assert NEW_YORK_DST_GAP.add_business_days(start, 1) == utc(2024, 3, 10, 7, 30)
    assert NEW_YORK_DST_GAP.add_business_days(start, 2) == utc(2024, 3, 11, 7)


def test_overlapping_windows_are_counted_once():
    # Monday 2024-06-10 (EDT): 18:00 – Tue 02:00, and Tuesday's 01:00–09:00 and
    # 08:30–12:00 join it: open without a break from Monday 18:00 to Tuesday 12:00.
    assert NEW_YORK_OVERLAPS.elapsed(utc(2024, 6, 10, 21), utc(2024, 6, 11, 17)) == 18 * H
    # Monday 18:00 EDT + 18 h is Tuesday's 12:00 close; one hour more is Tuesday 19:00.
    assert NEW_YORK_OVERLAPS.add(utc(2024, 6, 10, 22), 18 * H) == utc(2024, 6, 11, 16)
    assert NEW_YORK_OVERLAPS.add(utc(2024, 6, 10, 22), 19 * H) == utc(2024, 6, 11, 23)


def test_a_long_window_behind_utc_reaches_two_utc_dates_on():
    # Wednesday 2024-06-05 20:00 HST (Thu 06:00 UTC) to Thursday 19:00 HST (Fri 05:00
    # UTC); no window opens on Thursday; Friday's opens 20:00 HST (Sat 06:00 UTC).
    cal = HONOLULU_LONG_SHIFTS
    assert cal.is_open(utc(2024, 6, 7, 4, 59))
    assert not cal.is_open(utc(2024, 6, 7, 5))
    assert cal.next_open(utc(2024, 6, 7, 5)) == utc(2024, 6, 8, 6)
    assert cal.elapsed(utc(2024, 6, 6), utc(2024, 6, 8)) == 23 * H
    assert cal.add(utc(2024, 6, 7, 4), 2 * H) == utc(2024, 6, 8, 7)
    # Thursday 18:00 HST is 22 h into Wednesday's window; 22 h into Friday's is
    # Saturday 18:00 HST, Sunday 04:00 UTC.
    assert cal.add_business_days(utc(2024, 6, 7, 4), 1) == utc(2024, 6, 9, 4)


def test_around_the_clock():
    cal = ALWAYS_LONDON
    start = utc(2024, 3, 30, 22)
    assert cal.is_open(start)
    assert cal.next_open(start) == start
    assert cal.add(start, 5 * H) == utc(2024, 3, 31, 3)
    assert cal.elapsed(start, utc(2024, 4, 2, 22)) == timedelta(days=3)
    # A business day is a local calendar day. Saturday 2024-03-30 12:00 GMT is 12 h
    # into Saturday; Sunday is 23 h long from 00:00 UTC, so 12 h in is 12:00 UTC
    # (13:00 BST): the offset is kept in business time, not in wall time.
    assert cal.add_business_days(utc(2024, 3, 30, 12), 1) == utc(2024, 3, 31, 12)
    assert cal.describe() == "around the clock (24×7), Europe/London"
    assert repr(cal) == "Calendar.around_the_clock('Europe/London')"
    assert Calendar.around_the_clock().timezone == "UTC"


def test_describe():
    assert LUMENVOX.describe() == "Mon–Fri 08:00–01:00 (next day), Etc/GMT; public holidays: GB"
    assert BERLIN_SPLIT.describe() == (
        "Mon–Fri 09:00–12:30 and 13:30–17:30, Europe/Berlin; public holidays: DE-BE"
    )
    assert SYDNEY_NIGHTS.describe() == (
        "Mon–Sun 22:00–06:00 (next day), Australia/Sydney; public holidays: AU-NSW"
    )
    closed = frozenset(date(2024, 1, day) for day in range(1, 8))
    mixed = Calendar(
        "UTC",
        [
            Window(frozenset({0, 2, 4}), time(10), time(14)),
            Window(frozenset({5}), time(10), time(12, 0, 30)),
        ],
        Holidays(dates=closed),
    )
    assert mixed.describe() == (
        "Mon, Wed, Fri 10:00–14:00; Sat 10:00–12:00:30, UTC; also closed 2024-01-01, "
        "2024-01-02, 2024-01-03, 2024-01-04, 2024-01-05 and 2 more"
    )
    both = Calendar(
        "America/New_York",
        [Window(WEEKDAYS, time(9), time(17))],
        Holidays("US", dates=frozenset({date(2024, 12, 24)})),
    )
    assert both.describe() == (
        "Mon–Fri 09:00–17:00, America/New_York; public holidays: US; also closed 2024-12-24"
    )
    plain = Calendar("UTC", [Window(frozenset({6}), time(9), time(17))])
    assert plain.describe() == "Sun 09:00–17:00, UTC; no holidays"


# Bad input ------------------------------------------------------------------------------

NINE_TO_FIVE = [Window(WEEKDAYS, time(9), time(17))]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        pytest.param(
            lambda: Calendar("Mars/Olympus", NINE_TO_FIVE),
            "unknown time zone 'Mars/Olympus'",
            id="unknown-zone",
        ),
        pytest.param(
            lambda: Calendar("europe/london", NINE_TO_FIVE),
            "unknown time zone 'europe/london'",
            id="zone-wrong-case",
        ),
        pytest.param(
            lambda: Calendar("Europe", NINE_TO_FIVE),
            "unknown time zone 'Europe'",
            id="zone-is-a-folder",
        ),
        pytest.param(
            lambda: Calendar("../etc/passwd", NINE_TO_FIVE), "unknown time zone", id="zone-path"
        ),
        pytest.param(
            lambda: Calendar("", NINE_TO_FIVE), "a calendar needs a time zone name", id="empty-zone"
        ),
        pytest.param(
            lambda: Calendar.around_the_clock("Nowhere/Special"),
            "unknown time zone 'Nowhere/Special'",
            id="around-the-clock-unknown-zone",
        ),
        pytest.param(
            lambda: Calendar("UTC", NINE_TO_FIVE, Holidays("XX")),
            "unknown holiday country or subdivision 'XX'",
            id="unknown-country",
        ),
        pytest.param(
            lambda: Calendar("UTC", NINE_TO_FIVE, Holidays("US", "ZZ")),
            "unknown holiday country or subdivision 'US/ZZ'",
            id="unknown-subdivision",
        ),
        pytest.param(
            lambda: Calendar("UTC", NINE_TO_FIVE, Holidays(subdivision="NY")),
            "holiday subdivision 'NY' needs a country",
            id="subdivision-alone",
        ),
        pytest.param(
            lambda: Calendar(
                "UTC", NINE_TO_FIVE, Holidays(dates=frozenset({datetime(2024, 1, 1)}))
            ),
            "holiday dates must be dates",
            id="holiday-datetime",
        ),
        pytest.param(
            lambda: Calendar("UTC", []),
            "a calendar needs at least one business window",
            id="no-windows",
        ),
        pytest.param(
            lambda: Calendar("UTC", [Window(WEEKDAYS, time(9), time(9))]),
            r"window 09:00–09:00 \(next day\) starts when it ends",
            id="start-is-end",
        ),
        pytest.param(
            lambda: Calendar("UTC", [Window(WEEKDAYS, time(0), time(0))]),
            "for 24×7 use Calendar.around_the_clock",
            id="midnight-to-midnight",
        ),
        pytest.param(
            lambda: Calendar("UTC", [Window(frozenset({7}), time(9), time(17))]),
            r"window days must be 0 \(Monday\) to 6 \(Sunday\), got 7",
            id="weekday-7",
        ),
        pytest.param(
            lambda: Calendar("UTC", [Window(frozenset({-1, 2}), time(9), time(17))]),
            "got -1",
            id="weekday-negative",
        ),
        pytest.param(
            lambda: Calendar("UTC", [Window(frozenset({True}), time(9), time(17))]),
            "got True",
            id="weekday-bool",
        ),
        pytest.param(
            lambda: Calendar("UTC", [Window(frozenset(), time(9), time(17))]),
            "window 09:00–17:00 opens on no weekday",
            id="no-weekday",
        ),
        pytest.param(
            lambda: Calendar("UTC", [Window(WEEKDAYS, time(9, tzinfo=UTC), time(17))]),
            "give them without tzinfo",
            id="window-tzinfo",
        ),
    ],
)
def test_bad_configuration_is_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        pytest.param(
            lambda: NEW_YORK.add(utc(2024, 1, 2), -US),
            "amount of business time must be >= 0",
            id="negative-amount",
        ),
        pytest.param(
            lambda: NEW_YORK.add(utc(2024, 1, 2), 3600),  # type: ignore[arg-type]
            "amount must be a timedelta, got 3600",
            id="amount-not-timedelta",
        ),
        pytest.param(
            lambda: NEW_YORK.add_business_days(utc(2024, 1, 2), -1),
            "business days must be a whole number >= 0, got -1",
            id="negative-days",
        ),
        pytest.param(
            lambda: NEW_YORK.add_business_days(utc(2024, 1, 2), 1.5),  # type: ignore[arg-type]
            "got 1.5",
            id="fractional-days",
        ),
        pytest.param(
            lambda: NEW_YORK.add_business_days(utc(2024, 1, 2), True), "got True", id="bool-days"
        ),
        pytest.param(
            lambda: NEW_YORK.add(datetime(2024, 1, 2, 9), H),
            r"start must be a timezone-aware datetime, got datetime.datetime\(2024",
            id="naive-start",
        ),
        pytest.param(
            lambda: NEW_YORK.elapsed(utc(2024, 1, 2), datetime(2024, 1, 3)),
            "end must be a timezone-aware datetime",
            id="naive-end",
        ),
        pytest.param(
            lambda: NEW_YORK.is_open(date(2024, 1, 2)),  # type: ignore[arg-type]
            "at must be a timezone-aware datetime",
            id="date-not-datetime",
        ),
        pytest.param(
            lambda: ALWAYS_LONDON.add(datetime(2024, 1, 2), H),
            "start must be a timezone-aware datetime",
            id="naive-around-the-clock",
        ),
    ],
)
def test_bad_arguments_are_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_a_calendar_with_no_business_time_for_ten_years_says_so():
    cal = Calendar(
        "UTC",
        [Window(frozenset({0}), time(9), time(17))],
        Holidays(dates=frozenset(date(2024, 1, 1) + timedelta(weeks=w) for w in range(600))),
    )
    with pytest.raises(ValueError, match="no business time for 3660 days after"):
        cal.next_open(utc(2024, 1, 1))
