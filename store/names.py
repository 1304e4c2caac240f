"""Names of things users create (campaigns, segments, profile databases, mailings), and how
any user-supplied or imported text is made safe to show.

A name is shown in other people's terminals (the console, `campaign list`), so it must be
plain printable text: control characters (ESC, BEL, newlines: they can clear a screen or
write a clipboard with OSC 52), line/paragraph separators and bidi overrides (U+202E makes
text read backwards) are refused with a clear message, and every name has the same bound.
Imported data (profile fields, external ids) comes from files and is escaped on output
instead (`printable`).
"""

from __future__ import annotations

import re
import unicodedata

from store.errors import ValidationError

MAX_NAME_LENGTH = 200  # the String(200) columns of campaign, segment, database, mailing

BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
UNSAFE_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})  # controls, surrogates, separators


def is_unsafe(char: str) -> bool:
    """A character that must never reach a terminal as is."""
    return char in BIDI_CONTROLS or unicodedata.category(char) in UNSAFE_CATEGORIES


# The same set as one character class, for text shown a million times (a members export):
# Cc is U+0000–001F and U+007F–009F, Cs the surrogates, Zl and Zp U+2028 and U+2029
# (tests/test_names.py checks every code point against is_unsafe).
UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029" + "".join(sorted(BIDI_CONTROLS)) + "]"
)


def check_name(kind: str, name: str | None) -> str:
    """The name of a new `kind` ("campaign", "segment", ...) with surrounding spaces removed,
    or ValidationError (exit 3) saying what is wrong with it."""
    cleaned = (name or "").strip()
    if not cleaned:
        raise ValidationError(f"a {kind} needs a name")
    if len(cleaned) > MAX_NAME_LENGTH:
        raise ValidationError(
            f"{kind} name is {len(cleaned):,} characters long; at most {MAX_NAME_LENGTH} allowed"
        )
    for position, char in enumerate(cleaned, start=1):
        if is_unsafe(char):
            raise ValidationError(
                f"{kind} name '{printable(cleaned)}' contains the control character "
                f"U+{ord(char):04X} at position {position}; names must be printable text"
            )
    return cleaned


def printable(text: str) -> str:
    """`text` with every unsafe character written as a Python-style escape (\\x1b, \\u202e),
    for showing data that came from a file or another user in a terminal."""
    if UNSAFE.search(text) is None:
        return text
    return UNSAFE.sub(lambda match: _escape(match.group()), text)


def json_escaped(text: str) -> str:
    """JSON text with every unsafe character outside its line breaks written as a \\uXXXX
    escape, which parses back to the same data (json.dumps escapes C0 controls inside
    strings itself, but not C1 controls or bidi overrides with ensure_ascii=False)."""
    if UNSAFE.search(text) is None:
        return text
    return UNSAFE.sub(
        lambda m: m.group() if m.group() == "\n" else f"\\u{ord(m.group()):04x}", text
    )


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable_lines(text: str) -> str:
    """`printable` line by line: the line breaks of a multi-line message stay."""
    return "\n".join(printable(line) for line in text.split("\n"))
