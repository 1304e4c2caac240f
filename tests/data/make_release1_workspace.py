"""Build tests/data/release1_workspace.db and its expectations with RELEASE 1.

Run against release 1 (commit 48dcb20, the last release before schema migrations):

    git worktree add /tmp/r1 48dcb20 && cd /tmp/r1
    .venv/bin/python tests/data/make_release1_workspace.py tests/data

It drives the release's own CLI (console.cli.main, in process, no scheduler: `--wait`
runs the builds in this process) to make a small SQLite workspace covering every
campaign status (draft with pending-audience changes, active with LCG and strata,
active with the LCG disabled, completed), static and dynamic segments, broadcast,
regular and trigger mailings (one paused), finished builds of every reason except
expansion, memberships that left and re-entered, field changes and profile histories.

It writes three files that the upgrade tests (tests/test_migrations.py) read:
- release1_workspace.db: the workspace, as release 1 left it;
- release1_expected.json: what release 1 itself printed for every profile card
  (`profile show --json`) and every campaign (`campaign show --json`, the audience
  figures), so an upgraded workspace is compared with release 1's own answers;
- release1_postgres.sql: the DDL release 1 runs on an empty PostgreSQL database
  (SQLModel create_all, the hash function, the schema_version row), one statement per
  block, so the PostgreSQL upgrade test starts from a release-1 schema too.

Never run it against a later commit: the point of the files is that they are frozen.
"""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3
import sys
from pathlib import Path

from console.cli import main

RETAIL = [  # external_id, region, tier, age, signup
    (
        f"R{n:03d}",
        ("Moscow", "SPb", "Kazan")[n % 3],
        1 + n % 3,
        20 + (n * 7) % 40,
        f"2020-0{1 + n % 9}-15",
    )
    for n in range(60)
]
OTHER = [(f"O{n:03d}", ("Moscow", "Omsk")[n % 2]) for n in range(5)]


def cli(db: str, *argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["--db", db, *argv])
    if code != 0:
        raise SystemExit(f"release 1 CLI failed ({code}): {' '.join(argv)}")
    return out.getvalue()


def csv_file(folder: Path, name: str, header: str, rows: list[tuple]) -> str:
    path = folder / name
    lines = [header] + [",".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def ids_file(folder: Path, name: str, ids: list[str]) -> str:
    return csv_file(folder, name, "external_id", [(i,) for i in ids])


def build_workspace(db: str, scratch: Path) -> None:
    cli(db, "database", "create", "retail", "--fields", "region:text,tier:int,age:int,signup:date")
    cli(db, "database", "create", "other", "--fields", "region:text")
    header = "external_id,region,tier,age,signup"
    cli(
        db, "import", "profiles", "--database", "retail", csv_file(scratch, "r.csv", header, RETAIL)
    )
    cli(
        db,
        "import",
        "profiles",
        "--database",
        "other",
        csv_file(scratch, "o.csv", "external_id,region", OTHER),
    )

    # Segments: a static one across two databases (R1 ignores the other database), a
    # dynamic one on a rule, a static VIP list.
    cli(db, "segment", "create", "everyone")
    cli(
        db,
        "segment",
        "add",
        "everyone",
        ids_file(scratch, "e.csv", [r[0] for r in RETAIL[:50]]),
        "--database",
        "retail",
    )
    cli(
        db,
        "segment",
        "add",
        "everyone",
        ids_file(scratch, "eo.csv", [o[0] for o in OTHER]),
        "--database",
        "other",
    )
    cli(
        db,
        "segment",
        "create",
        "young",
        "--database",
        "retail",
        "--rule",
        "age < 35",
        "--every",
        "15m",
    )
    cli(db, "segment", "refresh", "young")
    cli(db, "segment", "create", "vip")
    cli(
        db,
        "segment",
        "add",
        "vip",
        ids_file(scratch, "v.csv", [r[0] for r in RETAIL[40:60]]),
        "--database",
        "retail",
    )

    # Active with the LCG and strata; mailings of every kind, one paused by hand.
    cli(
        db,
        "campaign",
        "create",
        "Spring Promo",
        "--database",
        "retail",
        "--segment",
        "everyone",
        "--lcg",
        "20",
        "--strata",
        "region",
        "--seed",
        "42",
    )
    cli(
        db,
        "mailing",
        "create",
        "Spring Broadcast",
        "--campaign",
        "Spring Promo",
        "--kind",
        "broadcast",
        "--at",
        "2030-01-01T10:00:00+00:00",
    )
    cli(
        db,
        "mailing",
        "create",
        "Spring Weekly",
        "--campaign",
        "Spring Promo",
        "--kind",
        "regular",
        "--cron",
        "0 9 * * 1",
    )
    cli(
        db,
        "mailing",
        "create",
        "Spring Purchase",
        "--campaign",
        "Spring Promo",
        "--kind",
        "trigger",
        "--segment",
        "vip",
    )
    cli(db, "mailing", "pause", "Spring Weekly")
    cli(db, "campaign", "activate", "Spring Promo", "--wait")

    # Active, LCG later disabled (R7: control moves to test).
    cli(
        db,
        "campaign",
        "create",
        "Young Push",
        "--database",
        "retail",
        "--segment",
        "young",
        "--lcg",
        "25",
        "--limit",
        "3",
        "--seed",
        "7",
    )
    cli(
        db,
        "mailing",
        "create",
        "Young Daily",
        "--campaign",
        "Young Push",
        "--kind",
        "regular",
        "--cron",
        "30 8 * * *",
    )
    cli(db, "campaign", "activate", "Young Push", "--wait")
    cli(db, "campaign", "lcg", "Young Push", "--disable", "--wait")

    # Completed.
    cli(
        db,
        "campaign",
        "create",
        "Winter Clearance",
        "--database",
        "retail",
        "--segment",
        "vip",
        "--lcg",
        "5",
        "--seed",
        "3",
    )
    cli(db, "campaign", "activate", "Winter Clearance", "--wait")
    cli(db, "campaign", "complete", "Winter Clearance", "--yes")

    # Draft with pending-audience changes (R3).
    cli(
        db,
        "campaign",
        "create",
        "Win-back",
        "--database",
        "retail",
        "--segment",
        "vip",
        "--lcg",
        "5.25",
        "--strata",
        "region,tier",
        "--seed",
        "11",
    )
    cli(
        db,
        "segment",
        "remove",
        "vip",
        ids_file(scratch, "v1.csv", ["R041", "R042"]),
        "--database",
        "retail",
    )
    cli(db, "segment", "add", "vip", ids_file(scratch, "v2.csv", ["R041"]), "--database", "retail")

    # Leaving and re-entering an active campaign (R4), newcomers (R2c incremental builds).
    leavers = ["R000", "R001", "R002", "R003", "R004", "R005"]
    cli(
        db,
        "segment",
        "remove",
        "everyone",
        ids_file(scratch, "l.csv", leavers),
        "--database",
        "retail",
        "--wait",
    )
    cli(
        db,
        "segment",
        "add",
        "everyone",
        ids_file(scratch, "b.csv", leavers[:4] + ["R050", "R051", "R052"]),
        "--database",
        "retail",
        "--wait",
    )

    # Field changes move profiles in and out of the dynamic segment.
    changed = [(r[0], r[1], r[2], 60 if r[3] < 35 else 21, r[4]) for r in RETAIL[10:14]]
    cli(
        db,
        "import",
        "profiles",
        "--database",
        "retail",
        csv_file(scratch, "r2.csv", header, changed),
    )
    cli(db, "segment", "refresh", "young", "--wait")

    # R6 recalculation: a smaller control group moves the surplus to test.
    cli(db, "campaign", "lcg", "Spring Promo", "--percent", "10", "--wait")


def expectations(db: str) -> dict:
    profiles = {}
    for database, rows in (("retail", RETAIL), ("other", OTHER)):
        for row in rows:
            card = json.loads(cli(db, "profile", "show", row[0], "--database", database, "--json"))
            profiles[f"{database}/{row[0]}"] = card
    campaigns = {}
    for name in ("Spring Promo", "Young Push", "Winter Clearance", "Win-back"):
        show = json.loads(cli(db, "campaign", "show", name, "--json"))
        campaigns[name] = {k: show[k] for k in ("status", "lcg", "audience", "strata", "warnings")}
        campaigns[name]["mailings"] = [
            {k: m[k] for k in ("name", "kind", "status", "paused")} for m in show["mailings"]
        ]
    return {"release": "48dcb20", "profiles": profiles, "campaigns": campaigns}


def postgres_ddl() -> str:
    """What release 1's init_schema runs on an empty PostgreSQL database."""
    import sqlalchemy as sa
    from sqlmodel import SQLModel

    from store import hashing, models

    statements: list[str] = []
    dialect = sa.dialects.postgresql.psycopg.dialect()

    def dump(sql, *_args, **_kw):  # noqa: ANN001
        statements.append(str(sql.compile(dialect=dialect)).strip())

    engine = sa.create_mock_engine("postgresql+psycopg://", dump)
    SQLModel.metadata.create_all(engine, checkfirst=False)
    statements.append(hashing.POSTGRES_DDL.strip())
    statements.append(
        f"INSERT INTO store_meta (key, value) VALUES ('schema_version', '{models.SCHEMA_VERSION}')"
    )
    return "".join(f"-- statement\n{s};\n" for s in statements)


def run(folder: Path) -> None:
    target = folder / "release1_workspace.db"
    target.unlink(missing_ok=True)
    scratch = folder / "_scratch"
    scratch.mkdir(exist_ok=True)
    db = f"sqlite:///{target.resolve()}"
    build_workspace(db, scratch)
    expected = expectations(db)
    for csv in scratch.iterdir():
        csv.unlink()
    scratch.rmdir()
    # Fold the WAL into the file so one .db holds everything.
    with sqlite3.connect(target) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute("VACUUM")
    (folder / "release1_expected.json").write_text(
        json.dumps(expected, indent=1, sort_keys=True) + "\n", encoding="utf-8"
    )
    (folder / "release1_postgres.sql").write_text(postgres_ddl(), encoding="utf-8")


if __name__ == "__main__":
    run(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent))
