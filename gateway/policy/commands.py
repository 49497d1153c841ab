"""``helpdesk policy``: check a policy file, and show a policy as its document's table."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from gateway.cli_support import ConfigProblem, command_settings
from gateway.errors import ConfigError
from gateway.policy.loader import load_named, load_policy
from gateway.policy.model import Policy
from gateway.policy.table import render_table


@click.group()
def policy() -> None:
    """Support policies (config/policies/*.yaml)."""


@policy.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def check(file: Path) -> None:
    """Validate a policy file; on error print file, key and reason, exit 2."""
    loaded = _load(lambda: load_policy(file))
    click.echo(f"{file.name}: ok ({loaded.title}, default level {loaded.default_level})")


@policy.command()
@click.argument("name")
@click.pass_context
def show(ctx: click.Context, name: str) -> None:
    """Print policy NAME (from the policies folder, or a .yaml path) as a table."""
    if name.endswith((".yaml", ".yml")):
        loaded = _load(lambda: load_policy(Path(name)))
    else:
        settings = command_settings(ctx)
        loaded = _load(lambda: load_named(name, settings.folder("policies_dir"),
                                          named_by=("policy show", "NAME")))
    click.echo(render_table(loaded), nl=False)


def _load(read: Callable[[], Policy]) -> Policy:
    try:
        return read()
    except ConfigError as error:
        raise ConfigProblem(str(error)) from None
