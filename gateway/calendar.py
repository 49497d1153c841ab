"""Business time on a policy's calendar: when the support desk is open, and sums over it.

A calendar is a time zone, weekly windows in local wall time, and holidays. It
answers "is the desk open at this instant?", "when does it next open?", "what
instant is N business hours after this one?", and "how much business time lies
between two instants?". It is pure: instants in, instants out, no clock of its
own and no I/O, so deadlines can be tested to the microsecond and replayed in
virtual time.

The contract, in one place:

* Every datetime given must be timezone-aware (``ValueError`` otherwise); every
  datetime returned is aware and in UTC.
* A window belongs to the date it *opens* on. "08:00–01:00" on Monday runs
  until Tuesday 01:00; a holiday on Monday closes all of it, a holiday on
  Tuesday cuts none of it. When one date's window is still open as the next
  date's window opens, the overlap is counted once, as the earlier date's.
* Windows are wall-clock bounds in the calendar's zone, so on a DST change a
  window is an hour longer or shorter in absolute time. A wall time that does
  not exist (inside a spring-forward gap) is read as the instant the clocks
  jump, that is the end of the gap; an ambiguous wall time (repeated at a
  fall-back) is read as its first occurrence (``fold=0``). Both readings keep
  later wall times at later-or-equal instants, so a window never turns
  inside out; one that falls wholly inside a gap is simply empty that day.
* Arithmetic is exact to the microsecond: ``elapsed(s, add(s, a)) == a``.

How it is fast: each date's business intervals are worked out once, as UTC
epoch-microsecond pairs, and kept in an LRU cache keyed by the date's
ordinal; ``add`` and ``elapsed`` walk whole intervals day by day. Public
holidays are asked of the ``holidays`` library one year at a time, on first
need.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays as holidays_library

Interval = tuple[int, int]
"""Business time ``[start, end)`` in UTC epoch microseconds."""

_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_DAY_US = 86_400_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_DAY_CACHE_SIZE = 8192
"""Dates kept worked out per calendar: some twenty years, a few hundred kB."""

_MAX_CLOSED_DAYS = 3660
"""A walk that finds no business time for ten years is a configuration error, not a wait."""


class CalendarError(ValueError):
    """A calendar that cannot be built; ``part`` says which of its inputs is at fault
    ("timezone", "windows", "holidays.country", "holidays.subdivision",
    "holidays.dates"), so that a configuration file can point at the right key."""

    def __init__(self, part: str, reason: str) -> None:
        super().__init__(reason)
        self.part = part


@dataclass(frozen=True)
class Window:
    """A weekly business window, opening on each weekday in `days` (Monday=0).

    ``start`` and ``end`` are local wall times of the calendar's zone, without
    tzinfo. ``end <= start`` means the window closes the NEXT day:
    08:00–01:00 runs past midnight.
    """

    days: frozenset[int]
    start: time
    end: time


@dataclass(frozen=True)
class Holidays:
    """The dates on which no window opens.

    ``country`` and ``subdivision`` are codes the ``holidays`` library knows
    ("US", "CA"); its observed days are included (a Saturday Christmas closes
    the Friday before), as businesses close them. ``dates`` adds the
    organisation's own closed dates.
    """

    country: str | None = None
    subdivision: str | None = None
    dates: frozenset[date] = frozenset()


_FULL_WEEK = Window(frozenset(range(7)), time(0), time(0))
"""The 24×7 window of ``Calendar.around_the_clock``; refused from callers as ambiguous."""


class Calendar:
    """Business windows and holidays in one time zone, with exact arithmetic over them.

    Parameters:
        timezone: an IANA zone name ("Europe/London", "Etc/GMT").
        windows: the weekly windows; overlapping ones are merged, never double-counted.
        holidays: the dates on which no window opens.

    Raises:
        ValueError: for an unknown zone, an unknown holiday country or
            subdivision, no windows, a window with no or bad days
            (outside 0..6), a window with ``start == end`` (zero or 24 hours?
            use ``around_the_clock`` for 24×7), or window times with tzinfo.
    """

    __slots__ = (
        "_always",
        "_day",
        "_holidays",
        "_public",
        "_raw_day",
        "_shape",
        "_timezone",
        "_windows",
        "_zone",
    )

    def __init__(
        self, timezone: str, windows: Sequence[Window], holidays: Holidays = Holidays()
    ) -> None:
        windows = tuple(windows)
        if not windows:
            raise CalendarError("windows", "a calendar needs at least one business window")
        for window in windows:
            _check_window(window)
        self._setup(timezone, windows, holidays, always=False)

    @classmethod
    def around_the_clock(cls, timezone: str = "UTC") -> Calendar:
        """A calendar that is always open and has no holidays.

        ``add`` is plain addition and ``elapsed`` plain subtraction; a business
        day is a local calendar day of ``timezone``. Its ``windows`` hold one
        Mon–Sun 00:00–00:00 window, which the constructor refuses from callers
        because there it could mean zero hours as well as 24.
        """
        calendar = cls.__new__(cls)
        calendar._setup(timezone, (_FULL_WEEK,), Holidays(), always=True)
        return calendar

    def _setup(
        self, timezone: str, windows: tuple[Window, ...], holidays: Holidays, *, always: bool
    ) -> None:
        self._zone = _load_zone(timezone)
        self._public = _public_holiday_lookup(holidays)
        _check_dates(holidays.dates)
        self._timezone = timezone
        self._windows = windows
        self._holidays = holidays
        self._always = always
        self._shape = _weekly_shape(windows)
        # Per instance, so that a calendar's cache dies with it.
        self._raw_day = functools.lru_cache(maxsize=_DAY_CACHE_SIZE)(self._build_raw_day)
        self._day = functools.lru_cache(maxsize=_DAY_CACHE_SIZE)(self._build_day)

    # Read-only attributes --------------------------------------------------------------

    @property
    def timezone(self) -> str:
        """The IANA name of the zone the windows are read in."""
        return self._timezone

    @property
    def windows(self) -> tuple[Window, ...]:
        """The windows as given (before merging)."""
        return self._windows

    @property
    def holidays(self) -> Holidays:
        """The holidays as given."""
        return self._holidays

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Calendar):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        if self._always:
            return f"Calendar.around_the_clock({self._timezone!r})"
        return (
            f"Calendar(timezone={self._timezone!r}, windows={self._windows!r}, "
            f"holidays={self._holidays!r})"
        )

    def _key(self) -> tuple[str, tuple[Window, ...], Holidays]:
        return (self._timezone, self._windows, self._holidays)

    # Questions about instants ----------------------------------------------------------

    def is_open(self, at: datetime) -> bool:
        """Whether ``at`` lies inside a business window (a window includes its opening
        instant, not its closing one)."""
        t = _to_us(at, "at")
        if self._always:
            return True
        day = self._day
        first = _first_date(t)
        for ordinal in range(first, first + 4):
            for s, e in day(ordinal):
                if s <= t < e:
                    return True
        return False

    def next_open(self, at: datetime) -> datetime:
        """The first open instant at or after ``at``: ``at`` itself (in UTC) if open."""
        t = _to_us(at, "at")
        if self._always:
            return _from_us(t)
        s, _ = next(self._intervals_from(t))
        return _from_us(max(s, t))

    def add(self, start: datetime, amount: timedelta) -> datetime:
        """The earliest instant ``t >= start`` with ``elapsed(start, t) == amount``.

        With ``amount > 0`` the result is inside a window or exactly at a
        window's close (a deadline of "2 business hours" that uses up Friday's
        last two hours falls at Friday's close, not at Monday's opening).
        ``amount == 0`` gives ``start`` itself, in UTC.

        Raises:
            ValueError: ``start`` is naive or ``amount`` is negative.
        """
        t = _to_us(start, "start")
        need = _amount_us(amount)
        if need == 0 or self._always:
            return _from_us(t + need)
        for s, e in self._intervals_from(t):
            s = max(s, t)
            if need <= e - s:
                return _from_us(s + need)
            need -= e - s
        raise AssertionError("the walk over business days never ends")

    def elapsed(self, start: datetime, end: datetime) -> timedelta:
        """Business time in ``[start, end)``; zero when ``end <= start``."""
        a = _to_us(start, "start")
        b = _to_us(end, "end")
        if b <= a:
            return timedelta(0)
        if self._always:
            return timedelta(microseconds=b - a)
        total = 0
        for s, e in self._intervals_from(a):
            if s >= b:
                break
            total += min(e, b) - max(s, a)
        return timedelta(microseconds=total)

    def add_business_days(self, start: datetime, days: int) -> datetime:
        """ "Within N business days": the same business moment ``days`` business days later.

        ``start`` is first moved to ``next_open(start)``; a request made on
        Saturday counts from Monday's opening. That instant lies in the
        window(s) of one business day D (the date they open on) at business
        offset o, the open time of D before it. The result is offset o into
        the ``days``-th business day after D, counting only dates with business
        time (no window that weekday, holidays skipped), clamped to that day's
        close when it is shorter than o. With several windows a day, an
        offset that ends one window lands at the opening of the next (the
        result is always open, unless clamped). ``days == 0`` gives
        ``next_open(start)``.

        Raises:
            ValueError: ``start`` is naive or ``days`` is negative.
        """
        if isinstance(days, bool) or not isinstance(days, int) or days < 0:
            raise ValueError(f"business days must be a whole number >= 0, got {days!r}")
        t = _to_us(self.next_open(start), "start")
        if days == 0:
            return _from_us(t)
        day, offset = self._business_offset(t)
        for _ in range(days):
            day = self._next_business_day(day)
        return _from_us(_at_offset(self._day(day), offset))

    # Description ------------------------------------------------------------------------

    def describe(self) -> str:
        """The calendar in a line, for people.

        "Mon–Fri 08:00–01:00 (next day), Etc/GMT; public holidays: GB".
        """
        if self._always:
            return f"around the clock (24×7), {self._timezone}"
        return f"{_describe_windows(self._windows)}, {self._timezone}; " + _describe_holidays(
            self._holidays
        )

    # The walk ---------------------------------------------------------------------------

    def _intervals_from(self, t: int) -> Iterator[Interval]:
        """Business intervals that end after ``t``, in time order, without end.

        Dates' intervals never overlap and come in date order (see
        ``_build_day``), so a plain walk over dates from the first one that may
        hold ``t`` yields them sorted.
        """
        ordinal = _first_date(t)
        closed = 0
        day = self._day
        while True:
            spans = day(ordinal)
            if spans:
                closed = 0
                for span in spans:
                    if span[1] > t:
                        yield span
            else:
                closed += 1
                if closed > _MAX_CLOSED_DAYS:
                    raise ValueError(
                        f"no business time for {_MAX_CLOSED_DAYS} days after "
                        f"{date.fromordinal(ordinal - closed)}: {self.describe()}"
                    )
            ordinal += 1

    def _business_offset(self, t: int) -> tuple[int, int]:
        """The business day whose window holds the open instant ``t``, and the open
        time of that day before ``t``."""
        first = _first_date(t)
        for ordinal in range(first, first + 4):
            before = 0
            for s, e in self._day(ordinal):
                if s <= t < e:
                    return ordinal, before + (t - s)
                before += e - s
        raise AssertionError("next_open returned an instant outside every window")

    def _next_business_day(self, ordinal: int) -> int:
        """The first date after ``ordinal`` with business time."""
        for step in range(1, _MAX_CLOSED_DAYS + 1):
            if self._day(ordinal + step):
                return ordinal + step
        raise ValueError(
            f"no business day for {_MAX_CLOSED_DAYS} days after "
            f"{date.fromordinal(ordinal)}: {self.describe()}"
        )

    # Building one date's intervals ------------------------------------------------------

    def _build_day(self, ordinal: int) -> tuple[Interval, ...]:
        """The date's business intervals, less what the previous date's windows cover.

        A window lasts under 48 hours from its date's midnight, so only the
        previous date's windows can reach into this date's. Cutting them away
        here keeps all dates' intervals disjoint and in date order.
        """
        return _subtract(self._raw_day(ordinal), self._raw_day(ordinal - 1))

    def _build_raw_day(self, ordinal: int) -> tuple[Interval, ...]:
        """The intervals of the windows opening on this date, in UTC; none on a holiday."""
        day = date.fromordinal(ordinal)
        spans = self._shape[day.weekday()]
        if not spans or self._is_holiday(day):
            return ()
        midnight = datetime.combine(day, time())
        intervals = []
        for start, end in spans:
            s = self._wall_to_us(midnight + timedelta(microseconds=start))
            e = self._wall_to_us(midnight + timedelta(microseconds=end))
            if s < e:
                intervals.append((s, e))
        return tuple(intervals)

    def _is_holiday(self, day: date) -> bool:
        return day in self._holidays.dates or day in self._public(day.year)

    def _wall_to_us(self, wall: datetime) -> int:
        """The instant of a local wall time: first occurrence if repeated, gap end if skipped."""
        first = wall.replace(tzinfo=self._zone)
        t = _to_us(first, "wall")
        if _from_us(t).astimezone(self._zone).replace(tzinfo=None) == wall:
            return t
        # Inside a spring-forward gap: fold=1 reads it with the offset after the
        # change (an instant before the jump), fold=0 with the offset before it
        # (an instant after). The jump lies between; find it.
        return self._transition_between(_to_us(wall.replace(tzinfo=self._zone, fold=1), "wall"), t)

    def _transition_between(self, lo: int, hi: int) -> int:
        """The first instant in ``(lo, hi]`` with ``hi``'s UTC offset."""
        target = _from_us(hi).astimezone(self._zone).utcoffset()
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if _from_us(mid).astimezone(self._zone).utcoffset() == target:
                hi = mid
            else:
                lo = mid
        return hi


# Construction helpers ------------------------------------------------------------------


def _load_zone(name: str) -> ZoneInfo:
    if not isinstance(name, str) or not name:
        raise CalendarError(
            "timezone", f"a calendar needs a time zone name such as 'Europe/London', got {name!r}"
        )
    try:
        return ZoneInfo(name)
    # OSError too: a key naming a folder of the zone database ("Europe",
    # "America") makes ZoneInfo raise IsADirectoryError, which is a bad name
    # like any other, not an I/O failure.
    except (ZoneInfoNotFoundError, ValueError, OSError) as error:
        raise CalendarError(
            "timezone",
            f"unknown time zone {name!r}: use an IANA name such as 'Europe/London' or 'Etc/GMT'",
        ) from error


def _check_window(window: Window) -> None:
    if not window.days:
        raise CalendarError(
            "windows", f"window {_describe_window_times(window)} opens on no weekday"
        )
    bad = sorted(repr(d) for d in window.days if not _is_weekday(d))
    if bad:
        raise CalendarError(
            "windows", f"window days must be 0 (Monday) to 6 (Sunday), got {', '.join(bad)}"
        )
    if window.start.tzinfo is not None or window.end.tzinfo is not None:
        raise CalendarError(
            "windows",
            "window times are wall times of the calendar's zone; give them without tzinfo",
        )
    if window.start == window.end:
        raise CalendarError(
            "windows",
            f"window {_describe_window_times(window)} starts when it ends (zero hours or 24?); "
            "for 24×7 use Calendar.around_the_clock()",
        )


def _check_dates(dates: frozenset[date]) -> None:
    bad = [d for d in dates if isinstance(d, datetime) or not isinstance(d, date)]
    if bad:
        raise CalendarError("holidays.dates", f"holiday dates must be dates, got {bad[:3]!r}")


def _public_holiday_lookup(holidays: Holidays) -> Callable[[int], frozenset[date]]:
    """A year → closed dates lookup, built a year at a time on first need.

    The country and subdivision are checked now, so that a bad code fails at
    configuration, not at the first deadline of the year.
    """
    if holidays.subdivision is not None and holidays.country is None:
        raise CalendarError(
            "holidays.country", f"holiday subdivision {holidays.subdivision!r} needs a country"
        )
    country = holidays.country
    subdivision = holidays.subdivision
    if country is not None:
        refused = (NotImplementedError, KeyError, ValueError)
        try:
            holidays_library.country_holidays(country, subdiv=subdivision)
        except refused as error:
            where = country if subdivision is None else f"{country}/{subdivision}"
            part = "holidays.subdivision"
            if subdivision is not None:
                try:
                    holidays_library.country_holidays(country)
                except refused:
                    part = "holidays.country"
            else:
                part = "holidays.country"
            raise CalendarError(
                part, f"unknown holiday country or subdivision {where!r}: {error}"
            ) from error

    @functools.cache
    def public_holidays(year: int) -> frozenset[date]:
        if country is None:
            return frozenset()
        return frozenset(holidays_library.country_holidays(country, subdiv=subdivision, years=year))

    return public_holidays


def _is_weekday(day: object) -> bool:
    return isinstance(day, int) and not isinstance(day, bool) and 0 <= day <= 6


def _time_us(moment: time) -> int:
    seconds = (moment.hour * 60 + moment.minute) * 60 + moment.second
    return seconds * 1_000_000 + moment.microsecond


def _weekly_shape(windows: Sequence[Window]) -> tuple[tuple[tuple[int, int], ...], ...]:
    """Per weekday, the merged spans as microseconds after the opening date's midnight.

    A span may end up to 48 hours later: "08:00–01:00" is (8 h, 25 h).
    """
    per_day: list[list[tuple[int, int]]] = [[] for _ in range(7)]
    for window in windows:
        start = _time_us(window.start)
        end = _time_us(window.end)
        if end <= start:
            end += _DAY_US
        for weekday in window.days:
            per_day[weekday].append((start, end))
    return tuple(_merge(spans) for spans in per_day)


# Interval arithmetic ------------------------------------------------------------------


def _merge(spans: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Sorted spans with overlapping and touching ones joined."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return tuple(merged)


def _subtract(spans: tuple[Interval, ...], cuts: tuple[Interval, ...]) -> tuple[Interval, ...]:
    """The parts of ``spans`` (sorted, disjoint) outside every one of ``cuts``."""
    if not cuts:
        return spans
    result: list[Interval] = []
    for start, end in spans:
        for cut_start, cut_end in cuts:
            if cut_end <= start or cut_start >= end:
                continue
            if cut_start > start:
                result.append((start, cut_start))
            start = max(start, cut_end)
            if start >= end:
                break
        if start < end:
            result.append((start, end))
    return tuple(result)


def _at_offset(spans: tuple[Interval, ...], offset: int) -> int:
    """The instant ``offset`` of open time into a day: the first with exactly that much
    before it that is open, or the day's close when the day is shorter."""
    for s, e in spans:
        if offset < e - s:
            return s + offset
        offset -= e - s
    return spans[-1][1]


# Instants ------------------------------------------------------------------------------


def _to_us(moment: datetime, name: str) -> int:
    """Epoch microseconds of an aware datetime; naive ones are refused."""
    try:
        # Subtracting an aware datetime from a naive one (or from a non-datetime)
        # raises TypeError: the one check done on every call costs nothing extra.
        since = moment - _EPOCH
    except TypeError:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {moment!r}") from None
    # Attribute arithmetic: timedelta // timedelta costs five times more.
    return (since.days * 86_400 + since.seconds) * 1_000_000 + since.microseconds


def _first_date(t: int) -> int:
    """The first of the four dates (as ordinals) whose windows may hold the instant ``t``.

    A date's windows lie between its local midnight and the midnight two days
    on, and ``t``'s local date is within a day of its UTC date (UTC offsets are
    under 24 hours): so the UTC date minus two, to the UTC date plus one.
    Working from the UTC date saves a time-zone lookup per call.
    """
    return t // _DAY_US + _EPOCH_ORDINAL - 2


def _from_us(t: int) -> datetime:
    seconds, micros = divmod(t, 1_000_000)
    return _EPOCH + timedelta(0, seconds, micros)


def _amount_us(amount: timedelta) -> int:
    if not isinstance(amount, timedelta):
        raise ValueError(f"amount must be a timedelta, got {amount!r}")
    if amount < timedelta(0):
        raise ValueError(f"amount of business time must be >= 0, got {amount}")
    return (amount.days * 86_400 + amount.seconds) * 1_000_000 + amount.microseconds


# Description helpers -------------------------------------------------------------------


def _describe_windows(windows: Sequence[Window]) -> str:
    """Windows grouped by their days, in the order given: "Mon–Fri 09:00–12:30 and 13:30–17:30"."""
    groups: dict[frozenset[int], list[str]] = {}
    for window in windows:
        groups.setdefault(frozenset(window.days), []).append(_describe_window_times(window))
    return "; ".join(
        f"{_describe_days(days)} {' and '.join(times)}" for days, times in groups.items()
    )


def _describe_window_times(window: Window) -> str:
    overnight = " (next day)" if window.end <= window.start else ""
    return f"{_describe_time(window.start)}–{_describe_time(window.end)}{overnight}"


def _describe_time(moment: time) -> str:
    return moment.strftime("%H:%M:%S" if moment.second or moment.microsecond else "%H:%M")


def _describe_days(days: frozenset[int]) -> str:
    """Runs of weekdays: {0,1,2,3,4} → "Mon–Fri", {0,2,4} → "Mon, Wed, Fri"."""
    runs: list[list[int]] = []
    for day in sorted(days):
        if runs and day == runs[-1][-1] + 1:
            runs[-1].append(day)
        else:
            runs.append([day])
    return ", ".join(
        _DAY_NAMES[run[0]] if len(run) == 1 else f"{_DAY_NAMES[run[0]]}–{_DAY_NAMES[run[-1]]}"
        for run in runs
    )


def _describe_holidays(holidays: Holidays) -> str:
    parts = []
    if holidays.country is not None:
        where = holidays.country
        if holidays.subdivision is not None:
            where += f"-{holidays.subdivision}"
        parts.append(f"public holidays: {where}")
    if holidays.dates:
        dates = sorted(holidays.dates)
        shown = ", ".join(d.isoformat() for d in dates[:5])
        more = f" and {len(dates) - 5} more" if len(dates) > 5 else ""
        parts.append(f"also closed {shown}{more}")
    return "; ".join(parts) if parts else "no holidays"
