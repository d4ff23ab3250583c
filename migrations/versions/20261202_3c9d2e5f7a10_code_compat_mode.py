"""codes.compat: strict (ours) or legacy (the Go service's engine leniency)

Revision ID: 3c9d2e5f7a10
Revises: b7e41c0d9a52
Create Date: 2026-12-02 13:30:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '3c9d2e5f7a10'
down_revision = 'b7e41c0d9a52'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('codes', sa.Column('compat', sa.String(length=16), server_default='strict', nullable=False))
    op.create_check_constraint(op.f('ck_codes_compat'), 'codes', "compat IN ('strict', 'legacy')")


def downgrade() -> None:
    op.drop_constraint(op.f('ck_codes_compat'), 'codes', type_='check')
    op.drop_column('codes', 'compat')
