"""The `codelibs` table mirrors what each engine image ships (engines/<lang>/libraries.txt)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from shared.codelibs.model import CodeLib
from shared.db import Database
from shared.settings import LANGUAGES, Settings

ENGINES_DIR = Path(__file__).resolve().parent.parent.parent / "engines"


def shipped_libraries() -> dict[str, list[str]]:
    libraries: dict[str, list[str]] = {}
    for language in LANGUAGES:
        listing = ENGINES_DIR / language / "libraries.txt"
        if listing.exists():
            names = [line.split("#")[0].strip() for line in listing.read_text().splitlines()]
            libraries[language] = sorted({name for name in names if name})
    return libraries


def sync_catalog(settings: Settings) -> int:
    """Add every shipped library not yet listed and drop those no image ships any more."""
    db = Database(settings)
    try:
        with db.session() as session:
            shipped = shipped_libraries()
            existing = {(lib.name, lib.language): lib for lib in session.scalars(select(CodeLib))}
            wanted = {(name, lang) for lang, names in shipped.items() for name in names}
            for key in wanted - existing.keys():
                session.add(CodeLib(name=key[0], language=key[1]))
            for key in existing.keys() - wanted:
                if key[1] in shipped:
                    session.delete(existing[key])
            session.commit()
            return len(wanted)
    finally:
        db.dispose()
