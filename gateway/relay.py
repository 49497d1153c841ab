"""The outbound edge: hand one rendered mail to the relay, exactly once.

Sending and recording "sent" cannot be one atomic step; the gateway brings
the two as close together as it can. The message body goes first. Then the
row is marked sent, not yet committed: if it is no longer ours, the
connection is dropped, and the relay, which never saw the final dot,
discards the mail. Then the final ``.`` of the DATA phase is written, and
the COMMIT goes out straight after it (``database.commit_right_after``).

The dot is written without giving up the interpreter lock (``_send_now``),
right after the other threads have had their turn (``commit_right_after``),
so over a plain connection, with the outbox on PostgreSQL, the two writes
are tens of microseconds apart as a rule; milliseconds now and then under
full load, when the kernel gives the core to another process meanwhile, or
the interpreter its lock to another thread. A process killed
before the dot has sent nothing, and its claim is recovered; one killed
after the COMMIT went out has sent the mail and recorded it. Only a kill
between the two writes sends the mail a second time, with the same
Message-ID. With TLS to the relay, the gap also holds the wait for the
interpreter lock after encrypting the dot; on SQLite it is the commit's
own sync. If the relay then refuses the dot, the caller records the
refusal over the commit. If its answer never comes (the connection breaks,
the wait times out), the mail may or may not have been taken: the delivery
is ``unconfirmed``, and the caller keeps it from going again by itself
(RFC 5321 §4.5.3.2.6 warns of exactly this duplicate). If the database
fails the COMMIT (it went away between the two writes), the row is marked
unconfirmed once it answers again, within ``outbox.RECORD_SENT_WITHIN``, so
that the recovery sweep leaves it alone; then the relay's reply is read and
recorded over it (a mail it took as sent), rather than sent a second time.
The reply to the end of a mail is awaited for ``end_of_data_timeout``; a
2xx is sent, a 4xx or 5xx a refusal, and no SMTP reply at all unconfirmed.
The answer is read whole within ``end_of_data_timeout`` in all, however it
trickles in. A relay whose answer is not whole within
``SLOW_ANSWER_SECONDS`` is slow (a content filter): the caller is told
(``waiting``) and records the row as awaiting the answer, so that a sender
stopped during the wait leaves it for a person instead of "sent". Only a
stop within that second leaves "sent" on a mail the relay then refuses.

A relay may refuse some recipients of a mail and take it for the others.
The mail is then sent, and the refusals come back with the delivery for the
caller to record; they are not retried, which is why each automatic mail
goes to a single recipient (one outbox row per recipient). A mail refused
for every recipient is a failure, temporary if any refusal was.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import re
import smtplib
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from gateway.poll import ready

log = logging.getLogger(__name__)

CommitPoint = Callable[[Callable[[], None]], bool]
"""Records the mail as sent, running its argument (the step that lets the mail
go) right before the commit; returns False without running it when the row is
no longer ours (abort)."""


@dataclass(frozen=True)
class Delivery:
    """How a delivery attempt ended."""

    outcome: Literal["sent", "temporary", "permanent", "aborted", "unconfirmed"]
    """``unconfirmed``: the whole mail went, and the relay's answer never came (the
    connection broke, or the wait timed out). It may have taken the mail;
    sending it again could deliver it twice."""
    detail: str = ""
    refused: tuple[str, ...] = ()
    """Of a mail sent, the recipients the relay refused while it took the others,
    each with its reply (``"bob@example.org: 550 5.1.1 no such user"``)."""


Waiting = Callable[[], None]
"""Called when the relay has not answered the end of a mail within
``SmtpRelay.SLOW_ANSWER_SECONDS``, before the wait goes on: the caller records
that the answer is awaited, so that a sender stopped meanwhile leaves the
row for a person rather than "sent"."""


class Transport(Protocol):
    answer_within: float
    """Seconds at most from a mail's end to the end of its answer: how long a
    sender may wait, once its mail has gone."""

    def deliver(
        self, sender: str, recipients: Sequence[str], raw: bytes, commit: CommitPoint,
        waiting: Waiting | None = None,
    ) -> Delivery: ...

    def close(self) -> None: ...


_LEADING_DOT = re.compile(rb"(?m)^\.")
_PLAIN_ADDRESS = re.compile(r"[^\s<>()\[\]\\,;:\"@]+@[^\s<>()\[\]\\,;:\"@]+")


def _data_payload(raw: bytes) -> bytes:
    """``raw`` with CRLF line ends and dot-stuffing, without the final dot.

    The gateway's own mails already end their lines with CRLF and seldom
    start one with a dot: each rewrite is done only when it changes something.
    """
    data = raw
    if data.count(b"\n") != data.count(b"\r\n"):
        data = re.sub(rb"\r?\n", b"\r\n", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    if data.startswith(b".") or b"\n." in data:
        data = _LEADING_DOT.sub(b"..", data)
    return data


def _path(address: str) -> str:
    """``<address>`` for MAIL and RCPT. A plain address is bracketed as it is;
    anything else goes through smtplib's parser, as ``SMTP.mail`` would."""
    if _PLAIN_ADDRESS.fullmatch(address):
        return f"<{address}>"
    return smtplib.quoteaddr(address)


def _libc_send() -> Callable[..., int] | None:
    """libc's ``send`` through ctypes' ``PyDLL``, which keeps the interpreter lock
    during the call; ``None`` where there is no such call or no way to make it
    return at once."""
    if not hasattr(socket, "MSG_DONTWAIT"):
        return None
    try:
        send = ctypes.PyDLL(None).send
    except (OSError, AttributeError, TypeError):
        return None
    send.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int)
    send.restype = ctypes.c_ssize_t
    return send  # type: ignore[no-any-return]


_LIBC_SEND = _libc_send()
_AT_ONCE = getattr(socket, "MSG_DONTWAIT", 0) | getattr(socket, "MSG_NOSIGNAL", 0)


def _send_now(sock: socket.socket, data: bytes) -> None:
    """Send ``data`` without first letting the process's other threads run.

    ``socket.send`` gives up the interpreter lock around the system call and
    queues for it afterwards: milliseconds when other threads keep the
    process busy, and what comes next (the COMMIT) must follow at once. On a
    plain socket libc's ``send`` is called with the lock held; it never
    blocks, and what it could not send goes the usual way.
    """
    if _LIBC_SEND is not None and not isinstance(sock, ssl.SSLSocket):
        sent = _LIBC_SEND(sock.fileno(), data, len(data), _AT_ONCE)
        if sent == len(data):
            return
        data = data[max(sent, 0):]
    sock.sendall(data)


class _ClosedWhileIdle(Exception):
    """A reused connection had been closed by the relay before this mail began."""


class SmtpRelay:
    """Delivers through an SMTP relay, reusing connections between mails.

    A new connection costs a TCP handshake, the greeting, EHLO, and with TLS
    a handshake of its own; at a burst's rate that, not the relay, sets the
    pace. Connections that delivered cleanly wait in a small idle pool. One
    idle for a while is checked with NOOP first (relays close idle
    sessions); one used moments ago is trusted, and if the relay closed it
    all the same (a restart, a limit of mails per connection) before
    answering MAIL, the mail goes again over a new connection: nothing of it
    had been sent.
    """

    IDLE_SECONDS = 20.0
    """An idle connection older than this is closed rather than reused."""
    TRUSTED_SECONDS = 2.0
    """An idle connection younger than this is used without a NOOP first."""
    SLOW_ANSWER_SECONDS = 1.0
    """A relay whose answer to the end of a mail is not whole by then is slow (a
    content filter, a queue on a busy disk): the caller is told (``waiting``)."""
    END_OF_DATA_SECONDS = 600.0
    """How long the relay may take to answer the end of a mail, RFC 5321's ten
    minutes (§4.5.3.2.6): it may be scanning or queueing it, and giving up
    sooner leaves a mail that was probably taken ``unconfirmed``."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: Literal["none", "starttls", "tls"] = "none",
        username: str = "",
        password: str = "",
        timeout: float = 30.0,
        end_of_data_timeout: float = END_OF_DATA_SECONDS,
        local_hostname: str | None = None,
    ) -> None:
        self.host, self.port, self.tls = host, port, tls
        self.username, self.password, self.timeout = username, password, timeout
        self.end_of_data_timeout = max(end_of_data_timeout, timeout)
        self.answer_within = self.end_of_data_timeout
        self.local_hostname = local_hostname
        self._context: ssl.SSLContext | None = None
        self._idle: list[tuple[float, smtplib.SMTP]] = []
        self._lock = threading.Lock()

    def close(self) -> None:
        """Say goodbye on every idle connection."""
        with self._lock:
            idle, self._idle = self._idle, []
        for _, smtp in idle:
            _goodbye(smtp)

    def deliver(
        self, sender: str, recipients: Sequence[str], raw: bytes, commit: CommitPoint,
        waiting: Waiting | None = None,
    ) -> Delivery:
        """Send ``raw``; ``commit`` is called after the body, and writes the final dot;
        ``waiting``, if the relay is slow to answer it.

        Refusals of the session (greeting, EHLO, STARTTLS, AUTH) are temporary
        whatever their code: they say nothing about this mail, and a wrong
        password must not fail every queued mail for good. An exception from
        ``commit`` propagates, and the connection is dropped without a QUIT
        (which inside DATA would only become part of the body, and then wait
        for a reply that never comes): the relay discards the transaction.
        """
        reuse = True
        while True:
            try:
                smtp, unchecked = self._reused() if reuse else (None, False)
                smtp = smtp or self._connect()
            except smtplib.SMTPResponseException as error:
                detail = _reply(error.smtp_code, error.smtp_error).detail
                return Delivery("temporary", f"relay {self.host}:{self.port}: {detail}")
            except (OSError, smtplib.SMTPException) as error:
                return Delivery("temporary", f"relay {self.host}:{self.port}: {error}")
            delivery: Delivery | None = None
            try:
                delivery = self._transaction(smtp, sender, recipients, raw, commit, waiting,
                                             unchecked)
                return delivery
            except _ClosedWhileIdle:
                reuse = False  # once more, over a new connection
            except smtplib.SMTPResponseException as error:
                return _reply(error.smtp_code, error.smtp_error)
            except (OSError, smtplib.SMTPException) as error:
                return Delivery("temporary", f"relay {self.host}:{self.port}: {error}")
            finally:
                if delivery is not None and delivery.outcome in ("sent", "permanent"):
                    self._release(smtp, reset=delivery.outcome != "sent")
                else:
                    smtp.close()

    def _reused(self) -> tuple[smtplib.SMTP | None, bool]:
        """An idle connection that should still answer, or ``None``; and whether it
        is used unchecked (without a NOOP)."""
        while True:
            with self._lock:
                if not self._idle:
                    return None, False
                since, smtp = self._idle.pop()
            idle = time.monotonic() - since
            if idle < self.TRUSTED_SECONDS:
                return smtp, True
            if idle < self.IDLE_SECONDS:
                try:
                    if smtp.noop()[0] == 250:
                        return smtp, False
                except (OSError, smtplib.SMTPException):
                    pass
            smtp.close()

    def _release(self, smtp: smtplib.SMTP, *, reset: bool) -> None:
        """Keep a connection whose last reply ended cleanly for the next mail."""
        if reset:
            try:
                smtp.rset()  # a refused MAIL or RCPT leaves a half-open transaction
            except (OSError, smtplib.SMTPException):
                smtp.close()
                return
        with self._lock:
            self._idle.append((time.monotonic(), smtp))

    def _tls_context(self) -> ssl.SSLContext:
        """One context per relay: loading the system's CA certificates is slow."""
        if self._context is None:
            self._context = ssl.create_default_context()
        return self._context

    def _connect(self) -> smtplib.SMTP:
        context = self._tls_context() if self.tls != "none" else None
        if self.tls == "tls":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                self.host, self.port, timeout=self.timeout, context=context,
                local_hostname=self.local_hostname,
            )
        else:
            smtp = smtplib.SMTP(
                self.host, self.port, timeout=self.timeout, local_hostname=self.local_hostname
            )
        try:
            # The final dot goes out alone, after the row is marked; with Nagle's
            # algorithm it would wait for the ACK of the body, which the relay
            # delays (40 ms on Linux): a stall per mail.
            if smtp.sock is None:  # smtplib connects in its constructor, given a host
                raise OSError("the relay connection has no socket")
            smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            smtp.ehlo()
            if self.tls == "starttls":
                smtp.starttls(context=context)
                smtp.ehlo()
            if self.username:
                smtp.login(self.username, self.password)
        except BaseException:
            smtp.close()
            raise
        return smtp

    def _transaction(
        self, smtp: smtplib.SMTP, sender: str, recipients: Sequence[str], raw: bytes,
        commit: CommitPoint, waiting: Waiting | None = None, unchecked: bool = False,
    ) -> Delivery:
        if not recipients:
            return Delivery("permanent", "no recipients")
        try:
            code, text = smtp.docmd("mail", f"FROM:{_path(sender)}")
        except (OSError, smtplib.SMTPServerDisconnected) as error:
            if unchecked:
                raise _ClosedWhileIdle from error
            raise
        if code == 421 and unchecked:  # "closing the channel": it had timed out, say
            raise _ClosedWhileIdle
        if code != 250:
            return _reply(code, text)
        refused: list[tuple[str, Delivery]] = []
        for recipient in recipients:
            code, text = smtp.docmd("rcpt", f"TO:{_path(recipient)}")
            if code not in (250, 251):
                refused.append((recipient, _reply(code, text)))
        if len(refused) == len(recipients):
            return _all_refused(refused)
        code, text = smtp.docmd("DATA")
        if code != 354:
            return _reply(code, text)
        smtp.send(_data_payload(raw))
        sock = smtp.sock
        if sock is None:
            raise smtplib.SMTPServerDisconnected("connection closed during DATA")
        if not commit(lambda: _send_now(sock, b".\r\n")):
            smtp.close()  # drop the transaction: without the final dot nothing is sent
            return Delivery("aborted", "row no longer held by this sender")
        try:
            code, text = _answer(sock, self.end_of_data_timeout, waiting,
                                 self.SLOW_ANSWER_SECONDS)
            sock.settimeout(self.timeout)
        except (OSError, smtplib.SMTPException) as error:
            return Delivery("unconfirmed", f"relay {self.host}:{self.port} did not answer "
                                           f"the end of the mail: {error}")
        if 200 <= code < 300:
            return Delivery("sent", f"{code} {text.decode('utf-8', 'replace')}", _named(refused))
        if 400 <= code < 600:
            return _reply(code, text)
        # No SMTP answer to the end of a mail (smtplib's -1 for a line without a code):
        # whether the relay took it, nobody can say.
        return Delivery("unconfirmed", f"relay {self.host}:{self.port} answered the end of "
                                       f"the mail with no SMTP reply: "
                                       f"{code} {text.decode('utf-8', 'replace')}")


LONGEST_ANSWER = 65536
"""Bytes of an answer to the end of a mail beyond which it is no SMTP answer."""


def _answer(
    sock: socket.socket, within: float, waiting: Waiting | None, slow_after: float
) -> tuple[int, bytes]:
    """The relay's whole answer to the end of a mail, read from ``sock`` within
    ``within`` seconds in all, however it trickles in; ``waiting`` is called
    once if it is not whole after ``slow_after`` seconds. As smtplib's
    ``getreply`` gives it (a line without a code is -1), which is not used
    here because its timeout bounds each read, not the whole answer. What
    smtplib holds in its buffer ended with the 354 to DATA, so the answer
    is all on the socket. Raises ``OSError`` (a timeout) or
    ``SMTPServerDisconnected``."""
    start = time.monotonic()
    deadline = start + within
    slow_at = start + slow_after if waiting is not None else None
    received = b""
    looked_last = False
    while (whole := _whole_answer(received)) is None:
        now = time.monotonic()
        if slow_at is not None and now >= slow_at:
            assert waiting is not None
            waiting()
            slow_at = None
            continue
        if now >= deadline:
            # Once more, without waiting: ``waiting`` (a database record) may have run
            # past the deadline while the answer came.
            if looked_last:
                raise TimeoutError(f"no whole answer within {within:g} s")
            looked_last = True
        until = deadline if slow_at is None else min(deadline, slow_at)
        if not (isinstance(sock, ssl.SSLSocket) and sock.pending()) and not ready(
                sock.fileno(), until - now):
            continue
        # Readable is not yet a whole TLS record: recv may wait for the rest of one,
        # and must not wait past the moment to say the answer is slow.
        sock.settimeout(max(until - time.monotonic(), 0.001))
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            continue  # OpenSSL keeps what came of the record; the loop looks again

        if not chunk:
            raise smtplib.SMTPServerDisconnected("connection closed before a whole answer")
        received += chunk
        if len(received) > LONGEST_ANSWER:
            raise smtplib.SMTPServerDisconnected(f"an answer longer than {LONGEST_ANSWER} bytes")
    return whole


def _whole_answer(received: bytes) -> tuple[int, bytes] | None:
    """The code and text of a whole SMTP reply at the start of ``received``, or
    ``None`` while its last line has not come (RFC 5321 §4.2.1: every line but
    the last has a hyphen after the code)."""
    texts = []
    for line in received.split(b"\n")[:-1]:  # whole lines only
        line = line.rstrip(b"\r")
        texts.append(line[4:].strip())
        if not line[:3].isdigit():
            return -1, b"\n".join(texts)  # no SMTP reply, as smtplib says it
        if line[3:4] != b"-":
            return int(line[:3]), b"\n".join(texts)
    return None


def _goodbye(smtp: smtplib.SMTP) -> None:
    with contextlib.suppress(OSError, smtplib.SMTPException):
        smtp.quit()  # a lost goodbye does not matter
    smtp.close()


def _reply(code: int, text: bytes | str) -> Delivery:
    detail = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    outcome: Literal["temporary", "permanent"] = "permanent" if 500 <= code < 600 else "temporary"
    return Delivery(outcome, f"{code} {detail}")


def _named(refused: Sequence[tuple[str, Delivery]]) -> tuple[str, ...]:
    """Each refusal as ``recipient: reply``."""
    return tuple(f"{recipient}: {reply.detail}" for recipient, reply in refused)


def _all_refused(refused: Sequence[tuple[str, Delivery]]) -> Delivery:
    """Every recipient refused: permanent only if every refusal is; a single
    recipient's reply as it came, several named each with its own."""
    if len(refused) == 1:
        return refused[0][1]
    permanent = all(reply.outcome == "permanent" for _, reply in refused)
    return Delivery("permanent" if permanent else "temporary", "; ".join(_named(refused)))


class EmlFolder:
    """Embedded mode without a relay: each mail becomes an ``.eml`` file, logged.

    The file is written and synced under a temporary name and renamed into
    place right before the commit, so the folder never holds a half-written
    mail. A process killed between the rename and the commit leaves the row
    to be sent again, and that send writes the same file (named after the
    Message-ID): the folder still holds the mail once.
    """

    answer_within = 0.0

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def close(self) -> None:
        """Nothing is held open between mails."""

    def deliver(
        self, sender: str, recipients: Sequence[str], raw: bytes, commit: CommitPoint,
        waiting: Waiting | None = None,
    ) -> Delivery:
        temporary: str | None = None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            handle, written = tempfile.mkstemp(dir=self.folder, prefix=".", suffix=".tmp")
            temporary = written
            with os.fdopen(handle, "wb") as file:
                file.write(raw)
                file.flush()
                os.fsync(file.fileno())
            path = self.folder / self._name(raw)
            if not commit(lambda: os.replace(written, path)):
                return Delivery("aborted", "row no longer held by this sender")
        except OSError as error:
            return Delivery("temporary", f"cannot write to {self.folder}: {error}")
        finally:
            if temporary is not None and os.path.exists(temporary):
                os.unlink(temporary)
        log.info("mail to %s written to %s", ", ".join(recipients), path)
        return Delivery("sent", str(path))

    @staticmethod
    def _name(raw: bytes) -> str:
        """Named after the Message-ID, so a mail sent again is the same file; a mail
        without one is named after its content, never after a shared default."""
        match = re.search(rb"(?im)^message-id:\s*<([^@>]+)@", raw)
        if match is None:
            return f"mail-{hashlib.sha256(raw).hexdigest()[:24]}.eml"
        stem = match.group(1).decode("ascii", "replace")
        return re.sub(r"[^A-Za-z0-9._-]", "_", stem) + ".eml"
