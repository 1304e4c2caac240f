"""What every CLI command shares: the exit codes, `UsageError` and `Context` (the engine,
the actor, JSON-or-table output). No Textual import here.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

EXIT_OK, EXIT_UNEXPECTED, EXIT_USAGE, EXIT_REFUSED, EXIT_NOT_FOUND = 0, 1, 2, 3, 4


class UsageError(Exception):
    """A command line that argparse accepted but that makes no sense (exit 2)."""


class Context:
    """What a command needs: the engine, the actor, and where to write."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = sys.stdout
        self.err = sys.stderr
        self._engine = None
        self._actor = None
        self._settings = None

    @property
    def engine(self):
        if self._engine is None:
            from store.db import open_store

            # An existing workspace only: a missing one is refused (issue 15.7). A read-only
            # actor opens an SQLite file read-only (mode=ro, issue 15.5).
            self._engine = open_store(
                self.settings.db, read_only=self.settings.read_only, **self.store_options()
            )
        return self._engine

    def store_options(self) -> dict[str, Any]:
        """How this client opens the store: timeouts from the settings (issue 15.6)."""
        return {
            "connect_timeout": self.settings.connect_timeout,
            "statement_timeout": self.settings.statement_timeout,
        }

    def unreachable_problem(self, exc: BaseException) -> Any:
        """The store's words for a database that could not be reached during the command
        (store.db.unreachable_problem); None for any other error, or before any engine."""
        if self._engine is None:
            return None
        from store.db import unreachable_problem

        return unreachable_problem(self._engine, exc)

    def adopt_engine(self, engine: Any) -> None:
        """Use an engine a store operation opened (e.g. the demo's, which may create it)."""
        self._engine = engine

    @property
    def settings(self):
        """Read once per command: flags, then environment, then config file, then defaults."""
        if self._settings is None:
            from store.settings import load_settings

            self._settings = load_settings(
                db=self.args.db,
                read_only=self.args.read_only,
                pool_size=getattr(self.args, "pool_size", None),
            )
        return self._settings

    @property
    def flagged_actor(self):
        """Who acts, as the flags and the config file say (before any store is opened):
        for the commands that create a workspace (`init`, `demo`)."""
        from store.actors import current_actor

        return current_actor("read_only" if self.settings.read_only else "operator")

    @property
    def actor(self):
        """Who acts, as the store allows it: read-only when the database role may only
        read, whatever the flags (issue 15.5). Opens the store."""
        if self._actor is None:
            from store.db import as_connected

            self._actor = as_connected(self.engine, self.flagged_actor)
        return self._actor

    def transaction(self):
        from store.db import transaction

        return transaction(self.engine)

    def session(self):
        from store.views import read_session

        return read_session(self.engine)

    def emit(self, payload: Any, human: Callable[[], str]) -> None:
        # Names and imported data reach other people's terminals: no control character or
        # bidi override is ever printed raw (issue 15.2). JSON gets \\uXXXX escapes, which
        # parse back to the same data (json.dumps escapes C0 controls inside strings, so a
        # raw newline is the indentation's).
        from store.names import json_escaped, printable_lines

        if self.args.json:
            text = json.dumps(payload, indent=2, ensure_ascii=False, default=str)
            self.out.write(json_escaped(text) + "\n")
        else:
            text = human()
            if text:
                self.out.write(printable_lines(text.rstrip("\n")) + "\n")

    def note(self, text: str) -> None:
        from store.names import printable_lines

        self.err.write(printable_lines(text) + "\n")

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


def csv_source(path: str) -> Any:
    """A CSV path, or `-` for standard input."""
    return sys.stdin.buffer if path == "-" else path
