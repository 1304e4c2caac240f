"""A small deterministic workspace for console tests, built through the store's operations.

Profiles are inserted set-based (one INSERT … SELECT over a number series); segments,
campaigns, activation, builds and mailings go through store/ exactly as an operator's
actions would. Campaign seeds are fixed, so the splits are the same on every run.
`freeze_clock` then stamps every stored time with one fixed instant, so SVG snapshots
do not depend on when the test ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from store import profiles, segments
from store.actors import Actor
from store.db import transaction
from store.models import SQLModel, UTCDateTime

FROZEN_AT = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)
ADMIN = Actor(user="alice", role="operator", origin="local")
DATABASE = "shop"
FIELDS = [("region", "text"), ("tier", "int"), ("age", "int"), ("score", "float")]


@dataclass(frozen=True)
class Workspace:
    url: str
    engine: Engine
    profiles: int


def _series(dialect: str) -> str:
    if dialect == "postgresql":
        return "n(x) AS (SELECT generate_series(1, :n) AS x)"
    return "n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < :n)"


def insert_profiles(engine: Engine, database_id: int, count: int) -> None:
    """`count` profiles P00001…, fields derived from the row number (no randomness)."""
    dialect = engine.dialect.name
    ext = "'P' || lpad(x::text, 5, '0')" if dialect == "postgresql" else "'P' || printf('%05d', x)"
    with transaction(engine) as session:
        slots = {f.name: f.slot for f in profiles.database_fields(session, database_id)}
        session.execute(
            sa.text(
                f"""
                INSERT INTO profile (database_id, external_id, hash_key, in_gcg, created_at,
                    {slots["region"]}, {slots["tier"]}, {slots["age"]}, {slots["score"]})
                WITH RECURSIVE {_series(dialect)}
                SELECT :db, {ext}, cc_profile_key({ext}), false, :now,
                       CASE x % 3 WHEN 0 THEN 'North' WHEN 1 THEN 'South' ELSE 'West' END,
                       CASE WHEN x % 4 = 0 THEN 2 ELSE 1 END,
                       18 + (x * 7) % 50,
                       (x % 100) / 10.0
                FROM n
                """
            ).bindparams(sa.bindparam("now", type_=UTCDateTime())),
            {"db": database_id, "n": count, "now": FROZEN_AT},
        )
        database = profiles.get_database(session, DATABASE)
        database.profile_count = count
        session.add(database)


def build_workspace(url: str, *, n_profiles: int = 1200, actor: Actor = ADMIN) -> Workspace:
    """Database `shop`; segments; four campaigns in every status; mailings; frozen clock."""
    from store import builds, campaigns, mailings
    from store.db import create_workspace

    engine = create_workspace(url)  # what `init` runs (issue 15.7)
    with transaction(engine) as session:
        database = profiles.create_database(session, actor, DATABASE, FIELDS)
        database_id = database.id
    insert_profiles(engine, database_id, n_profiles)

    with transaction(engine) as session:
        database = profiles.get_database(session, DATABASE)
        everyone = segments.create_segment(session, actor, "all-shoppers")
        north = segments.create_segment(session, actor, "north-shoppers")
        segments.create_segment(session, actor, "young", database=database, rule="age < 30")
        session.flush()
        segments.add_profiles_where(
            session, actor, everyone, sa.text("database_id = :db").bindparams(db=database_id)
        )
        segments.add_profiles_where(
            session,
            actor,
            north,
            sa.text(f"database_id = :db AND {_slot(session, 'region')} = 'North'").bindparams(
                db=database_id
            ),
        )
    with transaction(engine) as session:
        segments.refresh(session, actor, segments.get_segment(session, "young"))

    plans = [
        ("Autumn Sale", "all-shoppers", "10", None, ["region"], 1001),
        ("North Push", "north-shoppers", "5", 12, ["region", "tier"], 2002),
        ("Old Promo", "north-shoppers", "15", None, [], 3003),
        ("Young Drop", "young", None, None, [], 4004),
    ]
    with transaction(engine) as session:
        database = profiles.get_database(session, DATABASE)
        for name, segment, percent, limit, strata, seed in plans:
            campaigns.create_campaign(
                session,
                actor,
                name,
                database,
                segments.get_segment(session, segment),
                lcg_percent=percent,
                lcg_limit=limit,
                lcg_strata=strata,
                seed=seed,
            )
    for name in ("Autumn Sale", "North Push", "Old Promo"):
        with transaction(engine) as session:
            campaigns.activate(session, actor, campaigns.get_campaign(session, name))
        builds.run_pending(engine, worker="workspace")
    with transaction(engine) as session:
        campaigns.complete(session, actor, campaigns.get_campaign(session, "Old Promo"))

    with transaction(engine) as session:
        autumn = campaigns.get_campaign(session, "Autumn Sale")
        mailings.create_mailing(
            session, actor, "autumn-weekly", autumn, "regular", cron="0 10 * * 1"
        )
        sms = mailings.create_mailing(
            session, actor, "autumn-sms", autumn, "regular", cron="0 18 * * 5"
        )
        mailings.set_manual_pause(session, actor, sms, True)
        mailings.create_mailing(
            session,
            actor,
            "north-launch",
            campaigns.get_campaign(session, "North Push"),
            "broadcast",
            send_at=datetime(2026, 2, 1, 8, 0, tzinfo=UTC),
        )
    freeze_clock(engine)
    return Workspace(url=url, engine=engine, profiles=n_profiles)


def _slot(session, field: str) -> str:
    database = profiles.get_database(session, DATABASE)
    return next(f.slot for f in profiles.database_fields(session, database.id) if f.name == field)


def freeze_clock(engine: Engine, at: datetime = FROZEN_AT) -> None:
    """Stamp every stored time with `at` (and scheduled sends kept as they are).

    Only for tests: makes snapshot text independent of the wall clock.
    """
    keep = {("mailing", "send_at")}
    with engine.begin() as conn:
        for table in SQLModel.metadata.tables.values():
            if table.name == "scheduler_lease":
                continue
            for column in table.columns:
                if isinstance(column.type, UTCDateTime) and (table.name, column.name) not in keep:
                    conn.execute(
                        table.update().where(column.is_not(None)).values({column.name: at})
                    )
