"""`codeactions migrate [--dry-run]`: our Alembic chain, or, on the Go service's database,
its conversion (shared/adoption/conversion.py) in one transaction. Anything else that is
not ours is refused untouched."""

from __future__ import annotations

from typing import TextIO

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, pool, text

from shared.adoption.conversion import AdoptionError, adopt, make_plan
from shared.adoption.legacy_schema import EMPTY, GO_SERVICE, OURS, REFUSED, inspect_database
from shared.settings import Settings


def run_migrate(
    settings: Settings, alembic_ini: str, revision: str, dry_run: bool, out: TextIO,
    err: TextIO,
) -> int:
    """0 when the database is (or, dry, would be) at `revision`; 2 when it is refused."""
    config = Config(alembic_ini)
    config.set_main_option("sqlalchemy.url", settings.sqlalchemy_url)
    engine = create_engine(settings.sqlalchemy_url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(text("SET TRANSACTION READ ONLY"))
            state = inspect_database(connection)
            if state.kind == REFUSED:
                print(f"migrate: refused, nothing changed: {state.reason}", file=err)
                return 2
            if dry_run:
                _print_dry_run(connection, config, state.kind, revision, out)
                return 0
            connection.rollback()
        if state.kind == GO_SERVICE:
            return _adopt(engine, config, revision, out, err)
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
        return 0
    finally:
        engine.dispose()


def _adopt(engine, config: Config, revision: str, out: TextIO, err: TextIO) -> int:  # noqa: ANN001
    if revision != "head":
        print("migrate: the Go service's database is converted to head only; run "
              "`codeactions migrate` without a revision", file=err)
        return 2
    try:
        with engine.begin() as connection:  # one transaction: all of it, or nothing
            plan = adopt(connection, config, revision)
    except AdoptionError as exc:
        print(f"migrate: refused, nothing changed: {exc}", file=err)
        return 2
    for line in plan.lines(done=True):
        print(line, file=out)
    return 0


def _print_dry_run(connection, config: Config, kind: str, revision: str, out: TextIO) -> None:  # noqa: ANN001
    script = ScriptDirectory.from_config(config)
    if kind == GO_SERVICE:
        for line in make_plan(connection, connection.execute(
                text("SELECT current_schema()")).scalar_one()).lines(done=False):
            print(line, file=out)
        current: tuple[str, ...] = ()
    else:
        current = MigrationContext.configure(connection).get_current_heads() if kind == OURS \
            else ()
        state = ", ".join(current) if current else ("empty" if kind == EMPTY else "none")
        print(f"Database at revision: {state}", file=out)
    pending = list(script.iterate_revisions(revision, current or "base"))
    if not pending:
        print("Nothing to migrate: the database is at the target revision.", file=out)
        return
    print(f"Would apply {len(pending)} migration(s), oldest first:", file=out)
    for step in reversed(pending):
        title = (step.doc or "").splitlines()[0] if step.doc else ""
        print(f"  {step.revision}  {title}", file=out)
    print("Dry run: nothing was changed.", file=out)
