"""adoption of the Go service: legacy ids on every table, catalog-owned codelibs, runs by their
code's legacy id, project ids that were not UUIDs, import checkpoints

Revision ID: 60cd7de67b7b
Revises: 3c9d2e5f7a10
Create Date: 2026-12-02 16:00:00.000000
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql


revision = '60cd7de67b7b'
down_revision = '3c9d2e5f7a10'
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ('codelibs', 'projects', 'user_permissions'):
        op.add_column(table, sa.Column('mongo_object_id', sa.Text(), nullable=True))
        op.create_unique_constraint(op.f(f'uq_{table}_mongo_object_id'), table, ['mongo_object_id'])
    op.add_column('codelibs', sa.Column('catalog', sa.Boolean(), server_default=sa.text('false'), nullable=False))
    # Until now only the catalog sync wrote codelibs rows: they are all its own.
    op.execute("UPDATE codelibs SET catalog = true")
    op.create_index('ix_coderuns_code_mongo_id', 'coderuns', ['code_mongo_id'], unique=False,
                    postgresql_where=sa.text('code_mongo_id IS NOT NULL'))
    op.create_table(
        'legacy_project_ids',
        sa.Column('uuid', sa.Uuid(), nullable=False),
        sa.Column('original', sa.Text(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.PrimaryKeyConstraint('uuid', name=op.f('pk_legacy_project_ids')),
        sa.UniqueConstraint('original', name=op.f('uq_legacy_project_ids_original')),
    )
    op.create_table(
        'import_checkpoints',
        sa.Column('name', sa.Text(), nullable=False),
        sa.Column('position', sa.Text(), nullable=True),
        sa.Column('counters', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_import_checkpoints')),
    )


def downgrade() -> None:
    op.drop_table('import_checkpoints')
    op.drop_table('legacy_project_ids')
    op.drop_index('ix_coderuns_code_mongo_id', table_name='coderuns',
                  postgresql_where=sa.text('code_mongo_id IS NOT NULL'))
    op.drop_column('codelibs', 'catalog')
    for table in ('codelibs', 'projects', 'user_permissions'):
        op.drop_constraint(op.f(f'uq_{table}_mongo_object_id'), table, type_='unique')
        op.drop_column(table, 'mongo_object_id')
