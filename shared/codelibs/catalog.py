"""The `codelibs` table mirrors what each engine image ships.

Two sources, never both for one language:
- an image that installs packages says what it has, with versions, in its build-time manifest
  (Python: engines/python/manifest.py); the worker reads it out of the image it runs and calls
  `sync_language` at start;
- an engine whose library is built in (JavaScript's Node modules, Go's standard library) lists
  it by hand in engines/<language>/libraries.txt; `codeactions migrate` syncs those
  (`sync_listed`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import delete, func, or_, select
from sqlalchemy.dialects.postgresql import insert

from shared.codelibs.model import CodeLib
from shared.db import Database
from shared.settings import LANGUAGES, Settings

ENGINES_DIR = Path(__file__).resolve().parent.parent.parent / "engines"


@dataclass(frozen=True)
class Library:
    name: str
    version: str | None = None
    modules: tuple[str, ...] | None = None


def listed_libraries() -> dict[str, list[Library]]:
    """The hand-written lists: language -> libraries, for engines with a libraries.txt."""
    libraries: dict[str, list[Library]] = {}
    for language in LANGUAGES:
        listing = ENGINES_DIR / language / "libraries.txt"
        if listing.exists():
            names = [line.split("#")[0].strip() for line in listing.read_text().splitlines()]
            libraries[language] = [Library(name) for name in sorted({n for n in names if n})]
    return libraries


def sync_language(db: Database, language: str, libraries: list[Library]) -> int:
    """Make the language's catalog rows exactly `libraries` (added, versions updated, the
    rest dropped) in one transaction; safe when several workers start at once.

    Only rows the sync made itself (`catalog`) are ever dropped: an operator's rows, and those
    adopted from the Go service, stay whatever the images ship (their version is updated
    when an image ships the same library)."""
    wanted = {library.name: library for library in libraries}
    with db.session() as session:
        if wanted:
            rows = [
                {"id": uuid.uuid4(), "name": lib.name, "language": language,
                 "version": lib.version, "catalog": True,
                 "modules": list(lib.modules) if lib.modules is not None else None}
                for lib in wanted.values()
            ]
            statement = insert(CodeLib).values(rows)
            changed = or_(
                CodeLib.version.is_distinct_from(statement.excluded.version),
                CodeLib.modules.is_distinct_from(statement.excluded.modules),
            )
            session.execute(statement.on_conflict_do_update(  # a row only when it changed
                constraint="uq_codelibs_name_language",
                set_={"version": statement.excluded.version,
                      "modules": statement.excluded.modules,
                      "updated_at": func.now()},
                where=changed,
            ))
        stale = delete(CodeLib).where(CodeLib.language == language, CodeLib.catalog)
        if wanted:
            stale = stale.where(CodeLib.name.not_in(list(wanted)))
        session.execute(stale)
        session.commit()
    return len(wanted)


def sync_listed(settings: Settings) -> int:
    """Sync every language that lists its libraries by hand (engines/<language>/libraries.txt)."""
    db = Database(settings)
    try:
        return sum(
            sync_language(db, language, libraries)
            for language, libraries in listed_libraries().items()
        )
    finally:
        db.dispose()


def list_libraries(db: Database, language: str | None) -> list[CodeLib]:
    statement = select(CodeLib).order_by(CodeLib.language, CodeLib.name)
    if language:
        statement = statement.where(CodeLib.language == language)
    with db.session() as session:
        return list(session.scalars(statement))
