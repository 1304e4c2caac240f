"""`campaign-console gateway`: run the SSH gateway in the foreground until SIGTERM/SIGINT.

Only this command imports asyncssh and the gateway; the other CLI commands never do.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

log = logging.getLogger("gateway")


def run_gateway(
    db: str | None, listen: str | None, authorized_keys: str | None, host_key: str | None
) -> int:
    from gateway.config import gateway_settings
    from store.db import resolve_db_url, where
    from store.settings import config_path, load_settings

    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    logging.getLogger("asyncssh").setLevel(logging.WARNING)  # one line per packet otherwise
    settings = load_settings()
    gateway_config = gateway_settings(settings.gateway, listen, authorized_keys, host_key)
    db_url = resolve_db_url(db or settings.db)
    path = config_path()
    return asyncio.run(
        _serve(gateway_config, db_url, path if path.exists() else None, where(db_url))
    )


async def _serve(settings, db_url: str, config_file, db_label: str) -> int:  # noqa: ANN001
    from gateway.server import Gateway

    gateway = Gateway(settings, db_url, config_file)
    await gateway.start()
    if not settings.authorized_keys.exists():
        log.warning(
            "no authorized_keys at %s yet: every login is refused until it exists; add lines "
            'like role="operator",key-id="alice" ssh-ed25519 AAAA… (docs/gateway.md)',
            settings.authorized_keys,
        )
    # Engineers pin this (docs/gateway.md); printed on stdout so scripts can read it.
    print(f"host key {gateway.fingerprint} ({settings.host_key})", flush=True)
    print(f"listening on {settings.host}:{gateway.port} for {db_label}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping: ending %d sessions", gateway.session_count())
    await gateway.close()
    return 0
