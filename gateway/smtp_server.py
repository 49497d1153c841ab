"""The inbound SMTP edge (aiosmtpd): check the recipients, store, then say 250.

Nothing else happens here. ``250`` is said only after the raw message is
committed (RFC 5321 §6.1: from then on the gateway is responsible for it);
when the database cannot take it the answer is ``451`` so that the sending
server keeps the mail and retries. No internal error may become aiosmtpd's
default permanent ``500``: ``handle_exception`` turns them all into 451.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
import ssl
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from email._header_value_parser import get_addr_spec, get_angle_addr
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from gateway.errors import StoreUnavailable

log = logging.getLogger(__name__)

Accept = Callable[[bytes, str, list[str]], int]
"""Stores a message (raw, envelope sender, recipients) and returns its id."""

_UNUSABLE = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
"""In a path: control characters, and undecodable bytes (aiosmtpd reads
command arguments with ``surrogateescape``)."""

LONGEST_LINE = 1024 * 1024 + 2
"""Longest line a session takes, its CRLF included (see ``GatewaySMTP``)."""

TEMPORARY_FAILURE = "451 4.3.0 Cannot store the message right now; please try again later"

STORE_THREADS = 8
"""Threads that store mail for the edge at once, each holding one database
connection meanwhile: a known number, where asyncio's default executor grows
with the machine's cores, so that the process's pool can be sized to it."""


class InboundHandler:
    """aiosmtpd handler: recipients are checked at RCPT, the message stored at DATA."""

    def __init__(
        self,
        accept: Accept,
        enqueue: Callable[[int], None],
        support_addresses: Iterable[str],
        now: Callable[[], datetime],
    ) -> None:
        self._accept = accept
        self._enqueue = enqueue
        self._addresses = frozenset(a.lower() for a in support_addresses)
        self._now = now

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
        responses: list[str],
    ) -> list[str]:
        """What aiosmtpd offers, without AUTH: the gateway has no accounts, and
        aiosmtpd would offer it after STARTTLS and refuse every login with 535,
        which a sending server given credentials for this host takes as a
        reason to hold its mail back."""
        session.host_name = hostname
        return [line for line in responses if not line.startswith("250-AUTH")]

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str,
        rcpt_options: list[str],
    ) -> str:
        if address.lower() not in self._addresses:
            return f"550 5.7.1 <{address}>: not a support address here; this server is no relay"
        # A recipient given again is taken once: the list is bounded by the support
        # addresses, however many RCPT commands a session sends (each would otherwise
        # grow the session's memory and the stored row).
        if all(address.lower() != taken.lower() for taken in envelope.rcpt_tos):
            envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        # The null reverse-path of a bounce (MAIL FROM:<>) is stored as the empty sender.
        sender = "" if (envelope.mail_from or "").strip() == "<>" else envelope.mail_from or ""
        recipients = list(envelope.rcpt_tos)
        try:
            inbound_id = await asyncio.to_thread(self._accept, raw, sender, recipients)
        except StoreUnavailable as error:
            log.error("451 to %s: database unavailable: %s", session.peer, error)
            return TEMPORARY_FAILURE
        except Exception:
            log.exception("451 to %s: storing failed", session.peer)
            return TEMPORARY_FAILURE
        self._enqueue(inbound_id)  # returns at once (gateway.handoff); the sweep is the guarantee
        return f"250 2.0.0 Accepted as message {inbound_id}"

    async def handle_exception(self, error: Exception) -> str:
        log.exception("SMTP session error", exc_info=error)
        return "451 4.3.0 Temporary server error; please try again later"


class GatewaySMTP(SMTP):
    """aiosmtpd's SMTP protocol, with its own parse of the MAIL and RCPT paths.

    aiosmtpd 1.4.6 declares a ``typing.Protocol`` class inside ``_getaddr``, so
    every MAIL and every RCPT builds a new class through ``ABCMeta`` (about 1%
    of the instructions a mail costs through the edge). This parses the path
    with the same standard-library functions, in the same order, with the same
    results; ``test_smtp_paths`` compares the two on generated input, so a
    change in aiosmtpd's parsing shows as a failing test rather than a drift.

    Two differences are deliberate. The standard library's parser raises
    more than ``HeaderParseError`` on some malformed paths (``IndexError`` on
    ``MAIL FROM:"``, ``AttributeError`` on ``MAIL FROM:0@[``), which aiosmtpd
    lets through to ``handle_exception``: the client got a
    ``451`` and would retry, for days, a path that can never parse. Here such a
    path is malformed like any other, and the client gets ``553 5.1.3`` at once.
    So is a path with a control character or an undecodable byte in it, which
    aiosmtpd's parse lets through (``MAIL FROM:<a\\x00b@example.com>``, a raw
    Latin-1 byte): no mail can be delivered to it, and the database cannot
    store it (PostgreSQL's text holds no NUL; a lone surrogate encodes to
    nothing), so the store would fail and the client retry for ever.

    A line may be up to ``LONGEST_LINE`` long. aiosmtpd refuses a line over
    RFC 5321's 1,000 octets with a permanent ``500``, but real clients send
    longer ones (Outlook's HTML, an unwrapped base64 part) and the relays
    before the gateway pass them on (Postfix rebuilds long lines rather than
    refusing them): the customer would get a bounce for an ordinary mail.
    aiosmtpd sizes the one stream buffer of a session, commands included, by
    this limit, and reads a command line whole before it checks its length:
    so the limit is a bound, not the message's size. The end of the data is
    still only CRLF.CRLF, so a line that ends in a bare LF is kept inside the
    message, never read as its end.
    """

    line_length_limit = LONGEST_LINE

    def __init__(self, handler: Any, *, sessions: Sessions | None = None, **kwargs: Any) -> None:
        self._sessions = sessions
        self._client: str | None = None
        """The client's address, once ``sessions`` counts this session against it."""
        self._refused = False
        self._answering = False
        """Whether the handler is storing a message, whose answer the client awaits."""
        super().__init__(handler, **kwargs)
        self._most = self.data_size_limit
        """The largest message taken, as announced with SIZE."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Called again, with the encrypted transport, after STARTTLS: counted once.
        if self._sessions is not None and self._client is None:
            client = client_key(_client_address(transport))
            if not self._sessions.admit(client):
                self._refused = True
                _refuse(transport, self.hostname, "from your address",
                        f"421 to {_client_address(transport)}: too many SMTP sessions "
                        f"open from {client}")
                return
            self._client = client
        super().connection_made(transport)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        if not arg:
            return "", ""
        parse = get_angle_addr if arg.lstrip().startswith("<") else get_addr_spec
        try:
            token, rest = parse(arg)
            path: str = token.addr_spec
        except Exception:  # HeaderParseError, and the parser's own slips on broken input
            return None, None
        if _UNUSABLE.search(path):
            return None, None
        limit = self.local_part_limit
        if limit and len(path.rpartition("@")[0]) > limit:
            return None, None
        return path, rest

    async def smtp_DATA(self, arg: str) -> None:
        # aiosmtpd counts the data as it comes, its doubled dots (RFC 5321's
        # transparency) included, which RFC 1870 leaves out of a message's size: a
        # message under the limit whose lines often start with "." would get 552.
        # While the data comes it is given room for them (a third at most: "..",
        # CRLF for a line of "."), and the message itself is measured once the
        # dots are undone (``_call_handler_hook``).
        if self._most:
            self.data_size_limit = self._most + self._most // 3 + 3
        try:
            await super().smtp_DATA(arg)
        finally:
            self.data_size_limit = self._most

    async def _call_handler_hook(self, command: str, *args: Any) -> Any:
        if command != "DATA":
            return await super()._call_handler_hook(command, *args)
        assert self.envelope is not None
        if self._most and len(self.envelope.original_content or b"") > self._most:
            return "552 5.3.4 Message size exceeds fixed maximum message size"
        self._answering = True
        try:
            return await super()._call_handler_hook(command, *args)
        finally:
            self._answering = False

    def _timeout_cb(self) -> None:
        # Silence while the gateway stores a message is the gateway's, not the
        # client's: the answer is owed (RFC 5321 gives the client ten minutes for
        # it), and the database may be waiting out a lock or its busy timeout, at
        # the end of which the client gets 451. Cut off meanwhile, it got nothing,
        # and sent again a message that may well have been stored.
        if self._answering:
            self._reset_timeout()
            return
        super()._timeout_cb()

    async def smtp_STARTTLS(self, arg: str) -> None:
        await super().smtp_STARTTLS(arg)
        # A connection closed during the handshake (the idle timeout, before Python's
        # own 60 s for a handshake) ends without a word to this protocol: asyncio's
        # TLS layer tells only a protocol whose handshake finished. Ended here, or the
        # session would hold its place against the limits, and its task, for ever.
        original = self._original_transport
        if original is not None and original.is_closing() and self.transport is not None:
            self.connection_lost(None)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)
        # aiosmtpd restarts its timeout only when a command is read, so the whole
        # of DATA had to arrive within it: a 25 MiB message over a link slower
        # than 87 kB/s was cut off at five minutes however steadily it came, and
        # retried until its sender gave up. The timeout now counts silence.
        self._reset_timeout()

    def connection_lost(self, error: Exception | None) -> None:
        try:
            if not self._refused:  # a refused session never began aiosmtpd's
                super().connection_lost(error)
        finally:
            if self._sessions is not None:
                self._sessions.ended(self._client)
                self._sessions = None


class Sessions:
    """The SMTP sessions open at once, against a most (``smtp.max_connections``)
    and a most from any one client address (``smtp.max_connections_per_client``).

    Each session may hold a whole message in memory, and aiosmtpd takes every
    connection it is offered: without a most, enough clients at once exhaust
    the process's memory, and every session in it is lost. One over the most
    is greeted with ``421`` (RFC 5321 §3.8: try again later) and closed, as
    Postfix does when its smtpd processes are all busy. The most per client
    keeps one client (a spam run, a broken script, a client that sends a byte
    now and then to hold its sessions open) from taking every session and
    turning away everyone else, as Postfix's ``smtpd_client_connection_count_limit``
    does. Counted on the server's event loop only, so no lock.
    """

    def __init__(self, most: int, most_per_client: int) -> None:
        self.most = most
        self.most_per_client = most_per_client
        self.open = 0
        self.by_client: Counter[str] = Counter()

    def begin(self) -> bool:
        """Whether one more session may open (the client is not known yet)."""
        if self.open >= self.most:
            return False
        self.open += 1
        return True

    def admit(self, client: str) -> bool:
        """Whether the session that ``begin`` took may be ``client``'s."""
        if self.by_client[client] >= self.most_per_client:
            return False
        self.by_client[client] += 1
        return True

    def ended(self, client: str | None = None) -> None:
        """The session ended; ``client`` is the address it was admitted for, if it was."""
        self.open -= 1
        if client is not None:
            self.by_client[client] -= 1
            if not self.by_client[client]:
                del self.by_client[client]


IPV6_CLIENT_PREFIX = 64
"""IPv6 clients are counted by network: one host, or one site, is given a
whole /64 (SLAAC needs it), and could open sessions from as many addresses."""


def client_key(address: str) -> str:
    """What sessions from ``address`` are counted under: the address itself for
    IPv4 (an IPv4-mapped IPv6 address is the IPv4 address it maps), its /64
    network for IPv6; anything else (a Unix socket) as it is."""
    try:
        parsed = ipaddress.ip_address(address.split("%", 1)[0])  # without a scope ("%eth0")
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, IPV6_CLIENT_PREFIX), strict=False))
    return str(parsed)


def _client_address(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return str(peer[0] if isinstance(peer, tuple) else peer)


def _refuse(transport: asyncio.BaseTransport, hostname: str, whence: str, reason: str) -> None:
    """Greet with 421 (too many connections ``whence``) and close."""
    assert isinstance(transport, asyncio.WriteTransport)
    log.warning("%s", reason)
    transport.write(f"421 4.7.0 {hostname} Too many connections {whence}; "
                    "please try again later\r\n".encode())
    transport.close()


class _Busy(asyncio.Protocol):
    """Answers one connection too many with 421 and closes it."""

    def __init__(self, hostname: str) -> None:
        self._hostname = hostname

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        _refuse(transport, self._hostname, "open",
                f"421 to {_client_address(transport)}: too many SMTP sessions open")


class _GatewayController(Controller):
    def __init__(self, handler: Any, *, max_sessions: int, max_sessions_per_client: int,
                 **kwargs: Any) -> None:
        loop = asyncio.new_event_loop()  # closed, with its executor, when the controller stops
        loop.set_default_executor(
            ThreadPoolExecutor(STORE_THREADS, thread_name_prefix="smtp-store")
        )
        super().__init__(handler, loop=loop, **kwargs)
        self.sessions = Sessions(max_sessions, max_sessions_per_client)
        self._counting = False

    def start(self) -> None:
        # Sessions are counted from here on: not the connection that start()
        # makes to its own server, which may not have ended when it returns.
        super().start()
        self._counting = True

    def factory(self) -> SMTP:
        if not self._counting:
            return GatewaySMTP(self.handler, **self.SMTP_kwargs)
        if not self.sessions.begin():
            return _Busy(self.SMTP_kwargs["hostname"])  # type: ignore[return-value]
        try:
            return GatewaySMTP(self.handler, sessions=self.sessions, **self.SMTP_kwargs)
        except BaseException:
            self.sessions.ended()
            raise


def tls_context(cert: str, key: str) -> ssl.SSLContext | None:
    """A server context for STARTTLS, or ``None`` when no certificate is configured."""
    if not (cert and key):
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def make_controller(
    handler: InboundHandler,
    *,
    host: str,
    port: int,
    max_message_size: int,
    max_connections: int = 100,
    max_connections_per_client: int = 50,
    idle_timeout: float = 300.0,
    hostname: str = "",
    tls: ssl.SSLContext | None = None,
) -> Controller:
    """An aiosmtpd Controller (its own thread and event loop) for ``handler``.

    The name in the greeting is looked up once, here: aiosmtpd, given none,
    calls ``socket.getfqdn()`` for every connection on its event loop, which
    with a slow resolver holds up every session for the lookup's time.
    """
    kwargs: dict[str, Any] = {
        "data_size_limit": max_message_size, "ident": "helpdesk gateway", "timeout": idle_timeout,
        "auth_exclude_mechanism": ["LOGIN", "PLAIN"],  # an AUTH all the same: 504, unknown
    }
    if tls is not None:
        kwargs["tls_context"] = tls
    return _GatewayController(
        handler, max_sessions=max_connections, max_sessions_per_client=max_connections_per_client,
        hostname=host, port=port,
        server_hostname=hostname or socket.getfqdn(), **kwargs
    )
