"""per-code warm environments

Revision ID: 5daa6342892c
Revises: c6a1e0b7d2f4
Create Date: 2026-11-29 15:00:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '5daa6342892c'
down_revision = 'c6a1e0b7d2f4'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('codes', sa.Column('warm', sa.Boolean(), server_default=sa.text('false'), nullable=False))


def downgrade() -> None:
    op.drop_column('codes', 'warm')
