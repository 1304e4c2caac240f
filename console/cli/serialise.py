"""The CLI's JSON: the store's read models (store/views.py, store/monitor.py,
store/history.py) in the shapes of the CLI contract (docs/cli.md).

Times are ISO 8601 strings in UTC with their offset, the LCG percent a decimal string
("5.25"), never a float. New keys may be added; existing keys keep name, type and meaning.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with its offset, e.g. 2026-11-29T06:25:51.987591+00:00."""
    return value.astimezone(UTC).isoformat() if value is not None else None


def lcg_json(model: Any) -> dict[str, Any]:
    return {
        "enabled": bool(model.lcg_enabled),
        "percent": model.lcg_percent,
        "limit": model.lcg_limit,
        "strata": list(model.lcg_strata),
    }


def audience_json(model: Any) -> dict[str, int]:
    return {"members": model.members, "test": model.test, "control": model.control}


def campaign_row_json(row: Any) -> dict[str, Any]:
    """`campaign list --json`: a subset of `campaign show` plus paused_mailings and
    lcg_summary."""
    return {
        "name": row.name,
        "status": row.status,
        "database": row.database,
        "segment": row.segment,
        "lcg": lcg_json(row),
        "lcg_summary": row.lcg_summary,
        "audience": audience_json(row),
        "warnings": list(row.warnings),
        "paused_mailings": row.paused_mailings,
    }


def mailing_json(mailing: Any) -> dict[str, Any]:
    return {
        "name": mailing.name,
        "kind": mailing.kind,
        "status": mailing.status,
        "paused": mailing.paused,
        "paused_reason": mailing.paused_reason,
        "send_at": iso(mailing.send_at),
        "cron": mailing.cron,
        "expand_audience": bool(mailing.expand_audience),
        "last_run": iso(mailing.last_run_at),
        "next_run": iso(mailing.next_run_at),
        "event": mailing.event,
    }


def mailing_detail_json(detail: Any) -> dict[str, Any]:
    """`mailing show --json`: the mailing, and its sent and suppressed counts (R11b)."""
    return {
        **mailing_json(detail.mailing),
        "campaign": detail.campaign,
        "campaign_status": detail.campaign_status,
        "segment": detail.segment,
        "sent": detail.sent,
        "suppressed": dict(detail.suppressed),
        "suppressed_total": detail.suppressed_total,
    }


def build_json(build: Any) -> dict[str, Any]:
    return {
        "id": build.id,
        "campaign": build.campaign,
        "reason": build.reason,
        "status": build.status,
        "processed": build.processed,
        "total": build.total,
        "requested_by": build.requested_by,
        "requested_at": iso(build.requested_at),
        "started_at": iso(build.started_at),
        "finished_at": iso(build.finished_at),
        "resumed_at": iso(build.resumed_at),  # resumed after a crash, a stop or a retry
        "error": build.error,
    }


def _typed_key(values: dict[str, str | None], types: dict[str, str]) -> dict[str, Any]:
    """Stratum key values as JSON of their field's type: int fields as numbers."""
    return {
        name: int(value) if value is not None and types.get(name) == "int" else value
        for name, value in values.items()
    }


def _scope_json(d: Any) -> dict[str, Any]:
    """The audience scope; a draft's `pending.strata[].key` typed as `strata[].key` is."""
    scope = d.scope.as_dict() if d.scope is not None else {}
    for row in scope.get("pending", {}).get("strata", []):
        row["key"] = _typed_key(row["key"], d.field_types)
    return scope


def campaign_detail_json(d: Any) -> dict[str, Any]:
    """`campaign show --json`. `strata[].ideal` is the stratum's exact share of the target,
    T × n_s / N, over the LCG cohort; `key` holds each strata field's value."""
    return {
        "name": d.name,
        "status": d.status,
        "database": d.database,
        "segment": d.segment,
        "segment_kind": d.segment_kind,
        "seed": d.seed,
        "version": d.version,
        "created_at": iso(d.created_at),
        "activated_at": iso(d.activated_at),
        "completed_at": iso(d.completed_at),
        "lcg": lcg_json(d),
        "audience": audience_json(d),
        "cohort": d.cohort_size,
        "target": d.target,
        "deficit": d.deficit,
        "strata": [
            {
                "key": _typed_key(s.values, d.field_types),
                "label": s.label,
                "members": s.members,
                "cohort": s.cohort,
                "control": s.control,
                "quota": s.quota,
                "ideal": s.ideal,
            }
            for s in d.strata
        ],
        "warnings": list(d.warnings),
        "srm": {"p_value": d.srm_p_value, "flagged": bool(d.srm_flagged)},
        "mailings": [mailing_json(m) for m in d.mailings],
        "builds": [build_json(b) for b in d.builds],
        # issue 13: excluded_gcg, other_database, and a draft's `pending` split (R3, R11a)
        **_scope_json(d),
    }


def database_json(row: Any) -> dict[str, Any]:
    return {
        "name": row.name,
        "profiles": row.profiles,
        "fields": [{"name": name, "type": kind} for name, kind in row.fields],
    }


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if hasattr(value, "isoformat"):  # date
        return value.isoformat()
    return value


def profile_json(card: Any) -> dict[str, Any]:
    """A profile's card (R12) for `profile show --json`."""
    return {
        "external_id": card.external_id,
        "database": card.database,
        "in_gcg": bool(card.in_gcg),
        "segments": list(getattr(card, "segments", [])),
        "fields": {k: _json_value(v) for k, v in card.fields.items()},
        "memberships": [
            {
                "campaign": m.campaign,
                "group": m.group,
                "joined_at": iso(m.joined_at),
                "left_at": iso(m.left_at),
                "source": m.source,
            }
            for m in card.memberships
        ],
        "events": [
            {
                "at": iso(e.at),
                "kind": e.kind,
                "campaign": e.campaign,
                "segment": e.segment,
                "group": e.group,
                "build": e.build,
                "actor": e.actor,
                "mailing": getattr(e, "mailing", None),
                "reason": getattr(e, "reason", None),  # `suppressed` (R11b)
                "event": getattr(e, "event", None),  # the event that fired a trigger mailing
            }
            for e in card.events
        ],
    }
