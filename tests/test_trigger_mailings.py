"""Trigger mailings (R11b): events fire every matching trigger mailing of the profile's
database; a test member gets a delivery, anyone else a suppression with its reason;
exactly once whatever crashes or races; on SQLite and PostgreSQL (`db_url`)."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
import sqlalchemy as sa
from cli_helpers import Cli, external_ids_csv, r10_workspace
from sqlmodel import Session
from table_state import table_checksums

from store import builds, campaigns, events, mailings
from store.actors import Actor
from store.db import make_engine, transaction
from store.events import suppression_reason
from store.models import AuditEntry, Delivery, Mailing, MailingOutcome, Suppression, TriggerEvent
from store.states import SuppressionReason

ACTOR = Actor(user="alice", role="operator", origin="local")


pytestmark = pytest.mark.usefixtures("no_user_config")


@pytest.fixture
def cli(db_url, capsys, tmp_path) -> Cli:
    return Cli(db_url, capsys, tmp_path)


@pytest.fixture
def world(cli):
    """R10's 100 profiles; P099 in the GCG; campaign `live` (LCG 15 %) active with
    mailings `welcome` (on purchase), `vip-thanks` (purchase, segment vip = P000..P049),
    `paused-ask` (purchase, paused); a draft and a completed campaign with a purchase
    mailing each; X001 a profile of no campaign. Returns the groups of `live`."""
    r10_workspace(cli)
    cli.ok("gcg", "add", "main", cli.file("gcg.csv", external_ids_csv(["P099"])))
    cli.ok("segment", "create", "vip")
    cli.ok("segment", "add", "vip", cli.file("vip.csv", external_ids_csv([f"P{i:03d}" for i in range(50)])))  # fmt: skip
    for name in ("live", "draft", "done"):
        cli.ok("campaign", "create", name, "--database", "main", "--segment", "everyone", "--lcg", "15")  # fmt: skip
    cli.ok("mailing", "create", "done-hello", "--campaign", "done", "--kind", "trigger", "--on", "purchase")  # fmt: skip
    for name in ("live", "done"):
        cli.ok("campaign", "activate", name, "--wait")
    cli.ok("campaign", "complete", "done", "--yes")
    for argv in (
        ["welcome", "--campaign", "live", "--on", "purchase"],
        ["vip-thanks", "--campaign", "live", "--on", "purchase", "--segment", "vip"],
        ["paused-ask", "--campaign", "live", "--on", "purchase"],
        ["draft-hello", "--campaign", "draft", "--on", "purchase"],
        ["signup-hello", "--campaign", "live", "--on", "signup"],
    ):
        cli.ok("mailing", "create", *argv, "--kind", "trigger")
    cli.ok("mailing", "pause", "paused-ask")
    cli.ok("import", "profiles", "--database", "main", cli.file("x.csv", "external_id,int_field,region\nX001,20,Moscow\n"))  # fmt: skip
    members = cli.ok("campaign", "members", "live", "--format", "json").json
    return {m["external_id"]: m["group"] for m in members}


def outcomes(result) -> dict[str, str]:
    return {o["mailing"]: o["outcome"] for o in result.json["outcomes"]}


def test_each_event_fires_every_matching_mailing_with_a_delivery_or_its_reason(cli, world):
    control = sorted(e for e, g in world.items() if g == "control")
    test = sorted(e for e, g in world.items() if g == "test")
    test_vip = next(e for e in test if int(e[1:]) < 50)
    test_other = next(e for e in test if int(e[1:]) >= 50)
    assert "P099" not in world  # held out by the GCG (R1)
    common = {
        "paused-ask": "mailing_paused",
        "draft-hello": "campaign_not_active",
        "done-hello": "campaign_not_active",  # R8: completed
    }
    expected = {
        test_vip: {"welcome": "delivered", "vip-thanks": "delivered"},
        test_other: {"welcome": "delivered", "vip-thanks": "not_in_mailing_segment"},
        control[0]: {"welcome": "control", "vip-thanks": "control"},
        "P099": {"welcome": "gcg", "vip-thanks": "gcg"},
        "X001": {"welcome": "not_member", "vip-thanks": "not_member"},
    }
    for external_id, mine in expected.items():
        sent = cli.ok("event", "send", "--database", "main", external_id, "purchase", "--wait", "--json")  # fmt: skip
        assert sent.json["processed"] is True
        assert outcomes(sent) == {**mine, **common}, external_id
        card = cli.ok("profile", "show", external_id, "--database", "main", "--json").json
        shown = {
            e["mailing"]: e["reason"] or e["kind"]
            for e in card["events"]
            if e["kind"] in ("delivered", "suppressed")
        }
        assert shown == {**mine, **common}, external_id
        assert all(e["event"] == "purchase" for e in card["events"] if e["mailing"])
    # An event no mailing names is processed and leaves nothing.
    quiet = cli.ok("event", "send", "--database", "main", test_vip, "browse", "--wait", "--json")
    assert quiet.json["processed"] is True and quiet.json["outcomes"] == []

    shown = cli.ok("mailing", "show", "vip-thanks", "--json").json
    assert shown["event"] == "purchase" and shown["segment"] == "vip"
    assert shown["sent"] == 1
    assert shown["suppressed"] == {
        "control": 1,
        "gcg": 1,
        "not_member": 1,
        "not_in_mailing_segment": 1,
        "campaign_not_active": 0,
        "mailing_paused": 0,
    }
    assert shown["suppressed_total"] == 4
    assert cli.ok("mailing", "show", "done-hello", "--json").json["suppressed"]["campaign_not_active"] == 5  # fmt: skip
    text = cli.ok("mailing", "show", "paused-ask").out
    assert "mailing_paused" in text and "Sent      0" in text


def test_counters_equal_the_records(cli, world, db_url):
    lines = ["external_id,event,at"] + [f"P{i:03d},purchase," for i in range(100)] + ["X001,purchase,2026-01-01T10:00:00+03:00"]  # fmt: skip
    result = cli.ok("events", "import", "--database", "main", cli.file("e.csv", "\n".join(lines) + "\n"), "--wait", "--json")  # fmt: skip
    assert result.json["rows"] == 101 and result.json["pending"] == 0
    engine = make_engine(db_url)
    with Session(engine) as session:
        records = Counter(
            (m, "delivered") for m in session.scalars(sa.select(Delivery.mailing_id))
        ) + Counter(session.execute(sa.select(Suppression.mailing_id, Suppression.reason)).all())
        counters = {
            (o.mailing_id, o.outcome): o.count for o in session.scalars(sa.select(MailingOutcome))
        }
        stamped = session.scalar(
            sa.select(TriggerEvent.at).where(TriggerEvent.id == result.json["last_id"])
        )
    engine.dispose()
    assert counters == dict(records)
    assert stamped.isoformat() == "2026-01-01T07:00:00+00:00"  # an offset is kept as UTC


def test_trigger_mailings_are_not_paused_by_builds(engine):
    """R5: an LCG build pauses broadcast and regular mailings, never trigger mailings."""
    from store import profiles, segments
    from store.imports import import_profiles

    with transaction(engine) as s:
        db = profiles.create_database(s, ACTOR, "main", [("region", "text")])
        import io

        import_profiles(s, ACTOR, db, io.BytesIO(b"external_id,region\nA,x\nB,y\n"))
        seg = segments.create_segment(s, ACTOR, "all")
        segments.add_profiles_where(s, ACTOR, seg, sa.text("1 = 1"))
        campaign = campaigns.create_campaign(s, ACTOR, "c", db, seg)
        mailings.create_mailing(s, ACTOR, "weekly", campaign, "regular", cron="0 10 * * 1")
        mailings.create_mailing(s, ACTOR, "hello", campaign, "trigger", event="purchase")
        campaigns.activate(s, ACTOR, campaign)
    builds.run_pending(engine, worker="test")
    with transaction(engine) as s:
        campaign = campaigns.get_campaign(s, "c")
        campaigns.edit_lcg(s, ACTOR, campaign, enabled=True, percent="50")
    build_id = builds.claim_next_build(engine, "test")  # running: R5 pauses scheduled ones
    with transaction(engine) as s:
        weekly, hello = (mailings.get_mailing(s, n) for n in ("weekly", "hello"))
        assert weekly.paused_by_build_id == build_id and not hello.paused
        db = profiles.get_database(s, "main")
        event = events.send_event(s, ACTOR, db, "A", "purchase")
    events.drain(engine, ACTOR)
    with Session(engine) as s:
        assert [o.outcome for o in events.event_outcomes(s, event.id)] == ["delivered"]


def test_suppression_reasons_take_the_first_that_applies():
    base = dict(
        campaign_status="active",
        mailing_status="active",
        manual_paused=False,
        group="test",
        in_gcg=False,
        gcg_excepted=False,
        in_mailing_segment=None,
    )
    R = SuppressionReason
    assert suppression_reason(**base) is None
    assert suppression_reason(**{**base, "in_mailing_segment": True}) is None
    assert suppression_reason(**{**base, "in_mailing_segment": False}) == R.NOT_IN_MAILING_SEGMENT
    assert suppression_reason(**{**base, "group": "control", "in_mailing_segment": False}) == R.CONTROL  # fmt: skip
    assert suppression_reason(**{**base, "group": None}) == R.NOT_MEMBER
    assert suppression_reason(**{**base, "group": None, "in_gcg": True}) == R.GCG
    assert suppression_reason(**{**base, "group": None, "in_gcg": True, "gcg_excepted": True}) == R.NOT_MEMBER  # fmt: skip
    # R11a: a GCG change never moves current members; a test member still receives
    assert suppression_reason(**{**base, "in_gcg": True}) is None
    assert suppression_reason(**{**base, "manual_paused": True, "group": "control"}) == R.MAILING_PAUSED  # fmt: skip
    assert suppression_reason(**{**base, "mailing_status": "stopped"}) == R.MAILING_PAUSED
    for status in ("draft", "completed"):
        assert suppression_reason(**{**base, "campaign_status": status, "manual_paused": True}) == R.CAMPAIGN_NOT_ACTIVE  # fmt: skip


# --------------------------------------------------------------------------- exactly once


def _effects(engine) -> tuple[Counter, Counter, int]:
    with Session(engine) as s:
        delivered = Counter(s.execute(sa.select(Delivery.event_id, Delivery.mailing_id).where(Delivery.event_id.is_not(None))).all())  # fmt: skip
        suppressed = Counter(s.execute(sa.select(Suppression.event_id, Suppression.mailing_id)).all())  # fmt: skip
        pending = events.pending_count(s)
    return delivered, suppressed, pending


def _import(cli, n: int, event: str = "purchase") -> None:
    lines = ["external_id,event"] + [f"P{i % 100:03d},{event}" for i in range(n)]
    cli.ok("events", "import", "--database", "main", cli.file("many.csv", "\n".join(lines) + "\n"))


class Crash(Exception):
    pass


def test_a_drain_killed_before_its_commit_leaves_nothing_and_the_rerun_sends_once(cli, world, db_url, monkeypatch):  # fmt: skip
    _import(cli, 250)
    engine = make_engine(db_url)
    try:
        before = table_checksums(engine)
        record = events.audit.record

        def record_then_crash(*args, **kwargs) -> None:
            record(*args, **kwargs)  # the batch's last write (its audit row), then the crash
            raise Crash

        with monkeypatch.context() as patch:
            patch.setattr(events.audit, "record", record_then_crash)
            with pytest.raises(Crash):
                events.drain_batch(engine, ACTOR, limit=100)
        assert table_checksums(engine) == before  # the whole batch rolled back
        first = events.drain_batch(engine, ACTOR, limit=100)
        assert first.events == 100
        rest = events.drain(engine, ACTOR, limit=100)
        assert rest.events == 150
        assert events.drain(engine, ACTOR).events == 0  # a re-run finds nothing to do
        delivered, suppressed, pending = _effects(engine)
        assert pending == 0
        assert set(delivered.values()) == {1} and set(suppressed.values()) == {1}
        # every purchase event fired each of the 5 purchase mailings exactly once
        assert sum(delivered.values()) + sum(suppressed.values()) == 250 * 5
    finally:
        engine.dispose()


def test_racing_drains_never_record_an_effect_twice(cli, world, db_url):
    _import(cli, 400)
    engine = make_engine(db_url)
    errors: list[BaseException] = []

    def worker() -> None:
        for _ in range(200):
            try:
                if not events.drain_batch(engine, ACTOR, limit=50).events:
                    return
            except Exception as exc:  # the loser of a race: rolled back, tries again
                errors.append(exc)

    try:
        threads = [threading.Thread(target=worker) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        events.drain(engine, ACTOR)
        delivered, suppressed, pending = _effects(engine)
        assert pending == 0
        assert set(delivered.values()) == {1} and set(suppressed.values()) == {1}
        assert sum(delivered.values()) + sum(suppressed.values()) == 400 * 5
    finally:
        engine.dispose()


def test_events_are_processed_in_arrival_order(cli, world, db_url):
    """Each batch takes the oldest unprocessed events; a card lists outcomes in the order
    of the events that caused them."""
    test_member = next(e for e, g in sorted(world.items()) if g == "test" and int(e[1:]) < 50)
    for name in ("first", "second", "third"):
        cli.ok("mailing", "create", f"on-{name}", "--campaign", "live", "--kind", "trigger", "--on", name)  # fmt: skip
    lines = ["external_id,event"] + [f"{test_member},{name}" for name in ("third", "first", "second", "third")]  # fmt: skip
    cli.ok("events", "import", "--database", "main", cli.file("o.csv", "\n".join(lines) + "\n"))
    engine = make_engine(db_url)
    try:
        assert events.drain_batch(engine, ACTOR, limit=2).events == 2
        with Session(engine) as s:
            done = list(s.scalars(sa.select(TriggerEvent.event).where(TriggerEvent.processed_at.is_not(None)).order_by(TriggerEvent.id)))  # fmt: skip
        assert done == ["third", "first"]
        events.drain(engine, ACTOR)
    finally:
        engine.dispose()
    card = cli.ok("profile", "show", test_member, "--database", "main", "--json").json
    fired = [e["mailing"] for e in card["events"] if e["kind"] == "delivered"]
    assert fired == ["on-third", "on-first", "on-second", "on-third"]


# --------------------------------------------------------------------------- CLI


def test_event_commands_exit_codes_and_refusals(cli, world, db_url):
    engine = make_engine(db_url)
    try:
        before = table_checksums(engine, skip=(AuditEntry.__tablename__,))
        bad = cli.file(
            "bad.csv",
            "external_id,event,at\n"
            "P001,purchase,2026-01-01T00:00:00Z\n"
            "NOPE,purchase,\n"
            "P002,,\n"
            "P003,purchase,yesterday\n"
            "P004,purchase\n"
            "P005,bad\x1bname,\n"
            "P006,purchase,0001-01-01T00:00:00+14:00\n",  # before year 1 in UTC
        )
        result = cli("events", "import", "--database", "main", bad)
        assert result.code == 3
        for line, what in ((3, "unknown external_id 'NOPE'"), (4, "column event"), (5, "not ISO 8601"), (6, "ragged row"), (7, "U+001B"), (8, "out of range in UTC")):  # fmt: skip
            assert f"line {line}" in result.err and what in result.err, (line, result.err)
        assert "nothing imported" in result.err
        assert cli("events", "import", "--database", "main", cli.file("h.csv", "external_id,when\nP001,x\n")).code == 3  # fmt: skip
        assert cli("events", "import", "--database", "nope", bad).code == 4
        assert cli("event", "send", "--database", "main", "NOPE", "purchase").code == 4
        assert cli("event", "send", "--database", "nope", "P001", "purchase").code == 4
        assert cli("event", "send", "--database", "main", "P001", "").code == 3
        assert cli("event", "send", "--database", "main", "P001", "x", "--at", "soon").code == 2
        late = cli("event", "send", "--database", "main", "P001", "x", "--at", "9999-12-31T23:59:59-14:00")  # fmt: skip
        assert late.code == 2 and "out of range in UTC" in late.err, late.err
        early = cli("mailing", "create", "m", "--campaign", "live", "--kind", "broadcast", "--at", "0001-01-01T00:00:00+14:00")  # fmt: skip
        assert early.code == 2 and "out of range in UTC" in early.err, early.err
        assert cli("--read-only", "event", "send", "--database", "main", "P001", "purchase").code == 3  # fmt: skip
        assert cli("--read-only", "events", "import", "--database", "main", bad).code == 3
        # trigger mailings name their event; other kinds name none
        assert cli("mailing", "create", "m", "--campaign", "live", "--kind", "trigger").code == 3
        assert cli("mailing", "create", "m", "--campaign", "live", "--kind", "broadcast", "--at", "2030-01-01", "--on", "x").code == 3  # fmt: skip
        assert cli("mailing", "create", "m", "--campaign", "live", "--kind", "trigger", "--on", "a\u202eb").code == 3  # fmt: skip
        assert cli("mailing", "show", "nope").code == 4
        assert table_checksums(engine, skip=(AuditEntry.__tablename__,)) == before
        # without --wait, an event waits in the inbox for the scheduler
        queued = cli.ok("event", "send", "--database", "main", "P001", "purchase", "--json").json
        assert queued["processed"] is False and queued["outcomes"] == []
        assert "queued" in cli.ok("event", "send", "--database", "main", "P001", "purchase").out
        with Session(engine) as s:
            assert events.pending_count(s) == 2
            actions = set(s.scalars(sa.select(AuditEntry.action)))
        assert {"event.send", "events.import", "mailing.create"} <= actions
    finally:
        engine.dispose()


def test_a_trigger_mailing_of_release1_without_an_event_never_fires(engine):
    from store import profiles, segments

    with transaction(engine) as s:
        db = profiles.create_database(s, ACTOR, "main", [("region", "text")])
        seg = segments.create_segment(s, ACTOR, "all")
        campaign = campaigns.create_campaign(s, ACTOR, "c", db, seg)
        s.add(Mailing(name="legacy", campaign_id=campaign.id, kind="trigger"))
    with Session(engine) as s:
        from store import views

        assert views.mailing_detail(s, "legacy").mailing.schedule == "on event (none named)"


def test_event_times_in_every_form_are_stored_as_the_same_utc_instant(cli, world, db_url):
    """The import's fast path (UTC text, no datetime per cell) and the general one (any
    offset) store the same instants on both backends."""
    from datetime import UTC, datetime

    forms = [
        ("2026-03-01T09:30:00Z", datetime(2026, 3, 1, 9, 30, tzinfo=UTC)),
        ("2026-03-01T09:30:00.5+00:00", datetime(2026, 3, 1, 9, 30, 0, 500000, tzinfo=UTC)),
        ("2026-03-01 09:30:00.123456", datetime(2026, 3, 1, 9, 30, 0, 123456, tzinfo=UTC)),
        ("2026-03-01T12:30:00+03:00", datetime(2026, 3, 1, 9, 30, tzinfo=UTC)),
    ]
    for mixed in (False, True):  # one batch all in UTC form (fast), or with an offset
        chosen = forms[:3] if not mixed else forms
        text = "external_id,event,at\n" + "".join(f"P001,browse,{cell}\n" for cell, _ in chosen)
        result = cli.ok("events", "import", "--database", "main", cli.file("t.csv", text), "--json")
        engine = make_engine(db_url)
        with Session(engine) as s:
            stored = list(
                s.scalars(
                    sa.select(TriggerEvent.at)
                    .where(TriggerEvent.id >= result.json["first_id"])
                    .order_by(TriggerEvent.id)
                )
            )
        engine.dispose()
        assert stored == [instant for _, instant in chosen], mixed


# --------------------------------------------------------------------------- revision 0004


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])  # fmt: skip
def test_release1_workspace_upgrades_to_trigger_events(backend, tmp_path, capsys, request):
    """Revision 0004 (event inbox, trigger events, suppressions, refresh duration) on
    release 1's workspace: groups and history unchanged; release 1's trigger mailing
    names no event and never fires; events work on the upgraded database."""
    from test_migrations import (
        assert_release1_answers_unchanged,
        load_release1_into_postgres,
        release1_copy,
    )

    from store import migrate
    from store.db import open_store

    if backend == "sqlite":
        url = f"sqlite:///{release1_copy(tmp_path)}"
        engine = open_store(url)  # backs it up and upgrades it
    else:
        url = request.getfixturevalue("postgres_url")
        load_release1_into_postgres(url)
        engine = make_engine(url)
        migrate.upgrade(engine)
    try:
        assert_release1_answers_unchanged(capsys, url)
        with Session(engine) as s:
            legacy = mailings.get_mailing(s, "Spring Purchase")
            assert legacy.kind == "trigger" and legacy.trigger_event is None
            assert events.pending_count(s) == 0
        cli = Cli(url, capsys, tmp_path)
        database = cli.ok("campaign", "show", "Spring Promo", "--json").json["database"]
        card = cli.ok("campaign", "members", "Spring Promo", "--format", "json").json
        external_id = card[0]["external_id"]
        sent = cli.ok("event", "send", "--database", database, external_id, "purchase", "--wait", "--json")  # fmt: skip
        assert sent.json["processed"] is True and sent.json["outcomes"] == []  # no event named
        shown = cli.ok("mailing", "show", "Spring Purchase", "--json").json
        assert shown["sent"] == 0 and shown["suppressed_total"] == 0
    finally:
        engine.dispose()
