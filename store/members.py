"""Campaign members (issue 13 §1): who is in a campaign, one page or the whole audience.

One read model, `MemberRow`, for the console's members screen and the CLI's
`campaign members` export: external id, group, stratum (as the campaign's strata fields
decode it: the stratum the member had when its group was decided, R4a), joined time,
source (activation / segment / expansion) and LCG cohort (R9; None when the LCG was off).

* `member_page` is keyset pagination ordered by external id: a page is `external_id >
  after ... LIMIT n`, never an OFFSET, so page 1 and page 10,000 cost the same. Two plans,
  chosen from the counters: walk the database's profiles in external-id order and probe
  each one's open membership (cheap when the filter keeps many members), or take the
  matching members from the group index and sort them (cheap when it keeps few, e.g. the
  20 control members of a limited LCG).
* `MemberStream` streams every current member from ONE statement (one snapshot on both
  backends: SQLite's read transaction, PostgreSQL's cursor snapshot), so an export taken
  while a build runs is exact: nobody is missed or counted twice. It gives `MemberRow`s,
  or the rows as stored plus the two decoders every `MemberRow` is made with (stratum key,
  join instant), for the CSV export of a million members that cannot afford an object
  per member.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlmodel import Session

from store import strata
from store.campaigns import get_campaign
from store.db import statement_timeout_problem
from store.errors import ValidationError
from store.locations import is_postgres
from store.models import Campaign, CampaignStratum, ProfileDatabase, UTCDateTime
from store.profiles import database_fields

GROUPS = ("test", "control")
PAGE_SIZE = 100
STREAM_BATCH = 10_000
_CURSOR_NUMBERS = itertools.count(1)  # PostgreSQL cursor names, unique per process


class MemberRow(NamedTuple):
    """One current member (a NamedTuple: a JSON export builds one per member)."""

    external_id: str
    group: str
    stratum: dict[str, str | int | None]  # strata field -> value (int fields as numbers)
    stratum_label: str  # 'region=North, tier=2' or 'all'
    joined_at: datetime
    source: str
    cohort: int | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "external_id": self.external_id,
            "group": self.group,
            "stratum": dict(self.stratum),
            "joined_at": self.joined_at.isoformat(),
            "source": self.source,
            "cohort": self.cohort,
        }


@dataclass(frozen=True)
class MemberFilter:
    group: str | None = None  # "test" | "control" | None (both)
    stratum: tuple[tuple[str, str | None], ...] = ()  # field=value pairs, all must match
    prefix: str = ""  # external id prefix


@dataclass(frozen=True)
class MemberPage:
    campaign: str
    database: str
    rows: list[MemberRow]
    next_after: str | None  # pass as `after` for the next page; None: this was the last
    matching: int | None  # members the filter keeps, from counters (None: prefix filter)


# A comma starts the next FIELD=VALUE only when a field name and "=" follow it: a value
# may hold commas ("region=Kazan, Tatarstan,tier=1"), as a stratum's label shows them.
_NEXT_PAIR = re.compile(r",(?=\s*[A-Za-z_][A-Za-z0-9_]*\s*=)")


def parse_stratum(text: str | None) -> tuple[tuple[str, str | None], ...]:
    """'region=North,tier=2' -> (('region', 'North'), ('tier', '2')); '' -> ()."""
    pairs: list[tuple[str, str | None]] = []
    for part in filter(None, (p.strip() for p in _NEXT_PAIR.split(text or ""))):
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            raise ValidationError(f"stratum filter {part!r}: write FIELD=VALUE,FIELD=VALUE")
        pairs.append((name.strip(), value.strip() or None))
    return tuple(pairs)


def check_group(group: str | None) -> str | None:
    if group not in (None, *GROUPS):
        raise ValidationError(f"group must be test or control, not {group!r}")
    return group


def _stratum_keys(
    session: Session, campaign: Campaign, wanted: tuple[tuple[str, str | None], ...]
) -> list[str] | None:
    """The campaign's stratum keys matching every field=value (None: no stratum filter)."""
    if not wanted:
        return None
    names = list(campaign.lcg_strata or [])
    unknown = [n for n, _v in wanted if n not in names]
    if unknown:
        fields = ", ".join(names) or "none (the campaign is not stratified)"
        raise ValidationError(
            f"{unknown[0]!r} is not a strata field of campaign {campaign.name!r}; its strata "
            f"fields: {fields}"
        )
    keys = session.scalars(
        sa.select(CampaignStratum.stratum_key).where(CampaignStratum.campaign_id == campaign.id)
    ).all()
    return sorted(k for k in keys if all(strata.decode(k, names).get(n) == v for n, v in wanted))


def _matching(
    session: Session, campaign: Campaign, group: str | None, keys: list[str] | None
) -> int:
    """How many open members a group/stratum filter keeps, from counters only."""
    if keys is None:
        return {None: campaign.members, "test": campaign.test_count}.get(
            group, campaign.control_count
        )
    if not keys:
        return 0
    row = session.execute(
        sa.select(sa.func.sum(CampaignStratum.members), sa.func.sum(CampaignStratum.control)).where(
            CampaignStratum.campaign_id == campaign.id, CampaignStratum.stratum_key.in_(keys)
        )
    ).one()
    members, control = int(row[0] or 0), int(row[1] or 0)
    return {None: members, "test": members - control}.get(group, control)


def _prefix_upper(prefix: str) -> str:
    """The smallest text above every text starting with `prefix` (code point order)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def _code_point_order(session: Session) -> bool:
    """Does the backend's default text order agree with code points (prefix = range)?"""
    if not is_postgres(session):
        return True  # SQLite BINARY compares UTF-8 bytes: code point order
    collate = session.scalar(
        sa.text("SELECT datcollate FROM pg_database WHERE datname = current_database()")
    )
    return str(collate).lower() in {"c", "posix", "c.utf-8", "c.utf8"}


def _where(
    campaign: Campaign, flt: MemberFilter, keys: list[str] | None, ranged: bool
) -> tuple[list[str], dict[str, Any]]:
    where = [
        "m.campaign_id = :cid",
        "m.left_at IS NULL",
        "m.profile_id = p.id",
        "p.database_id = :db",  # R1: members are always of the campaign's database
    ]
    params: dict[str, Any] = {"cid": campaign.id, "db": campaign.database_id}
    if flt.group is not None:
        where.append('m."group" = :grp')
        params["grp"] = flt.group
    if keys is not None:
        where.append(f"m.stratum_key IN ({', '.join(f':k{i}' for i in range(len(keys)))})")
        params.update({f"k{i}": k for i, k in enumerate(keys)})
    if flt.prefix:
        where.append("substr(p.external_id, 1, :plen) = :prefix")
        params.update({"plen": len(flt.prefix), "prefix": flt.prefix})
        if ranged:  # lets the (database_id, external_id) index find the range
            where.append("p.external_id >= :prefix AND p.external_id < :prefix_hi")
            params["prefix_hi"] = _prefix_upper(flt.prefix)
    return where, params


COLUMNS = 'p.external_id, m."group", m.stratum_key, m.joined_at, m.source, m.cohort'


class _Strata:
    """Decodes stratum keys once per key (a million rows share a few hundred keys)."""

    def __init__(self, session: Session, campaign: Campaign) -> None:
        self.names = list(campaign.lcg_strata or [])
        self.ints = {
            f.name for f in database_fields(session, campaign.database_id) if f.type == "int"
        }
        self.seen: dict[str, tuple[dict[str, Any], str]] = {}

    def __call__(self, key: str) -> tuple[dict[str, Any], str]:
        if key not in self.seen:
            values: dict[str, Any] = dict(strata.decode(key, self.names))
            for name, value in values.items():
                if name in self.ints and value is not None:
                    values[name] = int(value)
            self.seen[key] = (values, strata.label(key, self.names))
        return self.seen[key]


class _Times:
    """Raw joined_at -> aware UTC datetime, once per distinct value (an activation
    stamps every member with the same instant)."""

    def __init__(self) -> None:
        self.type = UTCDateTime()
        self.seen: dict[Any, datetime] = {}

    def __call__(self, raw: Any) -> datetime:
        value = self.seen.get(raw)
        if value is None:
            if len(self.seen) > 100_000:
                self.seen.clear()
            value = self.seen[raw] = self.type.process_result_value(raw, None)
        return value


def _row(decode: _Strata, times: _Times, r: Any) -> MemberRow:
    values, label = decode(r[2])
    return MemberRow(r[0], r[1], values, label, times(r[3]), r[4], r[5])


def member_page(
    session: Session,
    campaign_name: str,
    flt: MemberFilter = MemberFilter(),
    *,
    after: str | None = None,
    limit: int = PAGE_SIZE,
) -> MemberPage:
    """One page of current members in external-id order, after `after` (keyset)."""
    campaign = get_campaign(session, campaign_name)
    check_group(flt.group)
    keys = _stratum_keys(session, campaign, flt.stratum)
    database = session.get(ProfileDatabase, campaign.database_id)
    if keys == []:
        return MemberPage(campaign.name, database.name, [], None, 0)
    where, params = _where(campaign, flt, keys, _code_point_order(session))
    if after is not None:
        where.append("p.external_id > :after")
        params["after"] = after
    matching = None if flt.prefix else _matching(session, campaign, flt.group, keys)
    profiles = max(database.profile_count, campaign.members, 1)
    # Profile-first walks about limit × profiles / matching profiles to fill a page;
    # member-first reads and sorts all `matching` members (counted twice: the sort).
    # CROSS JOIN fixes SQLite's join order; PostgreSQL plans from its own statistics.
    member_first = matching is not None and 2 * matching * matching <= limit * profiles
    if member_first:
        tables = "campaign_member m CROSS JOIN profile p"
    else:
        tables = "profile p CROSS JOIN campaign_member m"
    stmt = sa.text(
        f"SELECT {COLUMNS} FROM {tables} WHERE {' AND '.join(where)} "
        "ORDER BY p.external_id LIMIT :lim"
    ).columns(
        sa.column("external_id"),
        sa.column("group"),
        sa.column("stratum_key"),
        sa.column("joined_at"),
        sa.column("source"),
        sa.column("cohort"),
    )
    result = session.execute(stmt, {**params, "lim": limit + 1}).all()
    decode = _Strata(session, campaign)
    times = _Times()
    rows = [_row(decode, times, r) for r in result[:limit]]
    next_after = rows[-1].external_id if len(result) > limit and rows else None
    return MemberPage(campaign.name, database.name, rows, next_after, matching)


class MemberStream:
    """Every current member matching `flt`, streamed from ONE statement in batches of
    `STREAM_BATCH` rows: constant memory, and one snapshot, so an export taken while a
    build runs misses nobody and counts nobody twice.

    Made eagerly: an unknown campaign, group or strata field is refused here, before a
    client writes anything. Ordered by profile id (the open-membership index), not by
    external id: the export is about being exact and fast; sort the file for an order.

    Two views of the same rows, decoded by the same two functions:

    * `batches()`: lists of `MemberRow`, the read model (the JSON export, tests);
    * `stored_batches()`: the rows as stored, `(external_id, group, stratum_key,
      joined_at, source, cohort)`, with `stratum(key)` and `joined_at(stored)` to decode
      the two encoded columns. A million members share a few hundred stratum keys and
      join instants, so a writer that renders each distinct value once (the CSV export)
      builds no object per member; that object was most of the export's time.
    """

    def __init__(
        self, session: Session, campaign_name: str, flt: MemberFilter = MemberFilter()
    ) -> None:
        campaign = get_campaign(session, campaign_name)
        check_group(flt.group)
        keys = _stratum_keys(session, campaign, flt.stratum)
        self._session = session
        self._statement: tuple[sa.TextClause, dict[str, Any]] | None = None
        if keys != []:
            where, params = _where(campaign, flt, keys, _code_point_order(session))
            self._statement = (
                sa.text(
                    f"SELECT {COLUMNS} FROM campaign_member m CROSS JOIN profile p "
                    f"WHERE {' AND '.join(where)} ORDER BY m.profile_id"
                ),
                params,
            )
        self.stratum = _Strata(session, campaign)  # stratum_key -> (values, label)
        self.joined_at = _Times()  # joined_at as stored -> aware UTC datetime

    def stored_batches(self) -> Iterator[list[tuple[Any, ...]]]:
        """The matching rows as stored, `STREAM_BATCH` at a time.

        Read through a NEW DBAPI cursor of the session's connection (its transaction, its
        snapshot), never through a SQLAlchemy Result (a Row per member) and never through
        the cursor behind one (SQLAlchemy may already have buffered rows from it). The
        statement is compiled by the connection's dialect, so it is the one SQL text above
        with the driver's parameter style (sqlite3: ?, psycopg: %(name)s)."""
        if self._statement is None:
            return
        stmt, params = self._statement
        connection = self._session.connection()
        compiled = stmt.compile(dialect=connection.dialect)
        args = [params[n] for n in compiled.positiontup] if compiled.positional else params
        dbapi_connection = connection.connection.dbapi_connection
        if is_postgres(connection):
            # A named (server-side) cursor: the server keeps the result and sends
            # STREAM_BATCH rows per FETCH; a plain psycopg cursor would hold them all.
            cursor = dbapi_connection.cursor(name=f"campaign_members_{next(_CURSOR_NUMBERS)}")
        else:
            cursor = dbapi_connection.cursor()  # sqlite3 steps the statement per fetch
        try:
            cursor.execute(str(compiled), args)
            while batch := cursor.fetchmany(STREAM_BATCH):
                yield batch
        except Exception as exc:  # SQLAlchemy's error hooks do not see a raw cursor
            problem = statement_timeout_problem(connection.engine, exc)
            if problem is None:
                raise
            raise problem from None
        finally:
            cursor.close()

    def batches(self) -> Iterator[list[MemberRow]]:
        """The matching members as `MemberRow`s, `STREAM_BATCH` at a time."""
        # The decoders' caches are read inline: a call per row would double the time.
        decode, times = self.stratum, self.joined_at
        strata_seen, times_seen = decode.seen, times.seen
        make = tuple.__new__  # MemberRow(...) without namedtuple's Python-level __new__
        for batch in self.stored_batches():
            rows = []
            for ext, group, key, joined, source, cohort in batch:
                values, label = strata_seen.get(key) or decode(key)
                at = times_seen.get(joined) or times(joined)
                rows.append(make(MemberRow, (ext, group, values, label, at, source, cohort)))
            yield rows
