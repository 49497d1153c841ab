"""Gateway settings: one TOML file, then ``HELPDESK_*`` environment overrides.

Every key of the file can be overridden by an environment variable named
after its dotted path: ``smtp.port`` → ``HELPDESK_SMTP_PORT``,
``support.addresses`` → ``HELPDESK_SUPPORT_ADDRESSES`` (comma-separated).
A bad file or value stops start-up with one line naming the file (or the
variable), the key and the reason; ``config/gateway.example.toml`` documents
every key.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from gateway.errors import ConfigError
from gateway.mail import PLAIN_ADDRESS

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = Path("helpdesk.toml")
"""Looked for in the working directory when ``--config`` is not given."""

ENV_PREFIX = "HELPDESK_"
CONFIG_ENV = "HELPDESK_CONFIG"
"""Path of the settings file, for processes started by others (Dramatiq workers)."""


_DOMAIN_NAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_ADDRESS_LITERAL = re.compile(r"\[(IPv6:)?([^\[\]%]+)\]", re.IGNORECASE)
"""RFC 5321's address literal (its tag case-insensitive), with no zone (``%eth0``)."""


def _domain_name(value: str, *, literal: bool = False) -> str:
    """``value`` if it is empty or a domain name (RFC 1123 labels, not all of them
    numbers), or with ``literal`` an address in brackets (RFC 5321's
    ``[192.0.2.1]``, ``[IPv6:2001:db8::1]``): it goes into every Message-ID or
    greeting the gateway writes, where anything else makes mail that other
    servers refuse."""
    if not value:
        return value
    if literal and (match := _ADDRESS_LITERAL.fullmatch(value)):
        try:
            address = ipaddress.ip_address(match.group(2))
        except ValueError:
            raise ValueError("is not an address in brackets") from None
        if (address.version == 6) != bool(match.group(1)):
            raise ValueError("is not an address literal: [192.0.2.1] or [IPv6:2001:db8::1]")
        return value
    if not _DOMAIN_NAME.fullmatch(value):
        raise ValueError("is not a domain name")
    if value.replace(".", "").isdigit():
        hint = f"; an address is written [{value}]" if literal else ""
        raise ValueError(f"is an address, not a domain name{hint}")
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic reads ``port = true`` as port 1; a boolean is never a number here.
        numeric = info.field_name and cls.model_fields[info.field_name].annotation in (int, float)
        if numeric and isinstance(value, bool):
            raise ValueError("is a boolean, not a number")
        return value


DATABASES = {"sqlite": ("", "pysqlite"), "postgresql": ("", "psycopg", "psycopg2")}
"""Database → the SQLAlchemy drivers of it the gateway can run on (``""``: the
default). ``gateway.database.make_engine`` takes PostgreSQL's default and
psycopg2 to psycopg, the one driver installed."""

DATABASE_EXAMPLE = "sqlite:///path/to/file or postgresql+psycopg://user:password@host/name"
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
"""What Redis (``redis.connection.parse_url``, behind the broker) takes."""


class DatabaseSettings(_Section):
    url: str = ""
    """SQLAlchemy URL: ``sqlite:///…`` or ``postgresql+psycopg://…``; empty means
    SQLite in ``data_dir``."""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        """Checked here, not when the engine is made: a URL SQLAlchemy cannot read,
        or of a database the gateway has no driver for, otherwise stops every
        command with a traceback from deep inside SQLAlchemy."""
        if not value:
            return value
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            parsed = make_url(value)
        except (ArgumentError, ValueError):  # ValueError: a port that is no number
            # Not shown: what could not be parsed may hold a password.
            raise _blamed_unshown("database.url", f"not a database URL; use {DATABASE_EXAMPLE}"
                                  ) from None
        shown = parsed.render_as_string(hide_password=True)
        database, _, driver = parsed.drivername.partition("+")
        if driver not in DATABASES.get(database, ()):
            raise blaming("database.url", shown,
                          f"{parsed.drivername} is not a database the gateway runs on; "
                          f"use {DATABASE_EXAMPLE}")
        return value


class BrokerSettings(_Section):
    url: str = ""
    """``redis://…`` (or ``rediss://…``, ``unix://…``); empty means in-process
    workers (embedded mode)."""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        """Checked with Redis's own parser, which the broker uses: otherwise a bad
        URL stops the gateway with a traceback only once the broker is made."""
        if not value:
            return value
        from redis.connection import parse_url

        if not value.lower().startswith(REDIS_SCHEMES):
            raise _blamed_unshown("broker.url", "not a Redis URL; use redis://host:6379/0 "
                                  "(or rediss://…, unix://…), or leave it empty for "
                                  "in-process workers")
        try:
            parse_url(value)
        except ValueError as error:  # a port or a query value of the wrong kind
            raise _blamed_unshown("broker.url", f"not a usable Redis URL: {error}") from None
        return value

    worker_threads: int = Field(default=4, ge=1, le=64)
    """Threads of the in-process worker in embedded mode; for each process of
    ``helpdesk worker``, its ``--threads`` (the database pools are sized to them)."""


class SmtpSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=2525, ge=1, le=65535)
    hostname: str = ""
    """Name announced in the greeting; empty means this machine's name."""

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, value: str) -> str:
        return _domain_name(value, literal=True)

    max_message_size: int = Field(default=25 * 1024 * 1024, ge=1024)
    """Bytes; larger mail is refused with 552 (announced with SIZE)."""

    max_connections: int = Field(default=100, ge=1)
    """SMTP sessions open at once; one more is greeted with 421 and closed, and
    its sender retries later. A session receiving a message holds it a few
    times over while it is read and stored: size memory for this many."""

    max_connections_per_client: int = Field(default=50, ge=1)
    """SMTP sessions open at once from one client address (IPv6: from one /64
    network, which one host or site may hold whole); one more is greeted
    with 421 and closed. A gateway behind the organisation's own mail server
    gets all its mail from that one address: keep this above that server's
    deliveries at once to it (Postfix's default is 20). The same holds behind
    a TCP proxy or load balancer that hides the clients' addresses."""

    idle_timeout: float = Field(default=300.0, gt=0)
    """Seconds a session may send nothing before it is closed (RFC 5321 §4.5.3.2:
    at least five minutes). A message being received keeps its session open
    for as long as its data keeps coming."""

    tls_cert: str = ""
    tls_key: str = ""
    """STARTTLS is offered when both are set (PEM files)."""

    @model_validator(mode="after")
    def _tls_pair(self) -> SmtpSettings:
        """One of the pair alone is refused, naming the one that was set: it is
        where the mistake is, and where it came from (file or variable) is what
        the operator must find."""
        if bool(self.tls_cert) == bool(self.tls_key):
            return self
        given, other = ("tls_cert", "tls_key") if self.tls_cert else ("tls_key", "tls_cert")
        raise blaming(f"smtp.{given}", getattr(self, given),
                      f"set without smtp.{other}; STARTTLS needs both, or neither")


class SupportSettings(_Section):
    addresses: tuple[str, ...] = ("support@localhost",)
    """Recipients accepted; anything else gets 550 (the gateway is no relay)."""

    from_address: str = ""
    """Sender of the gateway's mail; empty means the first support address."""

    @field_validator("addresses")
    @classmethod
    def _addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one support address is needed")
        for address in value:
            if not PLAIN_ADDRESS.fullmatch(address):
                raise ValueError(f"{address!r} is not a mail address")
        return tuple(a.lower() for a in value)

    @field_validator("from_address")
    @classmethod
    def _from_address(cls, value: str) -> str:
        if value and not PLAIN_ADDRESS.fullmatch(value):
            raise ValueError("is not a mail address")
        return value


class RelaySettings(_Section):
    host: str = ""
    """Outbound SMTP relay; empty means write each mail as .eml into ``outbox_dir``."""

    port: int = Field(default=25, ge=1, le=65535)
    tls: Literal["none", "starttls", "tls"] = "none"
    username: str = ""
    password: str = ""
    timeout: float = Field(default=30.0, gt=0)
    """Seconds to wait for the relay to connect, or to answer a command."""
    end_of_data_timeout: float = Field(default=600.0, gt=0)
    """Seconds to wait for the relay's answer to the end of a mail (RFC 5321
    §4.5.3.2.6, and Postfix's smtp_data_done_timeout: ten minutes). It may be
    scanning or queueing the mail; a mail whose answer never comes is
    recorded as unconfirmed, for a person, since the relay may have taken it.
    Never shorter than ``timeout``."""
    max_attempts: int = Field(default=12, ge=1)
    """Temporary failures are retried with exponential backoff this many times."""

    outbox_dir: str = ""
    """Where .eml files go without a relay; empty means ``data_dir/outbox``."""


class RecoverySettings(_Section):
    interval: float = Field(default=30.0, gt=0)
    """Seconds between sweeps for unfinished inbound mail and unsent outbox rows."""

    stale_after: float = Field(default=60.0, gt=0)
    """Seconds after which queued work that has not finished is enqueued again."""


class AutoRepliesSettings(_Section):
    """Automatic mail to one address over two sliding windows, against mail loops
    that no header gives away. Beyond either, a case still opens, without an
    acknowledgement (and an event says why). Zero turns a window off."""

    per_10_minutes: int = Field(default=10, ge=0)
    per_10_hours: int = Field(default=100, ge=0)


class CasesSettings(_Section):
    number_format: str = "HD-{seq:06d}"
    """Python format with ``{seq}`` (required) and optionally ``{year}``."""

    @field_validator("number_format")
    @classmethod
    def _number_format(cls, value: str) -> str:
        from gateway.casenumber import check_format

        check_format(value)
        return value


class Settings(_Section):
    data_dir: str = "data"
    policy: str = "lumenvox"
    policies_dir: str = str(PROJECT_ROOT / "config" / "policies")
    templates_dir: str = str(PROJECT_ROOT / "templates")
    mail_domain: str = ""
    """Domain of the gateway's Message-IDs; empty means that of the first support address."""

    @field_validator("mail_domain")
    @classmethod
    def _mail_domain(cls, value: str) -> str:
        return _domain_name(value)

    database: DatabaseSettings = DatabaseSettings()
    broker: BrokerSettings = BrokerSettings()
    smtp: SmtpSettings = SmtpSettings()
    support: SupportSettings = SupportSettings()
    relay: RelaySettings = RelaySettings()
    recovery: RecoverySettings = RecoverySettings()
    cases: CasesSettings = CasesSettings()
    auto_replies: AutoRepliesSettings = AutoRepliesSettings()

    source: str = Field(default="defaults", exclude=True)
    """Where the settings came from, for messages."""
    overridden_by: dict[str, str] = Field(default_factory=dict, exclude=True)
    """Dotted key → the environment variable that set it, for messages."""

    def origin(self, key: str) -> str:
        """What set ``key`` (a dotted key): its variable, else the file (or defaults)."""
        return self.overridden_by.get(key, self.source)

    def folder(self, key: str) -> Path:
        """The folder a top-level ``*_dir`` key names.

        Checked where it is used, not when the settings are read: a command
        that reads no policy must not stop for a mistyped folder of them.
        Raises ``ConfigError`` naming the key and what set it when there is
        no such folder: a missing folder otherwise surfaces as the policy (or
        template) it should hold, blamed on the key that names that.
        """
        path = Path(getattr(self, key))
        if not path.is_dir():
            raise ConfigError(self.origin(key), key, f"{str(path)!r}: no such folder")
        return path

    @property
    def database_url(self) -> str:
        if self.database.url:
            return self.database.url
        return f"sqlite:///{Path(self.data_dir).resolve() / 'helpdesk.sqlite3'}"

    @property
    def outbox_dir(self) -> Path:
        return Path(self.relay.outbox_dir or Path(self.data_dir) / "outbox")

    @property
    def sender_address(self) -> str:
        return self.support.from_address or self.support.addresses[0]

    @property
    def message_id_domain(self) -> str:
        return self.mail_domain or self.sender_address.rpartition("@")[2]

    @property
    def embedded(self) -> bool:
        """No broker configured: workers run inside the gateway process."""
        return not self.broker.url




def load_settings(
    path: Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read ``path`` (or ``$HELPDESK_CONFIG``, or ``./helpdesk.toml`` when present:
    a link there to no file is an error) and apply ``HELPDESK_*`` overrides.

    Raises ``ConfigError`` naming the file or variable, the key and the reason.
    """
    environ = os.environ if environ is None else environ
    explicit = path is not None or bool(environ.get(CONFIG_ENV))
    path = path or Path(environ.get(CONFIG_ENV) or DEFAULT_CONFIG)
    data: dict[str, Any] = {}
    source = "defaults"
    if path.exists():
        data = _read_toml(path)
        source = path.name
    elif explicit:
        raise ConfigError(str(path), "", "no such settings file")
    elif path.is_symlink():
        # Someone meant this file to be read: running on the defaults instead
        # would start a gateway quite unlike the one configured, without a word.
        raise ConfigError(str(path), "", f"a link to {os.readlink(path)}, "
                                         "where there is no settings file")
    overrides = _environment_overrides(environ)
    for dotted, (variable, value) in overrides.items():
        _set_dotted(data, dotted, value, variable)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as error:
        raise _config_error(error, source, overrides) from None
    return settings.model_copy(update={
        "source": source,
        "overridden_by": {dotted: variable for dotted, (variable, _) in overrides.items()},
    })


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(path.name, "", f"not valid TOML: {error}") from None
    except UnicodeDecodeError as error:
        line = error.object[: error.start].count(b"\n") + 1
        raise ConfigError(path.name, "", f"not valid TOML: not UTF-8 (at line {line})") from None
    except OSError as error:
        raise ConfigError(str(path), "", error.strerror or str(error)) from None


def _known_keys() -> dict[str, Any]:
    """Dotted key → annotation of every setting, for mapping variables to keys."""
    keys: dict[str, Any] = {}
    for name, field in Settings.model_fields.items():
        if field.exclude:  # where the settings came from, not a setting
            continue
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, _Section):
            for sub, subfield in annotation.model_fields.items():
                keys[f"{name}.{sub}"] = subfield.annotation
        else:
            keys[name] = annotation
    return keys


def _environment_overrides(environ: Mapping[str, str]) -> dict[str, tuple[str, Any]]:
    overrides: dict[str, tuple[str, Any]] = {}
    known: set[str] = set()
    for dotted, annotation in _known_keys().items():
        variable = ENV_PREFIX + dotted.replace(".", "_").upper()
        known.add(variable)
        if variable in environ:
            raw = environ[variable]
            is_list = getattr(annotation, "__origin__", None) is tuple
            value: Any = [v.strip() for v in raw.split(",") if v.strip()] if is_list else raw
            overrides[dotted] = (variable, value)
    _refuse_misspelt(environ, known)
    return overrides


def _refuse_misspelt(environ: Mapping[str, str], known: set[str]) -> None:
    """Stop at a ``HELPDESK_*`` variable that is no setting but nearly names one.

    A misspelt override is otherwise ignored without a word, and the gateway
    runs on the default it was meant to replace (with no relay host, say,
    writing mail to a folder instead of sending it). Variables that resemble
    no setting are left alone, and so are those of the project's own tools
    (``NOT_SETTINGS``), however close their names.
    """
    suffixes = {variable.removeprefix(ENV_PREFIX): variable for variable in known}
    for variable in sorted(environ):
        if (not variable.startswith(ENV_PREFIX) or variable in known
                or variable.startswith(NOT_SETTINGS)):
            continue
        near = difflib.get_close_matches(
            variable.removeprefix(ENV_PREFIX), suffixes, n=1, cutoff=_NEAR_MISS
        )
        if near:
            raise ConfigError(variable, "", f"not a setting; did you mean {suffixes[near[0]]}?")


NOT_SETTINGS = (CONFIG_ENV, "HELPDESK_TEST_", "HELPDESK_VENV")
"""``HELPDESK_`` variables (or prefixes) that are not settings: the settings file's
path, the test suite's (``HELPDESK_TEST_PG_URL``…) and ``./dev``'s virtualenv."""

_NEAR_MISS = 0.75
"""Similarity (``difflib``) of the part after ``HELPDESK_`` above which a variable
that is no setting is taken for a misspelt one."""


def _set_dotted(data: dict[str, Any], dotted: str, value: Any, variable: str) -> None:
    head, _, tail = dotted.partition(".")
    if not tail:
        data[head] = value
        return
    section = data.setdefault(head, {})
    if not isinstance(section, dict):
        raise ConfigError(variable, head, "is not a table in the settings file")
    section[tail] = value


def blaming(key: str, value: Any, reason: str) -> PydanticCustomError:
    """A check across keys that fails for ``key`` (dotted) holding ``value``.

    A model's own validator fails at the model's place, a whole section; the
    error carries the key that caused it, so that its line names that key and
    the file or variable that set it."""
    return PydanticCustomError("blamed", "{value}: {reason}",
                               {"key": key, "value": repr(value), "reason": reason})


def _blamed_unshown(key: str, reason: str) -> PydanticCustomError:
    """A failed check of ``key`` whose value is left out of the message: a URL
    that could not be read may hold a password, which belongs in no log."""
    return PydanticCustomError("blamed", "{reason}", {"key": key, "reason": reason})


def _config_error(
    error: ValidationError, source: str, overrides: Mapping[str, tuple[str, Any]]
) -> ConfigError:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"] if not isinstance(part, int))
    reason = first["msg"].removeprefix("Value error, ")
    if first["type"] == "blamed":
        key = first["ctx"]["key"]
    elif first["type"] == "extra_forbidden":
        reason = "unknown section" if isinstance(first.get("input"), dict) else "unknown key"
    elif "input" in first and first["type"] != "missing":
        reason = f"{first['input']!r}: {reason}"
    origin = overrides[key][0] if key in overrides else source
    return ConfigError(origin, key, reason)
