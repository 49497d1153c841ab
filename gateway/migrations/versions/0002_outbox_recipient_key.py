"""outbox: the recipient that automatic mail is counted by

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

from gateway.models import UtcDateTime

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('recipient_key', sa.String(length=320), nullable=True))
        batch_op.create_index(
            'ix_outbox_recipient_created', ['recipient_key', 'created_at'], unique=False
        )
    # The last day's rows are counted too (the longest window is ten hours): a loop
    # running during the upgrade goes on being limited. The JSON list is read here,
    # the same way on either database.
    outbox = sa.table(
        'outbox', sa.column('id', sa.Integer), sa.column('recipients', sa.JSON),
        sa.column('recipient_key', sa.String), sa.column('created_at', UtcDateTime()),
    )
    since = datetime.now(UTC) - timedelta(days=1)
    connection = op.get_bind()
    recent = sa.select(outbox.c.id, outbox.c.recipients).where(outbox.c.created_at >= since)
    for row_id, recipients in connection.execute(recent).all():
        if recipients:
            connection.execute(
                outbox.update().where(outbox.c.id == row_id)
                .values(recipient_key=str(recipients[0]).lower())
            )


def downgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_recipient_created')
        batch_op.drop_column('recipient_key')
