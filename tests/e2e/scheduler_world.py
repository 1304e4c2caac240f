"""Shared set-up for the scheduler tests: a small world, a poll helper, process control.

* `poll(condition, timeout)`: wait on a condition, never a bare sleep;
* `make_world(engine, n)`: database `shop` (region text, tier int, score int), n profiles
  inserted set-based, a static segment `everyone` holding them all;
* `seed_campaign(...)`: an *active* campaign with members placed directly (test/control
  by profile id), for tests of mailing runs that are not about builds;
* `SchedulerProcess`: `python -m console --db URL scheduler` as a real child process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from store import builds, campaigns, profiles, segments
from store.actors import Actor
from store.db import keep_statistics_fresh, transaction
from store.models import (
    AudienceBuild,
    Campaign,
    CampaignMember,
    Delivery,
    Mailing,
    MailingRun,
    UTCDateTime,
    utcnow,
)

ROOT = Path(__file__).resolve().parents[2]
ADMIN = Actor(user="alice", role="operator", origin="local")
DATABASE = "shop"
FIELDS = [("region", "text"), ("tier", "int"), ("score", "int")]

T = TypeVar("T")


def poll(
    condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.05, what: str = ""
) -> T:
    """Return the first truthy value of condition(); fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


def _series(dialect: str) -> str:
    if dialect == "postgresql":
        return "n(x) AS (SELECT generate_series(1, :n) AS x)"
    return "n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < :n)"


def make_world(engine: Engine, n: int = 60, actor: Actor = ADMIN) -> int:
    """Database `shop` with n profiles P00001…; static segment `everyone`. Returns db id."""
    dialect = engine.dialect.name
    ext = "'P' || lpad(x::text, 5, '0')" if dialect == "postgresql" else "'P' || printf('%05d', x)"
    with transaction(engine) as session:
        database = profiles.create_database(session, actor, DATABASE, FIELDS)
        slots = {f.name: f.slot for f in profiles.database_fields(session, database.id)}
        session.execute(
            sa.text(
                f"""
                INSERT INTO profile (database_id, external_id, hash_key, in_gcg, created_at,
                    {slots["region"]}, {slots["tier"]}, {slots["score"]})
                WITH RECURSIVE {_series(dialect)}
                SELECT :db, {ext}, cc_profile_key({ext}), false, :now,
                       CASE x % 3 WHEN 0 THEN 'North' WHEN 1 THEN 'South' ELSE 'West' END,
                       CASE WHEN x % 4 = 0 THEN 2 ELSE 1 END,
                       x % 10
                FROM n
                """
            ).bindparams(sa.bindparam("now", type_=UTCDateTime())),
            {"db": database.id, "n": n, "now": utcnow()},
        )
        # As an import does: the planner reads member pages and builds from these figures
        # (PostgreSQL has no foreign key from members to profiles to lean on, 0009).
        keep_statistics_fresh(session, "profile", n)
        database.profile_count = n
        session.add(database)
        database_id = database.id
    with transaction(engine) as session:
        everyone = segments.create_segment(session, actor, "everyone")
        session.flush()
        segments.add_profiles_where(
            session, actor, everyone, sa.text("database_id = :db").bindparams(db=database_id)
        )
    return database_id


def new_campaign(
    engine: Engine,
    name: str = "Spring",
    segment: str = "everyone",
    percent: str = "10",
    activate: bool = True,
    **lcg,
) -> None:
    """A campaign of `shop` on `segment` (fixed seed); activated and built unless not
    `activate`. `lcg`: more create_campaign options (lcg_limit=…, lcg_strata=…)."""
    with transaction(engine) as session:
        campaigns.create_campaign(
            session,
            ADMIN,
            name,
            profiles.get_database(session, DATABASE),
            segments.get_segment(session, segment),
            lcg_percent=percent,
            seed=4242,
            **lcg,
        )
    if activate:
        with transaction(engine) as session:
            campaigns.activate(session, ADMIN, campaigns.get_campaign(session, name))
        builds.run_pending(engine, worker="test-setup")


def slot(engine: Engine, field: str) -> str:
    with Session(engine) as session:
        database = profiles.get_database(session, DATABASE)
        return {f.name: f.slot for f in profiles.database_fields(session, database.id)}[field]


def profile_ids(engine: Engine, where: str = "1 = 1") -> list[int]:
    with Session(engine) as session:
        return sorted(session.scalars(sa.text(f"SELECT id FROM profile WHERE {where}")))


def seed_campaign(
    engine: Engine,
    name: str,
    test_ids: Iterable[int],
    control_ids: Iterable[int] = (),
    status: str = "active",
) -> int:
    """An active campaign on `everyone` with members placed directly (no build)."""
    now = utcnow()
    with transaction(engine) as session:
        database = profiles.get_database(session, DATABASE)
        segment = segments.get_segment(session, "everyone")
        campaign = Campaign(
            name=name,
            database_id=database.id,
            segment_id=segment.id,
            status=status,
            seed=12345,
            activated_at=now,
        )
        session.add(campaign)
        session.flush()
        rows = [(pid, "test") for pid in test_ids] + [(pid, "control") for pid in control_ids]
        session.add_all(
            CampaignMember(
                campaign_id=campaign.id,
                profile_id=pid,
                group=group,
                joined_group=group,
                source="activation",
                assignment_hash=pid,
                joined_at=now,
            )
            for pid, group in rows
        )
        campaign.members = len(rows)
        campaign.test_count = sum(1 for _, g in rows if g == "test")
        campaign.control_count = len(rows) - campaign.test_count
        return campaign.id


def delivered_ids(engine: Engine, mailing_name: str | None = None) -> list[int]:
    with Session(engine) as session:
        query = sa.select(Delivery.profile_id).order_by(Delivery.profile_id)
        if mailing_name is not None:
            query = query.join(Mailing, Mailing.id == Delivery.mailing_id).where(
                Mailing.name == mailing_name
            )
        return list(session.scalars(query))


def runs_of(engine: Engine, mailing_name: str) -> list[MailingRun]:
    with Session(engine) as session:
        return list(
            session.scalars(
                sa.select(MailingRun)
                .join(Mailing, Mailing.id == MailingRun.mailing_id)
                .where(Mailing.name == mailing_name)
                .order_by(MailingRun.id)
            )
        )


def mailing(engine: Engine, name: str) -> Mailing:
    with Session(engine) as session:
        return session.scalar(sa.select(Mailing).where(Mailing.name == name))


def build(engine: Engine, build_id: int) -> AudienceBuild:
    with Session(engine) as session:
        return session.get(AudienceBuild, build_id)


def builds_of(engine: Engine, campaign_name: str) -> list[AudienceBuild]:
    with Session(engine) as session:
        return list(
            session.scalars(
                sa.select(AudienceBuild)
                .join(Campaign, Campaign.id == AudienceBuild.campaign_id)
                .where(Campaign.name == campaign_name)
                .order_by(AudienceBuild.id)
            )
        )


# ----------------------------------------------------------------------------- processes


class SchedulerProcess:
    """A real `campaign-console scheduler` child process, logs captured to a file."""

    def __init__(self, db_url: str, log_path: Path, **settings: float | int) -> None:
        env = dict(os.environ)
        env.update({f"CC_SCHEDULER_{k.upper()}": str(v) for k, v in settings.items()})
        env["PYTHONUNBUFFERED"] = "1"
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "console", "--db", db_url, "scheduler"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no clean-up at all, like a crash or an OOM kill."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()

    def terminate(self, timeout: float = 20.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self._log.close()
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()
