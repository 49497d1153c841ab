"""Settings: defaults, the TOML file, HELPDESK_* overrides, and one-line errors."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import ConfigError
from gateway.settings import PROJECT_ROOT, Settings, _Section, load_settings

EXAMPLE = PROJECT_ROOT / "config" / "gateway.example.toml"


@pytest.fixture(autouse=True)
def _no_stray_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run where no ./helpdesk.toml lies around, so only what a test writes counts."""
    monkeypatch.chdir(tmp_path)


def write(tmp_path: Path, text: str, name: str = "gateway.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(path: Path | None, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ=environ or {})
    message = str(caught.value)
    assert "\n" not in message, "a config error is one line"
    return message


def all_keys() -> set[str]:
    """Every dotted settings key, from the model itself."""
    keys = set()
    for name, field in Settings.model_fields.items():
        if field.exclude:
            continue
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, _Section):
            keys |= {f"{name}.{sub}" for sub in annotation.model_fields}
        else:
            keys.add(name)
    return keys


# --- defaults and file values ------------------------------------------------------------


def test_defaults_without_any_file_or_variable():
    # Given no settings file and no variables
    # When settings are loaded
    settings = load_settings(None, environ={})
    # Then they are the documented defaults
    assert settings == Settings()
    assert settings.source == "defaults"
    assert settings.smtp.host == "127.0.0.1"
    assert settings.smtp.port == 2525
    assert settings.support.addresses == ("support@localhost",)
    assert settings.relay.host == ""
    assert settings.relay.port == 25
    assert settings.relay.tls == "none"
    assert settings.relay.max_attempts == 12
    assert settings.policy == "lumenvox"
    assert settings.cases.number_format == "HD-{seq:06d}"
    assert settings.embedded
    assert settings.sender_address == "support@localhost"
    assert settings.message_id_domain == "localhost"
    assert settings.database_url.startswith("sqlite:///")
    assert settings.database_url.endswith("helpdesk.sqlite3")


def test_file_values_are_read(tmp_path):
    # Given a settings file with a value in every section
    path = write(tmp_path, """
data_dir = "/srv/helpdesk"
policy = "virtuozzo"
mail_domain = "mail.example.com"

[database]
url = "postgresql+psycopg://h@db/helpdesk"

[broker]
url = "redis://redis:6379/0"
worker_threads = 8

[smtp]
host = "0.0.0.0"
port = 25

[support]
addresses = ["Support@Example.com", "help@example.com"]
from_address = "noreply@example.com"

[relay]
host = "smtp.example.com"
port = 587
tls = "starttls"
max_attempts = 3

[recovery]
stale_after = 120.0

[cases]
number_format = "{year}-{seq:05d}"
""")
    # When it is loaded
    settings = load_settings(path, environ={})
    # Then every value is taken, addresses lower-cased, and the source is the file
    assert settings.source == "gateway.toml"
    assert settings.data_dir == "/srv/helpdesk"
    assert settings.policy == "virtuozzo"
    assert settings.database_url == "postgresql+psycopg://h@db/helpdesk"
    assert settings.broker.url == "redis://redis:6379/0"
    assert settings.broker.worker_threads == 8
    assert not settings.embedded
    assert (settings.smtp.host, settings.smtp.port) == ("0.0.0.0", 25)
    assert settings.support.addresses == ("support@example.com", "help@example.com")
    assert settings.sender_address == "noreply@example.com"
    assert settings.message_id_domain == "mail.example.com"
    assert (settings.relay.host, settings.relay.port, settings.relay.tls) == (
        "smtp.example.com", 587, "starttls"
    )
    assert settings.relay.max_attempts == 3
    assert settings.recovery.stale_after == 120.0
    assert settings.cases.number_format == "{year}-{seq:05d}"


def test_helpdesk_toml_in_the_working_directory_is_found(tmp_path):
    # Given ./helpdesk.toml and no --config
    write(tmp_path, "[smtp]\nport = 2626\n", name="helpdesk.toml")
    # When settings are loaded without a path
    settings = load_settings(None, environ={})
    # Then that file is read
    assert settings.source == "helpdesk.toml"
    assert settings.smtp.port == 2626


@pytest.mark.parametrize("target", ["/etc/helpdesk/moved.toml", "helpdesk.toml"])
def test_a_broken_link_at_helpdesk_toml_is_an_error_not_the_defaults(tmp_path, target):
    # Given ./helpdesk.toml linking to a file that is not there (or to itself)
    (tmp_path / "helpdesk.toml").symlink_to(target)
    # Then loading stops, naming the link and where it points
    assert error_of(None) == (
        f"helpdesk.toml: a link to {target}, where there is no settings file")


def test_helpdesk_config_variable_names_the_file(tmp_path):
    path = write(tmp_path, "[smtp]\nport = 2727\n", name="elsewhere.toml")
    settings = load_settings(None, environ={"HELPDESK_CONFIG": str(path)})
    assert settings.source == "elsewhere.toml"
    assert settings.smtp.port == 2727


@pytest.mark.parametrize("key", ["policies_dir", "templates_dir"])
def test_a_folder_that_is_not_there_is_blamed_on_its_key_and_what_set_it(tmp_path, key):
    # Given a folder key set by the file, then by a variable, to no folder
    path = write(tmp_path, f"{key} = '{tmp_path}/gone'\n")
    variable = f"HELPDESK_{key.upper()}"
    for environ, origin in (({}, "gateway.toml"), ({variable: "/nonexistent"}, variable)):
        settings = load_settings(path, environ=environ)
        # When the folder is asked for, then the error names the key and its origin
        with pytest.raises(ConfigError) as caught:
            settings.folder(key)
        assert str(caught.value) == f"{origin}: {key}: {getattr(settings, key)!r}: no such folder"
    assert load_settings(None, environ={}).folder(key) == Path(getattr(Settings(), key))


# --- environment overrides ---------------------------------------------------------------

OVERRIDES: list[tuple[str, str, Callable[[Settings], Any], Any]] = [
    ("HELPDESK_DATABASE_URL", "postgresql+psycopg://u@db/h",
     lambda s: s.database_url, "postgresql+psycopg://u@db/h"),
    ("HELPDESK_BROKER_URL", "redis://r:6379/1", lambda s: s.broker.url, "redis://r:6379/1"),
    ("HELPDESK_SMTP_HOST", "0.0.0.0", lambda s: s.smtp.host, "0.0.0.0"),
    ("HELPDESK_SMTP_PORT", "2500", lambda s: s.smtp.port, 2500),
    ("HELPDESK_SUPPORT_ADDRESSES", " Support@Example.com, help@example.com ,,",
     lambda s: s.support.addresses, ("support@example.com", "help@example.com")),
    ("HELPDESK_RELAY_HOST", "relay.example.com", lambda s: s.relay.host, "relay.example.com"),
    ("HELPDESK_RELAY_PORT", "465", lambda s: s.relay.port, 465),
    ("HELPDESK_RELAY_TLS", "tls", lambda s: s.relay.tls, "tls"),
    ("HELPDESK_POLICY", "jelastic", lambda s: s.policy, "jelastic"),
    ("HELPDESK_DATA_DIR", "/var/lib/helpdesk", lambda s: s.data_dir, "/var/lib/helpdesk"),
    ("HELPDESK_CASES_NUMBER_FORMAT", "CASE#{seq}", lambda s: s.cases.number_format,
     "CASE#{seq}"),
    ("HELPDESK_RECOVERY_INTERVAL", "0.5", lambda s: s.recovery.interval, 0.5),
]


@pytest.mark.parametrize(
    ("variable", "value", "read", "expected"), OVERRIDES, ids=[o[0] for o in OVERRIDES]
)
def test_variable_overrides_default(variable, value, read, expected):
    # Given no file and one HELPDESK_* variable
    # When settings are loaded
    settings = load_settings(None, environ={variable: value})
    # Then the variable's value is used, converted to the key's type
    assert read(settings) == expected


def test_variable_beats_file(tmp_path):
    # Given a file and variables for some of its keys
    path = write(tmp_path, """
policy = "vmoso"
[smtp]
host = "10.0.0.1"
port = 2525
[support]
addresses = ["file@example.com"]
""")
    environ = {
        "HELPDESK_SMTP_PORT": "2600",
        "HELPDESK_SUPPORT_ADDRESSES": "env@example.com",
        "HELPDESK_POLICY": "parallels",
    }
    # When settings are loaded
    settings = load_settings(path, environ=environ)
    # Then the variables win and the file provides the rest
    assert settings.smtp.port == 2600
    assert settings.support.addresses == ("env@example.com",)
    assert settings.policy == "parallels"
    assert settings.smtp.host == "10.0.0.1"
    assert settings.source == "gateway.toml"


def test_unrelated_variables_are_ignored():
    settings = load_settings(None, environ={
        "HELPDESK_TEST_PG_URL": "x", "HELPDESK_TEST_REQUIRE_SERVICES": "1", "HOME": "/root",
        # The test suite's own, however close to a setting's name
        "HELPDESK_TEST_DATABASE_URL": "x", "HELPDESK_TEST_BROKER_URL": "x",
        "HELPDESK_VENV": ".venv",
    })
    assert settings == Settings()


def test_settings_say_what_set_each_key(tmp_path):
    path = write(tmp_path, 'policy = "vmoso"\n[smtp]\nport = 2600\n')
    settings = load_settings(path, environ={"HELPDESK_SMTP_PORT": "2700"})
    assert settings.origin("smtp.port") == "HELPDESK_SMTP_PORT"
    assert settings.origin("policy") == path.name
    assert load_settings(None, environ={}).origin("policy") == "defaults"


@pytest.mark.parametrize(("variable", "meant"), [
    ("HELPDESK_RELAY_HOTS", "HELPDESK_RELAY_HOST"),
    ("HELPDESK_SUPPORT_ADDRESS", "HELPDESK_SUPPORT_ADDRESSES"),
    ("HELPDESK_DATABASE", "HELPDESK_DATABASE_URL"),
    ("HELPDESK_BROKER", "HELPDESK_BROKER_URL"),
    ("HELPDESK_RELAY_TLS_MODE", "HELPDESK_RELAY_TLS"),
])
def test_misspelt_variable_stops_with_the_name_it_nearly_is(variable, meant):
    # A misspelt override would otherwise leave the default in place without a word
    with pytest.raises(ConfigError) as caught:
        load_settings(None, environ={variable: "x"})
    assert str(caught.value) == f"{variable}: not a setting; did you mean {meant}?"


# --- errors: one line naming the file or variable, the key and the reason -----------------

FILE_ERRORS = [
    pytest.param('data_dir = "data"\npolicy = lumenvox\n',
                 "gateway.toml: not valid TOML: Invalid value (at line 2, column 10)",
                 id="bad-toml-with-line"),
    pytest.param("[smtp\n",
                 "gateway.toml: not valid TOML: "
                 "Expected ']' at the end of a table declaration (at line 1, column 6)",
                 id="bad-toml-table-header"),
    pytest.param("colour = 'blue'\n", "gateway.toml: colour: unknown key", id="unknown-top-key"),
    pytest.param("[smtp]\nprot = 25\n", "gateway.toml: smtp.prot: unknown key",
                 id="unknown-key-in-section"),
    pytest.param("[imap]\nhost = 'x'\n", "gateway.toml: imap: unknown section",
                 id="unknown-section"),
    pytest.param("[smtp]\nport = 'x'\n",
                 "gateway.toml: smtp.port: 'x': "
                 "Input should be a valid integer, unable to parse string as an integer",
                 id="port-x"),
    pytest.param("[smtp]\nport = 70000\n",
                 "gateway.toml: smtp.port: 70000: Input should be less than or equal to 65535",
                 id="port-70000"),
    pytest.param("[relay]\nport = 0\n",
                 "gateway.toml: relay.port: 0: Input should be greater than or equal to 1",
                 id="relay-port-0"),
    pytest.param("[smtp]\nport = true\n",
                 "gateway.toml: smtp.port: True: is a boolean, not a number",
                 id="port-boolean"),
    pytest.param("[support]\naddresses = ['support@example.com', 'not-an-address']\n",
                 "gateway.toml: support.addresses: ['support@example.com', 'not-an-address']: "
                 "'not-an-address' is not a mail address",
                 id="bad-address"),
    pytest.param("[support]\naddresses = ['alice@example.org(<bob@example.org>']\n",
                 "gateway.toml: support.addresses: ['alice@example.org(<bob@example.org>']: "
                 "'alice@example.org(<bob@example.org>' is not a mail address",
                 id="crafted-address"),
    pytest.param("[support]\naddresses = []\n",
                 "gateway.toml: support.addresses: []: at least one support address is needed",
                 id="no-address"),
    pytest.param("[support]\nfrom_address = 'Help Desk <help@example.com>'\n",
                 "gateway.toml: support.from_address: 'Help Desk <help@example.com>': "
                 "is not a mail address",
                 id="bad-from-address"),
    pytest.param("[smtp]\ntls_cert = 'cert.pem'\n",
                 "gateway.toml: smtp.tls_cert: 'cert.pem': "
                 "set without smtp.tls_key; STARTTLS needs both, or neither",
                 id="tls-cert-without-key"),
    pytest.param("[smtp]\ntls_key = 'key.pem'\n",
                 "gateway.toml: smtp.tls_key: 'key.pem': "
                 "set without smtp.tls_cert; STARTTLS needs both, or neither",
                 id="tls-key-without-cert"),
    pytest.param("[relay]\ntls = 'ssl'\n",
                 "gateway.toml: relay.tls: 'ssl': Input should be 'none', 'starttls' or 'tls'",
                 id="bad-relay-tls"),
    pytest.param("[cases]\nnumber_format = 'HD-{id}'\n",
                 "gateway.toml: cases.number_format: 'HD-{id}': "
                 "not a usable format: unknown field {id}; use {seq} and {year}",
                 id="bad-number-format"),
    pytest.param("[cases]\nnumber_format = 'HD-{year}'\n",
                 "gateway.toml: cases.number_format: 'HD-{year}': must contain {seq}",
                 id="number-format-without-seq"),
    pytest.param("[database]\nurl = 'mysql://helpdesk:secret@db/helpdesk'\n",
                 "gateway.toml: database.url: 'mysql://helpdesk:***@db/helpdesk': "
                 "mysql is not a database the gateway runs on; use sqlite:///path/to/file "
                 "or postgresql+psycopg://user:password@host/name",
                 id="database-without-a-driver"),
    pytest.param("[broker]\nurl = 'amqp://guest@rabbit//'\n",
                 "gateway.toml: broker.url: not a Redis URL; use redis://host:6379/0 "
                 "(or rediss://…, unix://…), or leave it empty for in-process workers",
                 id="broker-not-redis"),
    pytest.param("smtp = 5\n",
                 "gateway.toml: smtp: 5: "
                 "Input should be a valid dictionary or instance of SmtpSettings",
                 id="section-not-a-table"),
]


@pytest.mark.parametrize(("text", "message"), FILE_ERRORS)
def test_bad_file_gives_one_line(tmp_path, text, message):
    path = write(tmp_path, text)
    assert error_of(path) == message


def test_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "gateway.toml"
    path.write_bytes(b'policy = "lumenvox"\n# caf\xe9\n')
    assert error_of(path) == "gateway.toml: not valid TOML: not UTF-8 (at line 2)"


def test_missing_explicit_config_file(tmp_path):
    missing = tmp_path / "nowhere.toml"
    assert error_of(missing) == f"{missing}: no such settings file"


def test_missing_config_named_by_variable(tmp_path):
    missing = tmp_path / "nowhere.toml"
    assert error_of(None, {"HELPDESK_CONFIG": str(missing)}) == (
        f"{missing}: no such settings file"
    )


ENV_ERRORS = [
    pytest.param("HELPDESK_SMTP_PORT", "x",
                 "HELPDESK_SMTP_PORT: smtp.port: 'x': "
                 "Input should be a valid integer, unable to parse string as an integer",
                 id="port-x"),
    pytest.param("HELPDESK_RELAY_PORT", "70000",
                 "HELPDESK_RELAY_PORT: relay.port: '70000': "
                 "Input should be less than or equal to 65535",
                 id="relay-port-70000"),
    pytest.param("HELPDESK_SUPPORT_ADDRESSES", "support@example.com,nobody",
                 "HELPDESK_SUPPORT_ADDRESSES: support.addresses: "
                 "['support@example.com', 'nobody']: 'nobody' is not a mail address",
                 id="bad-address"),
    pytest.param("HELPDESK_SUPPORT_ADDRESSES", " , ",
                 "HELPDESK_SUPPORT_ADDRESSES: support.addresses: []: "
                 "at least one support address is needed",
                 id="empty-addresses"),
    pytest.param("HELPDESK_RELAY_TLS", "yes",
                 "HELPDESK_RELAY_TLS: relay.tls: 'yes': "
                 "Input should be 'none', 'starttls' or 'tls'",
                 id="bad-relay-tls"),
    pytest.param("HELPDESK_CASES_NUMBER_FORMAT", "HD {seq}",
                 "HELPDESK_CASES_NUMBER_FORMAT: cases.number_format: 'HD {seq}': "
                 "makes 'HD 1'; use only letters, digits and # _ . / -",
                 id="bad-number-format"),
    pytest.param("HELPDESK_BROKER_WORKER_THREADS", "0",
                 "HELPDESK_BROKER_WORKER_THREADS: broker.worker_threads: '0': "
                 "Input should be greater than or equal to 1",
                 id="no-worker-threads"),
    pytest.param("HELPDESK_DATABASE_URL", "nonsense",
                 "HELPDESK_DATABASE_URL: database.url: not a database URL; use "
                 "sqlite:///path/to/file or postgresql+psycopg://user:password@host/name",
                 id="database-url-nonsense"),
    pytest.param("HELPDESK_DATABASE_URL", "postgres://helpdesk:secret@db/helpdesk",
                 "HELPDESK_DATABASE_URL: database.url: 'postgres://helpdesk:***@db/helpdesk': "
                 "postgres is not a database the gateway runs on; use sqlite:///path/to/file "
                 "or postgresql+psycopg://user:password@host/name",
                 id="database-url-postgres-scheme"),
    pytest.param("HELPDESK_DATABASE_URL", "postgresql+asyncpg://u@db/h",
                 "HELPDESK_DATABASE_URL: database.url: 'postgresql+asyncpg://u@db/h': "
                 "postgresql+asyncpg is not a database the gateway runs on; use "
                 "sqlite:///path/to/file or postgresql+psycopg://user:password@host/name",
                 id="database-url-driver-not-installed"),
    pytest.param("HELPDESK_BROKER_URL", "nonsense",
                 "HELPDESK_BROKER_URL: broker.url: not a Redis URL; use redis://host:6379/0 "
                 "(or rediss://…, unix://…), or leave it empty for in-process workers",
                 id="broker-url-nonsense"),
    pytest.param("HELPDESK_BROKER_URL", "redis://redis:port/0",
                 "HELPDESK_BROKER_URL: broker.url: not a usable Redis URL: "
                 "Port could not be cast to integer value as 'port'",
                 id="broker-url-bad-port"),
    pytest.param("HELPDESK_SMTP_PORT", "0",
                 "HELPDESK_SMTP_PORT: smtp.port: '0': Input should be greater than or equal to 1",
                 id="port-0"),
    pytest.param("HELPDESK_MAIL_DOMAIN", "bad domain>",
                 "HELPDESK_MAIL_DOMAIN: mail_domain: 'bad domain>': is not a domain name",
                 id="mail-domain-not-a-domain"),
    pytest.param("HELPDESK_MAIL_DOMAIN", "example.com.",
                 "HELPDESK_MAIL_DOMAIN: mail_domain: 'example.com.': is not a domain name",
                 id="mail-domain-trailing-dot"),
    pytest.param("HELPDESK_SMTP_HOSTNAME", "192.0.2.1",
                 "HELPDESK_SMTP_HOSTNAME: smtp.hostname: '192.0.2.1': is an address, not a "
                 "domain name; an address is written [192.0.2.1]", id="greeting-bare-address"),
    pytest.param("HELPDESK_SMTP_HOSTNAME", "[2001:db8::1]",
                 "HELPDESK_SMTP_HOSTNAME: smtp.hostname: '[2001:db8::1]': is not an address "
                 "literal: [192.0.2.1] or [IPv6:2001:db8::1]", id="greeting-ipv6-untagged"),
    pytest.param("HELPDESK_SMTP_HOSTNAME", "[IPv6:fe80::1%eth0]",
                 "HELPDESK_SMTP_HOSTNAME: smtp.hostname: '[IPv6:fe80::1%eth0]': is not a "
                 "domain name", id="greeting-address-with-a-zone"),
    pytest.param("HELPDESK_SMTP_HOSTNAME", "mx..example.com",
                 "HELPDESK_SMTP_HOSTNAME: smtp.hostname: 'mx..example.com': "
                 "is not a domain name", id="greeting-name-not-a-domain"),
    pytest.param("HELPDESK_SMTP_TLS_CERT", "/etc/helpdesk/cert.pem",
                 "HELPDESK_SMTP_TLS_CERT: smtp.tls_cert: '/etc/helpdesk/cert.pem': "
                 "set without smtp.tls_key; STARTTLS needs both, or neither",
                 id="tls-cert-without-key"),
]


@pytest.mark.parametrize(("variable", "value", "message"), ENV_ERRORS)
def test_bad_variable_names_the_variable(tmp_path, variable, value, message):
    # Given a valid file and a bad variable
    path = write(tmp_path, "[smtp]\nport = 2525\n")
    # Then the message names the variable, not the file
    assert error_of(path, {variable: value}) == message


def test_a_url_that_cannot_be_read_is_refused_without_its_password():
    # A port that is no number: SQLAlchemy and Redis cannot read the URL at all
    for variable, url in (("HELPDESK_DATABASE_URL", "postgresql://u:secret@db:port/h"),
                          ("HELPDESK_BROKER_URL", "redis://:secret@r:port/0")):
        message = error_of(None, {variable: url})
        assert message.startswith(f"{variable}: ")
        assert "secret" not in message


@pytest.mark.parametrize("url", [
    "sqlite:///var/lib/helpdesk/h.sqlite3", "sqlite://", "sqlite+pysqlite:///h.db",
    "postgresql://u:p@db/h", "postgresql+psycopg://u@db:5433/h", "postgresql+psycopg2://u@db/h",
])
def test_database_urls_the_gateway_runs_on_are_taken(url):
    assert load_settings(None, environ={"HELPDESK_DATABASE_URL": url}).database_url == url


@pytest.mark.parametrize("url", [
    "redis://r:6379/1", "redis://:secret@r/0?socket_timeout=5", "rediss://r:6380/0",
    "unix:///run/redis/redis.sock?db=2", "REDIS://r/0",
])
def test_broker_urls_redis_takes_are_taken(url):
    assert load_settings(None, environ={"HELPDESK_BROKER_URL": url}).broker.url == url


def test_bad_file_value_overridden_by_good_variable_is_fine(tmp_path):
    path = write(tmp_path, "[smtp]\nport = 'x'\n")
    assert load_settings(path, environ={"HELPDESK_SMTP_PORT": "25"}).smtp.port == 25


# --- the example file ----------------------------------------------------------------------


def test_example_loads_and_equals_the_defaults():
    # The example says "The values shown are the defaults"; the two commented-out
    # keys (policies_dir, templates_dir) default to the repository's folders.
    settings = load_settings(EXAMPLE, environ={})
    assert settings.model_dump() == Settings().model_dump()


def test_example_documents_every_key():
    # Given the example's keys, commented out or not, with their sections
    documented = set()
    section = ""
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        if table := re.fullmatch(r"\[(\w+)\]", line.strip()):
            section = table.group(1) + "."
        elif key := re.match(r"#?\s*(\w+)\s*=", line):
            documented.add(section + key.group(1))
    # Then every key of the settings model appears in it, and nothing else
    assert all_keys() - documented == set()
    assert documented - all_keys() == set()


@pytest.mark.parametrize("name", ["mx1.example.com", "localhost", "[192.0.2.1]",
                                  "[IPv6:2001:db8::1]", "[ipv6:2001:db8::1]"])
def test_a_greeting_name_may_be_a_domain_or_an_address_literal(name):
    assert load_settings(None, environ={"HELPDESK_SMTP_HOSTNAME": name}).smtp.hostname == name
