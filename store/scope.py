"""R1 scope: the SQL condition every build and count uses for "a profile this campaign
may reach": the campaign's database only, and not in the database's global control group
unless the campaign is on its exception list (`gcg_exception`, R11a)."""

from __future__ import annotations


def r1_scope_sql(alias: str = "p") -> str:
    """R1: profile `alias` is in the campaign's database and, unless the campaign is on the
    database's GCG exception list, not in its global control group. Binds :db and :cid."""
    return (
        f"{alias}.database_id = :db AND (NOT {alias}.in_gcg OR EXISTS ("
        "SELECT 1 FROM gcg_exception g WHERE g.database_id = :db AND g.campaign_id = :cid))"
    )
