"""codes.mode: pool | warm | resident (warm stays, true for warm and resident)

Revision ID: f1c8d2a4e6b7
Revises: 8d41f0c2b6e3
Create Date: 2026-12-02 20:00:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = 'f1c8d2a4e6b7'
down_revision = '8d41f0c2b6e3'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('codes', sa.Column('mode', sa.String(length=16), server_default='pool',
                                     nullable=False))
    op.execute("UPDATE codes SET mode = 'warm' WHERE warm")


def downgrade() -> None:
    op.drop_column('codes', 'mode')
