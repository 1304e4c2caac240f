"""Argument helpers shared by the command modules: the parent parsers every command gets
(`--db`, `--read-only`, `--json`, `--wait`), `Builder.leaf`/`Builder.noun` to register a
command, and the argument types (`every`, `when`, `names`).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

EVERY = re.compile(r"^\s*(\d+)\s*([smh])\s*$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}


def every(value: str) -> int:
    match = EVERY.match(value)
    if not match:  # 0s is well written: the store refuses it as out of range (exit 3)
        raise argparse.ArgumentTypeError(f"{value!r}: write a number with s, m or h, e.g. 15m")
    return int(match.group(1)) * UNIT_SECONDS[match.group(2)]


def when(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an ISO 8601 datetime, e.g. 2026-12-01T10:00:00+00:00"
        ) from None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # naive means UTC
    try:
        moment.astimezone(UTC)  # what the store keeps
    except OverflowError:
        raise argparse.ArgumentTypeError(f"{value!r} is out of range in UTC") from None
    return moment


def names(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


class Builder:
    """Registers commands on the parser. `common` (--db, --read-only) is a parent of every
    command; pass `as_json` and/or `wait` in `parents` for commands that take them."""

    def __init__(self) -> None:
        # --db and --read-only are accepted before the command and after it; the values
        # after it win (SUPPRESS keeps the top-level value when they are absent).
        self.common = argparse.ArgumentParser(add_help=False)
        self.common.add_argument(
            "--db",
            default=argparse.SUPPRESS,
            help="database URL or SQLite path (env CAMPAIGN_CONSOLE_DB)",
        )
        self.common.add_argument(
            "--read-only", action="store_true", default=argparse.SUPPRESS, help="look, never act"
        )
        self.as_json = argparse.ArgumentParser(add_help=False)
        self.as_json.add_argument(
            "--json", action="store_true", help="print JSON instead of a table"
        )
        self.wait = argparse.ArgumentParser(add_help=False)
        self.wait.add_argument(
            "--wait", action="store_true", help="block until the builds this queues have ended"
        )

    def noun(self, sub: Any, name: str, **kw: Any) -> Any:
        """A command group (`campaign`, `segment`, ...): returns its subparsers."""
        return sub.add_parser(name, **kw).add_subparsers(
            dest="subcommand", metavar="SUBCOMMAND", required=True
        )

    def leaf(
        self, group: Any, name: str, handler: Callable, parents: Sequence = (), **kw: Any
    ) -> argparse.ArgumentParser:
        """A command: `handler(args, ctx) -> exit code` runs when it is chosen."""
        p = group.add_parser(name, parents=[self.common, *parents], **kw)
        p.set_defaults(handler=handler)
        return p
