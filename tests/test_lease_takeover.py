"""Issue 15.11: a new lease holder knows the previous one is gone, so the builds it left
running are requeued at once (to resume from their checkpoints), not after stale_after."""

from __future__ import annotations

import sqlalchemy as sa
from cli_helpers import Cli, r10_workspace
from sqlmodel import Session

from store import builds, lease
from store.db import make_engine
from store.models import AudienceBuild, AuditEntry


def build_row(engine, build_id: int) -> AudienceBuild:
    with Session(engine) as session:
        return session.get(AudienceBuild, build_id)


def test_a_new_holder_requeues_the_previous_holders_running_builds_at_once(
    db_url, capsys, tmp_path
):
    cli = Cli(db_url, capsys, tmp_path)
    r10_workspace(cli)
    cli.ok("campaign", "create", "r10", "--database", "main", "--segment", "everyone")
    cli.ok("campaign", "activate", "r10")  # queued: no scheduler, no --wait
    engine = make_engine(db_url)
    try:
        dead, standby = "hostA:101:aa", "hostB:202:bb"
        assert lease.try_acquire(engine, dead, ttl=60)
        build_id = builds.claim_next_build(engine, dead)
        assert build_row(engine, build_id).status == "running"  # heartbeat fresh: not stale
        # The holder dies: its lease runs out.
        with engine.begin() as conn:
            conn.execute(sa.update(lease._table).values(expires_at=lease.utcnow()))
        assert lease.try_acquire(engine, standby, ttl=60)
        build = build_row(engine, build_id)
        assert (build.status, build.worker) == ("queued", None)
        with Session(engine) as session:
            entry = session.scalars(
                sa.select(AuditEntry)
                .where(AuditEntry.action == "scheduler.lease_acquired")
                .order_by(AuditEntry.id.desc())
            ).first()
        assert entry.details["requeued_builds"] == [build_id]
        # The new holder claims and finishes it; the old one has lost its claim.
        assert builds.claim_next_build(engine, standby) == build_id
        assert builds.run_build(engine, build_id, worker=dead) == "interrupted"
        assert builds.run_build(engine, build_id, worker=standby) == "done"
    finally:
        engine.dispose()


def test_builds_of_other_workers_are_left_alone_on_takeover(db_url, capsys, tmp_path):
    cli = Cli(db_url, capsys, tmp_path)
    r10_workspace(cli)
    cli.ok("campaign", "create", "r10", "--database", "main", "--segment", "everyone")
    cli.ok("campaign", "activate", "r10")
    engine = make_engine(db_url)
    try:
        build_id = builds.claim_next_build(engine, "cli-wait:999")  # a --wait run, not a holder
        assert lease.try_acquire(engine, "hostB:202:bb", ttl=60)
        assert build_row(engine, build_id).status == "running"
    finally:
        engine.dispose()
