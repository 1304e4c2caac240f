"""Writers for `campaign members` (issue 13 §1): CSV with a header, or JSON as one array.

Both stream a `store.members.MemberStream`: one batch of rows is formatted and written at
a time, so memory stays constant whatever the campaign's size. Column order is the
contract of docs/cli.md: external_id, group, stratum, joined_at, source, cohort. In CSV
the stratum is its label ('region=North, tier=2'; 'all' when the campaign is not
stratified), joined_at is ISO 8601 in UTC and an empty cohort means the LCG was off when
the member's group was decided; in JSON the stratum is an object (int fields as numbers)
and the cohort a number or null.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from store.names import json_escaped, printable

if TYPE_CHECKING:
    from store.members import MemberStream

MEMBER_COLUMNS = ("external_id", "group", "stratum", "joined_at", "source", "cohort")


class _Cells(dict):
    """Stored value -> its CSV cell, rendered once per distinct value: a million members
    share a few hundred stratum keys and join instants. Bounded, so a campaign whose
    members all joined at different instants still exports in constant memory."""

    LIMIT = 100_000

    def __init__(self, render: Callable[[Any], str]) -> None:
        super().__init__()
        self.render = render

    def __missing__(self, stored: Any) -> str:
        if len(self) >= self.LIMIT:
            self.clear()
        cell = self[stored] = self.render(stored)
        return cell


def write_members_csv(members: MemberStream, out: TextIO) -> int:
    """CSV of the stream's stored rows. The two encoded columns go through the stream's
    own decoders, as in every `MemberRow` (the stratum label; joined_at as the aware UTC
    datetime's isoformat(), as in the JSON), so the file says what the console's members
    pages say (tests/test_members.py compares them); a None cohort is an empty cell
    (csv.writer's rendering of None). No object is built per member: that is what makes
    1,000,000 members fit in a few seconds (BENCHMARKS.md)."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(MEMBER_COLUMNS)
    # External ids and strata values come from files: control characters and bidi
    # overrides are escaped (\x1b), as in all CLI output (README, Security model); the
    # JSON export keeps them exactly, as \uXXXX escapes.
    label = _Cells(lambda key: printable(members.stratum(key)[1]))
    iso = _Cells(lambda stored: members.joined_at(stored).isoformat())
    count = 0
    for batch in members.stored_batches():
        writer.writerows(
            (printable(ext), group, label[key], iso[joined], source, cohort)
            for ext, group, key, joined, source, cohort in batch
        )
        count += len(batch)
    return count


def write_members_json(members: MemberStream, out: TextIO) -> int:
    count = 0
    out.write("[")
    for batch in members.batches():
        for r in batch:
            out.write(",\n" if count else "\n")
            out.write(json_escaped(json.dumps(r.as_dict(), ensure_ascii=False)))
            count += 1
    out.write("\n]\n" if count else "]\n")
    return count
