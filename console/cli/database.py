"""`database create|list`: profile databases; `database upgrade`: the schema."""

from __future__ import annotations

import argparse
from typing import Any

from console.cli.args import Builder
from console.cli.context import EXIT_OK, Context, UsageError
from console.cli.format import count_text, table
from console.cli.serialise import database_json


def register(sub: Any, cli: Builder) -> None:
    database = cli.noun(sub, "database", help="profile databases")
    p = cli.leaf(database, "create", cmd_database_create, [cli.as_json], help="declare a database")
    p.add_argument("name")
    p.add_argument("--fields", default="", help="NAME:TYPE,... with TYPE text, int, float or date")
    cli.leaf(database, "list", cmd_database_list, [cli.as_json], help="list databases")
    p = cli.leaf(
        database, "upgrade", cmd_database_upgrade, [cli.as_json], help="upgrade the schema"
    )
    p.add_argument("--sql", action="store_true", help="print the SQL instead of running it")
    p = cli.leaf(
        database,
        "grant-read-only",
        cmd_database_grant_read_only,
        [cli.as_json],
        help="PostgreSQL: make ROLE a role that may only read this workspace",
    )
    p.add_argument("role", metavar="ROLE")


def cmd_database_create(args: argparse.Namespace, ctx: Context) -> int:
    from store import profiles, views

    with ctx.transaction() as session:
        database = profiles.create_database(session, ctx.actor, args.name, args.fields)
        payload = database_json(views.database_row(session, database))
    ctx.emit(
        payload,
        lambda: (
            f"created profile database {payload['name']!r} with fields "
            + (", ".join(f"{f['name']}:{f['type']}" for f in payload["fields"]) or "none")
        ),
    )
    return EXIT_OK


def cmd_database_list(args: argparse.Namespace, ctx: Context) -> int:
    from store import views

    with ctx.session() as session:
        rows = [database_json(row) for row in views.database_rows(session)]
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


def cmd_database_upgrade(args: argparse.Namespace, ctx: Context) -> int:
    """Schema upgrade (store/migrate.py): the one command that opens an older database."""
    from store import migrate
    from store.db import (
        as_connected,
        describe_url,
        is_sqlite,
        make_engine,
        missing_workspace,
        sqlite_path,
    )
    from store.grants import regrant_read_only

    url = ctx.settings.db
    path = sqlite_path(url)
    if path is not None and not path.is_file():  # connecting would create it (issue 15.7)
        raise missing_workspace(url)
    engine = make_engine(url, connect_timeout=ctx.settings.connect_timeout)
    try:
        if args.sql and is_sqlite(engine):
            # Batch mode copies SQLite tables, which needs the live file, not a script.
            raise UsageError(
                "--sql prints the SQL for a PostgreSQL DBA; an SQLite workspace is "
                "upgraded in place (after a backup beside it): run without --sql"
            )
        if args.sql:
            ctx.out.write(migrate.upgrade_sql(engine))
            return EXIT_OK
        # Not ctx.actor: it opens the store, which refuses an old PostgreSQL schema.
        as_connected(engine, ctx.flagged_actor).require_write("upgrade the database schema")
        result = migrate.upgrade(engine, create=False)  # only init and demo create
        if result.before != result.after:
            regrant_read_only(engine)  # read-only roles see the tables it added (15.5)
    finally:
        engine.dispose()
    payload = {"database": describe_url(url), **result.as_dict()}
    ctx.emit(
        payload,
        lambda: (
            f"{payload['database']}: already at schema revision {result.after}"
            if result.before == result.after
            else f"{payload['database']}: upgraded from {result.before or 'an empty database'} "
            f"to {result.after}" + (f" (backup: {result.backup})" if result.backup else "")
        ),
    )
    return EXIT_OK


def cmd_database_grant_read_only(args: argparse.Namespace, ctx: Context) -> int:
    """Issue 15.5: a PostgreSQL role with SELECT only; clients connected as it are
    read-only whatever their flags (store/grants.py, docs/security.md)."""
    from store import grants

    result = grants.grant(ctx.engine, ctx.actor, args.role)
    payload = result.as_dict()
    ctx.emit(
        payload,
        lambda: (
            f"{'created' if result.created else 'updated'} role {result.role!r}: SELECT on the "
            f"{result.tables} tables of schema {result.schema!r}, nothing else. Give it a "
            f"password (ALTER ROLE {result.role} PASSWORD …) or another login method"
        ),
    )
    return EXIT_OK
