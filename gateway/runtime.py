"""Assembling the gateway from its settings: one place that wires the parts.

Every process (``helpdesk serve``, ``helpdesk smtp``, a Dramatiq worker, the
sweeper) builds the same ``Runtime``; only which parts it runs differ.
"""

from __future__ import annotations

import hashlib
import socket
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Engine

from gateway.compose import Identity, Renderer
from gateway.database import Database
from gateway.decide import ReplyLimit
from gateway.pipeline import PipelineContext
from gateway.policy.loader import load_named
from gateway.policy.model import Policy
from gateway.relay import EmlFolder, SmtpRelay, Transport
from gateway.settings import Settings


@dataclass
class Runtime:
    settings: Settings
    database: Database
    pipeline: PipelineContext
    transport: Transport

    @property
    def engine(self) -> Engine:
        return self.database.engine

    def close(self) -> None:
        self.transport.close()
        self.database.dispose()


def loop_token(settings: Settings) -> str:
    """The value of our loop header: the same in every process of one installation."""
    return hashlib.sha256(f"helpdesk:{settings.sender_address}".encode()).hexdigest()[:16]


def make_transport(settings: Settings) -> Transport:
    relay = settings.relay
    if not relay.host:
        return EmlFolder(settings.outbox_dir)
    return SmtpRelay(
        relay.host, relay.port, tls=relay.tls, username=relay.username,
        password=relay.password, timeout=relay.timeout,
        end_of_data_timeout=relay.end_of_data_timeout,
        local_hostname=settings.smtp.hostname or socket.getfqdn(),
    )


def load_content(settings: Settings) -> tuple[Policy, Renderer]:
    """The policy and the mail templates the settings name, touching nothing else.

    Also for a process that starts others (``helpdesk worker``), to stop with
    one line where each of its children would stop with a traceback.
    Raises ``ConfigError`` when the policy or templates cannot be loaded.
    """
    policy = load_named(settings.policy, settings.folder("policies_dir"),
                        named_by=(settings.origin("policy"), "policy"))
    return policy, Renderer(settings.folder("templates_dir"))


def build_runtime(settings: Settings, *, pool_size: int = 10) -> Runtime:
    """Everything but the broker: database, policy, templates, identity, transport.

    ``pool_size``: how many of the process's threads may use the database at
    once (each holds one connection at a time); the pool keeps that many
    connections, and opens as many again when more are asked for.
    Raises ``ConfigError`` when the policy or templates cannot be loaded.
    """
    policy, renderer = load_content(settings)
    database = Database(settings.database_url, pool_size=pool_size)
    identity = Identity(
        sender=settings.sender_address,
        message_id_domain=settings.message_id_domain,
        loop_token=loop_token(settings),
    )
    pipeline = PipelineContext(
        database=database,
        policy=policy,
        renderer=renderer,
        identity=identity,
        number_format=settings.cases.number_format,
        own_addresses=frozenset({*settings.support.addresses, settings.sender_address.lower()}),
        reply_limits=(
            ReplyLimit(settings.auto_replies.per_10_minutes, timedelta(minutes=10), "10 minutes"),
            ReplyLimit(settings.auto_replies.per_10_hours, timedelta(hours=10), "10 hours"),
        ),
    )
    return Runtime(settings, database, pipeline, make_transport(settings))
