"""Writers for `campaign members` (issue 13 §1): CSV with a header, or JSON as one array.

Both stream: one batch of rows (store.members.iter_member_batches) is formatted and
written at a time, so memory stays constant
whatever the campaign's size. Column order is the contract of docs/cli.md:
external_id, group, stratum, joined_at, source, cohort. In CSV the stratum is its label
('region=North, tier=2'; 'all' when the campaign is not stratified) and an empty cohort
means the LCG was off when the member's group was decided; in JSON the stratum is an
object (int fields as numbers) and the cohort a number or null.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from store.members import MemberRow

MEMBER_COLUMNS = ("external_id", "group", "stratum", "joined_at", "source", "cohort")


def write_members_csv(batches: Iterable[list[MemberRow]], out: TextIO) -> int:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(MEMBER_COLUMNS)
    count = 0
    iso: dict = {}  # members share a few join instants: format each once
    for batch in batches:
        for r in batch:
            if r.joined_at not in iso:
                iso[r.joined_at] = r.joined_at.isoformat()
        writer.writerows(
            (
                r.external_id,
                r.group,
                r.stratum_label,
                iso[r.joined_at],
                r.source,
                "" if r.cohort is None else r.cohort,
            )
            for r in batch
        )
        count += len(batch)
    return count


def write_members_json(batches: Iterable[list[MemberRow]], out: TextIO) -> int:
    count = 0
    out.write("[")
    for batch in batches:
        for r in batch:
            out.write(",\n" if count else "\n")
            out.write(json.dumps(r.as_dict(), ensure_ascii=False))
            count += 1
    out.write("\n]\n" if count else "]\n")
    return count
