"""Issue 15.2: every name (campaign, segment, profile database, mailing) is printable text
of 1..200 characters, checked in one place (store/names.py) with exit 3 and nothing changed;
CLI output escapes control characters of imported data."""

from __future__ import annotations

import re

import pytest
from cli_helpers import Cli
from table_state import table_checksums

from store.models import AuditEntry
from store.names import MAX_NAME_LENGTH, check_name, printable

AUDIT = AuditEntry.__tablename__

BAD_NAMES = [
    ("", "needs a name"),
    ("   ", "needs a name"),
    ("x" * (MAX_NAME_LENGTH + 1), "at most 200"),
    ("x" * 10_000, "at most 200"),
    ("clear\x1b[2Jscreen", "U+001B"),
    ("bell\x07", "U+0007"),
    ("two\nlines", "U+000A"),
    ("tab\there", "U+0009"),
    ("osc52\x1b]52;c;ZXZpbA==\x07", "U+001B"),
    ("c1\x9bcsi", "U+009B"),
    ("nul\x00", "U+0000"),
    ("del\x7f", "U+007F"),
    ("evil\u202egnp.exe", "U+202E"),
    ("isolate\u2066x", "U+2066"),
    ("line\u2028sep", "U+2028"),
]


@pytest.mark.parametrize(("name", "message"), BAD_NAMES)
def test_check_name_refuses_control_characters_and_bounds_the_length(name, message):
    from store.errors import ValidationError

    with pytest.raises(ValidationError, match=re.escape(message)):
        check_name("campaign", name)


def test_check_name_keeps_printable_unicode_and_markup_like_text():
    for name in ("Весна 2026", "[/]", "[link=https://x]y[/link]", "a" * MAX_NAME_LENGTH, "🎯 goal"):
        assert check_name("segment", f"  {name} ") == name


def test_printable_escapes_what_a_terminal_would_interpret():
    assert printable("a\x1b[2Jb\x07\u202e") == "a\\x1b[2Jb\\x07\\u202e"
    assert printable("plain [b]text[/b]") == "plain [b]text[/b]"


@pytest.fixture
def cli(db_url, capsys, tmp_path) -> Cli:
    cli = Cli(db_url, capsys, tmp_path)
    cli.ok("database", "create", "main", "--fields", "region:text")
    cli.ok("segment", "create", "everyone")
    cli.ok("campaign", "create", "Spring", "--database", "main", "--segment", "everyone")
    return cli


def creating(kind: str, name: str) -> list[str]:
    return {
        "database": ["database", "create", name, "--fields", "region:text"],
        "segment": ["segment", "create", name],
        "campaign": ["campaign", "create", name, "--database", "main", "--segment", "everyone"],
        "mailing": [
            "mailing",
            "create",
            name,
            "--campaign",
            "Spring",
            "--kind",
            "trigger",
            "--on",
            "buy",
        ],
    }[kind]


@pytest.mark.parametrize("kind", ["database", "segment", "campaign", "mailing"])
@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "needs a name"),
        ("x" * 10_000, "at most 200"),
        ("\x1b]52;c;ZXZpbA==\x07", "U+001B"),
        ("a\u202eb", "U+202E"),
    ],
)
def test_every_create_command_refuses_a_bad_name_with_exit_3_and_changes_nothing(
    cli, engine_of, kind, name, message
):
    engine = engine_of(cli)
    before = table_checksums(engine, skip=(AUDIT,))
    result = cli(*creating(kind, name))
    assert result.code == 3, result.err
    assert message in result.err
    assert "\x1b" not in result.err and "\u202e" not in result.err
    assert table_checksums(engine, skip=(AUDIT,)) == before


@pytest.fixture
def engine_of():
    from store.db import make_engine

    engines = []

    def make(cli: Cli):
        engines.append(make_engine(cli.db_url))
        return engines[-1]

    yield make
    for engine in engines:
        engine.dispose()


def test_cli_output_escapes_imported_control_characters(cli):
    hostile = "P1\x1b]52;c;ZXZpbA==\x07"
    region = "North\x1b[2J\u202e"
    path = cli.file("hostile.csv", f'external_id,region\n"{hostile}","{region}"\n')
    cli.ok("import", "profiles", "--database", "main", path)
    shown = cli.ok("profile", "show", hostile, "--database", "main")
    assert "\x1b" not in shown.out and "\x07" not in shown.out and "\u202e" not in shown.out
    assert "North\\x1b[2J\\u202e" in shown.out
    as_json = cli.ok("profile", "show", hostile, "--database", "main", "--json")
    assert "\x1b" not in as_json.out and "\u202e" not in as_json.out
    assert as_json.json["external_id"] == hostile  # JSON escapes parse back to the data
    assert as_json.json["fields"]["region"] == region

    # The members export too: CSV escaped, JSON exact (the CSV printed them raw).
    cli.ok("segment", "create", "hostiles", "--database", "main")
    cli.ok("segment", "add", "hostiles", cli.file("ids.csv", f'external_id\n"{hostile}"\n'))
    cli.ok("campaign", "create", "h", "--database", "main", "--segment", "hostiles", "--lcg", "50", "--strata", "region")  # fmt: skip
    cli.ok("campaign", "activate", "h", "--wait")
    exported = cli.ok("campaign", "members", "h").out
    assert not any(c in exported for c in "\x1b\x07\u202e"), repr(exported)
    assert "P1\\x1b]52;c;ZXZpbA==\\x07" in exported and "North\\x1b[2J\\u202e" in exported
    exact = cli.ok("campaign", "members", "h", "--format", "json")
    assert not any(c in exact.out for c in "\x1b\x07\u202e"), repr(exact.out)
    assert exact.json[0]["external_id"] == hostile


def test_the_unsafe_character_class_is_exactly_is_unsafe():
    """`UNSAFE` (one regex, for exports of a million rows) and `is_unsafe` (per character,
    by Unicode category) agree on every code point."""
    from store.names import UNSAFE, is_unsafe

    differ = [
        code
        for code in range(0x110000)
        if bool(UNSAFE.fullmatch(chr(code))) != is_unsafe(chr(code))
    ]
    assert differ == []
