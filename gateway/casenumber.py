"""Case numbers: how they look, and how they are found again in a subject.

The number itself comes from the database (the case row's identity), so it
is unique across processes and hosts; this module only formats it and
recognises the tag that every mail about a case carries in its subject:
``[HD-000123]``. Reply prefixes (``Re:``, ``AW:``, ``Fwd:``) are added in
front of the subject by mail clients, so a tag anywhere in the subject is
found.
"""

from __future__ import annotations

import re
import string
from datetime import datetime
from functools import lru_cache

_ALLOWED_FIELDS = {"seq", "year"}
_SAFE = re.compile(r"[A-Za-z0-9#_./-]+")
MAX_NUMBER_LENGTH = 64
"""The ``cases.number`` column's width: a longer number could not be stored,
and every new case would be quarantined."""
LARGEST_SEQ = 10**12 - 1
"""A trillion cases: more than any installation opens."""


def check_format(pattern: str) -> None:
    """Raise ``ValueError`` with a reason when ``pattern`` cannot make a case number.

    A number must contain ``{seq}`` (what makes it unique), may contain
    ``{year}``, and must be made of characters that survive any mail client
    in a subject: letters, digits and ``# _ . / -``.
    """
    fields = set()
    try:
        for _literal, field, spec, _conv in string.Formatter().parse(pattern):
            if field is not None:
                fields.add(field)
                if field not in _ALLOWED_FIELDS:
                    raise ValueError(f"unknown field {{{field}}}; use {{seq}} and {{year}}")
                if spec and not re.fullmatch(r"0?\d*d", spec):
                    raise ValueError(f"{{{field}:{spec}}} is not a whole-number format")
        sample = pattern.format(seq=1, year=2026)
    except (ValueError, IndexError, KeyError) as error:
        raise ValueError(f"not a usable format: {error}") from None
    if "seq" not in fields:
        raise ValueError("must contain {seq}")
    if not _SAFE.fullmatch(sample):
        raise ValueError(f"makes {sample!r}; use only letters, digits and # _ . / -")
    if find_case_number(pattern, subject_tag(sample)) != sample:
        raise ValueError(f"makes {sample!r}, which cannot be found again in a subject")
    longest = pattern.format(seq=LARGEST_SEQ, year=9999)
    if len(longest) > MAX_NUMBER_LENGTH:
        raise ValueError(f"makes numbers up to {len(longest)} characters ({longest!r}); "
                         f"at most {MAX_NUMBER_LENGTH} fit")


def format_number(pattern: str, seq: int, opened_at: datetime) -> str:
    """The case number for the ``seq``-th case, opened at ``opened_at``."""
    return pattern.format(seq=seq, year=opened_at.year)


def subject_tag(number: str) -> str:
    """The tag put in front of every subject the gateway writes about a case."""
    return f"[{number}]"


@lru_cache(maxsize=16)
def _tag_pattern(pattern: str) -> tuple[re.Pattern[str], tuple[tuple[str, bool], ...]]:
    """The tag's regular expression (one group per field), and the pattern as
    (literal, followed by a field) pairs to rebuild a number in canonical form."""
    parts, pieces = [], []
    for literal, field, _spec, _conv in string.Formatter().parse(pattern):
        parts.append(re.escape(literal))
        if field == "seq":
            parts.append(r"(\d+)")
        elif field == "year":
            parts.append(r"(\d{4})")
        pieces.append((literal, field in _ALLOWED_FIELDS))
    return re.compile(r"\[" + "".join(parts) + r"\]", re.IGNORECASE), tuple(pieces)


def find_case_number(pattern: str, subject: str) -> str | None:
    """The case number tagged in ``subject``, or ``None``.

    Letters are matched in any case (``[hd-000123]``, typed by hand) and the
    number is returned as the gateway writes it (``HD-000123``), so that it
    can be looked up. Only the first tag counts: a forwarded chain may quote
    other cases' tags further on.
    """
    regex, pieces = _tag_pattern(pattern)
    match = regex.search(subject)
    if match is None:
        return None
    digits = iter(match.groups())
    return "".join(literal + (next(digits) if field else "") for literal, field in pieces)
