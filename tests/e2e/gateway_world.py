"""Set-up for the SSH gateway tests: a real gateway process on a free port of 127.0.0.1,
temporary keys from ssh-keygen, the distribution's OpenSSH client (in tmux when a PTY
is needed), and waits on conditions (screen text, processes, audit rows), never sleeps.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "console"))

from workspace import build_workspace  # noqa: E402

T = TypeVar("T")
SSH_OPTIONS = [
    "-F", "/dev/null",
    "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null",
    "-o", "IdentitiesOnly=yes",
    "-o", "BatchMode=yes",
    "-o", "LogLevel=ERROR",
    "-o", "ConnectTimeout=20",
]  # fmt: skip
NEEDED = ("ssh", "ssh-keygen", "tmux", "sftp")
MISSING = [tool for tool in NEEDED if shutil.which(tool) is None]


def poll(condition: Callable[[], T], timeout: float = 30.0, what: str = "") -> T:
    """The first truthy value of condition(); fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(0.05)  # polling interval of the condition wait, not a fixed delay


@dataclass
class Key:
    name: str
    path: Path

    @property
    def public(self) -> str:
        return self.path.with_suffix(".pub").read_text().strip()

    @property
    def fingerprint(self) -> str:
        out = subprocess.run(
            ["ssh-keygen", "-l", "-E", "sha256", "-f", str(self.path.with_suffix(".pub"))],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return out.split()[1]


def make_key(directory: Path, name: str) -> Key:
    path = directory / f"{name}.key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)], check=True
    )
    path.with_suffix(".key.pub").rename(path.with_suffix(".pub"))
    return Key(name, path)


def authorized_line(key: Key, role: str | None, key_id: str | None) -> str:
    options = [f'role="{role}"'] if role else []
    options += [f'key-id="{key_id}"'] if key_id else []
    return (",".join(options) + " " if options else "") + key.public


def workspace_copy(template: Path, target: Path) -> str:
    shutil.copy(template, target)
    return f"sqlite:///{target}"


def build_template(path: Path) -> Path:
    build_workspace(f"sqlite:///{path}").engine.dispose()
    with sqlite3.connect(path) as conn:  # one file is the whole database
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


class GatewayProcess:
    """`campaign-console gateway` as a real process; stdout gives its port and host key."""

    def __init__(self, directory: Path, db_url: str, settings: dict[str, object]) -> None:
        self.directory = directory
        self.db_url = db_url
        self.authorized_keys = directory / "authorized_keys"
        self.host_key = directory / "host_ed25519_key"
        self.config = directory / "config.toml"
        lines = ["[gateway]"] + [f"{name} = {value!r}" for name, value in settings.items()]
        self.config.write_text("\n".join(lines) + "\n")
        self.log = directory / "gateway.log"
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.fingerprint = ""

    def start(self) -> GatewayProcess:
        env = {**os.environ, "CAMPAIGN_CONSOLE_CONFIG": str(self.config)}
        env.pop("CAMPAIGN_CONSOLE_DB", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "console", "gateway", "--db", self.db_url, "--listen", "127.0.0.1:0",
             "--authorized-keys", str(self.authorized_keys), "--host-key", str(self.host_key)],
            stdout=subprocess.PIPE, stderr=self.log.open("ab"), env=env, text=True, cwd=ROOT,
        )  # fmt: skip
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # blocks until the gateway says where it listens
            if line.startswith("host key "):
                self.fingerprint = line.split()[2]
            if line.startswith("listening on "):
                self.port = int(line.split()[2].rsplit(":", 1)[1])
                return self
        raise AssertionError(f"gateway did not start:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def ssh(self, key: Key, *args: str) -> list[str]:
        return ["ssh", *SSH_OPTIONS, "-p", str(self.port), "-i", str(key.path), *args,
                "console@127.0.0.1"]  # fmt: skip

    def run_ssh(self, key: Key, *args: str, command: str | None = None, timeout: float = 60):
        argv = self.ssh(key, *args) + ([command] if command else [])
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)  # fmt: skip

    def consoles(self) -> dict[str, int]:
        """Live console processes of this gateway: key-id → pid."""
        found: dict[str, int] = {}
        assert self.proc is not None
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            state, ppid = fields[0], int(fields[1])
            if ppid == self.proc.pid and b"gateway.child" in argv and state != "Z":
                found[argv[argv.index(b"--key-id") + 1].decode()] = int(entry.name)
        return found


def pid_gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


class Tmux:
    """A private tmux server (-L) with one window per SSH client."""

    def __init__(self, socket: str) -> None:
        self.socket = socket

    def run(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.socket, *args], check=True, capture_output=True, text=True
        ).stdout

    def open(self, name: str, argv: list[str], width: int = 80, height: int = 24) -> None:
        command = " ".join(f"'{part}'" for part in argv)
        # The exit status stays on screen after ssh ends (remain-on-exit would too, but
        # this also shows it as text to wait for).
        shell = f"{command}; echo SSH-EXIT=$?; sleep 600"
        self.run("new-session", "-d", "-s", name, "-x", str(width), "-y", str(height), shell)

    def screen(self, name: str) -> str:
        return self.run("capture-pane", "-p", "-t", name)

    def keys(self, name: str, *keys: str) -> None:
        self.run("send-keys", "-t", name, *keys)

    def resize(self, name: str, width: int, height: int) -> None:
        self.run("resize-window", "-t", name, "-x", str(width), "-y", str(height))

    def wait_for(self, name: str, text: str, timeout: float = 40.0) -> str:
        return self.poll_screen(name, lambda s: text in s, timeout, f"{text!r} on screen {name}")

    def wait_gone(self, name: str, text: str, timeout: float = 40.0) -> str:
        return self.poll_screen(
            name, lambda s: text not in s, timeout, f"{text!r} to leave screen {name}"
        )

    def poll_screen(
        self, name: str, wanted: Callable[[str], bool], timeout: float = 40.0, what: str = ""
    ) -> str:
        """The first screen of window `name` that is `wanted`; on timeout the failure
        shows the last screen seen (and the pane's size), not only what was awaited."""
        seen = [""]

        def condition() -> str | None:
            seen[0] = self.screen(name)
            return seen[0] if wanted(seen[0]) else None

        try:
            return poll(condition, timeout, what)
        except AssertionError as failed:
            size = subprocess.run(  # not self.run: a tmux that is gone must not hide `failed`
                ["tmux", "-L", self.socket, "display-message", "-p", "-t", name,
                 "#{pane_width}x#{pane_height}"],
                capture_output=True, text=True,
            ).stdout.strip() or "of unknown size"  # fmt: skip
            raise AssertionError(f"{failed}; pane {size}, last screen:\n{seen[0]}") from None

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


def client_pid(tmux: Tmux, name: str) -> int:
    """The ssh client under the pane's shell."""
    shell = int(tmux.run("list-panes", "-t", name, "-F", "#{pane_pid}").strip())

    def find() -> int | None:
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == shell and "(ssh)" in stat:
                    return int(entry.name)
        return None

    return poll(find, what="the ssh client process")


def audit_rows(db_url: str, action_prefix: str = "gateway.") -> list[dict]:
    import json

    path = db_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT actor, role, origin, action, outcome, details, target_name FROM audit_log "
            "WHERE action LIKE ? ORDER BY id",
            (action_prefix + "%",),
        ).fetchall()
    return [
        {"actor": a, "role": r, "origin": o, "action": act, "outcome": out,
         "details": json.loads(d), "target_name": t}
        for a, r, o, act, out, d, t in rows
    ]  # fmt: skip
