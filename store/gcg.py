"""The global control group of a profile database (R1, R11a; issue 13 §3).

A profile in its database's GCG (`profile.in_gcg`) is held out of every campaign of the
database, unless the campaign is on the database's exception list (`gcg_exception`):
`store.audience.r1_scope_sql` is the one place builds and counts apply that rule.

Operators add or remove profiles by file (a CSV with an `external_id` column), validated
and applied like imports: the whole file or nothing, every problem with its line. Each
profile that actually enters or leaves gets an `entered_gcg` / `left_gcg` event on its
card (R12), stamped with the operation's one time. A GCG change only affects future
entries into campaigns: current members stay where they are (R11a), because builds only
look at the GCG when they admit newcomers.

Every operation checks the actor first (read-only is refused), changes nothing on a
refusal, and writes one audit entry.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa
from sqlmodel import Session

from store import audit, lcg
from store.actors import Actor
from store.campaigns import get_campaign
from store.csv_import import (
    BATCH_SIZE,
    MAX_PROBLEMS,
    Problems,
    Records,
    StageWriter,
    convert_columns,
    drop_stage,
    report_duplicates,
)
from store.csv_load import file_load, is_ragged, result_dict, stage_batches
from store.locations import is_postgres
from store.models import Campaign, GcgException, Profile, ProfileDatabase, UTCDateTime, utcnow
from store.profiles import get_database
from store.states import ProfileEventKind, check_not_completed

GCG_STAGE = "cc_import_gcg_stage"
GCG_ACTIONS = ("add", "remove")


@dataclass(frozen=True)
class GcgOverview:
    database: str
    percent_bp: int  # 0: no percent selection (only profiles added by file)
    seed: int | None
    size: int  # profiles in the GCG
    profiles: int  # profiles of the database
    exceptions: list[str] = field(default_factory=list)  # campaigns that may reach it

    def as_dict(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "percent": lcg.format_percent(self.percent_bp) if self.percent_bp else None,
            "seed": self.seed,
            "size": self.size,
            "profiles": self.profiles,
            "exceptions": list(self.exceptions),
        }


@dataclass(frozen=True)
class GcgFileResult:
    database: str
    action: str
    rows: int
    changed: int  # profiles that entered (add) or left (remove) the GCG
    unchanged: int  # already in (add) / already out (remove)

    def as_dict(self) -> dict[str, Any]:
        return result_dict(self)


def gcg_show(session: Session, database: ProfileDatabase | str) -> GcgOverview:
    if isinstance(database, str):
        database = get_database(session, database)
    size = session.scalar(
        sa.select(sa.func.count()).where(
            Profile.database_id == database.id, Profile.in_gcg.is_(True)
        )
    )
    total = session.scalar(sa.select(sa.func.count()).where(Profile.database_id == database.id))
    exceptions = session.scalars(
        sa.select(Campaign.name)
        .join(GcgException, GcgException.campaign_id == Campaign.id)
        .where(GcgException.database_id == database.id)
        .order_by(Campaign.name)
    ).all()
    return GcgOverview(
        database.name,
        database.gcg_percent_bp,
        database.gcg_seed,
        int(size or 0),
        int(total or 0),
        list(exceptions),
    )


HASH_MIN = -(2**63)
HASH_SPAN = 2**64


def threshold(percent_bp: int) -> int:
    """R11a: a profile is selected when its R9 hash under the database's GCG seed is below
    this, exactly `percent_bp / 10000` of the 64-bit hash range (integer arithmetic)."""
    return HASH_MIN + percent_bp * HASH_SPAN // 10000


def new_profile_sql(database: ProfileDatabase, external_id: str) -> tuple[str, dict[str, Any]]:
    """SQL (and its parameters) deciding `in_gcg` of a profile being created (R11a: a new
    profile's membership is decided when it is created)."""
    bp, seed = database.gcg_percent_bp, database.gcg_seed
    if not bp or seed is None:
        return "FALSE", {}
    return (
        f"CASE WHEN cc_assignment_hash(:gcg_seed, {external_id}) < :gcg_thr "
        "THEN TRUE ELSE FALSE END",
        {"gcg_seed": seed, "gcg_thr": threshold(bp)},
    )


@audit.operation("gcg.set", "database")
def set_percent(session: Session, actor: Actor, database: ProfileDatabase, percent: Any) -> int:
    """R11a: hold `percent` of the database out, chosen deterministically by its GCG seed
    and the R9 hash; profiles added or removed by file keep their operator's choice.
    Each profile whose membership changes gets entered_gcg / left_gcg; campaign members
    stay where they are. 0 turns the percent selection off. Returns how many changed."""
    actor.require_write("set the GCG percent")
    text = str(percent).strip().removesuffix("%").strip()
    try:
        off = float(text) == 0
    except ValueError:
        off = False
    bp = 0 if off else lcg.parse_percent(percent, "GCG percent")
    seed = database.gcg_seed if database.gcg_seed is not None else secrets.randbelow(2**63)
    database.gcg_percent_bp, database.gcg_seed = bp, seed
    session.add(database)
    session.flush()
    now = utcnow()
    thr = threshold(bp) if bp else HASH_MIN
    wanted = (
        "COALESCE(gcg_override, CASE WHEN cc_assignment_hash(:seed, external_id) < :thr "
        "THEN TRUE ELSE FALSE END)"
    )
    params = {"db": database.id, "seed": seed, "thr": thr}
    when = sa.bindparam("now", type_=UTCDateTime())
    for kind, was in ((ProfileEventKind.ENTERED_GCG, False), (ProfileEventKind.LEFT_GCG, True)):
        session.execute(
            sa.text(
                f"""INSERT INTO profile_event (at, profile_id, kind, actor)
                    SELECT :now, id, :kind, :actor FROM profile
                    WHERE database_id = :db AND in_gcg = :was AND {wanted} <> :was"""
            ).bindparams(when),
            {**params, "now": now, "kind": kind, "actor": actor.user, "was": was},
        )
    changed = session.execute(
        sa.text(
            f"UPDATE profile SET in_gcg = {wanted} WHERE database_id = :db AND in_gcg <> {wanted}"
        ),
        params,
    ).rowcount
    audit.record(
        session,
        actor,
        "gcg.set",
        "database",
        database.id,
        database.name,
        percent=lcg.format_percent(bp) if bp else "0",
        seed=seed,
        changed=changed,
    )
    session.flush()
    return changed


@audit.operation(lambda database, action, *args, **kwargs: f"gcg.{action}", "database")
def apply_gcg_file(
    session: Session,
    actor: Actor,
    database: ProfileDatabase,
    action: str,
    source: str | Path | IO[bytes],
    *,
    batch_size: int = BATCH_SIZE,
    max_problems: int = MAX_PROBLEMS,
) -> GcgFileResult:
    """Add the file's profiles to the database's GCG, or remove them (R11a)."""
    if action not in GCG_ACTIONS:
        raise ValueError(f"action must be one of {GCG_ACTIONS}, not {action!r}")
    actor.require_write(f"{action} profiles {'to' if action == 'add' else 'from'} the GCG")
    with file_load(session, source, batch_size=batch_size, max_problems=max_problems) as load:
        conn = load.conn

        def scan(records: Records, problems: Problems) -> int:
            header = load.header(
                records,
                problems,
                ("external_id",),
                "unknown column: a GCG file has one column, external_id",
            )
            width, index = len(header), header.index("external_id")
            writer = load.stage(
                GCG_STAGE, [("line", "BIGINT"), ("external_id", "TEXT")], [("profile_id", "BIGINT")]
            )
            return stage_batches(
                records,
                problems,
                writer,
                lambda batch: convert_columns(batch, width, index, []),
                lambda bad: _stage_gcg_rows(bad, problems, writer, width, index),
                empty_file_ok=True,  # changes nothing, as a file of profiles already in/out
            )

        rows, problems = load.scan(scan)
        report_duplicates(conn, GCG_STAGE, ["external_id"], repr, problems)
        conn.exec_driver_sql(
            f"""UPDATE {GCG_STAGE} SET profile_id = (SELECT p.id FROM profile p
                WHERE p.database_id = {int(database.id)}
                  AND p.external_id = {GCG_STAGE}.external_id)"""
        )
        if is_postgres(conn):
            conn.exec_driver_sql(f"ANALYZE {GCG_STAGE}")
        missing = conn.exec_driver_sql(
            f"SELECT line, external_id FROM {GCG_STAGE} WHERE profile_id IS NULL ORDER BY line"
        ).all()
        for line, external_id in missing:
            problems.add(
                line, "external_id", f"unknown external_id {external_id!r} in {database.name!r}"
            )
        problems.raise_if_any(load.name)
        entering = action == "add"
        now = utcnow()
        chosen = f"id IN (SELECT profile_id FROM {GCG_STAGE})"
        flip = f"{chosen} AND in_gcg = :was"
        when = sa.bindparam("now", type_=UTCDateTime())
        # R12: one event per profile that really changes, before the flag moves.
        session.execute(
            sa.text(
                f"""INSERT INTO profile_event (at, profile_id, kind, actor)
                    SELECT :now, id, :kind, :actor FROM profile WHERE {flip}"""
            ).bindparams(when),
            {
                "now": now,
                "kind": ProfileEventKind.ENTERED_GCG if entering else ProfileEventKind.LEFT_GCG,
                "actor": actor.user,
                "was": not entering,
            },
        )
        changed = session.execute(
            sa.text(f"UPDATE profile SET in_gcg = :now_in WHERE {flip}"),
            {"now_in": entering, "was": not entering},
        ).rowcount
        # The operator's choice outlives later percent changes (gcg set).
        session.execute(
            sa.text(f"UPDATE profile SET gcg_override = :now_in WHERE {chosen}"),
            {"now_in": entering},
        )
        drop_stage(conn, GCG_STAGE)
    audit.record(
        session,
        actor,
        f"gcg.{action}",
        "database",
        database.id,
        database.name,
        rows=rows,
        changed=changed,
        at=now.isoformat(),
    )
    session.flush()
    return GcgFileResult(database.name, action, rows, changed, rows - changed)


def _stage_gcg_rows(
    records: Iterable[tuple[int, list[str]]],
    problems: Problems,
    writer: StageWriter,
    width: int,
    index: int,
) -> None:
    """Row by row, reporting every problem (the batches `convert_columns` refuses)."""
    for line, cells in records:
        if is_ragged(line, cells, width, problems):
            continue
        if not cells[index].strip():
            problems.add(line, "external_id", "empty external_id")
            continue
        writer.add((line, cells[index]))


@audit.operation(
    lambda name, excepted, *args, **kwargs: "gcg.except" if excepted else "gcg.unexcept",
    "campaign",
)
def set_exception(session: Session, actor: Actor, campaign_name: str, excepted: bool) -> bool:
    """Put a campaign on its database's GCG exception list (or take it off). Returns
    whether anything changed. Only future entries follow (R11a): no member moves."""
    verb = "except a campaign from" if excepted else "un-except a campaign from"
    actor.require_write(f"{verb} the GCG")
    campaign = get_campaign(session, campaign_name)
    check_not_completed(campaign, "change its GCG exception")
    key = (campaign.database_id, campaign.id)
    row = session.get(GcgException, key)
    if excepted and row is None:
        session.add(GcgException(database_id=campaign.database_id, campaign_id=campaign.id))
    elif not excepted and row is not None:
        session.delete(row)
    changed = (row is None) == excepted
    audit.record(
        session,
        actor,
        "gcg.except" if excepted else "gcg.unexcept",
        "campaign",
        campaign.id,
        campaign.name,
        changed=changed,
    )
    session.flush()
    return changed
