"""User-supplied and imported strings on screen: always literal text, never markup.

A campaign named `[/]` crashed every console at start-up (MarkupError) and
`[link=…]…[/link]` became a clickable link; an ESC in an imported value reached the
terminal. Every name, id, field value or error message that quotes one is shown through
`literal` (a rich Text, so markup is never parsed) with control characters escaped
(store.names.printable). Issue 15.2 and 15.3.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text

from store.names import printable, printable_lines


def literal(value: object, style: str = "") -> Text:
    """`value` shown exactly as typed, one line, control characters escaped."""
    return Text(printable(str(value)), style=style)


def literal_lines(value: object, style: str = "") -> Text:
    """Like `literal`, keeping the line breaks of a multi-line message."""
    return Text(printable_lines(str(value)), style=style)


def literal_cells(values: Iterable[object]) -> tuple[object, ...]:
    """DataTable cells: a plain str would be parsed as markup, so each becomes a Text."""
    return tuple(literal(v) if isinstance(v, str) else v for v in values)
