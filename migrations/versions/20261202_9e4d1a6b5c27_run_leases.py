"""coderuns: lease_expires_at (a started run's worker keeps it alive) and executions

Revision ID: 9e4d1a6b5c27
Revises: 7b2f4c81d3e6
Create Date: 2026-12-02 16:00:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '9e4d1a6b5c27'
down_revision = '7b2f4c81d3e6'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('coderuns', sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('coderuns', sa.Column('executions', sa.Integer(), server_default=sa.text('0'), nullable=False))


def downgrade() -> None:
    op.drop_column('coderuns', 'executions')
    op.drop_column('coderuns', 'lease_expires_at')
