"""The build checkpoint survives a release: a checkpoint written by the previous code
(version 1, a plain dict with keys like "i" and "src") still resumes, on both backends.

tests/data/checkpoints_v1.json was recorded with the release-1 build code (before the
checkpoint became a dataclass): the checkpoint after every chunk of an activation build
and of a recalculation + newcomers build of the world below. Never regenerate it with
newer code; it is the record of what old workers left in databases.

Each test runs the world twice: "straight" builds straight through; "resumed" runs the
new code up to the recorded chunk, has its checkpoint replaced by the recorded v1 dict
(as if an old worker had stopped there), and is resumed by the new code. Both campaigns
must end identical (members, groups, events, strata), and the new code must read the v1
dict as exactly the checkpoint it wrote itself at that point.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import Session
from test_builds import (
    assert_counters_match_rows,
    edit,
    events,
    make_db,
    make_segment,
    member_rows,
    new_campaign,
    r10_rows,
    seg_add,
    strata_rows,
)

from store import builds, hashing
from store.models import AudienceBuild, Campaign

DATA = Path(__file__).parent / "data" / "checkpoints_v1.json"
CHUNK = 7
SETTINGS = dict(lcg_percent="15", lcg_limit=12, lcg_strata=["int_field", "region"], seed=4242)
NEWCOMERS = [f"Q{i:03d}" for i in range(30)]


def world(engine, names):
    rows = r10_rows() + [(e, "SPb", 80, False) for e in NEWCOMERS]
    make_db(engine, rows)
    make_segment(engine, external_ids=[r[0] for r in r10_rows()])
    for name in names:
        new_campaign(engine, name=name, run=False, **SETTINGS)
    # A release-1 checkpoint belongs to a campaign release 1 created, which keeps release
    # 1's assignment hash after the upgrade (revision 0005): its cut-offs are of that hash.
    with Session(engine) as s:
        s.execute(sa.update(Campaign).values(hash_version=hashing.MD5_VERSION))
        s.commit()


def second_stage(engine, names):
    """A recalculation merged with newcomers: rekey, demote, plan, trim, assign (delta)."""
    for name in names:
        edit(engine, name=name, percent="5", limit=4, strata=["region"])
    seg_add(engine, NEWCOMERS)


def campaign_build(engine, name):
    with Session(engine) as s:
        cid = s.scalar(sa.select(Campaign.id).where(Campaign.name == name))
        return s.scalar(
            sa.select(AudienceBuild)
            .where(AudienceBuild.campaign_id == cid, AudienceBuild.status != "done")
            .order_by(AudienceBuild.id)
        )


def run_chunks(engine, name, chunks):
    """Claim the campaign's pending build and run `chunks` chunks of it (0: to the end)."""
    build = campaign_build(engine, name)
    with Session(engine) as s:
        others = list(s.scalars(sa.select(Campaign.id).where(Campaign.name != name)))
    bid = builds.claim_next_build(engine, "w", exclude_campaign_ids=others)
    assert bid == build.id
    count = 0

    def stop():
        nonlocal count
        count += 1
        return chunks and count >= chunks

    return builds.run_build(engine, bid, worker="w", chunk_size=CHUNK, should_stop=stop)


def checkpoint_of(engine, name):
    return campaign_build(engine, name).checkpoint


def record(engine):  # pragma: no cover - how tests/data/checkpoints_v1.json was made
    """Run with the release-1 code: python -c 'import ...; record(open_store(url))'."""
    out = {}
    world(engine, ["rec"])
    for stage in ("activation", "recalculation"):
        if stage == "recalculation":
            second_stage(engine, ["rec"])
        taken = []
        while True:
            if run_chunks(engine, "rec", 1) != "interrupted":
                break
            taken.append(checkpoint_of(engine, "rec"))
        out[stage] = taken
    DATA.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")


def recorded():
    return json.loads(DATA.read_text())


def _points(stage):
    taken = recorded()[stage]
    return sorted({1, 2, 3, len(taken) // 2, len(taken) - 1, len(taken)})


@pytest.mark.parametrize("stage", ["activation", "recalculation"])
def test_a_release_1_checkpoint_resumes_to_the_same_result(engine, stage):
    from store.build_steps import Checkpoint

    taken = recorded()[stage]
    points = _points(stage)
    names = ["straight"] + [f"resumed{k}" for k in points]
    world(engine, names)
    if stage == "recalculation":
        for name in names:
            run_chunks(engine, name, 0)
        second_stage(engine, names)
    run_chunks(engine, "straight", 0)
    for k in points:
        name = f"resumed{k}"
        assert run_chunks(engine, name, k) == "interrupted"
        written = Checkpoint.from_json(checkpoint_of(engine, name))
        old = taken[k - 1]
        if stage == "activation":
            # R4a: since activation became a snapshot, an activation build starts with the
            # campaign's watermark at the snapshot bound (release 1: 0). No activation
            # build reads it; everything else must be read exactly.
            written = dataclasses.replace(written, watermark=old["watermark"])
        assert Checkpoint.from_json(old) == written  # v1 read as what the new code writes
        with Session(engine) as s:
            s.execute(
                sa.update(AudienceBuild)
                .where(AudienceBuild.id == campaign_build(engine, name).id)
                .values(checkpoint=old)
            )
            s.commit()
        assert run_chunks(engine, name, 0) == "done"
        assert member_rows(engine, name) == member_rows(engine, "straight")
        assert events(engine, name) == events(engine, "straight")
        assert strata_rows(engine, name) == strata_rows(engine, "straight")
        assert_counters_match_rows(engine, name)
