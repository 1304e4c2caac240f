"""Run the CLI in-process (console.cli.main) and read what it printed."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from console.cli import main

R10_STRATA = [  # SPEC R10 worked example: int_field × region, 100 profiles
    (20, "Moscow", 6),
    (20, "SPb", 7),
    (20, "Kazan", 7),
    (80, "Moscow", 28),
    (80, "SPb", 26),
    (80, "Kazan", 26),
]


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        return json.loads(self.out)


class Cli:
    """`cli("campaign", "list", "--json")` runs `campaign-console --db URL campaign list --json`."""

    def __init__(self, db_url: str, capsys: Any, tmp_path: Path) -> None:
        self.db_url = db_url
        self.capsys = capsys
        self.tmp_path = tmp_path

    def __call__(self, *argv: str) -> Result:
        self.capsys.readouterr()
        code = main(["--db", self.db_url, *argv])
        captured = self.capsys.readouterr()
        return Result(code, captured.out, captured.err)

    def ok(self, *argv: str) -> Result:
        result = self(*argv)
        assert result.code == 0, result.err
        return result

    def file(self, name: str, text: str | bytes) -> str:
        path = self.tmp_path / name
        if isinstance(text, str):
            path.write_text(text, encoding="utf-8")
        else:
            path.write_bytes(text)
        return str(path)


def r10_profiles_csv() -> str:
    lines = ["external_id,int_field,region"]
    number = 0
    for int_field, region, size in R10_STRATA:
        for _ in range(size):
            lines.append(f"P{number:03d},{int_field},{region}")
            number += 1
    return "\n".join(lines) + "\n"


def external_ids_csv(ids: list[str]) -> str:
    return "external_id\n" + "".join(f"{i}\n" for i in ids)


def r10_workspace(cli: Cli) -> None:
    """The R10 example up to a draft campaign: database, 100 profiles, a static segment."""
    cli.ok("database", "create", "main", "--fields", "int_field:int,region:text")
    cli.ok("import", "profiles", "--database", "main", cli.file("r10.csv", r10_profiles_csv()))
    cli.ok("segment", "create", "everyone")
    ids = [f"P{i:03d}" for i in range(100)]
    cli.ok("segment", "add", "everyone", cli.file("all.csv", external_ids_csv(ids)))


def people(count: int, start: int = 0) -> str:
    """A profile file: `count` profiles P000000…, regions R0–R2, tiers 0–1."""
    rows = "".join(f"P{i:06d},R{i % 3},{i % 2}\n" for i in range(start, start + count))
    return "external_id,region,tier\n" + rows


def twin_campaigns(cli: Cli, first: str, second: str, *, seed: int, weekly: bool) -> None:
    """1,000 profiles in the dynamic segment `everyone`, and two draft campaigns alike
    (same seed, segment, 5 % LCG by region and tier): a build of `first` that meets
    trouble ends as one of `second` that does not. With `weekly`, `first` has a weekly
    mailing, which its LCG builds pause (R5)."""
    cli.ok("database", "create", "main", "--fields", "region:text,tier:int")
    cli.ok("import", "profiles", "--database", "main", cli.file("p.csv", people(1000)))
    cli.ok("segment", "create", "everyone", "--database", "main", "--rule", "tier >= 0")
    cli.ok("segment", "refresh", "everyone")
    for name in (first, second):
        cli.ok("campaign", "create", name, "--database", "main", "--segment", "everyone",
               "--lcg", "5", "--strata", "region,tier", "--seed", str(seed))  # fmt: skip
    if weekly:
        cli.ok("mailing", "create", "weekly", "--campaign", first, "--kind", "regular",
               "--cron", "0 10 * * 1")  # fmt: skip
