"""partial index for the stuck-run reaper

Revision ID: c6a1e0b7d2f4
Revises: c4a1b7e2d9f0
Create Date: 2026-11-29 15:00:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = 'c6a1e0b7d2f4'
down_revision = 'c4a1b7e2d9f0'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_coderuns_started_at_started', 'coderuns', ['started_at'], unique=False,
                    postgresql_where=sa.text("status = 'started'"))


def downgrade() -> None:
    op.drop_index('ix_coderuns_started_at_started', table_name='coderuns',
                  postgresql_where=sa.text("status = 'started'"))
