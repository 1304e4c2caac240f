"""Retrying a failed build (`builds retry ID`; `R` on the console's builds screen): after
what failed it is fixed (here a full disk, tests/disk_full.py), the build resumes from its
checkpoint and ends exactly as a build that never failed (R9, R12: no event twice), pausing
the campaign's mailings again while it runs (R5). Only a failed build, the campaign's
latest, of a campaign not completed (R8); every refusal is exit 3 and audited. Both
backends, through the CLI in-process.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from cli_helpers import Cli, people, twin_campaigns
from disk_full import run_until_the_disk_fills
from sqlmodel import Session

from store import builds
from store.db import make_engine
from store.models import (
    AudienceBuild,
    AuditEntry,
    Campaign,
    CampaignMember,
    Mailing,
    Profile,
    ProfileEvent,
    utcnow,
)
from store.monitor import progress_row
from store.states import BuildStatus

pytestmark = pytest.mark.usefixtures("no_user_config")


@pytest.fixture
def cli(both_cli: Cli) -> Cli:
    """1,000 profiles in a dynamic segment; campaigns Failing and Clean alike (same seed,
    segment and LCG), and a weekly mailing of Failing that its activation pauses (R5)."""
    twin_campaigns(both_cli, "Failing", "Clean", seed=7, weekly=True)
    return both_cli


def failed_activation(cli: Cli) -> int:
    """Activate Failing; its build fails on a full disk after its first chunk."""
    cli.ok("campaign", "activate", "Failing")
    engine = make_engine(cli.db_url)
    try:
        build_id = builds.claim_next_build(engine, "w")
    finally:
        engine.dispose()
    assert run_until_the_disk_fills(cli.db_url, build_id) == "failed"
    return build_id


def state(cli: Cli, campaign: str) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Each member's group by external id, and the campaign's events (external id, kind)."""
    engine = make_engine(cli.db_url)
    try:
        with engine.connect() as conn:
            cid = conn.scalar(sa.select(Campaign.id).where(Campaign.name == campaign))
            groups = dict(
                conn.execute(
                    sa.select(Profile.external_id, CampaignMember.group)
                    .join(Profile, Profile.id == CampaignMember.profile_id)
                    .where(CampaignMember.campaign_id == cid)
                ).all()
            )
            events = conn.execute(
                sa.select(Profile.external_id, ProfileEvent.kind)
                .join(Profile, Profile.id == ProfileEvent.profile_id)
                .where(ProfileEvent.campaign_id == cid)
                .order_by(Profile.external_id, ProfileEvent.kind)
            ).all()
    finally:
        engine.dispose()
    return groups, [tuple(e) for e in events]


def paused_by(cli: Cli) -> int | None:
    engine = make_engine(cli.db_url)
    try:
        with engine.connect() as conn:
            return conn.scalar(sa.select(Mailing.paused_by_build_id))
    finally:
        engine.dispose()


def audit(cli: Cli, action: str) -> list[tuple[str, dict]]:
    engine = make_engine(cli.db_url)
    try:
        with engine.connect() as conn:
            return [
                (outcome, details)
                for outcome, details in conn.execute(
                    sa.select(AuditEntry.outcome, AuditEntry.details)
                    .where(AuditEntry.action == action)
                    .order_by(AuditEntry.id)
                )
            ]
    finally:
        engine.dispose()


def test_a_retried_build_ends_as_if_it_had_never_failed(cli):
    build_id = failed_activation(cli)
    failed = cli.ok("builds", "--campaign", "Failing", "--json").json[0]
    assert failed["status"] == "failed" and 0 < failed["processed"] < 1000
    assert paused_by(cli) is None  # R5: resumed when the build ended, whatever its outcome
    placed, _events = state(cli, "Failing")
    assert len(placed) == failed["processed"]

    retried = cli.ok("builds", "retry", str(build_id), "--json").json
    assert (retried["id"], retried["status"], retried["error"]) == (build_id, "queued", None)
    assert retried["processed"] == failed["processed"]  # the checkpoint is kept
    assert audit(cli, "build.retry") == [("ok", {"failure": failed["error"]})]

    engine = make_engine(cli.db_url)
    try:
        assert builds.claim_next_build(engine, "w") == build_id
        assert paused_by(cli) == build_id  # R5: paused again while it runs
        with Session(engine) as session:  # revision 0011: this run began now
            build = session.get(AudienceBuild, build_id)
            resumed = (build.resumed_at, build.resumed_processed, build.started_at)
        assert resumed[0] is not None and resumed[0] > resumed[2]
        assert resumed[1] == failed["processed"]
        assert builds.run_build(engine, build_id, worker="w", chunk_size=300) == "done"
    finally:
        engine.dispose()
    assert paused_by(cli) is None
    cli.ok("campaign", "activate", "Clean", "--wait")

    groups, events = state(cli, "Failing")
    assert {p: g for p, g in groups.items() if p in placed} == placed  # kept where they were
    assert (groups, events) == state(cli, "Clean")  # R9 same seed: same groups; R12 once
    assert len(groups) == 1000 and 0 < sum(g == "control" for g in groups.values()) < 100
    shown = cli.ok("campaign", "show", "Failing", "--json").json
    assert shown["audience"] == cli.ok("campaign", "show", "Clean", "--json").json["audience"]


def test_retry_with_wait_runs_the_build_in_the_command(cli):
    build_id = failed_activation(cli)
    result = cli("builds", "retry", str(build_id), "--wait")
    assert result.code == 0, result.err
    assert f"build #{build_id} queued again: it resumes from its checkpoint" in result.out
    assert f"build #{build_id} (activation): done" in result.err
    assert len(state(cli, "Failing")[0]) == 1000


def test_only_a_failed_build_that_is_its_campaigns_latest_can_be_retried(cli):
    cli.ok("campaign", "activate", "Clean", "--wait")
    done = cli.ok("builds", "--campaign", "Clean", "--json").json[0]["id"]
    refused = cli("builds", "retry", str(done))
    assert refused.code == 3
    assert f"build #{done} is done: only a failed build can be retried" in refused.err
    assert cli("builds", "cancel", str(done)).code == 3  # nothing to cancel
    missing = cli("builds", "retry", "999")
    assert missing.code == 4 and "no audience build #999" in missing.err
    unknown = cli("builds", "--campaign", "nope")  # not an empty list: no such campaign
    assert unknown.code == 4 and "nope" in unknown.err, unknown.err
    huge = "99999999999999999999"  # beyond a 64-bit key: no build, not a driver error
    for verb in ("retry", "cancel"):
        beyond = cli("builds", verb, huge)
        assert beyond.code == 4 and f"no audience build #{huge}" in beyond.err, beyond.err

    build_id = failed_activation(cli)
    assert cli("--read-only", "builds", "retry", str(build_id)).code == 3
    # A newcomer queues an incremental build after the failed one: that build reads the
    # campaign afresh and takes the rest, so the failed one can no longer be retried.
    cli.ok("import", "profiles", "--database", "main", cli.file("new.csv", people(1, 5000)))
    cli.ok("segment", "refresh", "everyone")
    later = cli("builds", "retry", str(build_id))
    assert later.code == 3 and "came after build" in later.err, later.err
    assert "only a campaign's latest build can be retried" in later.err
    cli.ok("campaign", "complete", "Failing", "--yes")
    completed = cli("builds", "retry", str(build_id))
    assert completed.code == 3 and "completed and read-only (R8)" in completed.err
    outcomes = [outcome for outcome, _details in audit(cli, "build.retry")]
    assert outcomes == ["refused"] * 4  # done, read-only, a later build, completed
    assert cli.ok("builds", "--campaign", "Failing", "--json").json[-1]["status"] == "failed"


def test_cancel_stops_a_queued_build_and_resumes_its_mailings(cli):
    cli.ok("campaign", "activate", "Failing")
    queued = cli.ok("builds", "--campaign", "Failing", "--json").json[0]
    engine = make_engine(cli.db_url)
    try:
        assert builds.claim_next_build(engine, "w") == queued["id"]
    finally:
        engine.dispose()
    assert paused_by(cli) == queued["id"]
    cancelled = cli.ok("builds", "cancel", str(queued["id"]), "--json").json
    assert cancelled["status"] == "cancelled" and paused_by(cli) is None
    assert [outcome for outcome, _d in audit(cli, "build.cancel")] == ["ok"]


def test_a_resumed_builds_rate_and_eta_count_its_current_run_only():
    """Started an hour ago, failed, resumed 10 s ago at 500,000 of 1,000,000 and now at
    600,000: 10,000 profiles/s and 40 s to go, not 167/s and an hour."""
    now = utcnow()
    build = AudienceBuild(
        id=1,
        campaign_id=1,
        reason="activation",
        status=BuildStatus.RUNNING,
        started_at=now - timedelta(hours=1),
        resumed_at=now - timedelta(seconds=10),
        resumed_processed=500_000,
        processed=600_000,
        total=1_000_000,
    )
    row = progress_row(build, "C", now)
    assert (round(row.rate), round(row.eta_seconds)) == (10_000, 40)
    build.resumed_at = build.resumed_processed = None  # never resumed: since it started
    row = progress_row(build, "C", now)
    assert (round(row.rate), round(row.eta_seconds)) == (167, 2400)
