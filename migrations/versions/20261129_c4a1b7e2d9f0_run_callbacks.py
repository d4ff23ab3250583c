"""run callbacks: where a finished run is POSTed and each attempt

Revision ID: c4a1b7e2d9f0
Revises: 9f2132d7ec73
Create Date: 2026-11-29 15:00:00
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql


revision = 'c4a1b7e2d9f0'
down_revision = '9f2132d7ec73'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('coderuns', sa.Column('callback', postgresql.JSONB(astext_type=sa.Text()), nullable=True))


def downgrade() -> None:
    op.drop_column('coderuns', 'callback')
