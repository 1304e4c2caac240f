"""Loads in tests: a file imported through the store, and what the profile table or a
segment then holds (tests/test_profile_load.py, tests/test_reader_process.py,
tests/test_imports.py, tests/test_segment_file_copy.py)."""

from __future__ import annotations

import io

import sqlalchemy as sa
from sqlmodel import Session

from store import imports, profiles, segments
from store.db import transaction
from store.models import Profile, ProfileDatabase, SegmentMember


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


def segment_members(engine, segment: str) -> list[str]:
    """The open members of `segment`, as sorted "database:external_id"."""
    with Session(engine) as session:
        seg = segments.get_segment(session, segment)
        rows = session.execute(
            sa.select(ProfileDatabase.name, Profile.external_id)
            .select_from(SegmentMember)
            .join(Profile, Profile.id == SegmentMember.profile_id)
            .join(ProfileDatabase, ProfileDatabase.id == Profile.database_id)
            .where(SegmentMember.segment_id == seg.id, SegmentMember.left_at.is_(None))
        ).all()
        return sorted(f"{db}:{ext}" for db, ext in rows)
