"""Profile loads in tests: a file imported through the store, and what the profile table
then holds (tests/test_profile_load.py, tests/test_reader_process.py)."""

from __future__ import annotations

import io

import sqlalchemy as sa
from sqlmodel import Session

from store import imports, profiles
from store.db import transaction
from store.models import Profile


def import_file(engine, actor, database: str, data: bytes) -> imports.ImportResult:
    """`import profiles` of this file's bytes into `database`, in one transaction."""
    with transaction(engine) as session:
        db = profiles.get_database(session, database)
        return imports.import_profiles(session, actor, db, io.BytesIO(data))


def stored_profiles(engine, database: str, *columns: str) -> dict[str, tuple]:
    """{external_id: (the profile's `columns`)} of every profile of `database`."""
    with Session(engine) as session:
        db = profiles.get_database(session, database)
        rows = session.scalars(sa.select(Profile).where(Profile.database_id == db.id)).all()
        return {p.external_id: tuple(getattr(p, c) for c in columns) for p in rows}
