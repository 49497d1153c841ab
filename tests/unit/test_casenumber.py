"""Case numbers: formats, the subject tag, and finding the tag again in replies."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.casenumber import check_format, find_case_number, format_number, subject_tag

OPENED = datetime(2026, 3, 14, 9, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("pattern", "seq", "number"),
    [
        pytest.param("HD-{seq:06d}", 123, "HD-000123", id="default-zero-padded"),
        pytest.param("HD-{seq:06d}", 1234567, "HD-1234567", id="default-wider-than-padding"),
        pytest.param("{year}-{seq:05d}", 42, "2026-00042", id="year-and-seq"),
        pytest.param("CASE#{seq}", 7, "CASE#7", id="hash-unpadded"),
        pytest.param("SR.{year}/{seq:d}", 9, "SR.2026/9", id="dot-slash"),
    ],
)
def test_formats_make_numbers_that_are_found_again(pattern, seq, number):
    # Given a valid format
    check_format(pattern)
    # When a number is made and tagged into a reply's subject
    made = format_number(pattern, seq, OPENED)
    subject = f"Re: AW: {subject_tag(made)} Database down"
    # Then it is the expected number, and it is found again exactly
    assert made == number
    assert subject_tag(made) == f"[{number}]"
    assert find_case_number(pattern, subject) == number


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        pytest.param("HD-{year}", "must contain {seq}", id="no-seq"),
        pytest.param("HD", "must contain {seq}", id="no-field"),
        pytest.param("HD-{id}", "not a usable format: unknown field {id}; use {seq} and {year}",
                     id="unknown-field"),
        pytest.param("HD-{0}", "not a usable format: unknown field {0}; use {seq} and {year}",
                     id="positional-field"),
        pytest.param("HD-{seq.real}",
                     "not a usable format: unknown field {seq.real}; use {seq} and {year}",
                     id="attribute-access"),
        pytest.param("HD-{seq:x}", "not a usable format: {seq:x} is not a whole-number format",
                     id="hex-spec"),
        pytest.param("HD-{seq:>8}", "not a usable format: {seq:>8} is not a whole-number format",
                     id="alignment-spec"),
        pytest.param("HD-{seq", "not a usable format: expected '}' before end of string",
                     id="unclosed-brace"),
        pytest.param("HD {seq}", "makes 'HD 1'; use only letters, digits and # _ . / -",
                     id="space"),
        pytest.param("HD-{seq:6d}", "makes 'HD-     1'; use only letters, digits and # _ . / -",
                     id="space-padding"),
        pytest.param("[HD-{seq}]", "makes '[HD-1]'; use only letters, digits and # _ . / -",
                     id="brackets"),
        pytest.param("HD-{year:06d}-{seq}",
                     "makes 'HD-002026-1', which cannot be found again in a subject",
                     id="year-not-four-digits"),
        pytest.param("SUPPORT-" + "X" * 40 + "-{year}-{seq:012d}",
                     "makes numbers up to 66 characters ('SUPPORT-" + "X" * 40
                     + "-9999-999999999999'); at most 64 fit",
                     id="longer-than-the-column"),
    ],
)
def test_bad_formats_are_refused_with_the_reason(pattern, reason):
    with pytest.raises(ValueError) as caught:
        check_format(pattern)
    assert str(caught.value) == reason


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        pytest.param("[HD-000123] Database down", "HD-000123", id="plain"),
        pytest.param("Re: AW: Fwd: [HD-000123] Database down", "HD-000123", id="reply-prefixes"),
        pytest.param("re: aw: fwd: [HD-000123] Database down", "HD-000123",
                     id="lower-case-prefixes"),
        pytest.param("RE: [hd-000123] Database down", "HD-000123", id="lower-case-tag"),
        pytest.param("Database down (was: [HD-000123])", "HD-000123", id="tag-at-the-end"),
        pytest.param("Fwd: [HD-000123] see also [HD-000999]", "HD-000123", id="first-tag-wins"),
        pytest.param("[HD-12a] Database down", None, id="letters-after-digits"),
        pytest.param("HD-000123 Database down", None, id="no-brackets"),
        pytest.param("[HD-] Database down", None, id="no-digits"),
        pytest.param("[XX-000123] Database down", None, id="other-prefix"),
        pytest.param("[HD-12a] then [HD-000042]", "HD-000042", id="false-tag-then-real-tag"),
        pytest.param("", None, id="empty"),
    ],
)
def test_find_case_number_in_subjects(subject, expected):
    assert find_case_number("HD-{seq:06d}", subject) == expected


def test_found_number_is_in_the_pattern_case_for_other_formats():
    assert find_case_number("CASE#{seq}", "Re: [case#77] still broken") == "CASE#77"
    assert find_case_number("{year}-{seq:05d}", "AW: [2026-00042] ok") == "2026-00042"
    assert find_case_number("{year}-{seq:05d}", "AW: [26-00042] ok") is None
