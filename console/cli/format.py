"""Human-readable output of the CLI: aligned tables and campaign/profile text.

Only for people; the stable contract is the JSON of store/views.py (docs/cli.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from store.names import printable


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str], right: Sequence[int] = ()) -> str:
    """A plain aligned text table; columns listed in `right` are right-aligned."""
    cells = [[("" if v is None else printable(str(v))) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, value in enumerate(row):
            widths[i] = max(widths[i], len(value))

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(widths[i]) if i in right else v.ljust(widths[i]) for i, v in enumerate(values)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(list(headers)), *(line(row) for row in cells)])


def count_text(value: int | None) -> str:
    return "" if value is None else f"{value:,}"


def time_text(value: str | None) -> str:
    """An ISO time, shortened for tables: 2026-11-29 06:25:51 UTC."""
    if not value:
        return ""
    moment = datetime.fromisoformat(value).astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S") + " UTC"


def progress_text(processed: int, total: int) -> str:
    if not total:
        return count_text(processed)
    return f"{processed:,}/{total:,} ({100 * processed / total:.0f}%)"


def lcg_text(lcg: dict[str, Any]) -> str:
    if not lcg["enabled"]:
        return "off" + (f" (was {lcg['percent']}%)" if lcg["percent"] else "")
    parts = [f"{lcg['percent']}%"]
    if lcg["limit"] is not None:
        parts.append(f"limit {lcg['limit']:,}")
    if lcg["strata"]:
        parts.append("strata " + ",".join(lcg["strata"]))
    return ", ".join(parts)


def builds_table(rows: list[dict[str, Any]]) -> str:
    return table(
        [
            (
                b["id"],
                b["campaign"],
                b["reason"],
                b["status"],
                progress_text(b["processed"], b["total"]),
                time_text(b["requested_at"]),
                b["error"] or "",
            )
            for b in rows
        ],
        ("ID", "CAMPAIGN", "REASON", "STATUS", "PROGRESS", "REQUESTED", "ERROR"),
        right=(0,),
    )


def campaign_text(show: dict[str, Any]) -> str:
    a = show["audience"]
    lines = [
        f"Campaign  {show['name']} ({show['status']})",
        f"Database  {show['database']}",
        f"Segment   {show['segment']} ({show['segment_kind']})",
        f"LCG       {lcg_text(show['lcg'])}",
        f"Audience  {a['members']:,} members: {a['test']:,} test, {a['control']:,} control"
        + (f" (target {show['target']:,})" if show["lcg"]["enabled"] else ""),
    ]
    srm = show["srm"]
    if srm["p_value"] is not None:
        lines.append(
            f"SRM       p = {srm['p_value']:.4g}"
            + ("  FLAGGED: split off target" if srm["flagged"] else "")
        )
    if show["strata"] and (show["lcg"]["strata"] or show["lcg"]["enabled"]):
        lines += [
            "",
            "Strata",
            table(
                [
                    (
                        s["label"],
                        count_text(s["members"]),
                        count_text(s["control"]),
                        count_text(s["quota"]),
                        f"{s['ideal']:.2f}",  # as the console shows it
                    )
                    for s in show["strata"]
                ],
                ("STRATUM", "MEMBERS", "CONTROL", "QUOTA", "IDEAL"),
                right=(1, 2, 3, 4),
            ),
        ]
    if show["warnings"]:
        lines += ["", "Warnings"] + [f"  {w['code']}: {w['message']}" for w in show["warnings"]]
    if show["mailings"]:
        lines += [
            "",
            "Mailings",
            table(
                [
                    (
                        m["name"],
                        m["kind"],
                        m["status"],
                        m["paused_reason"] or "",
                        time_text(m["next_run"]),
                    )
                    for m in show["mailings"]
                ],
                ("NAME", "KIND", "STATUS", "PAUSED", "NEXT RUN"),
            ),
        ]
    if show["builds"]:
        lines += ["", "Builds", builds_table(show["builds"])]
    return "\n".join(lines)


def profile_text(card: dict[str, Any]) -> str:
    """The profile card as text (`profile show`)."""
    lines = [
        f"Profile   {card['external_id']} ({card['database']})"
        + ("  in the global control group" if card.get("in_gcg") else ""),
        "Fields    "
        + ", ".join(f"{k}={'' if v is None else v}" for k, v in card["fields"].items()),
    ]
    if card.get("segments"):
        lines.append("Segments  " + ", ".join(card["segments"]))
    if card["memberships"]:
        lines += [
            "",
            "Memberships",
            table(
                [
                    (m["campaign"], m["group"], time_text(m["joined_at"]), time_text(m["left_at"]))
                    for m in card["memberships"]
                ],
                ("CAMPAIGN", "GROUP", "JOINED", "LEFT"),
            ),
        ]
    if card["events"]:
        lines += [
            "",
            "History",
            table(
                [
                    (
                        time_text(e["at"]),
                        e["kind"] + (f" ({e['reason']})" if e.get("reason") else ""),
                        (e["campaign"] or "") + (f" / {e['mailing']}" if e.get("mailing") else ""),
                        e["segment"] or "",
                        e["group"] or "",
                        f"#{e['build']}" if e["build"] else "",
                        e["actor"] or "",
                    )
                    for e in card["events"]
                ],
                ("AT", "EVENT", "CAMPAIGN", "SEGMENT", "GROUP", "BUILD", "BY"),
            ),
        ]
    return "\n".join(lines)


def status_text(snapshot: Any) -> str:
    """`campaign-console status`: the scheduler's health line, then live builds."""
    lines = [f"scheduler  {snapshot.health.describe()}"]
    live = [*snapshot.running, *snapshot.queued]
    if not live:
        lines.append("no builds running or queued")
        return "\n".join(lines)
    rows = [
        (
            b.id,
            b.campaign,
            b.reason,
            b.status,
            progress_text(b.processed, b.total),
            f"{b.rate:,.0f}/s" if b.rate else "",
            f"{b.eta_seconds:.0f}s" if b.eta_seconds is not None else "",
        )
        for b in live
    ]
    headers = ("ID", "CAMPAIGN", "REASON", "STATUS", "PROGRESS", "RATE", "ETA")
    lines.append(table(rows, headers, right=(0,)))
    return "\n".join(lines)
