"""The demo workspace: a realistic database, segments, campaigns in every status, mailings.

Profiles and static segment members are generated set-based (one INSERT ... SELECT over
a number series each), so a million profiles take seconds. Field values come from a
multiplicative hash of the row number, so every run produces the same workspace.
Campaign activation goes through the real store operations and builds.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from store import builds, campaigns, events, gcg, mailings, profiles, segments
from store.actors import Actor
from store.db import keep_statistics_fresh, transaction
from store.errors import DomainError, InvalidStateError, ValidationError
from store.locations import is_postgres
from store.models import (
    Campaign,
    CampaignMember,
    Profile,
    ProfileDatabase,
    Segment,
    SegmentMember,
    SQLModel,
    StoreMeta,
    utcnow,
)

DEFAULT_PROFILES = 200_000
MIN_PROFILES, MAX_PROFILES = 100, 50_000_000  # docs/cli.md: ranges of numeric arguments
DEMO_DATABASE = "retail"
DEMO_FIELDS = [
    ("region", "text"),
    ("tier", "int"),
    ("age", "int"),
    ("int_field", "int"),
    ("signup", "date"),
    ("ltv", "float"),
]
REGIONS = [  # (upper bound of the 0..99 bucket, region)
    (30, "Moscow"),
    (55, "Saint Petersburg"),
    (70, "Kazan"),
    (80, "Novosibirsk"),
    (88, "Yekaterinburg"),
    (94, "Samara"),
    (100, "Sochi"),
]


@dataclass
class DemoSummary:
    profiles: int
    segments: int
    campaigns: int
    mailings: int


def _series(dialect: str) -> str:
    """A CTE `n(x)` of 1..:n on either backend."""
    if dialect == "postgresql":
        return "n(x) AS (SELECT generate_series(1, :n) AS x)"
    return "n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < :n)"


def _profile_insert(dialect: str, slots: dict[str, str]) -> str:
    # h spreads consecutive row numbers over 0..2^32-1 (Knuth's multiplicative hash).
    region = (
        "CASE "
        + " ".join(f"WHEN h % 100 < {bound} THEN '{name}'" for bound, name in REGIONS[:-1])
        + f" ELSE '{REGIONS[-1][1]}' END"
    )
    if dialect == "postgresql":
        external_id = "'P' || lpad(x::text, 7, '0')"
        signup = "DATE '2019-01-01' + ((h / 7) % 2500)::int"
        ltv = "((h / 13) % 100000) / 100.0"
        in_gcg = "((h / 60000) % 50) = 0"
    else:
        external_id = "'P' || printf('%07d', x)"
        signup = "date('2019-01-01', '+' || ((h / 7) % 2500) || ' days')"
        ltv = "((h / 13) % 100000) / 100.0"
        in_gcg = "(((h / 60000) % 50) = 0)"
    return f"""
        INSERT INTO profile (database_id, external_id, hash_key, in_gcg, created_at,
                             {slots["region"]}, {slots["tier"]}, {slots["age"]},
                             {slots["int_field"]}, {slots["signup"]}, {slots["ltv"]})
        WITH RECURSIVE {_series(dialect)},
             hashed(x, h) AS (SELECT x, (x * 2654435761) % 4294967296 FROM n)
        SELECT :database_id, {external_id}, cc_profile_key({external_id}), {in_gcg}, :now,
               {region},
               CASE WHEN (h / 100) % 10 < 6 THEN 1 WHEN (h / 100) % 10 < 9 THEN 2 ELSE 3 END,
               18 + (h / 1000) % 60,
               CASE WHEN (h / 3) % 5 = 0 THEN 20 ELSE 80 END,
               {signup},
               {ltv}
        FROM hashed
    """


DEMO_MARKER = "workspace_kind"  # store_meta key; value "demo" on a demo workspace
LEGACY_DEMO_MARKER = "demo_profiles"  # written by demos of the previous release


def is_demo_workspace(engine: Engine) -> bool:
    """True when the demo built this workspace (it marks it), or when there is nothing to lose:
    no store tables, or no profile database, segment or campaign in them."""
    tables = set(sa.inspect(engine).get_table_names())
    if StoreMeta.__tablename__ not in tables:
        return True
    with Session(engine) as session:
        marked = session.scalar(
            sa.select(sa.func.count())
            .select_from(StoreMeta)
            .where(
                sa.or_(
                    sa.and_(StoreMeta.key == DEMO_MARKER, StoreMeta.value == "demo"),
                    StoreMeta.key == LEGACY_DEMO_MARKER,
                )
            )
        )
        if marked:
            return True
        for model in (ProfileDatabase, Segment, Campaign):
            if model.__tablename__ in tables and session.scalar(sa.select(model.id).limit(1)):
                return False
    return True


def check_profile_count(n_profiles: int) -> None:
    if isinstance(n_profiles, bool) or not MIN_PROFILES <= n_profiles <= MAX_PROFILES:
        raise ValidationError(
            f"the demo takes from {MIN_PROFILES:,} to {MAX_PROFILES:,} profiles, not {n_profiles}"
        )


def check_profile_count_audited(
    url: str, actor: Actor, n_profiles: int, *, connect_timeout: float = 10.0
) -> None:
    """`check_profile_count`, with the refusal audited in the workspace at `url` when there
    is one (issue 15.8: out-of-range arguments are audited like every store refusal)."""
    from store.audit import record_refusal
    from store.db import make_engine, workspace_exists

    try:
        check_profile_count(n_profiles)
    except ValidationError as exc:
        with contextlib.suppress(Exception):  # no workspace yet: nothing to record into
            if workspace_exists(url, connect_timeout=connect_timeout):
                engine = make_engine(url, connect_timeout=connect_timeout)
                try:
                    record_refusal(engine, actor, "demo.build", "workspace", "--profiles", str(exc))
                finally:
                    engine.dispose()
        raise


def reset(engine: Engine, actor: Actor) -> None:
    """Drop and recreate every table (the --reset of `campaign-console demo`).

    Checked before anything is touched: the actor may write, and the workspace is the demo's
    (a real workspace is never destroyed, whatever the role). Refusals are audited."""
    from store.audit import record, record_refusal
    from store.db import init_schema, transaction

    try:
        actor.require_write("reset the demo workspace")
        if not is_demo_workspace(engine):
            raise InvalidStateError(
                "this workspace was not built by `campaign-console demo`: --reset drops every "
                "table, so it only resets a demo workspace; point --db at the demo instead"
            )
    except DomainError as exc:
        with contextlib.suppress(Exception):  # no audit table yet: nothing to record into
            record_refusal(engine, actor, "demo.reset", "workspace", None, str(exc))
        raise

    # mailing <-> audience_build reference each other, so drop_all cannot order them:
    # drop every table in one go instead (CASCADE on PostgreSQL, no FK checks on SQLite).
    names = [*SQLModel.metadata.tables, "alembic_version"]  # then init_schema migrates anew
    with engine.begin() as conn:
        if is_postgres(engine):
            conn.exec_driver_sql("DROP TABLE IF EXISTS " + ", ".join(names) + " CASCADE")
        else:
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            for name in names:
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
            conn.exec_driver_sql("PRAGMA foreign_keys=ON")
    init_schema(engine, create=True)  # the demo is one of the two creators (issue 15.7)
    with transaction(engine) as session:
        record(session, actor, "demo.reset", "workspace")


def has_workspace(engine: Engine) -> bool:
    with Session(engine) as session:
        return session.scalar(sa.select(sa.func.count()).select_from(ProfileDatabase)) > 0


def build_demo(engine: Engine, actor: Actor, n_profiles: int = DEFAULT_PROFILES) -> DemoSummary:
    """Generate the demo workspace into an empty database."""
    actor.require_write("build the demo workspace")
    check_profile_count(n_profiles)
    if has_workspace(engine):
        raise ValueError("the database already holds a workspace; use --reset to rebuild it")
    dialect = engine.dialect.name
    now = utcnow()

    with transaction(engine) as session:
        session.merge(StoreMeta(key=DEMO_MARKER, value="demo"))  # what --reset may destroy
        database = profiles.create_database(session, actor, DEMO_DATABASE, DEMO_FIELDS)
        slots = {f.name: f.slot for f in profiles.database_fields(session, database.id)}
        session.execute(
            sa.text(_profile_insert(dialect, slots)).bindparams(
                sa.bindparam("now", type_=sa.DateTime())
            ),
            {"database_id": database.id, "n": n_profiles, "now": now.replace(tzinfo=None)},
        )
        keep_statistics_fresh(session, "profile", n_profiles)
        database.profile_count = n_profiles
        session.add(database)

    # Static segments take every k-th profile, set-based; dynamic ones are rule-driven.
    with transaction(engine) as session:
        database = profiles.get_database(session, DEMO_DATABASE)
        newsletter = segments.create_segment(session, actor, "newsletter-subscribers")
        loyalty = segments.create_segment(session, actor, "loyalty-members")
        winter = segments.create_segment(session, actor, "winter-buyers")
        lapsed = segments.create_segment(session, actor, "lapsed-2025")
        segments.create_segment(
            session,
            actor,
            "moscow-under-30",
            database=database,
            rule="region = 'Moscow' and age < 30",
            every_seconds=15 * 60,
        )
        segments.create_segment(
            session,
            actor,
            "vip",
            database=database,
            rule="tier = 3",
            cron="0 * * * *",
        )
        session.flush()
        for segment, modulo in (
            (newsletter, (5, (0, 1, 2))),
            (loyalty, (10, (3, 4, 5))),
            (winter, (4, (1,))),
            (lapsed, (7, (2,))),
        ):
            mod, residues = modulo
            segments.add_profiles_where(
                session,
                actor,
                segment,
                sa.text(
                    f"database_id = :db AND (id % {mod}) IN ({', '.join(map(str, residues))})"
                ).bindparams(db=database.id),
            )

    with transaction(engine) as session:
        segments.refresh(session, actor, segments.get_segment(session, "moscow-under-30"))
        segments.refresh(session, actor, segments.get_segment(session, "vip"))

    plans = [
        # name, segment, lcg percent, limit, strata, final status
        ("Spring Promo", "newsletter-subscribers", "10", None, ["region", "tier"], "active"),
        ("Loyalty Boost", "loyalty-members", "15", 20, ["region", "tier"], "active"),
        ("Moscow Youth", "moscow-under-30", None, None, [], "active"),
        ("Winter Clearance", "winter-buyers", "5", None, [], "completed"),
        ("Win-back Lapsed", "lapsed-2025", "5.25", None, ["int_field"], "draft"),
    ]
    with transaction(engine) as session:
        database = profiles.get_database(session, DEMO_DATABASE)
        for name, segment_name, percent, limit, strata, _status in plans:
            campaigns.create_campaign(
                session,
                actor,
                name,
                database,
                segments.get_segment(session, segment_name),
                lcg_percent=percent,
                lcg_limit=limit,
                lcg_strata=strata,
                seed=sum(map(ord, name)) * 7919,  # fixed so the demo splits the same way
            )
    with transaction(engine) as session:
        # R11a: the demo's GCG (about 2 % of profiles, set above) has one excepted campaign.
        gcg.set_exception(session, actor, "Moscow Youth", True)
    for name, *_rest, status in plans:
        if status in ("active", "completed"):
            with transaction(engine) as session:
                campaigns.activate(session, actor, campaigns.get_campaign(session, name))
    builds.run_pending(engine, worker="demo")
    with transaction(engine) as session:
        campaigns.complete(session, actor, campaigns.get_campaign(session, "Winter Clearance"))

    with transaction(engine) as session:

        def campaign(name: str) -> Campaign:
            return campaigns.get_campaign(session, name)

        mailings.create_mailing(
            session, actor, "spring-weekly", campaign("Spring Promo"), "regular", cron="0 10 * * 1"
        )
        mailings.create_mailing(
            session,
            actor,
            "spring-launch",
            campaign("Spring Promo"),
            "broadcast",
            send_at=now + timedelta(days=2),
        )
        mailings.create_mailing(
            session,
            actor,
            "loyalty-points-reminder",
            campaign("Loyalty Boost"),
            "regular",
            cron="30 9 * * *",
        )
        mailings.create_mailing(
            session,
            actor,
            "loyalty-welcome",
            campaign("Loyalty Boost"),
            "trigger",
            event=DEMO_EVENT,
        )
        # R11b: more trigger mailings on the same event, so the demo's events show every
        # outcome: a segment of its own (vip), a paused one, one of the draft campaign.
        mailings.create_mailing(
            session,
            actor,
            "spring-thank-you",
            campaign("Spring Promo"),
            "trigger",
            event=DEMO_EVENT,
            segment=segments.get_segment(session, "vip"),
        )
        review = mailings.create_mailing(
            session,
            actor,
            "spring-review-ask",
            campaign("Spring Promo"),
            "trigger",
            event=DEMO_EVENT,
        )
        mailings.set_manual_pause(session, actor, review, True)
        mailings.create_mailing(
            session,
            actor,
            "winback-purchase",
            campaign("Win-back Lapsed"),
            "trigger",
            event=DEMO_EVENT,
        )
        mailings.create_mailing(
            session,
            actor,
            "moscow-youth-drop",
            campaign("Moscow Youth"),
            "broadcast",
            send_at=now + timedelta(hours=6),
            expand_audience=True,
        )
        mailings.create_mailing(
            session,
            actor,
            "winback-teaser",
            campaign("Win-back Lapsed"),
            "broadcast",
            send_at=now + timedelta(days=7),
        )
        paused = mailings.create_mailing(
            session, actor, "spring-sms", campaign("Spring Promo"), "regular", cron="0 18 * * 5"
        )
        mailings.set_manual_pause(session, actor, paused, True)
        session.merge(StoreMeta(key="demo_profiles", value=str(n_profiles)))

    _demo_events(engine, actor, n_profiles)

    with Session(engine) as session:
        return DemoSummary(
            profiles=n_profiles,
            segments=6,
            campaigns=len(plans),
            mailings=10,
        )


DEMO_EVENT = "purchase"
DEMO_EVENTS = 300  # spread over the database, plus a few picked to show every outcome


def _demo_events(engine: Engine, actor: Actor, n_profiles: int) -> None:
    """R11b: a few hundred `purchase` events, imported and processed (deliveries and
    suppressions of every reason: control, gcg, not_member, not_in_mailing_segment,
    campaign_not_active, mailing_paused), stamped over the last week."""
    step = max(1, n_profiles // DEMO_EVENTS)
    with Session(engine) as session:
        database = profiles.get_database(session, DEMO_DATABASE)
        spread = sa.select(Profile.external_id).where(
            Profile.database_id == database.id, Profile.id % step == 0
        )

        def picked(query: sa.Select, n: int = 10) -> list[str]:
            return list(session.scalars(query.order_by(Profile.id).limit(n)))

        def members(campaign: str, group: str) -> sa.Select:
            return (
                sa.select(Profile.external_id)
                .join(CampaignMember, CampaignMember.profile_id == Profile.id)
                .join(Campaign, Campaign.id == CampaignMember.campaign_id)
                .where(
                    Campaign.name == campaign,
                    CampaignMember.group == group,
                    CampaignMember.left_at.is_(None),
                )
            )

        vip = segments.get_segment(session, "vip")
        in_vip = sa.exists().where(
            SegmentMember.segment_id == vip.id,
            SegmentMember.profile_id == Profile.id,
            SegmentMember.left_at.is_(None),
        )
        chosen = (
            picked(spread, DEMO_EVENTS)
            + picked(members("Loyalty Boost", "control"))  # control
            + picked(members("Loyalty Boost", "test"))  # delivered
            + picked(members("Spring Promo", "test").where(in_vip))  # delivered (vip)
            + picked(
                sa.select(Profile.external_id).where(  # gcg
                    Profile.database_id == database.id, Profile.in_gcg.is_(True)
                )
            )
        )
    now = utcnow()
    lines = ["external_id,event,at"] + [
        f"{external_id},{DEMO_EVENT},{(now - timedelta(minutes=37 * k)).isoformat()}"
        for k, external_id in enumerate(reversed(chosen))
    ]
    with transaction(engine) as session:
        database = profiles.get_database(session, DEMO_DATABASE)
        events.import_events(
            session, actor, database, io.BytesIO(("\n".join(lines) + "\n").encode())
        )
    events.drain(engine, actor)
