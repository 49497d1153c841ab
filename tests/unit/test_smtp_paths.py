"""The edge's own parse of MAIL and RCPT paths answers as aiosmtpd's does.

``GatewaySMTP._getaddr`` replaces aiosmtpd's for speed, and differs in
two ways: a path on which the standard library's parser raises anything
(``IndexError``, ``AttributeError``) is unparseable (a 553; aiosmtpd lets
the error escape, which became a 451), and so is one with a control
character or an undecodable byte (a lone surrogate) in the address. Any
other difference is a behaviour change at the SMTP edge.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from aiosmtpd.smtp import SMTP
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.clock import utcnow
from gateway.smtp_server import GatewaySMTP, InboundHandler, make_controller

ATOM = st.text(alphabet="abcXYZ019.-_+=!#$%&'*/?^`{|}~", min_size=0, max_size=12)
NOISE = st.text(alphabet=' <>@"\\()[],:;.\t\x00\x7fé', max_size=6)
SYNTAX = '"<>@ \\().,:;[]a'
"""The characters that steer the parser, so that short broken paths are tried often."""
PARAMS = st.sampled_from(["", " SIZE=1000", " BODY=8BITMIME", "  SMTPUTF8", " x=y z"])


@st.composite
def paths(draw: st.DrawFn) -> str:
    """Paths shaped like those MAIL FROM and RCPT TO carry, and broken ones."""
    local = draw(st.one_of(ATOM, ATOM.map(lambda a: f'"{a} x"')))
    domain = draw(st.one_of(ATOM, st.just("[127.0.0.1]"), st.just("")))
    core = draw(st.sampled_from(["{l}@{d}", "<{l}@{d}>", " <{l}@{d}>", "{l}", "<{l}>", "<>",
                                 "<@relay.example:{l}@{d}>", "{n}{l}@{d}{n}", "<{l}@{d}"]))
    text = core.format(l=local, d=domain, n=draw(NOISE))
    return text + draw(PARAMS)


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    running = asyncio.new_event_loop()
    yield running
    running.close()


def pair(loop: asyncio.AbstractEventLoop, limit: int) -> tuple[SMTP, SMTP]:
    made = (SMTP(object(), hostname="localhost", loop=loop),
            GatewaySMTP(object(), hostname="localhost", loop=loop))
    for server in made:
        server.local_part_limit = limit
    return made


@pytest.mark.parametrize("limit", [0, 5])
@settings(max_examples=600, deadline=None)
@given(arg=st.one_of(paths(), st.text(max_size=30), st.text(alphabet=SYNTAX, max_size=10)))
@example(arg="")
@example(arg="<>")
@example(arg="alice@customer.example")
@example(arg="<alice@customer.example> SIZE=1000")
@example(arg="<@a.example,@b.example:bob@c.example>")
@example(arg="<bob@c.example")
@example(arg="  <toolongpart@c.example>")
@example(arg='" x"@')
@example(arg='"')
@example(arg="0@[")
@example(arg="<a\x00b@c.example>")
@example(arg="a\tb@c.example")
@example(arg="<caf\udce9@c.example>")
def test_paths_parse_as_aiosmtpd_parses_them(loop, limit: int, arg: str) -> None:
    theirs, ours = pair(loop, limit)
    try:
        expected = theirs._getaddr(arg)
    except Exception:  # the standard library's parser slips on some broken paths
        expected = (None, None)  # ours: unparseable, so 553 rather than a 451
    if expected[0] and any(ord(c) < 32 or ord(c) == 127 or 0xD800 <= ord(c) <= 0xDFFF
                           for c in expected[0]):
        expected = (None, None)  # ours: a control or undecodable byte makes it malformed
    assert ours._getaddr(arg) == expected


def test_the_gateway_serves_with_its_own_parse(tmp_path) -> None:
    """The controller the service starts builds ``GatewaySMTP``, not aiosmtpd's class."""
    handler = InboundHandler(lambda *_: 1, lambda _: None, ["support@example.com"], utcnow)
    controller = make_controller(handler, host="127.0.0.1", port=0, max_message_size=1000)
    assert type(controller.factory()) is GatewaySMTP
