"""codelibs.version and codelibs.modules: what the engine image really ships

Revision ID: 8d41f0c2b6e3
Revises: 9e4d1a6b5c27
Create Date: 2026-12-02 15:00:00.000000
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql


revision = '8d41f0c2b6e3'
down_revision = '9e4d1a6b5c27'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('codelibs', sa.Column('version', sa.String(length=64), nullable=True))
    op.add_column('codelibs', sa.Column('modules', postgresql.JSONB(astext_type=sa.Text()), nullable=True))


def downgrade() -> None:
    op.drop_column('codelibs', 'modules')
    op.drop_column('codelibs', 'version')
