"""codelogs.position: a code's logs numbered 1..n in the order stored, so any page is a range

A page of a code's logs is `position BETWEEN a AND b` (constant time at any page) instead of
an OFFSET over the index (61 ms in the middle of 100,000 logs). Positions are handed out from
`code_log_counts.last_position` (its row lock orders concurrent writers of one code); the
worker reserves a run's block in one statement, any other INSERT without a position gets one
from a row trigger. A deletion that leaves a hole inside a code's list closes it (the rows
above move down); a deletion of the oldest logs (retention) leaves no hole and moves nothing.
Existing rows are numbered in their former order (time, position in the run, id).

Revision ID: e5a7c3f1b9d4
Revises: 8d41f0c2b6e3
Create Date: 2026-12-02 19:40:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = 'e5a7c3f1b9d4'
down_revision = '8d41f0c2b6e3'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('codelogs', sa.Column('position', sa.BigInteger(), nullable=True))
    op.add_column('code_log_counts', sa.Column('last_position', sa.BigInteger(),
                                               server_default='0', nullable=False))
    op.execute("""
        UPDATE codelogs l SET position = r.n
        FROM (SELECT id, row_number() OVER (PARTITION BY code_id
                                            ORDER BY created_at, seq, id) AS n
              FROM codelogs) r
        WHERE l.id = r.id
    """)
    op.execute("""
        UPDATE code_log_counts c SET last_position = m.top
        FROM (SELECT code_id, max(position) AS top FROM codelogs GROUP BY code_id) m
        WHERE c.code_id = m.code_id
    """)
    op.alter_column('codelogs', 'position', nullable=False)
    # Updating the count's row once per log would leave one row version per log in the
    # transaction (an INSERT of 100,000 logs: minutes). So the first row of a statement
    # reserves one position (and locks the row), the next rows count on from a
    # transaction-local setting keyed by the statement's time, and the statement trigger
    # below raises `last_position` to the highest position inserted.
    op.execute("""
        CREATE FUNCTION codelogs_position() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            key text := 'codeactions.position_' || replace(NEW.code_id::text, '-', '');
            mark text := statement_timestamp()::text || '|';
            held text := current_setting(key, true);
        BEGIN
            IF held IS NOT NULL AND starts_with(held, mark) THEN
                NEW.position := substr(held, length(mark) + 1)::bigint + 1;
            ELSE
                INSERT INTO code_log_counts AS c (code_id, total, last_position)
                VALUES (NEW.code_id, 0, 1)
                ON CONFLICT (code_id) DO UPDATE SET last_position = c.last_position + 1
                RETURNING c.last_position INTO NEW.position;
            END IF;
            PERFORM set_config(key, mark || NEW.position::text, true);
            RETURN NEW;
        END $$
    """)
    op.execute("""
        CREATE OR REPLACE FUNCTION codelogs_count_inserted() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO code_log_counts AS c (code_id, total, last_position)
            SELECT code_id, count(*), max(position) FROM inserted GROUP BY code_id
            ON CONFLICT (code_id) DO UPDATE SET
                total = c.total + EXCLUDED.total,
                last_position = greatest(c.last_position, EXCLUDED.last_position);
            RETURN NULL;
        END $$
    """)
    op.execute("""
        CREATE TRIGGER codelogs_position BEFORE INSERT ON codelogs
        FOR EACH ROW WHEN (NEW.position IS NULL) EXECUTE FUNCTION codelogs_position()
    """)
    # The count's row is updated (locked) first: a writer of the same code that reserved
    # positions has committed by then, so the renumbering below sees its rows.
    op.execute("""
        CREATE OR REPLACE FUNCTION codelogs_count_deleted() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE code_log_counts c SET total = c.total - d.n
            FROM (SELECT code_id, count(*) AS n FROM deleted GROUP BY code_id) d
            WHERE c.code_id = d.code_id;
            DELETE FROM code_log_counts c USING (SELECT DISTINCT code_id FROM deleted) d
            WHERE c.code_id = d.code_id AND c.total <= 0;
            -- A hole inside the list (rows left below the highest deleted position): the
            -- rows above the lowest deleted position move down by the deleted rows below them.
            UPDATE codelogs l SET position = l.position - (
                SELECT count(*) FROM deleted d
                WHERE d.code_id = l.code_id AND d.position < l.position)
            FROM (SELECT code_id, min(position) AS lo, max(position) AS hi
                  FROM deleted GROUP BY code_id) g
            WHERE l.code_id = g.code_id AND l.position > g.lo
              AND EXISTS (SELECT 1 FROM codelogs r
                          WHERE r.code_id = g.code_id AND r.position < g.hi);
            UPDATE code_log_counts c SET last_position = m.top
            FROM (SELECT d.code_id, (SELECT max(position) FROM codelogs l
                                     WHERE l.code_id = d.code_id) AS top
                  FROM (SELECT DISTINCT code_id FROM deleted) d) m
            WHERE c.code_id = m.code_id AND m.top IS NOT NULL AND c.last_position > m.top;
            RETURN NULL;
        END $$
    """)
    op.drop_index('ix_codelogs_code_id_created_at_seq_id', table_name='codelogs')
    op.create_index('ix_codelogs_code_id_position_id', 'codelogs',
                    ['code_id', 'position', 'id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_codelogs_code_id_position_id', table_name='codelogs')
    op.create_index('ix_codelogs_code_id_created_at_seq_id', 'codelogs',
                    ['code_id', 'created_at', 'seq', 'id'], unique=False)
    op.execute("""
        CREATE OR REPLACE FUNCTION codelogs_count_deleted() RETURNS trigger
        LANGUAGE plpgsql AS $$
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
        CREATE OR REPLACE FUNCTION codelogs_count_inserted() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO code_log_counts (code_id, total)
            SELECT code_id, count(*) FROM inserted GROUP BY code_id
            ON CONFLICT (code_id) DO UPDATE SET total = code_log_counts.total + EXCLUDED.total;
            RETURN NULL;
        END $$
    """)
    op.execute("DROP TRIGGER codelogs_position ON codelogs")
    op.execute("DROP FUNCTION codelogs_position()")
    op.drop_column('code_log_counts', 'last_position')
    op.drop_column('codelogs', 'position')
