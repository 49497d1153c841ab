"""Outgoing mail: sanitised headers, stable ids, threading, escaped and sandboxed templates."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jinja2.exceptions import SecurityError

from gateway import compose
from gateway.compose import (
    _SMTP_COMPAT,
    LOOP_HEADER,
    MAX_REFERENCES,
    Identity,
    Outgoing,
    Renderer,
    build_mail,
)
from gateway.mail import parse_message
from gateway.settings import PROJECT_ROOT

IDENTITY = Identity("support@example.com", "helpdesk.example.com", "loop-token")
NOW = datetime(2026, 11, 23, 9, 15, tzinfo=UTC)
INJECTION = "Database down\r\nBcc: evil@x"


def build(**overrides: Any) -> Outgoing:
    arguments: dict[str, Any] = {
        "identity": IDENTITY, "to": "alice@customer.example",
        "subject": "[HD-000001] Database down", "text": "Hello\n", "html": "<p>Hello</p>\n",
        "date": NOW,
    }
    return build_mail(**{**arguments, **overrides})


def parsed(outgoing: Outgoing) -> EmailMessage:
    message = message_from_bytes(outgoing.raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def header_names(raw: bytes) -> list[str]:
    head = raw.split(b"\r\n\r\n", 1)[0]
    return [
        line.split(b":", 1)[0].decode().lower()
        for line in head.split(b"\r\n") if line[:1] not in (b" ", b"\t")
    ]


def ack_context(**overrides: Any) -> dict[str, Any]:
    context = {
        "case_number": "HD-000001", "tag": "[HD-000001]", "subject": "Database down",
        "customer_name": "Alice", "policy_title": "LumenVox Support", "level": 1,
        "level_name": "Critical", "target": "1 hour", "due": "Mon 23 Nov 2026 10:15 UTC",
        "severity_note": None,
    }
    return {**context, **overrides}


@pytest.fixture
def renderer() -> Renderer:
    return Renderer(PROJECT_ROOT / "templates")


# --- header injection (CVE-2024-6923) ---------------------------------------------------------


@pytest.mark.parametrize(
    "subject",
    [
        pytest.param(INJECTION, id="crlf"),
        pytest.param("Database down\nBcc: evil@x", id="lf"),
        pytest.param("Database down\rBcc: evil@x", id="cr"),
        pytest.param("Database down\u2028Bcc: evil@x", id="unicode-line-separator"),
        pytest.param("Database down\x85Bcc: evil@x", id="next-line"),
        pytest.param("=?utf-8?q?Database_down=0D=0ABcc=3A_evil=40x?=", id="encoded-word-crlf"),
        pytest.param("Re: x=?utf-8?q?=0D=0ABcc=3A_evil=40x?=y", id="embedded-encoded-word"),
        pytest.param("é" * 200 + "\r\nBcc: evil@x", id="long-non-ascii"),
    ],
)
def test_subject_cannot_inject_headers(subject):
    # Given a subject with a line break, literal or encoded
    # When a mail is built with it
    message = parsed(build(subject=subject))
    # Then there is no Bcc header and the Subject is one line
    assert "bcc" not in header_names(build(subject=subject).raw)
    assert message["Bcc"] is None
    assert len(message.get_all("Subject")) == 1
    assert "\n" not in str(message["Subject"]) and "\r" not in str(message["Subject"])


@pytest.mark.parametrize(
    ("subject", "written"),
    [
        pytest.param(INJECTION, "Database down Bcc: evil@x", id="line-break-becomes-space"),
        pytest.param("=?utf-8?q?Hi=0D=0ABcc=3A_evil=40x?=", "= ?utf-8?q?Hi=0D=0ABcc=3A_evil=40x?=",
                     id="encoded-word-stays-literal"),
        pytest.param("Re: =?🎉?q?=0Dx?= é", "Re: = ?🎉?q?=0Dx?= é",
                     id="undecodable-encoded-word-stays-literal"),
        pytest.param("caf\udce9 ok", "caf\ufffd ok", id="surrogate-replaced"),
    ],
)
def test_unsafe_subject_text_is_kept_harmlessly(subject, written):
    assert str(parsed(build(subject=subject))["Subject"]) == written


def test_ordinary_subjects_are_kept_exactly():
    for subject in ["[HD-000001] Datenbank fällt aus 🎉", "Re: a?b=c (d) <e>", "x" * 300]:
        assert str(parsed(build(subject=subject))["Subject"]) == subject


def test_double_encoded_inbound_subject_cannot_inject_through_the_acknowledgement(renderer):
    # Given an inbound subject that decodes to a literal encoded word holding CR LF
    literal = b"=?utf-8?q?Help=0D=0ABcc=3A_evil=40x?="
    inbound = (b"From: Alice <alice@customer.example>\nSubject: =?utf-8?b?"
               + base64.b64encode(literal) + b"?=\nMessage-ID: <m1@customer.example>\n\nhi\n")
    mail = parse_message(inbound)
    # When the acknowledgement is rendered and built from it, as the pipeline does
    subject, text, html = renderer.render("acknowledgement", ack_context(subject=mail.subject))
    outgoing = build(subject=subject, text=text, html=html, in_reply_to=mail.message_id)
    # Then no header was injected
    assert "bcc" not in header_names(outgoing.raw)
    assert parsed(outgoing)["Bcc"] is None


@pytest.mark.parametrize(
    "name",
    [pytest.param(INJECTION, id="crlf"), pytest.param("=?utf-8?q?A=0D=0ABcc=3A_e=40x?=", id="ew")],
)
def test_customer_name_stays_in_the_body(renderer, name):
    subject, text, html = renderer.render("acknowledgement", ack_context(customer_name=name))
    outgoing = build(subject=subject, text=text, html=html)
    assert "bcc" not in header_names(outgoing.raw)
    assert str(parsed(outgoing)["Subject"]) == "[HD-000001] Database down"


def test_rendered_subject_is_one_line(renderer):
    subject, _, _ = renderer.render("acknowledgement", ack_context(subject=INJECTION))
    assert subject == "[HD-000001] Database down Bcc: evil@x"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("to", "alice@customer.example\r\nBcc: evil@x", id="to-crlf"),
        pytest.param("to", "Alice <alice@customer.example>", id="to-with-name"),
        pytest.param("to", "", id="to-empty"),
        pytest.param("identity", Identity("support@example.com\nBcc: e@x", "h.example", "t"),
                     id="sender-lf"),
    ],
)
def test_envelope_addresses_must_be_plain(field, value):
    with pytest.raises(ValueError, match="is not a plain mail address"):
        build(**{field: value})


def test_crafted_message_ids_are_left_out_of_threading_headers():
    # Given a parent id that the header parser would decode into a line break
    crafted = "=?utf-8?q?x=0D=0ABcc=3A_evil=40x.org?=@y"
    outgoing = build(in_reply_to=crafted, references=["ok@x.example", crafted, "a b@x"])
    message = parsed(outgoing)
    # Then only the plain id survives and nothing was injected
    assert "bcc" not in header_names(outgoing.raw)
    assert message["In-Reply-To"] is None
    assert str(message["References"]) == "<ok@x.example>"


# --- mandatory headers, parts ------------------------------------------------------------------


def test_loop_prevention_and_identity_headers():
    message = parsed(build())
    assert str(message["From"]) == "support@example.com"
    assert str(message["To"]) == "alice@customer.example"
    assert str(message["Auto-Submitted"]) == "auto-replied"
    assert str(message["X-Auto-Response-Suppress"]) == "All"
    assert str(message[LOOP_HEADER]) == "loop-token"
    assert message["Date"].datetime == NOW


def test_auto_submitted_can_be_auto_generated():
    assert str(parsed(build(auto_submitted="auto-generated"))["Auto-Submitted"]) == (
        "auto-generated"
    )


def test_outgoing_carries_envelope_and_id():
    outgoing = build()
    assert outgoing.sender == "support@example.com"
    assert outgoing.recipients == ("alice@customer.example",)
    assert str(parsed(outgoing)["Message-ID"]) == f"<{outgoing.message_id}>"


def test_text_and_html_alternatives(renderer):
    subject, text, html = renderer.render("acknowledgement", ack_context())
    message = parsed(build(subject=subject, text=text, html=html))
    assert message.get_content_type() == "multipart/alternative"
    plain = message.get_body(preferencelist=("plain",))
    rich = message.get_body(preferencelist=("html",))
    assert plain is not None and "case HD-000001" in plain.get_content()
    assert rich is not None and "<strong>HD-000001</strong>" in rich.get_content()


def test_html_escapes_customer_text_and_text_keeps_it(renderer):
    # Given customer text holding markup
    hostile = '<script>alert("x")</script>'
    # When the acknowledgement is rendered
    _, text, html = renderer.render(
        "acknowledgement", ack_context(customer_name=hostile, severity_note=hostile)
    )
    # Then the HTML part escapes it and the text part shows it as it is
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    assert hostile in text


# --- sandbox -----------------------------------------------------------------------------------


class Case:
    number = "HD-000001"


@pytest.mark.parametrize(
    "source",
    [
        pytest.param("{{ x.__class__.__mro__ }}", id="mro"),
        pytest.param("{{ x.__init__.__globals__ }}", id="globals"),
        pytest.param("{{ x.__class__.__subclasses__() }}", id="subclasses"),
        pytest.param("{{ x | attr('__class__') }}", id="attr-filter"),
        pytest.param("{{ ''.__class__.__mro__[1].__subclasses__() }}", id="literal-mro"),
    ],
)
def test_templates_cannot_reach_python_internals(renderer, source):
    template = renderer.environment.from_string(source)
    with pytest.raises(SecurityError):
        template.render(x=Case())


def test_template_file_reaching_internals_fails(tmp_path):
    # Given a (compromised) template kind that walks to Python internals
    (tmp_path / "evil.subject.j2").write_text("{{ subject.__class__.__mro__ }}")
    (tmp_path / "evil.txt.j2").write_text("x")
    (tmp_path / "evil.html.j2").write_text("x")
    # When it is rendered, then the sandbox refuses
    with pytest.raises(SecurityError):
        Renderer(tmp_path).render("evil", {"subject": "x"})


def test_customer_text_is_data_not_template_code(tmp_path):
    (tmp_path / "note.subject.j2").write_text("{{ subject }}")
    (tmp_path / "note.txt.j2").write_text("{{ body }}")
    (tmp_path / "note.html.j2").write_text("<p>{{ body }}</p>")
    subject, text, html = Renderer(tmp_path).render(
        "note", {"subject": "{{ 7 * 7 }}", "body": "{% for x in range(3) %}{{ x }}{% endfor %}"}
    )
    assert subject == "{{ 7 * 7 }}"
    assert text == "{% for x in range(3) %}{{ x }}{% endfor %}"
    assert html == "<p>{% for x in range(3) %}{{ x }}{% endfor %}</p>"


def test_only_html_templates_are_autoescaped(tmp_path):
    for suffix in ("subject", "txt", "html"):
        (tmp_path / f"k.{suffix}.j2").write_text("{{ v }}")
    subject, text, html = Renderer(tmp_path).render("k", {"v": "a < b & c"})
    assert (subject, text, html) == ("a < b & c", "a < b & c", "a &lt; b &amp; c")


# --- Message-ID and threading ------------------------------------------------------------------


def test_message_id_cannot_be_worked_out_from_what_is_public():
    """A reply to it joins its case: made from the address and a case's number, it
    would let anyone into any case (and repeat across installations)."""
    ids = {build(subject="[HD-000007] same", date=NOW).message_id for _ in range(50)}
    assert len(ids) == 50
    for message_id in ids:
        local, domain = message_id.split("@")
        assert domain == "helpdesk.example.com"
        assert re.fullmatch(r"helpdesk\.[0-9a-f]{24}", local)


def test_the_message_id_made_is_the_one_in_the_mail():
    outgoing = build()
    assert parsed(outgoing)["Message-ID"] == f"<{outgoing.message_id}>"


def test_in_reply_to_and_references_thread_the_reply():
    message = parsed(build(in_reply_to="m2@customer.example", references=["m1@customer.example"]))
    assert str(message["In-Reply-To"]) == "<m2@customer.example>"
    assert str(message["References"]) == "<m1@customer.example> <m2@customer.example>"


def test_without_parent_there_are_no_threading_headers():
    message = parsed(build())
    assert message["In-Reply-To"] is None
    assert message["References"] is None


def test_references_are_de_duplicated_with_the_parent_last():
    references = ["r1@x", "r2@x", "r1@x", "parent@x", "r3@x", "r2@x"]
    message = parsed(build(in_reply_to="parent@x", references=references))
    assert str(message["References"]).split() == ["<r1@x>", "<r2@x>", "<r3@x>", "<parent@x>"]


def test_references_are_capped_keeping_the_root_and_the_latest():
    # Given a long thread
    references = [f"r{i}@x" for i in range(50)]
    # When replying to its last message
    chain = str(parsed(build(in_reply_to="parent@x", references=references))["References"])
    ids = [mid.strip("<>") for mid in chain.split()]
    # Then the chain is capped, starts at the root and ends with the latest and the parent
    assert len(ids) == MAX_REFERENCES
    assert ids[0] == "r0@x"
    assert ids[-2:] == ["r49@x", "parent@x"]
    assert len(set(ids)) == len(ids)


def test_non_ascii_mail_is_7bit_clean_and_parses_back():
    # Given non-ASCII subject and bodies (relays without 8BITMIME take only 7-bit)
    outgoing = build(subject="Grüße [HD-000001]", text="Grüße, HD-000001\n",
                     html="<p>Grüße</p>\n")
    # Then the raw mail is ASCII and reads back the same
    assert outgoing.raw.isascii()
    message = parsed(outgoing)
    assert str(message["Subject"]) == "Grüße [HD-000001]"
    plain = message.get_body(preferencelist=("plain",))
    assert plain is not None
    assert plain.get_content().replace("\r\n", "\n") == "Grüße, HD-000001\n"
    assert b"HD-000001" in outgoing.raw.split(b"\r\n\r\n", 1)[1]


# The fast header path writes exactly what compat32's folding would.
_COMPAT_CRLF = policy.compat32.clone(linesep="\r\n")
_PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
_WORD = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1,
                max_size=14)
_HEADER_TEXT = st.one_of(
    st.text(alphabet=_PRINTABLE, max_size=120),
    st.lists(_WORD, max_size=16).map(" ".join),  # lines long enough to need folding
)


@settings(max_examples=500, deadline=None)
@given(name=st.sampled_from(["Subject", "To", "Message-ID", "X-Helpdesk-Loop"]), value=_HEADER_TEXT)
def test_plain_header_lines_are_written_as_compat32_folds_them(name, value):
    assert _SMTP_COMPAT.fold_binary(name, value) == _COMPAT_CRLF.fold_binary(name, value)


def test_a_part_holding_the_boundary_gets_another(monkeypatch):
    tokens = iter(["taken", "free"])
    monkeypatch.setattr(compose.secrets, "token_hex", lambda _n: next(tokens))
    message = parsed(build(text="a customer quoting --=_helpdesk_taken\n"))
    assert message.get_boundary() == "=_helpdesk_free"
    assert [part.get_content_type() for part in message.iter_parts()] == [
        "text/plain", "text/html"
    ]
