"""One gateway session's console: `python -m gateway.child --key-id … --role …`.

Started by the gateway (gateway/session.py) on a fresh PTY, in its own session. The
identity comes only from this argv, which the gateway builds from the authorized_keys
entry the client authenticated with; the config file's `role` and the environment are
not consulted for it. Imports neither asyncssh nor the gateway server.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import sys
import termios


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gateway.child")
    parser.add_argument("--key-id", required=True)
    parser.add_argument("--role", required=True, choices=("operator", "read_only"))
    parser.add_argument("--fingerprint", required=True)
    parser.add_argument("--client", required=True, help="ADDRESS:PORT of the SSH client")
    args = parser.parse_args(argv)
    # The PTY becomes our controlling terminal, or the kernel never sends SIGWINCH and
    # the console would keep its first size (GATEWAY.md). We are a session leader
    # (the gateway starts us with start_new_session).
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    from console.app import CampaignConsole
    from store.actors import gateway_actor
    from store.errors import StoreError
    from store.names import printable_lines
    from store.settings import load_settings

    address, _, port = args.client.rpartition(":")
    actor = gateway_actor(args.key_id, args.role, args.fingerprint, address, int(port))
    settings = load_settings()  # poll interval and key remaps only: never the role
    # One scheduler per deployment runs as its own service (docs/gateway.md); a session
    # must not embed one that would die, lease and all, with whoever connected first.
    try:
        app = CampaignConsole(
            os.environ["CAMPAIGN_CONSOLE_DB"],  # set by the gateway (not in argv: passwords)
            actor,
            embed_scheduler=False,
            poll_interval=settings.poll_interval,
            keys=settings.keys,
            store_options={
                "connect_timeout": settings.connect_timeout,
                "statement_timeout": settings.statement_timeout,
            },
        )
    except StoreError as exc:
        # The workspace cannot be opened now (its server down, its file gone): the store's
        # one line on the client's terminal, as the local console says it; no traceback.
        print(f"campaign-console: error: {printable_lines(str(exc))}", file=sys.stderr)
        return 1
    app.run()
    return app.return_code or 0


if __name__ == "__main__":
    sys.exit(main())
