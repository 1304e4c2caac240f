"""Build tests/data/previous_release_workspace.db with the code that had schema 0009.

The upgrade tests of this release's revisions (0008 onwards, tests/test_migrations.py)
start from a workspace as the previous release left it: schema revision
0007_profile_event_kinds, holding release 1's groups and history plus a profile event of
every kind. Until revision 0010 the tests wrote it with the store of the day on that
schema; 0010 adds columns the store reads, so the workspace is frozen here instead. Run
against commit 0f26b3a (head 0009_profile_reference_checks; its store still wrote a 0007
schema):

    git worktree add /tmp/prev 0f26b3a && cd /tmp/prev
    PYTHONPATH=. path/to/a/checkout/.venv/bin/python \
        tests/data/make_previous_release_workspace.py tests/data

What it writes, on release 1's workspace upgraded to 0007 by that code: an R3
left_campaign (Win-back activated after R040 left its segment), entered_gcg and left_gcg
(R11a), and a trigger mailing's deliveries and suppressions (R11b), so every event kind a
card shows is there too. Never run it against a later commit.
"""

from __future__ import annotations

import io
import shutil
import sys
from pathlib import Path

import sqlalchemy as sa

from store import builds, campaigns, events, gcg, mailings, migrate, segments
from store.actors import Actor
from store.db import make_engine, transaction
from store.models import Profile
from store.profiles import get_database

PREVIOUS_RELEASE = "0007_profile_event_kinds"
ACTOR = Actor(user="alice", role="operator", origin="test")


def main(out: Path) -> None:
    target = out / "previous_release_workspace.db"
    target.unlink(missing_ok=True)
    shutil.copyfile(out / "release1_workspace.db", target)
    engine = make_engine(f"sqlite:///{target}")
    migrate.upgrade(engine, backup=False, to=PREVIOUS_RELEASE)
    with transaction(engine) as s:
        r040 = s.scalar(sa.select(Profile.id).where(Profile.external_id == "R040"))
        segments.remove_profiles(s, ACTOR, segments.get_segment(s, "vip"), [r040])
        campaigns.activate(s, ACTOR, campaigns.get_campaign(s, "Win-back"))
    builds.run_pending(engine)
    with transaction(engine) as s:
        retail = get_database(s, "retail")
        gcg.apply_gcg_file(s, ACTOR, retail, "add", io.BytesIO(b"external_id\nR001\nR002\n"))
        gcg.apply_gcg_file(s, ACTOR, retail, "remove", io.BytesIO(b"external_id\nR002\n"))
        spring = campaigns.get_campaign(s, "Spring Promo")
        mailings.create_mailing(s, ACTOR, "thanks", spring, "trigger", event="purchase")
        retail_ids = sa.select(Profile.external_id).where(Profile.database_id == retail.id)
        for external_id in s.scalars(retail_ids):
            events.send_event(s, ACTOR, retail, external_id, "purchase")
    events.drain(engine, ACTOR)
    with engine.connect() as conn:
        assert migrate.current_revision(conn) == PREVIOUS_RELEASE
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    with sa.create_engine(f"sqlite:///{target}").connect() as conn:
        conn.exec_driver_sql("PRAGMA journal_mode = DELETE")  # one self-contained file


if __name__ == "__main__":
    main(Path(sys.argv[1]))
