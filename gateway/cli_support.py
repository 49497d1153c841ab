"""What every ``helpdesk`` command shares: settings from the command line, and how a
configuration error ends a command (its one line, exit status 2)."""

from __future__ import annotations

import click

from gateway.errors import ConfigError
from gateway.settings import Settings, load_settings


class ConfigProblem(click.ClickException):
    """A configuration error, shown as its one line; exit status 2."""

    exit_code = 2

    def format_message(self) -> str:
        return self.message


def command_settings(ctx: click.Context) -> Settings:
    """The settings named by ``--config`` (or the environment), or ``ConfigProblem``."""
    try:
        return load_settings(ctx.obj["config"] if ctx.obj else None)
    except ConfigError as error:
        raise ConfigProblem(str(error)) from None
