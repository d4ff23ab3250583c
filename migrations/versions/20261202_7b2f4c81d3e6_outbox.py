"""outbox: durable after-commit steps (shared/after_commit)

Revision ID: 7b2f4c81d3e6
Revises: 60cd7de67b7b
Create Date: 2026-12-02 15:00:00.000000
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql


revision = '7b2f4c81d3e6'
down_revision = '60cd7de67b7b'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'outbox',
        sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column('kind', sa.String(length=32), nullable=False),
        sa.Column('run_id', sa.Uuid(), nullable=False),
        sa.Column('args', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('due_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox')),
    )
    op.create_index('ix_outbox_due_at', 'outbox', ['due_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_outbox_due_at', table_name='outbox')
    op.drop_table('outbox')
