"""End to end: the real `campaign-console` script in tmux at 80×24, driven by keys,
read back with capture-pane; then the terminal goes away and the process must exit.

Needs tmux (CI installs it). Uses a private tmux server (-L) so it never touches the
developer's sessions. Set CC_CAPTURE_TO=path to keep the main screen's text (docs).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONSOLE = ROOT / ".venv" / "bin" / "campaign-console"
sys.path.insert(0, str(ROOT / "tests" / "console"))

from sqlmodel import Session  # noqa: E402
from workspace import build_workspace  # noqa: E402

from store.db import open_store  # noqa: E402
from store.lease import live_lease  # noqa: E402

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]


class Tmux:
    def __init__(self, socket: str) -> None:
        self.socket = socket

    def run(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.socket, *args], check=True, capture_output=True, text=True
        ).stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "cc")

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", "cc", *keys)

    def wait_for(self, text: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if text in screen:
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not on screen after {timeout}s:\n{screen}")
            time.sleep(0.05)  # polling interval of the condition wait, not a fixed delay

    def wait_gone(self, text: str, timeout: float = 20.0) -> str:
        """Wait until `text` left the screen. Needed after Escape: a key sent right
        after it would reach the app as alt+key (ESC prefix)."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if text not in screen:
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} still on screen after {timeout}s:\n{screen}")
            time.sleep(0.05)


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie already exited; tmux reaps it
    status = Path(f"/proc/{pid}/stat")
    return status.exists() and status.read_text().split()[2] == "Z"


def test_console_in_tmux_at_80x24_keys_screens_and_exit_on_hangup(tmp_path):
    assert CONSOLE.exists(), "install the package: .venv/bin/pip install -e '.[test]'"
    url = f"sqlite:///{tmp_path / 'workspace.db'}"
    build_workspace(url).engine.dispose()
    tmux = Tmux(f"cc-e2e-{os.getpid()}")
    env = f"CAMPAIGN_CONSOLE_CONFIG={os.devnull} CAMPAIGN_CONSOLE_DB={url}"
    tmux.run(
        "new-session",
        "-d",
        "-s",
        "cc",
        "-x",
        "80",
        "-y",
        "24",
        f"exec env {env} {CONSOLE}",
    )
    try:
        main = tmux.wait_for("Autumn Sale")
        assert "scheduler:" in main and "(operator)" in main
        assert "? Help" in main  # the footer fits and starts with help
        tmux.wait_for("embedded, heard")  # no other scheduler: the console runs one itself
        main = tmux.screen()
        if os.environ.get("CC_CAPTURE_TO"):
            Path(os.environ["CC_CAPTURE_TO"]).write_text(main, encoding="utf-8")

        tmux.keys("Enter")
        detail = tmux.wait_for("LCG 10% by region")
        assert "Strata" in detail
        tmux.keys("Escape")
        tmux.wait_gone("Strata")
        tmux.wait_for("North Push")
        tmux.keys("?")
        tmux.wait_for("Keys")
        tmux.keys("Escape")
        tmux.wait_gone("Keys")
        tmux.keys("b")
        tmux.wait_for("Scheduler")
        tmux.keys("Escape")
        tmux.wait_gone("Scheduler")
        tmux.keys("/")
        tmux.wait_for("filter: name")
        tmux.keys("p", "u", "s", "h")
        filtered = tmux.wait_gone("Autumn Sale")
        assert "North Push" in filtered

        pid = int(tmux.run("list-panes", "-t", "cc", "-F", "#{pane_pid}").strip())
    finally:
        # The terminal goes away (like an SSH drop): tmux hangs up on the pane.
        subprocess.run(["tmux", "-L", tmux.socket, "kill-server"], capture_output=True)
    deadline = time.monotonic() + 10
    while not process_gone(pid):
        assert time.monotonic() < deadline, "campaign-console kept running after SIGHUP"
        time.sleep(0.05)
    # It stopped its embedded scheduler on the way out: the lease is free for the next one.
    engine = open_store(url)
    with Session(engine) as session:
        assert live_lease(session) is None
    engine.dispose()
