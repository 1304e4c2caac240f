"""The CLI's commands: each calls store operations and read models, prints a table
or JSON through `Context.emit`, and returns an exit code. Arguments and `main` live in
console/cli.py; no Textual import here either.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from console.cli_format import (
    builds_table,
    campaign_text,
    count_text,
    profile_text,
    status_text,
    table,
)
from console.cli_wait import wait_for_builds

EXIT_OK, EXIT_UNEXPECTED, EXIT_USAGE, EXIT_REFUSED, EXIT_NOT_FOUND = 0, 1, 2, 3, 4


class UsageError(Exception):
    """A command line that argparse accepted but that makes no sense (exit 2)."""


# --------------------------------------------------------------------------- context


def _actor(args: argparse.Namespace):
    from store.actors import current_actor
    from store.settings import load_settings

    settings = load_settings()
    role = "read_only" if args.read_only or settings.role == "read_only" else "operator"
    return current_actor(role)


def _db_url(args: argparse.Namespace) -> str:
    from store.db import resolve_db_url
    from store.settings import load_settings

    return resolve_db_url(args.db or load_settings().db)


class Context:
    """What a command needs: the engine, the actor, and where to write."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = sys.stdout
        self.err = sys.stderr
        self._engine = None
        self._actor = None
        # What to write to the audit log if the command is refused (set by each command).
        self.audit_action: str | None = None
        self.audit_target: tuple[str, str | None] = ("", None)

    @property
    def engine(self):
        if self._engine is None:
            from store.db import open_store

            self._engine = open_store(_db_url(self.args))
        return self._engine

    @property
    def actor(self):
        if self._actor is None:
            self._actor = _actor(self.args)
        return self._actor

    def transaction(self):
        from store.db import transaction

        return transaction(self.engine)

    def session(self):
        from sqlmodel import Session

        return Session(self.engine, expire_on_commit=False)

    def refusable(self, action: str, target_type: str, target_name: str | None) -> None:
        self.audit_action = action
        self.audit_target = (target_type, target_name)

    def emit(self, payload: Any, human: Callable[[], str]) -> None:
        if self.args.json:
            self.out.write(json.dumps(payload, indent=2, ensure_ascii=False, default=str) + "\n")
        else:
            text = human()
            if text:
                self.out.write(text.rstrip("\n") + "\n")

    def note(self, text: str) -> None:
        self.err.write(text + "\n")

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


# --------------------------------------------------------------------------- commands


def cmd_demo(args: argparse.Namespace, ctx: Context) -> int:
    from store import demo
    from store.db import describe_url

    url = _db_url(args)
    engine = ctx.engine
    if args.reset:
        demo.reset(engine)
    if demo.has_workspace(engine) and not args.reset:
        ctx.note(f"workspace already present in {describe_url(url)} (use --reset to rebuild)")
    else:
        started = time.perf_counter()
        summary = demo.build_demo(engine, ctx.actor, args.profiles or demo.DEFAULT_PROFILES)
        ctx.note(
            f"demo workspace in {describe_url(url)}: {summary.profiles:,} profiles, "
            f"{summary.segments} segments, {summary.campaigns} campaigns, "
            f"{summary.mailings} mailings ({time.perf_counter() - started:.1f}s)"
        )
    if args.open:
        return cmd_console(args, ctx)
    return EXIT_OK


def cmd_console(args: argparse.Namespace, ctx: Context) -> int:
    from console.app import run_console

    return run_console(db_url=_db_url(args), actor=ctx.actor)


def cmd_scheduler(args: argparse.Namespace, ctx: Context) -> int:
    from scheduler.daemon import run_daemon

    return run_daemon(_db_url(args), pool_size=args.pool_size)


def cmd_database_create(args: argparse.Namespace, ctx: Context) -> int:
    from store import profiles

    ctx.refusable("database.create", "database", args.name)
    fields = profiles.parse_field_spec(args.fields)
    with ctx.transaction() as session:
        database = profiles.create_database(session, ctx.actor, args.name, fields)
        payload = _database_row(session, database)
    ctx.emit(
        payload,
        lambda: (
            f"created profile database {payload['name']!r} with fields "
            + (", ".join(f"{f['name']}:{f['type']}" for f in payload["fields"]) or "none")
        ),
    )
    return EXIT_OK


def _database_row(session: Any, database: Any) -> dict[str, Any]:
    from store import profiles

    return {
        "name": database.name,
        "profiles": database.profile_count,
        "fields": [
            {"name": f.name, "type": f.type} for f in profiles.database_fields(session, database.id)
        ],
    }


def cmd_database_list(args: argparse.Namespace, ctx: Context) -> int:
    from store import views
    from store.models import ProfileDatabase

    with ctx.session() as session:
        rows = [
            _database_row(session, d)
            for d in session.scalars(
                sa.select(ProfileDatabase).order_by(views.by_name(session, ProfileDatabase.name))
            )
        ]
    ctx.emit(
        rows,
        lambda: table(
            [
                (
                    r["name"],
                    count_text(r["profiles"]),
                    ", ".join(f"{f['name']}:{f['type']}" for f in r["fields"]),
                )
                for r in rows
            ],
            ("DATABASE", "PROFILES", "FIELDS"),
            right=(1,),
        ),
    )
    return EXIT_OK


def _source(path: str) -> Any:
    """A CSV path, or `-` for standard input."""
    return sys.stdin.buffer if path == "-" else path


def cmd_import_profiles(args: argparse.Namespace, ctx: Context) -> int:
    from store import imports, profiles

    ctx.refusable("profiles.import", "database", args.database)
    with ctx.transaction() as session:
        database = profiles.get_database(session, args.database)
        result = imports.import_profiles(session, ctx.actor, database, _source(args.file))
    payload = result.as_dict()
    ctx.emit(
        payload,
        lambda: (
            f"imported {result.rows:,} rows into {result.database!r}: "
            f"{result.inserted:,} new, {result.updated:,} updated, {result.unchanged:,} unchanged "
            f"({result.seconds:.1f}s)"
        ),
    )
    return EXIT_OK


def _segment_row(session: Any, segment: Any) -> dict[str, Any]:
    from store.models import ProfileDatabase

    database = session.get(ProfileDatabase, segment.database_id) if segment.database_id else None
    return {
        "name": segment.name,
        "kind": segment.kind,
        "database": database.name if database else None,
        "rule": segment.rule,
        "every_seconds": segment.refresh_every_seconds,
        "cron": segment.refresh_cron,
        "members": segment.member_count,
        "last_refreshed_at": segment.last_refreshed_at.isoformat()
        if segment.last_refreshed_at
        else None,
    }


def cmd_segment_create(args: argparse.Namespace, ctx: Context) -> int:
    from store import profiles, segments

    ctx.refusable("segment.create", "segment", args.name)
    if (args.every or args.cron) and not args.rule:
        raise UsageError("--every and --cron schedule the refresh of a dynamic segment: add --rule")
    with ctx.transaction() as session:
        database = profiles.get_database(session, args.database) if args.database else None
        segment = segments.create_segment(
            session,
            ctx.actor,
            args.name,
            database=database,
            rule=args.rule,
            every_seconds=args.every,
            cron=args.cron,
        )
        payload = _segment_row(session, segment)
    ctx.emit(payload, lambda: f"created {payload['kind']} segment {payload['name']!r}")
    return EXIT_OK


def cmd_segment_list(args: argparse.Namespace, ctx: Context) -> int:
    from store import views
    from store.models import Segment

    with ctx.session() as session:
        rows = [
            _segment_row(session, s)
            for s in session.scalars(
                sa.select(Segment).order_by(views.by_name(session, Segment.name))
            )
        ]
    ctx.emit(
        rows,
        lambda: table(
            [
                (
                    r["name"],
                    r["kind"],
                    r["database"] or "",
                    count_text(r["members"]),
                    r["rule"] or "",
                )
                for r in rows
            ],
            ("SEGMENT", "KIND", "DATABASE", "MEMBERS", "RULE"),
            right=(3,),
        ),
    )
    return EXIT_OK


def _campaign_ids_on_segment(session: Any, segment_id: int) -> list[int]:
    from store.models import Campaign

    return list(
        session.scalars(
            sa.select(Campaign.id).where(
                Campaign.segment_id == segment_id, Campaign.status == "active"
            )
        )
    )


def _segment_outcome(
    ctx: Context, payload: dict[str, Any], campaign_ids: list[int], since_build_id: int
) -> int:
    """--wait for the builds the segment change queued, then list them in `payload`."""
    code = EXIT_OK
    if ctx.args.wait:
        code = wait_for_builds(ctx.engine, campaign_ids, ctx.err)
    payload["builds"] = _builds_of(ctx, campaign_ids, since_build_id)
    return code


def _builds_of(ctx: Context, campaign_ids: list[int], since_id: int) -> list[dict]:
    """The builds of these campaigns newer than `since_id` (what the command queued)."""
    from store import views

    if not campaign_ids:
        return []
    from store.models import AudienceBuild, Campaign

    with ctx.session() as session:
        rows = session.execute(
            sa.select(AudienceBuild, Campaign.name)
            .join(Campaign, Campaign.id == AudienceBuild.campaign_id)
            .where(
                AudienceBuild.campaign_id.in_(campaign_ids),
                sa.or_(
                    AudienceBuild.id > since_id,
                    AudienceBuild.status.in_(("queued", "running")),
                ),
            )
            .order_by(AudienceBuild.id)
        ).all()
        return [views.build_row(b, name) for b, name in rows]


def _max_build_id(session: Any) -> int:
    from store.models import AudienceBuild

    return session.scalar(sa.select(sa.func.max(AudienceBuild.id))) or 0


def cmd_segment_file(args: argparse.Namespace, ctx: Context) -> int:
    from store import imports, profiles, segments

    ctx.refusable(f"segment.{args.file_action}", "segment", args.name)
    with ctx.transaction() as session:
        since = _max_build_id(session)
        segment = segments.get_segment(session, args.name)
        database = profiles.get_database(session, args.database) if args.database else None
        result = imports.apply_segment_file(
            session, ctx.actor, segment, args.file_action, _source(args.file), database=database
        )
        campaign_ids = _campaign_ids_on_segment(session, segment.id)
    payload = result.as_dict()
    code = _segment_outcome(ctx, payload, campaign_ids, since)
    ctx.emit(
        payload,
        lambda: (
            f"segment {result.segment!r}: {result.rows:,} rows, "
            f"{result.added:,} added, {result.removed:,} removed"
            + (
                f"; builds {', '.join('#' + str(b['id']) for b in payload['builds'])}"
                if payload["builds"]
                else ""
            )
        ),
    )
    return code


def cmd_segment_refresh(args: argparse.Namespace, ctx: Context) -> int:
    from store import segments

    ctx.refusable("segment.refresh", "segment", args.name)
    with ctx.transaction() as session:
        since = _max_build_id(session)
        segment = segments.get_segment(session, args.name)
        result = segments.refresh(session, ctx.actor, segment)
        campaign_ids = _campaign_ids_on_segment(session, segment.id)
    payload = {"segment": args.name, "entered": result.entered, "left": result.left}
    code = _segment_outcome(ctx, payload, campaign_ids, since)
    ctx.emit(
        payload,
        lambda: (
            f"segment {args.name!r} refreshed: {result.entered:,} entered, {result.left:,} left"
        ),
    )
    return code


def _show(ctx: Context, name: str) -> dict[str, Any]:
    from store import views

    with ctx.session() as session:
        return views.campaign_show(session, name)


def cmd_campaign_create(args: argparse.Namespace, ctx: Context) -> int:
    from store import campaigns, profiles, segments

    ctx.refusable("campaign.create", "campaign", args.name)
    if args.lcg is None and (args.limit is not None or args.strata):
        raise UsageError("--limit and --strata configure the LCG: add --lcg PERCENT")
    with ctx.transaction() as session:
        campaigns.create_campaign(
            session,
            ctx.actor,
            args.name,
            profiles.get_database(session, args.database),
            segments.get_segment(session, args.segment),
            lcg_percent=args.lcg,
            lcg_limit=args.limit,
            lcg_strata=args.strata,
            seed=args.seed,
        )
    show = _show(ctx, args.name)
    ctx.emit(show, lambda: f"created draft campaign {args.name!r}\n\n" + campaign_text(show))
    return EXIT_OK


def _campaign_change(ctx: Context, name: str, verb: str, change: Callable[[Any, Any], Any]) -> int:
    """Run a change on one campaign, then --wait if asked, then print the campaign."""
    from store import campaigns

    with ctx.transaction() as session:
        campaign = campaigns.get_campaign(session, name)
        change(session, campaign)
        campaign_id = campaign.id
    code = EXIT_OK
    if getattr(ctx.args, "wait", False):
        code = wait_for_builds(ctx.engine, [campaign_id], ctx.err)
    show = _show(ctx, name)
    ctx.emit(show, lambda: f"{verb} campaign {name!r}\n\n" + campaign_text(show))
    return code


def cmd_campaign_activate(args: argparse.Namespace, ctx: Context) -> int:
    from store import campaigns

    ctx.refusable("campaign.activate", "campaign", args.name)
    return _campaign_change(
        ctx, args.name, "activated", lambda s, c: campaigns.activate(s, ctx.actor, c)
    )


def cmd_campaign_lcg(args: argparse.Namespace, ctx: Context) -> int:
    from store import campaigns

    ctx.refusable("campaign.lcg", "campaign", args.name)
    changes: dict[str, Any] = {}
    if args.percent is not None:
        changes["percent"] = args.percent
    if args.limit is not None:
        changes["limit"] = args.limit
    if args.no_limit:
        changes["limit"] = None
    if args.strata is not None:
        changes["strata"] = args.strata
    if args.no_strata:
        changes["strata"] = []
    if args.enable:
        changes["enabled"] = True
    if args.disable:
        changes["enabled"] = False
    if not changes:
        raise UsageError(
            "nothing to change: give --percent, --limit/--no-limit, --strata/--no-strata, "
            "--enable or --disable"
        )
    return _campaign_change(
        ctx,
        args.name,
        "updated the LCG of",
        lambda s, c: campaigns.edit_lcg(s, ctx.actor, c, **changes),
    )


def cmd_campaign_complete(args: argparse.Namespace, ctx: Context) -> int:
    from store import campaigns

    ctx.refusable("campaign.complete", "campaign", args.name)
    if not args.yes:
        raise UsageError(
            f"completing {args.name!r} is terminal (R8): every member leaves, mailings stop; "
            "add --yes to confirm"
        )
    return _campaign_change(
        ctx, args.name, "completed", lambda s, c: campaigns.complete(s, ctx.actor, c)
    )


def cmd_campaign_list(args: argparse.Namespace, ctx: Context) -> int:
    from store import views

    with ctx.session() as session:
        rows = views.campaign_list(session)
    ctx.emit(
        rows,
        lambda: table(
            [
                (
                    r["name"],
                    r["status"],
                    r["segment"],
                    count_text(r["audience"]["members"]),
                    count_text(r["audience"]["test"]),
                    count_text(r["audience"]["control"]),
                    r["lcg_summary"],
                    len(r["warnings"]) or "",
                    r["paused_mailings"] or "",
                )
                for r in rows
            ],
            (
                "CAMPAIGN",
                "STATUS",
                "SEGMENT",
                "MEMBERS",
                "TEST",
                "CONTROL",
                "LCG",
                "WARN",
                "PAUSED",
            ),
            right=(3, 4, 5, 7, 8),
        ),
    )
    return EXIT_OK


def cmd_campaign_show(args: argparse.Namespace, ctx: Context) -> int:
    show = _show(ctx, args.name)
    ctx.emit(show, lambda: campaign_text(show))
    return EXIT_OK


def cmd_mailing_create(args: argparse.Namespace, ctx: Context) -> int:
    from store import campaigns, mailings, segments, views

    ctx.refusable("mailing.create", "mailing", args.name)
    with ctx.transaction() as session:
        mailing = mailings.create_mailing(
            session,
            ctx.actor,
            args.name,
            campaigns.get_campaign(session, args.campaign),
            args.kind,
            send_at=args.at,
            cron=args.cron,
            segment=segments.get_segment(session, args.segment) if args.segment else None,
            expand_audience=args.expand,
        )
        payload = {"campaign": args.campaign, **views.mailing_row(mailing)}
    ctx.emit(payload, lambda: f"created {args.kind} mailing {args.name!r} of {args.campaign!r}")
    return EXIT_OK


def cmd_mailing_pause(args: argparse.Namespace, ctx: Context) -> int:
    from store import mailings, views

    verb = "pause" if args.pause else "resume"
    ctx.refusable(f"mailing.{verb}", "mailing", args.name)
    with ctx.transaction() as session:
        mailing = mailings.get_mailing(session, args.name)
        mailings.set_manual_pause(session, ctx.actor, mailing, args.pause)
        payload = views.mailing_row(mailing)
    ctx.emit(
        payload,
        lambda: (
            f"mailing {args.name!r} {'paused' if args.pause else 'resumed'}"
            + (
                f" (still {payload['paused_reason']})"
                if not args.pause and payload["paused"]
                else ""
            )
        ),
    )
    return EXIT_OK


def cmd_profile_show(args: argparse.Namespace, ctx: Context) -> int:
    from store import views

    with ctx.session() as session:
        card = views.profile_show(session, args.database, args.external_id)

    ctx.emit(card, lambda: profile_text(card))
    return EXIT_OK


def cmd_builds(args: argparse.Namespace, ctx: Context) -> int:
    from store import views

    with ctx.session() as session:
        rows = views.builds(session, campaign=args.campaign, limit=args.limit)
    ctx.emit(rows, lambda: builds_table(rows) if rows else "no audience builds")
    return EXIT_OK


def cmd_status(args: argparse.Namespace, ctx: Context) -> int:
    """Scheduler health (holder, heartbeat age) and running/queued builds with rate and ETA."""
    from store import monitor

    with ctx.session() as session:
        snapshot = monitor.scheduler_monitor(session)
    ctx.emit(snapshot.to_dict(), lambda: status_text(snapshot))
    return EXIT_OK
