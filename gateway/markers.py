"""The severity a customer asks for in a mail's subject, in the policy's words.

Pure code: no I/O, no clock. ``read_severity`` is called once per mail with
the active policy's ``Vocabulary``, whose regular expressions are compiled
once when it is built.

What counts as a marker is decided by a few rules, each meant to tell a
severity request from ordinary subject text:

1. **Unambiguous numbered markers count anywhere** as whole words: ``P1``,
   ``P-1``, ``Pri 1``, ``Prio 1``, ``Priority 1``, ``Priority: 1``,
   ``Priority #1``, ``Sev1``, ``Sev-1``, ``Sev: 1``, ``Severity 1``,
   ``Severity Level 1``, ``Priority Level 1``. ``P-1`` is accepted because
   customers type the hyphen as often as not, and the hyphenated form is no
   more ambiguous than ``P1``.
2. **Ambiguous numbered markers count only in a marker position**: ``S1``
   (``S3`` is also Amazon's storage) and ``Level 1`` ("level 2 support",
   "level 3 cache") count inside brackets (``[S1]``, ``(Level 2)``) or at the
   head of the subject followed by a colon, ``!`` or a spaced dash
   (``S1: db down``, ``Level 2 - slow``). Bare ``S3 bucket ...`` at the start
   is not a marker; ``S3: access denied`` at the head is, a known limit.
3. **The policy's level names and words count only in a marker position**,
   because they are ordinary words too ("Critical bug in login page"): inside
   brackets (``[Critical]``, ``(URGENT)``, ``[High Priority]``), at the head
   followed by a colon, ``!`` or a spaced dash (``URGENT - server down``,
   ``High Priority: VPN``), or right after a severity keyword
   (``Severity: Critical``, ``Priority High``, ``Sev Major``).
4. **The number is 1..4 and must stand alone**: not followed by another digit
   (``P100``, ``Priority 10``), a letter or an underscore (``P2V``, ``p2p``,
   ``Sev 1a``, ``P1_db``), nor by ``.``/``,``/``:``/``/``/``-`` and a
   digit (versions ``P1.2``, ranges, times, dates), nor glued into an
   address or path (``p1@host``, ``srv/p1``, ``p1.example.com``).
5. **A level name right after a numbered marker is part of it when it names
   the same level** (``Priority 1 – Emergency`` is one marker). When it names
   another level the number wins and the name is left as text: a number is
   the policy's own identifier, a name is a word that may describe the
   problem (``P1 High CPU`` under a policy whose level 2 is "High").

The *head* of a subject is where it starts once reply prefixes (``Re:``,
``AW:``, ``回复:``) and bracketed tags (``[HD-000123]``, ``[EXTERNAL]``) are
skipped. Case tags are never markers: no rule reads a number out of them.

Mail-client importance flags (``X-Priority``, ``Importance``, ``Priority``,
``X-MSMail-Priority``) are a weaker signal, reported as ``hint`` and never
used as the level; see ``header_hint``.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from gateway.policy.model import LEVELS, Policy

# --- building blocks ---------------------------------------------------------

_UNSPACED = (
    "\u0e00-\u0eff"  # Thai, Lao
    "\u1000-\u109f"  # Myanmar
    "\u1780-\u17ff"  # Khmer
    "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f"  # CJK
)
_WORDISH = rf"[^\W{_UNSPACED}]"
"""A letter, digit or underscore, except those of scripts written without spaces
between words (Chinese, Japanese, Thai, Lao, Khmer, Myanmar; Korean's block
is kept with the CJK ones): "紧急P1" and "P1ด่วน" must still find ``P1``."""

_START = rf"(?<!{_WORDISH})(?<![.@/\\])"
"""Not glued to a preceding word, domain, address or path."""

_END = rf"(?!{_WORDISH})"

_NUMBER = rf"(?P<n>[1-4]){_END}(?![.,:/\\-][0-9])(?![.@/\\]{_WORDISH})"
"""A level number that ends its word (not ``P2V``, ``p2p``, ``Sev 1a``, ``P1_db``,
nor a bigger number) and is not part of a version, range, time, date, address
or path."""

_KEYWORD = r"(?:priorit(?:y|ät)|prio|pri|severity|sev)(?:\s*level)?"
"""Words that announce a severity; "Level" alone does not (rule 2)."""

_SEP = r"\s*(?:[:#=.\-–—]\s*)?"
"""Between a keyword and its value: ``Sev1``, ``Sev 1``, ``Sev: 1``, ``Priority #1``."""

_HEAD_END = r"\s*(?:[:：!]+|[-–—](?=\s|$))"
"""What makes a word at the head a marker: ``Critical:``, ``URGENT!``, ``URGENT -``;
not ``Critical-path analysis``."""

_REPLY_WORDS = (
    "re", "fw", "fwd", "aw", "wg", "sv", "vs", "vl", "antw", "antwort", "doorst", "tr",
    "rif", "r", "odp", "pd", "ynt", "ilt", "rv", "enc", "res", "atb", "ats", "odg",
    "отв", "пересл", "απ", "σχετ", "πρθ", "השב", "הועבר",
    "回复", "回覆", "答复", "答覆", "转发", "轉發", "轉寄", "返信", "転送", "답장", "전달",
)
_REPLY_PREFIX = (
    "(?:" + "|".join(sorted(map(re.escape, _REPLY_WORDS), key=len, reverse=True)) + ")"
    r"\s*(?:\[\d+\]|\(\d+\))?\s*[:：]"
)
"""One reply or forward prefix as mail clients in many locales write it:
``Re:``, ``RE :``, ``Re[2]:``, ``AW:``, ``回复：``."""

_REPLY_PREFIXES = re.compile(rf"^\s*(?:{_REPLY_PREFIX}\s*)*", re.IGNORECASE)
_LEADING = re.compile(rf"\s+|{_REPLY_PREFIX}|[\[【][^\]】]*[\]】]", re.IGNORECASE)
_BRACKETED = re.compile(r"[\[(【（]([^\[\]()【】（）]{1,80})[\])】）]")
"""A bracketed group without nested brackets; its whole content may be a marker."""

_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


# --- public types -------------------------------------------------------------


class MarkerStatus(StrEnum):
    """Whether, and how clearly, a subject asks for a severity."""

    MISSING = "missing"
    """No marker in the subject."""

    CLEAR = "clear"
    """One level asked, possibly more than once (``[P1] P1: ...``)."""

    CONTRADICTORY = "contradictory"
    """Two or more different levels asked."""


@dataclass(frozen=True)
class Found:
    """One marker as written in the subject."""

    text: str
    """The marker as written: ``[P1]``, ``Sev 2``, ``Critical:``."""
    level: int
    """1..4."""
    start: int
    """Offset in the subject given to ``read_severity``."""


@dataclass(frozen=True)
class _Patterns:
    """The regular expressions that depend on a vocabulary's names."""

    free_number: re.Pattern[str]
    free_keyword_name: re.Pattern[str]
    head: re.Pattern[str]
    inner: re.Pattern[str]


@dataclass(frozen=True)
class Vocabulary:
    """A policy's level names and customer words, ready for matching.

    Build it with ``from_policy`` (or ``from_names`` in tests) once per
    policy: the regular expressions are compiled on construction.
    """

    names: tuple[tuple[str, int], ...]
    """(name as the policy writes it, level), longest first so that
    "Enhancement Request" is tried before "Enhancement"."""

    _patterns: _Patterns = field(init=False, repr=False, compare=False)
    _by_key: Mapping[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_key", {_key(name): level for name, level in self.names})
        object.__setattr__(self, "_patterns", _compile(self.names))

    @classmethod
    def from_policy(cls, policy: Policy) -> Vocabulary:
        """The vocabulary of ``policy``: each level's name and words."""
        return cls.from_names(
            {number: (level.name, *level.words) for number, level in policy.levels.items()}
        )

    @classmethod
    def from_names(cls, names: Mapping[int, Iterable[str]]) -> Vocabulary:
        """A vocabulary from ``{1: ["Critical"], 2: ["Major"], ...}``.

        Raises ``ValueError`` for a level outside 1..4 or a word given to two
        levels: either would make a subject's meaning depend on chance, so it
        is refused when the policy is loaded rather than per mail.
        """
        levels: dict[str, tuple[str, int]] = {}
        for level, words in names.items():
            if level not in LEVELS:
                raise ValueError(f"level {level} is not one of {', '.join(map(str, LEVELS))}")
            for word in words:
                if not word.strip():
                    continue
                key = _key(word)
                other = levels.get(key)
                if other is not None and other[1] != level:
                    raise ValueError(
                        f"{word!r} names both level {other[1]} and level {level}; "
                        "give each word to one level"
                    )
                levels.setdefault(key, (" ".join(word.split()), level))
        ordered = sorted(levels.values(), key=lambda item: (-len(item[0]), item[0].casefold()))
        return cls(names=tuple(ordered))

    def level_of(self, name: str) -> int | None:
        """The level ``name`` (as matched in a subject) stands for, or ``None``."""
        level = self._by_key.get(_key(name))
        if level is not None:
            return level
        # Case-insensitive matching and casefold() disagree on a few exotic
        # letters; the name's own pattern is the authority then.
        for known, known_level in self.names:
            if re.fullmatch(_name_regex(known), name, re.IGNORECASE):
                return known_level
        return None


@dataclass(frozen=True)
class MarkerResult:
    """What a subject asks for."""

    status: MarkerStatus
    level: int | None
    """CLEAR: that level; CONTRADICTORY: the most urgent (lowest number) asked;
    MISSING: ``None``."""
    found: tuple[Found, ...]
    """Every marker, in subject order."""
    hint: int | None
    """The level the mail client's importance flags suggest; reported, never
    used as the level (see ``header_hint``)."""


# --- reading ------------------------------------------------------------------


def read_severity(
    subject: str, vocabulary: Vocabulary, headers: Mapping[str, str] = _NO_HEADERS
) -> MarkerResult:
    """The severity ``subject`` asks for, by the rules in this module's docstring.

    ``headers`` maps lower-cased header names to unfolded values; only the
    importance flags are read, for the hint.
    """
    found = _resolve(_candidates(subject, vocabulary))
    levels = {marker.level for marker in found}
    hint = header_hint(headers)
    if not levels:
        return MarkerResult(MarkerStatus.MISSING, None, found, hint)
    if len(levels) == 1:
        return MarkerResult(MarkerStatus.CLEAR, levels.pop(), found, hint)
    return MarkerResult(MarkerStatus.CONTRADICTORY, min(levels), found, hint)


def strip_reply_prefixes(subject: str) -> str:
    """``subject`` without its leading reply and forward prefixes.

    Removes any run of ``Re:``, ``RE :``, ``Fwd:``, ``AW:``, ``WG:``, ``SV:``,
    ``Re[2]:``, ``回复：`` … and the whitespace around them; the rest is kept
    as written (a prefix further in, after a case tag, stays).
    """
    return _REPLY_PREFIXES.sub("", subject, count=1)


_HINT_WORDS = {
    "highest": 2, "high": 2, "urgent": 2,
    "low": 4, "lowest": 4, "non-urgent": 4,
}  # fmt: skip
_HINT_HEADERS = ("x-priority", "importance", "priority", "x-msmail-priority")


def header_hint(headers: Mapping[str, str]) -> int | None:
    """The level suggested by the mail client's importance flags, or ``None``.

    These flags are one bit a sender toggles, often by habit; they cannot
    tell an outage from an important question, and policies keep level 1
    for outages. So a raised flag (``X-Priority`` 1 or 2, ``Importance:
    high``, ``Priority: urgent``, ``X-MSMail-Priority: High``) suggests level
    2, one step above the usual normal level 3; a lowered one (``X-Priority``
    4 or 5, ``low``, ``non-urgent``) suggests level 4. Normal or absent gives
    ``None``, and so do flags that disagree with each other.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    votes = {
        vote
        for name in _HINT_HEADERS
        if (vote := _flag_level(lowered.get(name, ""))) is not None
    }
    return votes.pop() if len(votes) == 1 else None


def _flag_level(value: str) -> int | None:
    """One flag's suggestion: ``"1 (Highest)"`` → 2, ``"low"`` → 4, ``"normal"`` → None."""
    value = value.strip().lower()
    digit = re.match(r"([1-5])(?![0-9])", value)
    if digit is not None:
        return {1: 2, 2: 2, 4: 4, 5: 4}.get(int(digit.group(1)))
    word = re.match(r"[a-z-]+", value)
    return _HINT_WORDS.get(word.group(0)) if word else None


# --- internals ----------------------------------------------------------------


def _key(name: str) -> str:
    """How names are compared: whitespace collapsed, case folded."""
    return " ".join(name.split()).casefold()


def _name_regex(name: str) -> str:
    """``name`` as a pattern, any run of whitespace between its words."""
    return r"\s+".join(map(re.escape, name.split()))


def _compile(names: tuple[tuple[str, int], ...]) -> _Patterns:
    """The vocabulary-dependent patterns (see the module docstring's rules)."""
    alternatives = "|".join(_name_regex(name) for name, _level in names) or "(?!)"
    name = rf"(?P<name>{alternatives}){_END}"
    trail = (
        rf"(?:\s*(?:[-–—:/|]\s*|(?P<paren>\(\s*))?(?P<tname>{alternatives}){_END}"
        r"(?(paren)\s*\)))?"
    )
    numbered = rf"(?:p-?|{_KEYWORD}{_SEP}){_NUMBER}"
    any_numbered = rf"(?:p-?|s-?|{_KEYWORD}{_SEP}|level{_SEP}){_NUMBER}"
    ambiguous = rf"(?:s-?|level{_SEP}){_NUMBER}"
    named = rf"(?:{_KEYWORD}{_SEP})?{name}(?:\s+(?:priority|severity|prio|sev){_END})?"
    head_name = rf"{name}(?:\s+(?:priority|severity|prio|sev){_END})?"
    flags = re.IGNORECASE
    return _Patterns(
        free_number=re.compile(rf"{_START}{numbered}{trail}", flags),
        free_keyword_name=re.compile(rf"{_START}{_KEYWORD}{_SEP}{name}", flags),
        head=re.compile(rf"(?:{ambiguous}|{head_name}){_HEAD_END}", flags),
        inner=re.compile(rf"(?:{any_numbered}{trail}|{named})\s*!*", flags),
    )


@dataclass(frozen=True)
class _Candidate:
    found: Found
    end: int
    rank: int
    """0 bracketed, 1 numbered, 2 named: see ``_resolve``."""


def _candidates(subject: str, vocabulary: Vocabulary) -> list[_Candidate]:
    """Every possible marker, overlapping ones included."""
    patterns = vocabulary._patterns
    out: list[_Candidate] = []
    for match in _BRACKETED.finditer(subject):
        inner = patterns.inner.fullmatch(match.group(1).strip())
        if inner is not None:
            level = _level(inner, vocabulary)
            if level is not None:
                out.append(_make(subject, match.start(), match.end(), level, 0))
    for match in patterns.free_number.finditer(subject):
        end = match.end() if _trail_agrees(match, vocabulary) else match.end("n")
        out.append(_make(subject, match.start(), end, int(match.group("n")), 1))
    for match in patterns.free_keyword_name.finditer(subject):
        level = _level(match, vocabulary)
        if level is not None:
            out.append(_make(subject, match.start(), match.end(), level, 2))
    head = patterns.head.match(subject, _head(subject))
    if head is not None:
        level = _level(head, vocabulary)
        if level is not None:
            out.append(_make(subject, head.start(), head.end(), level, 2))
    return out


def _level(match: re.Match[str], vocabulary: Vocabulary) -> int | None:
    """The level a match asks for: its number if it has one (rule 5), else its name's."""
    number = match.groupdict().get("n")
    if number:
        return int(number)
    return vocabulary.level_of(match.group("name"))


def _trail_agrees(match: re.Match[str], vocabulary: Vocabulary) -> bool:
    """Whether a numbered marker's trailing level name names its own level (rule 5)."""
    name = match.group("tname")
    return name is not None and vocabulary.level_of(name) == int(match.group("n"))


def _make(subject: str, start: int, end: int, level: int, rank: int) -> _Candidate:
    text = subject[start:end].rstrip()
    return _Candidate(Found(text=text, level=level, start=start), start + len(text), rank)


def _resolve(candidates: list[_Candidate]) -> tuple[Found, ...]:
    """Non-overlapping markers in subject order.

    Where readings overlap, a bracketed group or a numbered marker beats a
    name ("High Priority: 1" asks for 1), then the longer reading beats the
    shorter: ``[P1]`` over the ``P1`` inside it, ``P1 (Urgent)`` over the
    ``(Urgent)`` inside it.
    """
    taken: list[tuple[int, int, Found]] = []  # (start, end, found), kept in order
    for candidate in sorted(
        candidates, key=lambda c: (c.rank == 2, c.found.start - c.end, c.found.start)
    ):
        start, end = candidate.found.start, candidate.end
        i = bisect.bisect(taken, (start, end))
        if (i == 0 or taken[i - 1][1] <= start) and (i == len(taken) or end <= taken[i][0]):
            taken.insert(i, (start, end, candidate.found))
    return tuple(found for _start, _end, found in taken)


def _head(subject: str) -> int:
    """Where the subject's own words start: after reply prefixes and bracketed tags."""
    position = 0
    while (match := _LEADING.match(subject, position)) is not None and match.end() > position:
        position = match.end()
    return position
