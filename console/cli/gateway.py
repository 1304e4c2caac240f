"""`gateway` (the SSH gateway, docs/gateway.md) and `audit` (the audit log).

asyncssh and the gateway package are imported only inside `cmd_gateway`: the other
commands never pay for them.
"""

from __future__ import annotations

import argparse
from typing import Any

from console.cli.args import Builder
from console.cli.context import EXIT_OK, Context


def register(sub: Any, cli: Builder) -> None:
    p = cli.leaf(
        sub, "gateway", cmd_gateway, help="serve the console over SSH (one console per session)"
    )
    p.add_argument("--listen", metavar="HOST:PORT", help="address to listen on (0.0.0.0:2222)")
    p.add_argument("--authorized-keys", metavar="FILE", help="the gateway's authorized_keys")
    p.add_argument("--host-key", metavar="FILE", help="Ed25519 host key (created if missing)")

    p = cli.leaf(sub, "audit", cmd_audit, [cli.as_json], help="the audit log, newest first")
    p.add_argument("--limit", type=int, default=50, help="at most this many entries (default 50)")
    p.add_argument("--action", metavar="PREFIX", help="only actions starting with PREFIX")
    p.add_argument("--actor", metavar="NAME", help="only this user or key-id")


def cmd_gateway(args: argparse.Namespace, ctx: Context) -> int:
    from gateway.main import run_gateway

    return run_gateway(args.db, args.listen, args.authorized_keys, args.host_key)


def audit_table(lines: list) -> str:
    from console.cli.format import table

    rows = [
        (
            line.at.strftime("%Y-%m-%d %H:%M:%S"),
            line.actor,
            line.role,
            line.origin,
            line.action,
            line.target,
            line.outcome,
            line.key_fingerprint or "",
            line.details_text,
        )
        for line in lines
    ]
    headers = ("at", "actor", "role", "origin", "action", "target", "outcome", "key", "details")
    return table(rows, headers)


def cmd_audit(args: argparse.Namespace, ctx: Context) -> int:
    from store import ranges
    from store.audit import audit_log

    with ctx.session() as session:
        # Issue 15.8: out of range is a store refusal, exit 3 and audited.
        ranges.check_whole_number(
            session, ctx.actor, "audit.list", "--limit", args.limit, *ranges.LIST_ROWS
        )
        lines = audit_log(session, limit=args.limit, action_prefix=args.action, actor=args.actor)
    ctx.emit(
        [line.to_dict() for line in lines],
        lambda: audit_table(lines) if lines else "no audit entries",
    )
    return EXIT_OK
