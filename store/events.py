"""Trigger mailings (R11b): the event inbox, and its drain.

Events arrive by `event send` (one) or `events import` (a CSV file, all rows or none) and
wait in `event_inbox`, unprocessed. The drain (`drain_batch`, run by the scheduler's
`drain_events` job, or by `--wait` in the calling process when no scheduler holds the
lease) takes the oldest unprocessed events in arrival order (`id`), and for each event
fires every trigger mailing of the profile's database that names the event:

* a test member of the campaign (in the mailing's segment, if it has one) gets a
  delivery (`delivery` with `event_id`, recorded like the default sender's);
* anyone else gets a `suppression` with its reason (`SuppressionReason`), so "why did
  this person get nothing?" always has an answer on the card.

The decision is taken when the event is processed ("at that moment", R11b), from the
current membership; the records are stamped with that moment, so they never precede the
membership events that caused them (R4a). Trigger mailings are never paused by builds
(R5); a completed campaign (R8) or a draft suppresses with `campaign_not_active`.

At-least-once input, exactly-once effect: a batch's deliveries, suppressions and the
events' `processed_at` are one transaction, and both effect tables are unique per
(event, mailing), so a drain killed anywhere and run again, or two drains racing, never
record an effect twice.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session

from store import audit
from store.actors import Actor
from store.csv_import import (
    BATCH_SIZE,
    MAX_PROBLEMS,
    Problems,
    Records,
    StageWriter,
    batch_cells,
    drop_stage,
)
from store.csv_load import file_load, is_ragged, result_dict, stage_batches
from store.db import keep_statistics_fresh, transaction
from store.errors import ValidationError
from store.imports import resolve_profiles
from store.locations import is_postgres
from store.models import (
    Campaign,
    CampaignMember,
    Delivery,
    GcgException,
    Mailing,
    MailingOutcome,
    Profile,
    ProfileDatabase,
    SegmentMember,
    Suppression,
    TriggerEvent,
    UTCDateTime,
    utcnow,
)
from store.names import check_name
from store.profiles import get_profile
from store.states import (
    CampaignStatus,
    Group,
    MailingKind,
    MailingStatus,
    SuppressionReason,
)

EVENT_STAGE = "cc_import_event_stage"
EVENT_COLUMNS = ("external_id", "event", "at")
DRAIN_BATCH = 1_000
_event = TriggerEvent.__table__


def check_event_name(name: str | None) -> str:
    """An event name is a name like any other (store/names.py): printable, 1-200 chars."""
    return check_name("trigger event", name)


def _aware(at: datetime | None) -> datetime:
    if at is None:
        return utcnow()
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)  # naive means UTC


# --------------------------------------------------------------------------- receiving


@audit.operation("event.send", "database")
def send_event(
    session: Session,
    actor: Actor,
    database: ProfileDatabase,
    external_id: str,
    event: str,
    at: datetime | None = None,
) -> TriggerEvent:
    """Put one event in the inbox (processed later by the drain). NotFoundError when the
    database has no such profile."""
    actor.require_write("send an event")
    event = check_event_name(event)
    profile_id = get_profile(session, database, external_id).id
    now = utcnow()
    row = TriggerEvent(
        database_id=database.id,
        profile_id=profile_id,
        event=event,
        at=_aware(at),
        received_at=now,
        received_by=actor.user,
    )
    session.add(row)
    session.flush()
    audit.record(
        session,
        actor,
        "event.send",
        "database",
        database.id,
        database.name,
        event=event,
        external_id=external_id,
        event_id=row.id,
        at=row.at.isoformat(),
    )
    return row


@dataclass(frozen=True)
class EventImportResult:
    database: str
    rows: int
    first_id: int | None  # the inbox ids the file's events got, in file order
    last_id: int | None
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return result_dict(self)


@audit.operation("events.import", "database")
def import_events(
    session: Session,
    actor: Actor,
    database: ProfileDatabase,
    source: str | Path | IO[bytes],
    *,
    batch_size: int = BATCH_SIZE,
    max_problems: int = MAX_PROBLEMS,
) -> EventImportResult:
    """Put every event of a CSV file (`external_id, event[, at]`) in the inbox: all or none.

    Read, staged and checked like a profile import (store/csv_import.py): any bad row
    (unknown external id, bad event name, a time that is not ISO 8601) rejects the whole
    file with every problem and its line (ImportRejected, exit 3). An empty `at` (or no
    `at` column) means the time of the import; a time without offset is UTC. The events
    enter the inbox in file order.
    """
    actor.require_write("import events")
    with file_load(session, source, batch_size=batch_size, max_problems=max_problems) as load:
        conn = load.conn
        pg = is_postgres(conn)
        to_db = _datetime_writer(conn)

        def scan(records: Records, problems: Problems) -> int:
            header = load.header(
                records,
                problems,
                EVENT_COLUMNS,
                "unknown column: an event file has external_id, event and at",
            )
            if "event" not in header:
                problems.add(1, None, "missing column: event (the event's name)")
                problems.raise_if_any(load.name)
            width = len(header)
            indexes = (
                header.index("external_id"),
                header.index("event"),
                header.index("at") if "at" in header else None,
            )
            writer = load.stage(
                EVENT_STAGE,
                [
                    # SQLite: the line is the rowid, so the insert reads the stage in file
                    # order without sorting it
                    ("line", "BIGINT" if pg else "INTEGER PRIMARY KEY"),
                    ("external_id", "TEXT"),
                    ("event", "TEXT"),
                    ("at", "TIMESTAMP" if pg else "TEXT"),
                ],
                [("profile_id", "BIGINT")],
            )
            return stage_batches(
                records,
                problems,
                writer,
                lambda batch: _event_columns(batch, width, indexes, to_db),
                lambda bad: _stage_event_rows(bad, problems, writer, width, indexes, to_db),
            )

        rows, problems = load.scan(scan)
        before = session.scalar(sa.select(sa.func.max(_event.c.id))) or 0
        if not problems.total:
            inserted = _insert_events(conn, database, actor)
            if inserted != rows:  # some external id is not a profile of the database
                resolve_profiles(conn, EVENT_STAGE, problems, database=database)
        else:  # rejected anyway: report the unknown external ids too
            resolve_profiles(conn, EVENT_STAGE, problems, database=database)
        problems.raise_if_any(load.name)  # the caller's rollback undoes any insert
        drop_stage(conn, EVENT_STAGE)
        keep_statistics_fresh(conn, "event_inbox", rows)
        last_id = session.scalar(sa.select(sa.func.max(_event.c.id)))
    first = session.scalar(sa.select(sa.func.min(_event.c.id)).where(_event.c.id > before))
    audit.record(
        session,
        actor,
        "events.import",
        "database",
        database.id,
        database.name,
        file=load.name,
        rows=rows,
        first_id=first,
        last_id=last_id,
    )
    session.flush()
    return EventImportResult(database.name, rows, first, last_id, load.seconds())


def _insert_events(conn: Connection, database: ProfileDatabase, actor: Actor) -> int:
    """The staged events into the inbox in file order, each with its profile (a join, no
    per-row lookups); returns how many were inserted (fewer: an unknown external id)."""
    if is_postgres(conn):  # temp tables are never auto-analysed: plan the join on figures
        conn.exec_driver_sql(f"ANALYZE {EVENT_STAGE}")
    now = utcnow()
    before = conn.scalar(sa.select(sa.func.max(_event.c.id))) or 0
    conn.execute(
        sa.text(
            "INSERT INTO event_inbox "
            "(database_id, profile_id, event, at, received_at, received_by) "
            "SELECT :db, p.id, s.event, COALESCE(s.at, :now), :now, :actor "
            f"FROM {EVENT_STAGE} s JOIN profile p "
            "ON p.database_id = :db AND p.external_id = s.external_id ORDER BY s.line"
        ).bindparams(sa.bindparam("now", type_=UTCDateTime())),
        {"db": database.id, "now": now, "actor": actor.user},
    )
    return conn.scalar(sa.select(sa.func.count()).where(_event.c.id > before)) or 0


def _PASS_THROUGH(value: Any) -> Any:
    return value


def _datetime_writer(conn: Connection) -> Any:
    """naive UTC datetime -> what the stage column holds (SQLite: DateTime's text)."""
    dialect = conn.dialect
    process = sa.DateTime().dialect_impl(dialect).bind_processor(dialect)
    return process or _PASS_THROUGH


class OutOfRangeTime(ValueError):
    """An ISO 8601 time that UTC cannot hold (before year 1 or after 9999 once shifted)."""


def parse_at(text: str) -> datetime:
    """An event time: ISO 8601; without an offset it is UTC. Returned naive, in UTC."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is not None:
        try:
            moment = moment.astimezone(UTC).replace(tzinfo=None)
        except OverflowError:  # e.g. 0001-01-01T00:00:00+14:00 is before year 1 in UTC
            raise OutOfRangeTime(f"{text!r} is out of range in UTC") from None
    return moment


def _valid_event_name(name: str) -> bool:
    try:
        check_event_name(name)
    except ValidationError:
        return False
    return True


def _event_columns(
    batch: list[list[str]],
    width: int,
    indexes: tuple[int, int, int | None],
    to_db: Any,
) -> list[Sequence[Any]] | None:
    """[external ids, events, times] of a batch without a single problem, else None (the
    batch then goes row by row, which reports every problem)."""
    id_index, event_index, at_index = indexes
    cells = batch_cells(batch, width, id_index)
    if cells is None:
        return None
    external_ids = cells[id_index]
    events = cells[event_index]
    distinct = set(events)
    if not all(map(_valid_event_name, distinct)):
        return None
    if any(name != name.strip() for name in distinct):
        events = [name.strip() for name in events]
    if at_index is None:
        times: Sequence[Any] | None = [None] * len(batch)
    else:
        times = _utc_times(cells[at_index], to_db)
        if times is None:
            try:
                times = [None if cell == "" else to_db(parse_at(cell)) for cell in cells[at_index]]
            except ValueError:
                return None
    return [external_ids, events, times]


# A time in UTC as event files usually give it: 2026-03-01T09:30:00[.123456][Z|+00:00].
UTC_TIME = re.compile(r"(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,6}))?(?:Z|\+00:00)?")


def _utc_times(cells: Sequence[str], to_db: Any) -> Sequence[Any] | None:
    """The stored form of a column of UTC times without a Python datetime per cell (the
    import's fast path), or None when some cell is in another form (then `parse_at`
    converts each one, or reports it). PostgreSQL's TIMESTAMP column takes the ISO text
    itself; SQLite stores DateTime's text, `YYYY-MM-DD HH:MM:SS.ffffff`."""
    if "" in cells:
        if all(cell == "" for cell in cells):
            return [None] * len(cells)
        return None
    matches = list(map(UTC_TIME.fullmatch, cells))
    if not all(matches):
        return None
    try:
        all(map(datetime.fromisoformat, cells))  # a real day and time (C, fast)
    except ValueError:
        return None
    if to_db is _PASS_THROUGH:
        return cells
    return [f"{m[1]} {m[2]}.{(m[3] or '').ljust(6, '0')}" for m in matches]


def _stage_event_rows(
    records: Iterable[tuple[int, list[str]]],
    problems: Problems,
    writer: StageWriter,
    width: int,
    indexes: tuple[int, int, int | None],
    to_db: Any,
) -> None:
    id_index, event_index, at_index = indexes
    for line, cells in records:
        if is_ragged(line, cells, width, problems):
            continue
        external_id = cells[id_index]
        ok = True
        if not external_id or external_id.isspace():
            problems.add(line, "external_id", "empty external_id")
            ok = False
        try:
            event = check_event_name(cells[event_index])
        except ValidationError as exc:
            problems.add(line, "event", str(exc))
            ok = False
        at = None
        if at_index is not None and cells[at_index] != "":
            try:
                at = to_db(parse_at(cells[at_index]))
            except OutOfRangeTime as exc:
                problems.add(line, "at", f"bad time: {exc}")
                ok = False
            except ValueError:
                problems.add(
                    line,
                    "at",
                    f"bad time: {cells[at_index]!r} is not ISO 8601 (e.g. 2026-03-01T09:30:00Z)",
                )
                ok = False
        if ok:
            writer.add((line, external_id, event, at))


# --------------------------------------------------------------------------- processing


def suppression_reason(
    *,
    campaign_status: str,
    mailing_status: str,
    manual_paused: bool,
    group: str | None,
    in_gcg: bool,
    gcg_excepted: bool,
    in_mailing_segment: bool | None,
) -> SuppressionReason | None:
    """R11b: None when the mailing sends to the profile now, else why not.

    The first that applies, in this order: the campaign is not active (a draft, or
    completed, R8); the mailing is paused by an operator or stopped (builds never pause a
    trigger mailing, R5); the profile is a control member; it is not a member, held out by
    the GCG (R1, R11a: its database's GCG, the campaign not excepted), or simply not a
    member; it is a test member outside the mailing's own segment. A current test member
    who entered the GCG after joining still receives (R11a: a GCG change never moves
    current members), as scheduled mailings do (store/deliveries.py).
    """
    if campaign_status != CampaignStatus.ACTIVE:
        return SuppressionReason.CAMPAIGN_NOT_ACTIVE
    if mailing_status != MailingStatus.ACTIVE or manual_paused:
        return SuppressionReason.MAILING_PAUSED
    if group == Group.CONTROL:
        return SuppressionReason.CONTROL
    if group is None:
        if in_gcg and not gcg_excepted:
            return SuppressionReason.GCG
        return SuppressionReason.NOT_MEMBER
    if in_mailing_segment is False:
        return SuppressionReason.NOT_IN_MAILING_SEGMENT
    return None


@dataclass(frozen=True)
class DrainResult:
    events: int  # events marked processed
    delivered: int
    suppressed: int
    last_id: int | None  # the newest event processed

    def __add__(self, other: DrainResult) -> DrainResult:
        return DrainResult(
            self.events + other.events,
            self.delivered + other.delivered,
            self.suppressed + other.suppressed,
            other.last_id if other.last_id is not None else self.last_id,
        )


NOTHING = DrainResult(0, 0, 0, None)


def _firings(ids: list[int]) -> sa.Select:
    """Every (event, matching trigger mailing) of these events, with what decides it."""
    e, m, c = _event, Mailing.__table__, Campaign.__table__
    p, cm, sm = Profile.__table__, CampaignMember.__table__, SegmentMember.__table__
    g = GcgException.__table__
    excepted = (
        sa.exists().where(g.c.database_id == c.c.database_id, g.c.campaign_id == c.c.id)
    ).label("excepted")
    in_segment = sa.case(
        (m.c.segment_id.is_(None), sa.null()),
        else_=sa.exists().where(
            sm.c.segment_id == m.c.segment_id,
            sm.c.profile_id == e.c.profile_id,
            sm.c.left_at.is_(None),
        ),
    ).label("in_segment")
    return (
        sa.select(
            e.c.id,
            e.c.profile_id,
            m.c.id,
            c.c.id,
            c.c.status,
            m.c.status,
            m.c.manual_paused,
            cm.c.group,
            p.c.in_gcg,
            excepted,
            in_segment,
        )
        .select_from(e)
        .join(c, c.c.database_id == e.c.database_id)
        .join(
            m,
            sa.and_(
                m.c.campaign_id == c.c.id,
                m.c.kind == MailingKind.TRIGGER,
                m.c.trigger_event == e.c.event,
            ),
        )
        .join(p, p.c.id == e.c.profile_id)
        .outerjoin(
            cm,
            sa.and_(
                cm.c.campaign_id == c.c.id,
                cm.c.profile_id == e.c.profile_id,
                cm.c.left_at.is_(None),
            ),
        )
        .where(e.c.id.in_(ids))
        .order_by(e.c.id, m.c.id)
    )


def drain_batch(
    engine: Engine,
    actor: Actor,
    *,
    limit: int = DRAIN_BATCH,
    up_to: int | None = None,
) -> DrainResult:
    """Process the oldest unprocessed events (at most `limit`, none newer than `up_to`):
    their deliveries and suppressions and their `processed_at`, in one transaction."""
    # A plain read first: with nothing to do, never take SQLite's write lock (the job runs
    # every half second, next to builds and the lease heartbeat).
    waiting = sa.select(_event.c.id).where(_event.c.processed_at.is_(None)).limit(1)
    if up_to is not None:
        waiting = waiting.where(_event.c.id <= up_to)
    with engine.connect() as conn:
        if conn.execute(waiting).first() is None:
            return NOTHING
    with transaction(engine) as session:
        conn = session.connection()
        pending = (
            sa.select(_event.c.id)
            .where(_event.c.processed_at.is_(None))
            .order_by(_event.c.id)
            .limit(limit)
        )
        if up_to is not None:
            pending = pending.where(_event.c.id <= up_to)
        if is_postgres(conn):
            pending = pending.with_for_update()  # a racing drain waits, then skips these
        else:  # SQLite: take the write lock first, so the read below is not stale
            conn.execute(sa.update(_event).where(sa.false()).values(processed_at=None))
        ids = list(session.scalars(pending))
        if not ids:
            return NOTHING
        now = utcnow()
        delivered: list[dict[str, Any]] = []
        suppressed: list[dict[str, Any]] = []
        for row in session.execute(_firings(ids)):
            (event_id, profile_id, mailing_id, campaign_id, c_status, m_status, paused,
             group, in_gcg, excepted, in_segment) = row  # fmt: skip
            reason = suppression_reason(
                campaign_status=c_status,
                mailing_status=m_status,
                manual_paused=bool(paused),
                group=group,
                in_gcg=bool(in_gcg),
                gcg_excepted=bool(excepted),
                in_mailing_segment=None if in_segment is None else bool(in_segment),
            )
            record = {
                "event_id": event_id,
                "mailing_id": mailing_id,
                "campaign_id": campaign_id,
                "profile_id": profile_id,
            }
            if reason is None:
                delivered.append({**record, "run_id": None, "sent_at": now})
            else:
                suppressed.append({**record, "reason": str(reason), "at": now})
        if delivered:
            session.execute(sa.insert(Delivery.__table__), delivered)
        if suppressed:
            session.execute(sa.insert(Suppression.__table__), suppressed)
        _count_outcomes(session, delivered, suppressed)
        marked = session.execute(
            sa.update(_event)
            .where(_event.c.id.in_(ids), _event.c.processed_at.is_(None))
            .values(processed_at=now)
        ).rowcount
        if marked != len(ids):  # another drain got there first: undo, nothing twice
            raise RuntimeError("events were processed by another drain meanwhile")
        audit.record(
            session,
            actor,
            "events.process",
            "event_inbox",
            None,
            None,
            events=len(ids),
            first_id=ids[0],
            last_id=ids[-1],
            delivered=len(delivered),
            suppressed=len(suppressed),
        )
    return DrainResult(len(ids), len(delivered), len(suppressed), ids[-1])


DELIVERED = "delivered"  # the outcome counter of deliveries (MailingOutcome)


def _count_outcomes(
    session: Session, delivered: list[dict[str, Any]], suppressed: list[dict[str, Any]]
) -> None:
    """Add this batch's outcomes to the mailings' counters (same transaction)."""
    counts: Counter[tuple[int, str]] = Counter()
    counts.update((d["mailing_id"], DELIVERED) for d in delivered)
    counts.update((s["mailing_id"], s["reason"]) for s in suppressed)
    table = MailingOutcome.__table__
    for (mailing_id, outcome), n in sorted(counts.items()):
        where = sa.and_(table.c.mailing_id == mailing_id, table.c.outcome == outcome)
        updated = session.execute(
            sa.update(table).where(where).values(count=table.c.count + n)
        ).rowcount
        if not updated:
            session.execute(
                sa.insert(table).values(mailing_id=mailing_id, outcome=outcome, count=n)
            )


def drain(
    engine: Engine,
    actor: Actor,
    *,
    up_to: int | None = None,
    limit: int = DRAIN_BATCH,
    should_stop: Any = None,
) -> DrainResult:
    """Drain batch after batch until nothing (up to `up_to`) is left, or `should_stop()`."""
    total = NOTHING
    while should_stop is None or not should_stop():
        result = drain_batch(engine, actor, limit=limit, up_to=up_to)
        if not result.events:
            break
        total = total + result
    return total


# --------------------------------------------------------------------------- reading


def pending_count(session: Session, up_to: int | None = None) -> int:
    """Unprocessed events (at most `up_to`'s id and older)."""
    query = sa.select(sa.func.count()).select_from(_event).where(_event.c.processed_at.is_(None))
    if up_to is not None:
        query = query.where(_event.c.id <= up_to)
    return session.scalar(query) or 0


def last_event_id(session: Session) -> int | None:
    return session.scalar(sa.select(sa.func.max(_event.c.id)))


@dataclass(frozen=True, order=True)
class EventOutcome:
    """What one event did to one trigger mailing: `delivered`, or a suppression reason."""

    mailing: str
    campaign: str
    outcome: str


def event_outcomes(session: Session, event_id: int) -> list[EventOutcome]:
    """The deliveries and suppressions of one event, by mailing name."""
    m, c = Mailing.__table__, Campaign.__table__
    d, s = Delivery.__table__, Suppression.__table__
    delivered = (
        sa.select(m.c.name, c.c.name, sa.literal(DELIVERED))
        .join(d, d.c.mailing_id == m.c.id)
        .join(c, c.c.id == m.c.campaign_id)
        .where(d.c.event_id == event_id)
    )
    suppressed = (
        sa.select(m.c.name, c.c.name, s.c.reason)
        .join(s, s.c.mailing_id == m.c.id)
        .join(c, c.c.id == m.c.campaign_id)
        .where(s.c.event_id == event_id)
    )
    rows = session.execute(sa.union_all(delivered, suppressed)).all()
    return sorted(EventOutcome(*row) for row in rows)


def is_processed(session: Session, event_id: int) -> bool:
    return (
        session.scalar(sa.select(_event.c.processed_at).where(_event.c.id == event_id)) is not None
    )
