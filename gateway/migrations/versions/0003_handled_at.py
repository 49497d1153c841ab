"""inbound and outbox: when a person last acted on a row by hand

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from gateway.models import UtcDateTime

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ('inbound_messages', 'outbox'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('handled_at', UtcDateTime(), nullable=True))


def downgrade() -> None:
    for table in ('outbox', 'inbound_messages'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column('handled_at')
