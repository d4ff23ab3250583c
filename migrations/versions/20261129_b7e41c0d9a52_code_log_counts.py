"""code log counts kept by triggers; codelogs index with id

A page of a code's logs reads its total from `code_log_counts` (exact: statement-level
triggers on insert and delete) and its ids from the index alone. Autovacuum visits the
insert-only `codelogs` often so index-only scans stay index-only.

Revision ID: b7e41c0d9a52
Revises: 5daa6342892c
Create Date: 2026-11-29 16:40:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = 'b7e41c0d9a52'
down_revision = '5daa6342892c'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'code_log_counts',
        sa.Column('code_id', sa.Uuid(), nullable=False),
        sa.Column('total', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('code_id', name=op.f('pk_code_log_counts')),
    )
    op.execute("""
        INSERT INTO code_log_counts (code_id, total)
        SELECT code_id, count(*) FROM codelogs GROUP BY code_id
    """)
    op.execute("""
        CREATE FUNCTION codelogs_count_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO code_log_counts (code_id, total)
            SELECT code_id, count(*) FROM inserted GROUP BY code_id
            ON CONFLICT (code_id) DO UPDATE SET total = code_log_counts.total + EXCLUDED.total;
            RETURN NULL;
        END $$
    """)
    op.execute("""
        CREATE FUNCTION codelogs_count_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE code_log_counts c SET total = c.total - d.n
            FROM (SELECT code_id, count(*) AS n FROM deleted GROUP BY code_id) d
            WHERE c.code_id = d.code_id;
            DELETE FROM code_log_counts c USING (SELECT DISTINCT code_id FROM deleted) d
            WHERE c.code_id = d.code_id AND c.total <= 0;
            RETURN NULL;
        END $$
    """)
    op.execute("""
        CREATE TRIGGER codelogs_count_inserted AFTER INSERT ON codelogs
        REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT
        EXECUTE FUNCTION codelogs_count_inserted()
    """)
    op.execute("""
        CREATE TRIGGER codelogs_count_deleted AFTER DELETE ON codelogs
        REFERENCING OLD TABLE AS deleted FOR EACH STATEMENT
        EXECUTE FUNCTION codelogs_count_deleted()
    """)
    op.drop_index('ix_codelogs_code_id_created_at_seq', table_name='codelogs')
    op.create_index('ix_codelogs_code_id_created_at_seq_id', 'codelogs',
                    ['code_id', 'created_at', 'seq', 'id'], unique=False)
    op.execute("ALTER TABLE codelogs SET (autovacuum_vacuum_insert_threshold = 10000, "
               "autovacuum_vacuum_insert_scale_factor = 0)")


def downgrade() -> None:
    op.execute("ALTER TABLE codelogs RESET (autovacuum_vacuum_insert_threshold, "
               "autovacuum_vacuum_insert_scale_factor)")
    op.drop_index('ix_codelogs_code_id_created_at_seq_id', table_name='codelogs')
    op.create_index('ix_codelogs_code_id_created_at_seq', 'codelogs',
                    ['code_id', 'created_at', 'seq'], unique=False)
    op.execute("DROP TRIGGER codelogs_count_deleted ON codelogs")
    op.execute("DROP TRIGGER codelogs_count_inserted ON codelogs")
    op.execute("DROP FUNCTION codelogs_count_deleted()")
    op.execute("DROP FUNCTION codelogs_count_inserted()")
    op.drop_table('code_log_counts')
