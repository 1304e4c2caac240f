"""`event send` and `events import` (R11b: events fire trigger mailings)."""

from __future__ import annotations

import argparse
from typing import Any

from console.cli.args import Builder, when
from console.cli.context import EXIT_OK, Context, csv_source
from console.cli.serialise import iso

WAIT_HELP = (
    "block until these events are processed; when no scheduler holds the lease, "
    "process them in this process"
)


def register(sub: Any, cli: Builder) -> None:
    event = cli.noun(sub, "event", help="trigger events (R11b)")
    p = cli.leaf(event, "send", cmd_event_send, [cli.as_json], help="send one event")
    p.add_argument("--database", required=True)
    p.add_argument("external_id", metavar="EXTERNAL_ID")
    p.add_argument("event", metavar="EVENT", help="the event's name, e.g. purchase")
    p.add_argument("--at", type=when, help="when it happened, ISO 8601 (naive means UTC)")
    p.add_argument("--wait", action="store_true", help=WAIT_HELP)
    events = cli.noun(sub, "events", help="trigger events in bulk (R11b)")
    p = cli.leaf(events, "import", cmd_events_import, [cli.as_json], help="import events from CSV")
    p.add_argument("--database", required=True)
    p.add_argument(
        "file", metavar="FILE.csv", help="columns external_id, event, at; or - for standard input"
    )
    p.add_argument("--wait", action="store_true", help=WAIT_HELP)


def _wait(ctx: Context, up_to: int | None) -> None:
    if getattr(ctx.args, "wait", False) and up_to is not None:
        from console.cli.wait import wait_for_events

        wait_for_events(ctx.engine, up_to, ctx.actor, ctx.err, settings=ctx.settings.scheduler)


def cmd_event_send(args: argparse.Namespace, ctx: Context) -> int:
    from store import events, profiles

    with ctx.transaction() as session:
        database = profiles.get_database(session, args.database)
        row = events.send_event(
            session, ctx.actor, database, args.external_id, args.event, at=args.at
        )
        event_id = row.id
        payload: dict[str, Any] = {
            "id": event_id,
            "database": database.name,
            "external_id": args.external_id,
            "event": row.event,
            "at": iso(row.at),
        }
    _wait(ctx, event_id)
    with ctx.session() as session:
        payload["processed"] = events.is_processed(session, event_id)
        outcomes = events.event_outcomes(session, event_id)
    payload["outcomes"] = [
        {"mailing": o.mailing, "campaign": o.campaign, "outcome": o.outcome} for o in outcomes
    ]

    def human() -> str:
        head = (
            f"event #{event_id} {payload['event']!r} for {args.external_id!r} in {args.database!r}"
        )
        if not payload["processed"]:
            return head + ": queued (the scheduler processes it)"
        if not outcomes:
            return head + ": processed, no trigger mailing fires on it"
        return head + ": " + ", ".join(f"{o.mailing} {o.outcome}" for o in outcomes)

    ctx.emit(payload, human)
    return EXIT_OK


def cmd_events_import(args: argparse.Namespace, ctx: Context) -> int:
    from store import events, profiles

    with ctx.transaction() as session:
        database = profiles.get_database(session, args.database)
        result = events.import_events(session, ctx.actor, database, csv_source(args.file))
    _wait(ctx, result.last_id)
    payload = result.as_dict()
    with ctx.session() as session:
        payload["pending"] = (
            events.pending_count(session, result.last_id) if result.last_id is not None else 0
        )
    ctx.emit(
        payload,
        lambda: (
            f"imported {result.rows:,} events into {result.database!r} ({result.seconds:.1f}s)"
            + (
                f"; {payload['pending']:,} not processed yet"
                if payload["pending"]
                else "; all processed"
            )
        ),
    )
    return EXIT_OK
