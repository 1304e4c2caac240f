"""Ranges of the numeric arguments of commands (docs/cli.md), checked in the store so that a
refusal is exit 3 and audited like every other store refusal, identical on SQLite and
PostgreSQL (issue 15.8). Values that reach SQL (LCG limit, seed) are checked by their
operations (store/campaigns.py); these are the arguments of reads and of the demo.
"""

from __future__ import annotations

from typing import Any

from store import audit
from store.actors import Actor
from store.errors import ValidationError
from store.views import MAX_LIST_ROWS  # builds --limit, audit --limit


def _action(action: str, *_args: Any, **_kwargs: Any) -> str:
    return action


def _argument(_action: str, name: str, *_args: Any, **_kwargs: Any) -> str:
    return name


LIST_ROWS = (1, MAX_LIST_ROWS)


@audit.operation(_action, "argument", target=_argument)
def check_whole_number(
    session: Any, actor: Actor, action: str, name: str, value: Any, low: int, high: int
) -> int:
    """`value` of argument `name` of `action` (e.g. "builds.list", "--limit"), or refuse."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError(
            f"{name} must be a whole number from {low:,} to {high:,}, not {value}"
        )
    return value
