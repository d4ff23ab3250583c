"""code_log_chunks: a code's log list cut into counted chunks, so any page is found at once

A page of a code's logs was an OFFSET over the index (61 ms in the middle of 100,000 logs).
Now the list (ordered by created_at, seq, id, as before) is cut into chunks of at most
~1,000 logs, each counted: a page sums the code's chunks up to its rank and reads at most one
chunk's worth of the index from the chunk's first key (`shared.logs.chunks`).

The counts are kept by statement triggers with transition tables, like `code_log_counts`:
only rows really inserted or deleted are seen (an INSERT … ON CONFLICT DO NOTHING that skips
rows changes nothing), and a log is counted in the chunk its key falls in, whatever its time,
so older logs imported later move nothing else. They run after the count triggers of
20261129_b7e41c0d9a52 (triggers fire in name order), whose update of the code's count row
orders writers of one code: a split reads the chunk with every committed row in it.

Revision ID: a4d9e2c7b1f5
Revises: f1c8d2a4e6b7
Create Date: 2026-12-03 02:10:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = 'a4d9e2c7b1f5'
down_revision = 'f1c8d2a4e6b7'
branch_labels = None
depends_on = None

NIL = "'00000000-0000-0000-0000-000000000000'::uuid"
HALF = 500  # a chunk is split into chunks of HALF once it holds more than 2 × HALF logs


def upgrade() -> None:
    op.create_table(
        'code_log_chunks',
        sa.Column('code_id', sa.Uuid(), nullable=False),
        sa.Column('lo_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('lo_seq', sa.Integer(), nullable=False),
        sa.Column('lo_id', sa.Uuid(), nullable=False),
        sa.Column('n', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('code_id', 'lo_at', 'lo_seq', 'lo_id',
                                name=op.f('pk_code_log_chunks')),
    )
    # Existing logs: every HALF-th log of a code starts a chunk (the first at -infinity).
    op.execute(f"""
        INSERT INTO code_log_chunks (code_id, lo_at, lo_seq, lo_id, n)
        SELECT code_id,
               CASE WHEN k = 0 THEN '-infinity' ELSE created_at END,
               CASE WHEN k = 0 THEN 0 ELSE seq END,
               CASE WHEN k = 0 THEN {NIL} ELSE id END,
               least({HALF}, m - k)
        FROM (SELECT code_id, created_at, seq, id,
                     row_number() OVER (PARTITION BY code_id
                                        ORDER BY created_at, seq, id) - 1 AS k,
                     count(*) OVER (PARTITION BY code_id) AS m
              FROM codelogs) r
        WHERE k % {HALF} = 0
    """)
    # A chunk that grew too big becomes chunks of HALF: one pass over its range of the index.
    op.execute(f"""
        CREATE FUNCTION code_log_chunks_split(chunk code_log_chunks) RETURNS void
        LANGUAGE plpgsql AS $$
        DECLARE
            hi_at timestamptz;  -- the next chunk's key (none: past every log)
            hi_seq integer;
            hi_id uuid;
        BEGIN
            SELECT lo_at, lo_seq, lo_id INTO hi_at, hi_seq, hi_id FROM code_log_chunks c
            WHERE c.code_id = chunk.code_id
              AND (c.lo_at, c.lo_seq, c.lo_id) > (chunk.lo_at, chunk.lo_seq, chunk.lo_id)
            ORDER BY c.lo_at, c.lo_seq, c.lo_id LIMIT 1;
            IF NOT FOUND THEN
                hi_at := 'infinity'; hi_seq := 0; hi_id := {NIL};
            END IF;
            INSERT INTO code_log_chunks (code_id, lo_at, lo_seq, lo_id, n)
            SELECT chunk.code_id, created_at, seq, id, least({HALF}, chunk.n - k)
            FROM (SELECT created_at, seq, id,
                         row_number() OVER (ORDER BY created_at, seq, id) - 1 AS k
                  FROM codelogs l
                  WHERE l.code_id = chunk.code_id
                    AND (l.created_at, l.seq, l.id) >= (chunk.lo_at, chunk.lo_seq, chunk.lo_id)
                    AND (l.created_at, l.seq, l.id) < (hi_at, hi_seq, hi_id)) r
            WHERE k > 0 AND k % {HALF} = 0;
            UPDATE code_log_chunks c SET n = {HALF}
            WHERE (c.code_id, c.lo_at, c.lo_seq, c.lo_id)
                = (chunk.code_id, chunk.lo_at, chunk.lo_seq, chunk.lo_id);
        END $$
    """)
    # Each inserted log counts in the last chunk starting at or before its key.
    op.execute(f"""
        CREATE FUNCTION code_log_chunks_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            grown code_log_chunks;
        BEGIN
            -- A code's first log makes its first chunk (the upsert); RETURNING holds every
            -- row of the statement before the loop splits any chunk.
            FOR grown IN
                INSERT INTO code_log_chunks AS c (code_id, lo_at, lo_seq, lo_id, n)
                SELECT i.code_id, coalesce(h.lo_at, '-infinity'), coalesce(h.lo_seq, 0),
                       coalesce(h.lo_id, {NIL}), count(*)
                FROM inserted i LEFT JOIN LATERAL (
                    SELECT lo_at, lo_seq, lo_id FROM code_log_chunks h
                    WHERE h.code_id = i.code_id
                      AND (h.lo_at, h.lo_seq, h.lo_id) <= (i.created_at, i.seq, i.id)
                    ORDER BY h.lo_at DESC, h.lo_seq DESC, h.lo_id DESC LIMIT 1) h ON true
                GROUP BY 1, 2, 3, 4
                ON CONFLICT (code_id, lo_at, lo_seq, lo_id) DO UPDATE SET n = c.n + EXCLUDED.n
                RETURNING c.*
            LOOP
                IF grown.n > 2 * {HALF} THEN
                    PERFORM code_log_chunks_split(grown);
                END IF;
            END LOOP;
            RETURN NULL;
        END $$
    """)
    op.execute("""
        CREATE FUNCTION code_log_chunks_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE code_log_chunks c SET n = c.n - a.k
            FROM (SELECT d.code_id, h.lo_at, h.lo_seq, h.lo_id, count(*) AS k
                  FROM deleted d CROSS JOIN LATERAL (
                      SELECT lo_at, lo_seq, lo_id FROM code_log_chunks h
                      WHERE h.code_id = d.code_id
                        AND (h.lo_at, h.lo_seq, h.lo_id) <= (d.created_at, d.seq, d.id)
                      ORDER BY h.lo_at DESC, h.lo_seq DESC, h.lo_id DESC LIMIT 1) h
                  GROUP BY 1, 2, 3, 4) a
            WHERE (c.code_id, c.lo_at, c.lo_seq, c.lo_id)
                = (a.code_id, a.lo_at, a.lo_seq, a.lo_id);
            -- An empty chunk goes (its range joins the one before); the first chunk goes
            -- with the code's last log.
            DELETE FROM code_log_chunks c USING (SELECT DISTINCT code_id FROM deleted) d
            WHERE c.code_id = d.code_id AND c.n <= 0
              AND (isfinite(c.lo_at) OR NOT EXISTS (
                  SELECT 1 FROM code_log_chunks o WHERE o.code_id = c.code_id AND o.n > 0));
            RETURN NULL;
        END $$
    """)
    # Names after codelogs_count_*: triggers of one event fire in name order.
    op.execute("""
        CREATE TRIGGER codelogs_count_z_chunks_inserted AFTER INSERT ON codelogs
        REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT
        EXECUTE FUNCTION code_log_chunks_inserted()
    """)
    op.execute("""
        CREATE TRIGGER codelogs_count_z_chunks_deleted AFTER DELETE ON codelogs
        REFERENCING OLD TABLE AS deleted FOR EACH STATEMENT
        EXECUTE FUNCTION code_log_chunks_deleted()
    """)
    # A log's key never changes (nothing updates it): were it to, its chunk's count would be
    # wrong, so such an UPDATE is refused rather than left to drift.
    op.execute("""
        CREATE FUNCTION codelogs_key_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'codelogs: code_id, created_at, seq and id are fixed once stored';
        END $$
    """)
    op.execute("""
        CREATE TRIGGER codelogs_key_fixed BEFORE UPDATE OF code_id, created_at, seq, id
        ON codelogs FOR EACH ROW
        WHEN ((OLD.code_id, OLD.created_at, OLD.seq, OLD.id)
              IS DISTINCT FROM (NEW.code_id, NEW.created_at, NEW.seq, NEW.id))
        EXECUTE FUNCTION codelogs_key_fixed()
    """)


def downgrade() -> None:
    op.execute("DROP TRIGGER codelogs_key_fixed ON codelogs")
    op.execute("DROP FUNCTION codelogs_key_fixed()")
    op.execute("DROP TRIGGER codelogs_count_z_chunks_deleted ON codelogs")
    op.execute("DROP TRIGGER codelogs_count_z_chunks_inserted ON codelogs")
    op.execute("DROP FUNCTION code_log_chunks_deleted()")
    op.execute("DROP FUNCTION code_log_chunks_inserted()")
    op.execute("DROP FUNCTION code_log_chunks_split(code_log_chunks)")
    op.drop_table('code_log_chunks')
