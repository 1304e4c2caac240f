"""Profile databases and their declared fields."""

from __future__ import annotations

import re

import sqlalchemy as sa
from sqlmodel import Session

from store import audit
from store.actors import Actor
from store.errors import NotFoundError, ValidationError
from store.models import FIELD_TYPES, SLOTS, Profile, ProfileDatabase, ProfileField
from store.names import check_name

FIELD_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
RESERVED_FIELD_NAMES = {"external_id", "id", "database_id", "in_gcg", "created_at"}


def parse_field_spec(spec: str) -> list[tuple[str, str]]:
    """'region:text,tier:int' -> [('region', 'text'), ('tier', 'int')]."""
    fields: list[tuple[str, str]] = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, ftype = part.partition(":")
        if not sep:
            raise ValidationError(
                f"field {part!r}: write NAME:TYPE with TYPE one of {', '.join(FIELD_TYPES)}"
            )
        fields.append((name.strip(), ftype.strip()))
    return fields


@audit.operation("database.create", "database")
def create_database(
    session: Session, actor: Actor, name: str, fields: list[tuple[str, str]] | str
) -> ProfileDatabase:
    """Declare a profile database and its typed fields (a list of (name, type) or the
    NAME:TYPE,... text of the CLI); each field gets a slot column."""
    actor.require_write("create a profile database")
    if isinstance(fields, str):
        fields = parse_field_spec(fields)
    name = check_name("profile database", name)
    if session.scalar(sa.select(ProfileDatabase).where(ProfileDatabase.name == name)):
        raise ValidationError(f"profile database {name!r} already exists")
    used: dict[str, int] = {t: 0 for t in FIELD_TYPES}
    seen: set[str] = set()
    rows: list[ProfileField] = []
    for position, (fname, ftype) in enumerate(fields):
        if not FIELD_NAME.match(fname) or fname in RESERVED_FIELD_NAMES:
            raise ValidationError(
                f"field name {fname!r} is not allowed: use lower-case letters, digits and _ "
                f"(not {', '.join(sorted(RESERVED_FIELD_NAMES))})"
            )
        if fname in seen:
            raise ValidationError(f"field {fname!r} is declared twice")
        if ftype not in FIELD_TYPES:
            raise ValidationError(
                f"field {fname!r}: unknown type {ftype!r}; use one of {', '.join(FIELD_TYPES)}"
            )
        if used[ftype] >= len(SLOTS[ftype]):
            raise ValidationError(
                f"too many {ftype} fields: a database holds at most {len(SLOTS[ftype])}"
            )
        seen.add(fname)
        rows.append(
            ProfileField(name=fname, type=ftype, slot=SLOTS[ftype][used[ftype]], position=position)
        )
        used[ftype] += 1
    database = ProfileDatabase(name=name)
    session.add(database)
    session.flush()
    for row in rows:
        row.database_id = database.id
        session.add(row)
    audit.record(
        session,
        actor,
        "database.create",
        "database",
        database.id,
        name,
        fields={f: t for f, t in fields},
    )
    session.flush()
    return database


def get_database(session: Session, name: str) -> ProfileDatabase:
    database = session.scalar(sa.select(ProfileDatabase).where(ProfileDatabase.name == name))
    if database is None:
        raise NotFoundError(f"no profile database named {name!r}")
    return database


def get_profile(session: Session, database: ProfileDatabase, external_id: str) -> Profile:
    """The profile of `database` with this external id; NotFoundError when it has none."""
    profile = session.scalar(
        sa.select(Profile).where(
            Profile.database_id == database.id, Profile.external_id == external_id
        )
    )
    if profile is None:
        raise NotFoundError(
            f"no profile with external id {external_id!r} in database {database.name!r}"
        )
    return profile


def database_fields(session: Session, database_id: int) -> list[ProfileField]:
    return list(
        session.scalars(
            sa.select(ProfileField)
            .where(ProfileField.database_id == database_id)
            .order_by(ProfileField.position)
        )
    )
