"""Issue 15, "keep it held": the adversary's corpus as a table. Every bad input (CSV files,
LCG values, rule expressions, names, CLI arguments) gets a specific exit code and message,
and no row of any table changes (checksums of every table before and after; the audit log,
which records refusals, is left out). Runs on SQLite and PostgreSQL; in-process `main()`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from cli_helpers import Cli
from table_state import table_checksums

from store.db import make_engine
from store.models import AuditEntry

AUDIT = AuditEntry.__tablename__
BIG = str(2**63)  # 9223372036854775808: one past the largest 64-bit integer
HEADER = "external_id,region,tier,signup,score\n"

# (id, CSV bytes, message fragment)
BAD_CSV: list[tuple[str, bytes, str]] = [
    ("nul-in-value", b'external_id,region\nP1,"No\x00rth"\n', "line 2, column region: a NUL byte"),
    ("nul-in-id", b"external_id,region\nP\x001,North\n", "line 2, column external_id: a NUL byte"),
    ("nul-in-header", b"external_id,reg\x00ion\nP1,North\n", "line 1"),
    ("binary", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe" * 20, "not a CSV file"),
    ("gzip", b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xff\xfe\x00" * 10, "not a CSV file"),
    ("cr-in-unquoted", b"external_id,region\nP1,No\rrth\n", "line 3: ragged row"),
    ("huge-field", b'external_id,region\nP1,"' + b"x" * 140_000 + b'"\n', "131,072 characters"),
    ("huge-header", b"external_id," + b"h" * 20_000 + b"\nP1,x\n", "unknown column"),
    ("empty", b"", "empty file"),
    ("header-only", HEADER.encode(), "a header but no rows"),
    ("no-external-id", b"region\nNorth\n", "missing header"),
    ("ragged", b"external_id,region\nP1,North,extra\n", "ragged row"),
    ("int-overflow", f"external_id,tier\nP1,{BIG}\n".encode(), "a whole number"),
    ("int-text", b"external_id,tier\nP1,abc\n", "a whole number"),
    ("int-underscore", b"external_id,tier\nP1,1_000\n", "a whole number"),
    ("float-nan", b"external_id,score\nP1,nan\n", "a number"),
    ("float-inf", b"external_id,score\nP1,inf\n", "a number"),
    ("date-bad", b"external_id,signup\nP1,2024-02-30\n", "a date YYYY-MM-DD"),
    ("date-compact", b"external_id,signup\nP1,20240101\n", "a date YYYY-MM-DD"),
    ("bad-utf8", b"external_id,region\nP1,\xff\xfe\n", "not UTF-8"),
    ("unterminated-quote", b'external_id,region\nP1,"North\n', "malformed CSV"),
    ("duplicate-ids", b"external_id,region\nP1,a\nP1,b\n", "duplicate external_id"),
    ("empty-id", b"external_id,region\n,North\n", "external_id"),
    ("duplicate-column", b"external_id,region,region\nP1,a,b\n", "column appears twice"),
]


def cli_cases() -> list[tuple[str, list[str], int, str]]:
    """(id, argv, exit code, message fragment); {csv} is replaced by a file path."""
    cases: list[tuple[str, list[str], int, str]] = []
    # LCG values
    for value, message in [
        ("0", "LCG percent"),
        ("100", "LCG percent"),
        ("-1", "LCG percent"),
        ("5.255", "two decimals"),
        ("abc", "LCG percent"),
        ("NaN", "LCG percent"),
        ("1e400", "LCG percent"),
        (BIG, "LCG percent"),
    ]:
        cases.append(
            (f"percent-{value[:8]}", ["campaign", "lcg", "Spring", "--percent", value], 3, message)
        )
    for value in ("0", "-1", str(2**31), BIG, str(2**64)):
        cases.append(
            (
                f"lcg-limit-{value[:8]}",
                ["campaign", "lcg", "Spring", "--limit", value],
                3,
                "LCG limit",
            )
        )
        cases.append(
            (
                f"create-limit-{value[:8]}",
                [
                    "campaign",
                    "create",
                    "New",
                    "--database",
                    "main",
                    "--segment",
                    "everyone",
                    "--lcg",
                    "5",
                    "--limit",
                    value,
                ],
                3,
                "LCG limit",
            )
        )
    for strata in ("nosuchfield", "region,nosuchfield", "external_id"):
        cases.append(
            (
                f"strata-{strata}",
                ["campaign", "lcg", "Spring", "--strata", strata],
                3,
                strata.split(",")[-1],
            )
        )
    for seed in ("-1", BIG, str(2**64)):
        cases.append(
            (
                f"seed-{seed[:8]}",
                [
                    "campaign",
                    "create",
                    "New",
                    "--database",
                    "main",
                    "--segment",
                    "everyone",
                    "--seed",
                    seed,
                ],
                3,
                "seed",
            )
        )
    # rule expressions
    for rule, message in [
        ("region = Moscow", "single quotes"),
        ("tier = 'x'", "tier"),
        ("nosuch = 1", "nosuch"),
        ("tier = 1; DROP TABLE profile", "unexpected character ';'"),
        ("region = 'a' or 1=1 --", "1"),
        ("(tier = 1", "expected ')'"),
        ("tier in ()", "expected a value"),
        ("tier = 1 or " * 500 + "tier = 2", "longer than"),
        ("signup = '2024-02-30'", "is a date"),
        ("", "rule"),
    ]:
        cases.append(
            (
                f"rule-{rule[:14]}",
                ["segment", "create", "dyn", "--database", "main", "--rule", rule],
                3,
                message,
            )
        )
    # names of every kind
    for kind, prefix in [
        ("database", ["database", "create"]),
        ("segment", ["segment", "create"]),
        ("campaign", ["campaign", "create"]),
        ("mailing", ["mailing", "create"]),
    ]:
        suffix = {
            "database": ["--fields", "region:text"],
            "segment": [],
            "campaign": ["--database", "main", "--segment", "everyone"],
            "mailing": ["--campaign", "Spring", "--kind", "trigger", "--on", "buy"],
        }[kind]
        for label, name, message in [
            ("empty", "", "needs a name"),
            ("long", "x" * 10_000, "at most 200"),
            ("esc", "a\x1b[2Jb", "U+001B"),
            ("osc52", "\x1b]52;c;ZXZpbA==\x07", "U+001B"),
            ("bidi", "a\u202eb", "U+202E"),
            ("newline", "a\nb", "U+000A"),
        ]:
            cases.append((f"{kind}-name-{label}", [*prefix, name, *suffix], 3, message))
    # other CLI arguments
    cases += [
        ("builds-limit-0", ["builds", "--limit", "0"], 3, "--limit"),
        ("builds-limit-big", ["builds", "--limit", BIG], 3, "--limit"),
        ("builds-limit-neg", ["builds", "--limit", "-5"], 3, "--limit"),
        ("builds-limit-text", ["builds", "--limit", "ten"], 2, "invalid int"),
        ("audit-limit-0", ["audit", "--limit", "0"], 3, "--limit"),
        ("audit-limit-big", ["audit", "--limit", BIG], 3, "--limit"),
        (
            "every-huge",
            [
                "segment",
                "create",
                "dyn",
                "--database",
                "main",
                "--rule",
                "tier = 1",
                "--every",
                "99999999h",
            ],
            3,
            "refresh interval",
        ),
        (
            "every-zero",
            [
                "segment",
                "create",
                "dyn",
                "--database",
                "main",
                "--rule",
                "tier = 1",
                "--every",
                "0s",
            ],
            3,  # well written, out of the documented range 1 s … 366 days (docs/cli.md)
            "from 1 to 31,622,400 (366 days), not 0",
        ),
        (
            "cron-bad",
            [
                "segment",
                "create",
                "dyn",
                "--database",
                "main",
                "--rule",
                "tier = 1",
                "--cron",
                "61 * * * *",
            ],
            3,
            "cron",
        ),
        (
            "at-bad",
            [
                "mailing",
                "create",
                "m",
                "--campaign",
                "Spring",
                "--kind",
                "broadcast",
                "--at",
                "tomorrow",
            ],
            2,
            "ISO 8601",
        ),
        (
            "kind-bad",
            ["mailing", "create", "m", "--campaign", "Spring", "--kind", "sms"],
            2,
            "invalid choice",
        ),
        ("fields-bad-type", ["database", "create", "db2", "--fields", "a:blob"], 3, "unknown type"),
        ("fields-bad-name", ["database", "create", "db2", "--fields", "A-B:int"], 3, "not allowed"),
        ("demo-profiles-small", ["demo", "--profiles", "5"], 3, "profiles"),
        ("demo-profiles-big", ["demo", "--profiles", BIG], 3, "profiles"),
    ]
    # an unknown profile: one lookup (store.profiles.get_profile), one message, exit 4
    unknown = "no profile with external id 'P404' in database 'main'"
    cases += [
        ("card-unknown-profile", ["profile", "show", "P404", "--database", "main"], 4, unknown),
        (
            "explain-unknown-profile",
            ["profile", "explain", "P404", "--database", "main", "--campaign", "Spring"],
            4,
            unknown,
        ),
        (
            "event-unknown-profile",
            ["event", "send", "--database", "main", "P404", "buy"],
            4,
            unknown,
        ),
    ]
    for case_id, _content, message in BAD_CSV:
        cases.append(
            (f"csv-{case_id}", ["import", "profiles", "--database", "main", "{csv}"], 3, message)
        )
    segment_files = (
        "nul-in-id",
        "binary",
        "huge-field",
        "cr-in-unquoted",
        "empty",
        "no-external-id",
    )
    for case_id, _content, message in BAD_CSV:
        if case_id in segment_files:
            cases.append(
                (f"segment-csv-{case_id}", ["segment", "add", "everyone", "{csv}"], 3, message)
            )
    return cases


CASES = cli_cases()


@pytest.fixture
def workspace(db_url, capsys, tmp_path) -> Cli:
    cli = Cli(db_url, capsys, tmp_path)
    cli.ok("database", "create", "main", "--fields", "region:text,tier:int,signup:date,score:float")
    path = cli.file("people.csv", HEADER + "P0,North,1,2024-01-01,1.5\nP9,South,2,2024-02-01,2\n")
    cli.ok("import", "profiles", "--database", "main", path)
    cli.ok("segment", "create", "everyone")
    cli.ok(
        "campaign", "create", "Spring", "--database", "main", "--segment", "everyone", "--lcg", "5"
    )
    return cli


def refusals(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.count())
            .select_from(AuditEntry)
            .where(AuditEntry.outcome == "refused")
        ).scalar_one()


def test_the_corpus_has_at_least_100_bad_inputs():
    assert len(CASES) >= 100


def test_every_bad_input_is_refused_specifically_and_changes_nothing(workspace, tmp_path):
    """One workspace per backend, every case in turn (fast); all failures are reported."""
    cli = workspace
    engine = make_engine(cli.db_url)
    csv_files = {case_id: content for case_id, content, _m in BAD_CSV}
    failures: list[str] = []
    try:
        for case_id, argv, code, message in CASES:
            if "{csv}" in argv:
                path = tmp_path / f"{case_id}.csv"
                path.write_bytes(csv_files[case_id.split("csv-", 1)[1]])
                argv = [str(path) if a == "{csv}" else a for a in argv]
            before = table_checksums(engine, skip=(AUDIT,))
            refused_before = refusals(engine)
            result = cli(*argv)
            problems = []
            if result.code != code:
                problems.append(f"exit {result.code}, expected {code}")
            if message not in result.err:
                problems.append(f"message without {message!r}")
            if "[SQL:" in result.err or "sqlalche.me" in result.err or "\x1b" in result.err:
                problems.append("SQL, a link or a control character in the message")
            if len(result.err) > 4000:
                problems.append(f"{len(result.err)} characters on stderr")
            if table_checksums(engine, skip=(AUDIT,)) != before:
                problems.append("a table changed")
            if code == 3 and refusals(engine) != refused_before + 1:
                problems.append("the refusal was not audited once")  # issue 15.8
            if problems:
                failures.append(
                    f"{case_id}: {'; '.join(problems)}\n    stderr: {result.err[:300]!r}"
                )
    finally:
        engine.dispose()
    assert not failures, f"{len(failures)} of {len(CASES)} cases:\n" + "\n".join(failures)


# ---------------------------------------------------------------- through the real process

SCRIPT = Path(sys.executable).parent / "campaign-console"
PROCESS_CASES: list[tuple[str, list[str], int, str]] = [
    ("percent-text", ["campaign", "lcg", "Spring", "--percent", "abc"], 3, "LCG percent"),
    ("limit-2^63", ["campaign", "lcg", "Spring", "--limit", BIG], 3, "LCG limit"),
    ("name-esc", ["segment", "create", "a\x1b[2Jb"], 3, "U+001B"),
    ("rule-injection", ["segment", "create", "dyn", "--database", "main", "--rule",
                        "tier = 1; DROP TABLE profile"], 3, "unexpected character ';'"),
    ("builds-limit-2^63", ["builds", "--limit", BIG], 3, "--limit"),
    ("demo-profiles-2^63", ["demo", "--profiles", BIG], 3, "profiles"),
    ("csv-nul", ["import", "profiles", "--database", "main", "{nul.csv}"], 3,
     "line 2, column region: a NUL byte"),
    ("csv-binary", ["segment", "add", "everyone", "{binary.csv}"], 3, "not a CSV file"),
]  # fmt: skip


def test_bad_inputs_through_the_real_cli_process(workspace, tmp_path, monkeypatch):
    """A few of the cases above through .venv/bin/campaign-console: exit code, message on
    stderr (no SQL, links or control characters), nothing changed, the refusal audited."""
    monkeypatch.setenv("CAMPAIGN_CONSOLE_CONFIG", os.devnull)
    monkeypatch.delenv("CAMPAIGN_CONSOLE_DB", raising=False)
    files = {
        "nul.csv": b'external_id,region\nP1,"No\x00rth"\n',
        "binary.csv": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe" * 20,
    }
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    engine = make_engine(workspace.db_url)
    try:
        for case_id, argv, code, message in PROCESS_CASES:
            argv = [str(tmp_path / a[1:-1]) if a[1:-1] in files else a for a in argv]
            before, refused_before = table_checksums(engine, skip=(AUDIT,)), refusals(engine)
            done = subprocess.run(
                [str(SCRIPT), "--db", workspace.db_url, *argv],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == code, (case_id, done.returncode, done.stderr)
            assert message in done.stderr, (case_id, done.stderr)
            assert done.stdout == "", case_id
            for internal in ("[SQL:", "sqlalche.me", "Traceback", "\x1b"):
                assert internal not in done.stderr, (case_id, done.stderr)
            assert table_checksums(engine, skip=(AUDIT,)) == before, case_id
            assert refusals(engine) == refused_before + 1, f"{case_id}: refusal not audited"
    finally:
        engine.dispose()
