"""Mail shaped so that parsing it would take time growing with the square of its
size: headers are read from their first ``LONGEST_HEADER`` characters, long
structured ones and those past a message's budget as their text, parameters
up to the ``MOST_SEMICOLONS``th semicolon, and HTML is turned into text in one
pass. What is read stays what it was for real mail
(``bench/hostile.py`` prints the times)."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.mail import (
    LONGEST_STRUCTURED,
    MOST_SEMICOLONS,
    STRUCTURED_BUDGET,
    _html_to_text,
    parse_message,
)


def mail(*headers: str, body: bytes = b"body\r\n") -> bytes:
    return "".join(f"{h}\r\n" for h in headers).encode() + b"\r\n" + body


def test_a_from_longer_than_any_real_one_is_no_address_to_answer():
    addresses = ", ".join(f"a{n}@example.org" for n in range(20_000))
    parsed = parse_message(mail(f"From: {addresses}", "Subject: hi"))
    assert parsed.sender is None
    assert "HeaderTooLong:from" in parsed.defects
    assert parsed.subject == "hi"


def test_a_from_just_within_the_bound_is_read_whole():
    name = "x" * (LONGEST_STRUCTURED - len(" <alice@example.org>"))
    parsed = parse_message(mail(f"From: {name} <alice@example.org>"))
    assert parsed.sender == "alice@example.org"
    assert not [d for d in parsed.defects if d.startswith("HeaderTooLong")]


def test_an_endless_subject_of_encoded_words_keeps_its_beginning():
    subject = "=?utf-8?q?caf=C3=A9?= " + "word " * 40_000
    parsed = parse_message(mail("From: alice@example.org", f"Subject: {subject}"))
    assert parsed.subject.startswith("café word word")
    assert len(parsed.subject) == 998  # all that the gateway keeps of any subject
    assert "HeaderTooLong:subject" in parsed.defects
    assert parsed.sender == "alice@example.org"


def test_a_content_type_with_endless_parameters_keeps_its_type_and_charset():
    parameters = "; ".join(f"p{n}=v" for n in range(20_000))
    parsed = parse_message(mail(
        "From: alice@example.org", "MIME-Version: 1.0",
        f"Content-Type: text/html; charset=iso-8859-1; {parameters}",
        body=b"<p>caf\xe9</p>\r\n",
    ))
    assert parsed.content_type == "text/html"
    assert parsed.body_text.strip() == "café"
    assert "HeaderTooLong:content-type" in parsed.defects


@pytest.mark.parametrize("disposition", ["attachment", "attachment (signed)"])
def test_a_long_content_disposition_still_marks_an_attachment(disposition):
    """``is_attachment`` asks the header object for its disposition; read as text,
    it must still answer, or the attachment's text is taken for the body. A
    comment after the type is no part of it, as for a parsed header."""
    raw = mail(
        "From: alice@example.org", "MIME-Version: 1.0",
        "Content-Type: multipart/mixed; boundary=b",
        body=(f"--b\r\nContent-Type: text/plain\r\nContent-Disposition: {disposition}; "
              'filename="'.encode() + b"x" * 9000 + b'"\r\n\r\nATTACHMENT TEXT\r\n'
              b"--b\r\nContent-Type: text/plain\r\n\r\nthe real body\r\n--b--\r\n"),
    )
    parsed = parse_message(raw)
    assert parsed.body_text.strip() == "the real body"
    assert "HeaderTooLong:content-disposition" in parsed.defects


def parts_with_semicolons(count: int, length: int) -> bytes:
    """A message of parts, each a multipart whose Content-Type has ``count``
    semicolons inside a quoted parameter, ``length`` characters long in all,
    then a text part: the body."""
    def part(n: int) -> bytes:
        head = f'multipart/mixed; boundary="in{n}"; a="'
        quoted = "y" * (length - len(head) - count - 1) + ";" * count
        return (f"--b\r\nContent-Type: {head}{quoted}\"\r\n\r\n"
                f"--in{n}\r\nContent-Type: text/plain\r\n\r\ninner {n}\r\n--in{n}--\r\n").encode()
    return mail(
        "From: alice@example.org", "MIME-Version: 1.0",
        "Content-Type: multipart/mixed; boundary=b",
        body=b"".join(part(n) for n in range(3))
        + b"--b\r\nContent-Type: text/plain\r\n\r\nthe real body\r\n--b--\r\n",
    )


def test_semicolons_past_the_most_read_are_left_unread_and_the_boundary_kept():
    """The stdlib's parameter reader takes time growing with semicolons times
    length, once per part: a Content-Type is read to its ``MOST_SEMICOLONS``th."""
    for length in (LONGEST_STRUCTURED - 100, LONGEST_STRUCTURED + 3000):  # parsed; text
        parsed = parse_message(parts_with_semicolons(MOST_SEMICOLONS * 50, length))
        assert "HeaderTooManyParameters:content-type" in parsed.defects
        assert parsed.body_text.strip() == "inner 0"  # each part's own boundary was kept


def test_semicolons_up_to_the_most_read_are_all_read():
    parsed = parse_message(parts_with_semicolons(MOST_SEMICOLONS - 2, 1000))
    assert not any(d.startswith("HeaderTooManyParameters") for d in parsed.defects)
    assert parsed.body_text.strip() == "inner 0"


def test_past_the_budget_the_parts_headers_are_read_as_text_and_still_work():
    """Many parts with distinct long headers: past the message's budget their
    headers are not parsed by their grammar, and the body is still found."""
    parts = b"".join(
        b"--b\r\nContent-Type: application/octet-stream; name=\"" + b"%06d" % n
        + b"y" * 1000 + b"\"\r\nContent-Disposition: attachment\r\n\r\nx\r\n"
        for n in range(2 * STRUCTURED_BUDGET // 1000)
    )
    name = "A" * 1200  # longer than any of the budget a part's header could leave
    raw = mail(
        f"From: {name} <alice@example.org>", "MIME-Version: 1.0",
        "Content-Type: multipart/mixed; boundary=b",
        body=parts + b"--b\r\nContent-Type: text/plain\r\n\r\nthe real body\r\n--b--\r\n",
    )
    parsed = parse_message(raw)
    assert parsed.body_text.strip() == "the real body"
    assert "HeaderBudgetSpent:content-type" in parsed.defects
    assert parsed.sender == "alice@example.org"  # read after the parts, outside the budget


# HTML to text: the same as the expression it replaces, in one pass ------------------------

_OLD_TAGS = re.compile(
    r"<(script|style)\b.*?</\1\s*>|<[^>]+>", re.IGNORECASE | re.DOTALL | re.ASCII
)


def old_html_to_text(html: str) -> str:
    """What the gateway did before: one expression, quadratic on unclosed tags
    (with tag names ASCII as HTML has them, where it also took ``<ſcript>`` for a
    script, by Unicode case folding)."""
    import html as html_module

    return html_module.unescape(_OLD_TAGS.sub(" ", html))


PIECES = st.sampled_from([
    "<", ">", "<>", "<p>", "</p>", "<a href='x'>", "<br/>", "<script>", "</script>",
    "<SCRIPT type=x>", "</Script >", "<style>", "</style\n>", "<scripts>", "<script-x>",
    "</script", "<styl", "text", " ", "\n", "é", "&amp;", "&lt;", "&#233;", "&nbsp", "/",
    "script", "<!-- c -->", "<<", ">>", "<STYLE>", "</STYLE>", "\t", "\r", "<ſcript>",
    "</ſcript>", "ſ", "İ", "ı", "K", "<scrİpt>", "<scripté>", "</scripté>", "<style\t>",
])


@settings(max_examples=1000, deadline=None)
@given(st.lists(PIECES, max_size=30).map("".join))
@example("<script>a</script>b<script>c")
@example("<style>a<script>b</style>c</script>d")
@example("<a <b <c")
@example("x<>y<>")
@example("<script</script>")
@example("<ſcript>x</script>y")
@example("<script>x</ſcript>y")
def test_html_becomes_the_text_it_always_did(html):
    assert _html_to_text(html) == old_html_to_text(html)


def test_unclosed_tags_and_elements_end_the_markup_and_leave_the_rest_as_text():
    assert _html_to_text("<p>hi</p>" + "<a " * 100_000) == " hi " + "<a " * 100_000
    assert _html_to_text("<b>x</b><script " + "y " * 100_000) == " x <script " + "y " * 100_000
    assert _html_to_text("<script>y" * 100_000) == " y" * 100_000
