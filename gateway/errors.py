"""The gateway's error hierarchy.

Every error a person has to act on says where (file, key) and why in one
line; callers at the edges print ``str(error)`` and stop, never a traceback.
"""

from __future__ import annotations


class HelpdeskError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(HelpdeskError):
    """A settings or policy file, or an environment override, is unusable.

    ``str()`` is the one line shown to the operator:
    ``gateway.toml: smtp.port: "x" is not a port number``.
    """

    def __init__(self, source: str, key: str, reason: str) -> None:
        self.source = source
        self.key = key
        self.reason = reason
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {reason}")


class StoreUnavailable(HelpdeskError):
    """The database cannot take a message now; the sender should retry later."""


def first_line(error: BaseException) -> str:
    """What ``error`` says, in its first line: of the driver's own error where it
    wraps one (SQLAlchemy's ``orig``), else of its own words, else its name."""
    source = getattr(error, "orig", None) or error
    lines = str(source).strip().splitlines()
    return lines[0] if lines else type(source).__name__
