"""End to end: `campaign-console gateway` with the distribution's OpenSSH client.

Each test starts its own gateway on a free port of 127.0.0.1 with temporary keys; PTY
sessions run `ssh` in a private tmux server and are read back with capture-pane.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from e2e.gateway_world import (
    MISSING,
    SSH_OPTIONS,
    GatewayProcess,
    Tmux,
    audit_rows,
    authorized_line,
    build_template,
    client_pid,
    make_key,
    pid_gone,
    poll,
    workspace_copy,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        bool(MISSING) and not os.environ.get("CI"),
        reason=f"needs {', '.join(MISSING)} (bin/ensure-services installs them)",
    ),
]

TEST_SETTINGS = {"connections_per_minute": 1000, "max_sessions_per_key": 1}


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return build_template(tmp_path_factory.mktemp("gateway-template") / "workspace.db")


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    directory = tmp_path_factory.mktemp("gateway-keys")
    return {name: make_key(directory, name) for name in ("alice", "bob", "eve", "nora", "carol")}


@pytest.fixture
def start_gateway(tmp_path, template, keys):
    started: list[GatewayProcess] = []

    def start(lines: list[str] | None = None, **settings) -> GatewayProcess:
        gateway = GatewayProcess(
            tmp_path, workspace_copy(template, tmp_path / "workspace.db"),
            {**TEST_SETTINGS, **settings},
        )  # fmt: skip
        if lines is None:
            lines = [
                authorized_line(keys["alice"], "operator", "alice"),
                authorized_line(keys["bob"], "read_only", "bob"),
                authorized_line(keys["nora"], None, "nora"),  # no role
            ]
        gateway.authorized_keys.write_text("\n".join(lines) + "\n")
        started.append(gateway.start())
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


@pytest.fixture
def tmux():
    tmux = Tmux(f"cc-gw-{os.getpid()}")
    yield tmux
    tmux.kill()


def test_two_sessions_show_their_own_key_id_and_role_and_resize_reaches_the_console(
    start_gateway, keys, tmux
):
    gateway = start_gateway()
    tmux.open("a", gateway.ssh(keys["alice"], "-tt"), 100, 30)
    tmux.open("b", gateway.ssh(keys["bob"], "-tt"), 80, 24)
    alice = tmux.wait_for("a", "alice (operator) via ssh")
    bob = tmux.wait_for("b", "bob (read_only) via ssh")
    assert "bob" not in alice and "alice" not in bob
    assert set(gateway.consoles()) == {"alice", "bob"}  # one console process per session

    # 100×30 shows the Test column (Autumn Sale's test group); after the resize to 80×24
    # the console lays out for 80 columns (that column is off screen) and its footer is on
    # row 24.
    test_group = "1,080 90.0%"
    tmux.wait_for("a", test_group)
    tmux.resize("a", 80, 24)
    # Waits for the relaid list itself: a frame captured mid-repaint can lack both texts.
    screen = tmux.poll_screen(
        "a",
        lambda s: test_group not in s and "10% by region" in s,
        what="the list laid out for 80 columns",
    )
    assert len(screen.splitlines()) <= 24
    poll(lambda: "Help" in tmux.screen("a").splitlines()[23], what="footer on row 24")
    tmux.resize("a", 100, 30)
    tmux.wait_for("a", test_group)

    # Quitting the console ends the session and the client exits 0.
    tmux.keys("b", "q")
    tmux.wait_for("b", "SSH-EXIT=0")
    poll(lambda: "bob" not in gateway.consoles(), what="bob's console to exit")


def test_read_only_key_cannot_activate_through_the_gateway(start_gateway, keys, tmux):
    gateway = start_gateway()
    tmux.open("b", gateway.ssh(keys["bob"], "-tt"), 80, 24)
    tmux.wait_for("b", "bob (read_only) via ssh")
    tmux.wait_for("b", "Young Drop")
    # A read-only console has no activate key: pressing it on the draft does nothing.
    tmux.keys("b", "/")
    tmux.wait_for("b", "filter: name")
    tmux.keys("b", "Y", "o", "u", "n", "g", "Enter")
    tmux.wait_gone("b", "Autumn Sale")
    tmux.keys("b", "a")
    tmux.keys("b", "y")
    tmux.keys("b", "Enter")
    tmux.wait_for("b", "draft")
    tmux.keys("b", "Escape")
    assert "Activate" not in tmux.screen("b")
    tmux.kill()
    poll(lambda: not gateway.consoles(), what="console gone")
    import sqlite3

    path = gateway.db_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        status = conn.execute("SELECT status FROM campaign WHERE name = 'Young Drop'").fetchone()
    assert status == ("draft",)


def test_killing_the_client_ends_its_console_promptly(start_gateway, keys, tmux):
    gateway = start_gateway()
    tmux.open("a", gateway.ssh(keys["alice"], "-tt"))
    tmux.wait_for("a", "alice (operator) via ssh")
    console = gateway.consoles()["alice"]
    os.kill(client_pid(tmux, "a"), signal.SIGKILL)
    # The requirement is 1 s (BENCHMARKS.md measures it); the wait is generous so a
    # loaded CI machine does not make this flaky.
    poll(lambda: pid_gone(console), timeout=15, what="the console process to be gone")
    rows = poll(lambda: [r for r in audit_rows(gateway.db_url) if r["action"] ==
                         "gateway.session_end"], what="session_end row")  # fmt: skip
    assert rows[0]["actor"] == "alice" and "duration_seconds" in rows[0]["details"]


def test_a_client_gone_just_before_the_gateway_stops_still_has_its_session_ended(
    start_gateway, keys, tmux, tmp_path, monkeypatch
):
    """The client dies and the gateway is stopped at once: the session's end, already
    under way in a task of its own, still stops the console, removes the session's
    directory and is audited before the gateway process exits."""
    homes = tmp_path / "homes"
    homes.mkdir()
    monkeypatch.setenv("TMPDIR", str(homes))  # where the gateway makes session directories
    gateway = start_gateway()
    tmux.open("a", gateway.ssh(keys["alice"], "-tt"))
    tmux.wait_for("a", "alice (operator) via ssh")
    console = gateway.consoles()["alice"]
    assert len(list(homes.iterdir())) == 1
    os.kill(client_pid(tmux, "a"), signal.SIGKILL)
    gateway.stop()  # SIGTERM, then waits for the gateway to exit
    assert pid_gone(console)
    assert list(homes.iterdir()) == []
    ends = [r for r in audit_rows(gateway.db_url) if r["action"] == "gateway.session_end"]
    assert [r["actor"] for r in ends] == ["alice"]


def test_idle_timeout_ends_the_session_with_a_message(start_gateway, keys, tmux):
    gateway = start_gateway(idle_timeout=3)
    tmux.open("a", gateway.ssh(keys["alice"], "-tt"))
    screen = tmux.wait_for("a", "SSH-EXIT=", timeout=60)
    assert "without a keystroke" in screen
    assert "Autumn Sale" not in screen  # the alternate screen was left: terminal restored
    poll(lambda: not gateway.consoles(), what="console gone")
    rows = poll(lambda: [r for r in audit_rows(gateway.db_url)
                         if r["action"] == "gateway.session_end"], what="session end row")  # fmt: skip
    assert rows[0]["details"]["reason"] == "idle timeout"


def test_a_workspace_that_cannot_be_opened_is_said_in_one_line_not_a_traceback(
    start_gateway, keys, tmux
):
    gateway = start_gateway()
    path = Path(gateway.db_url.removeprefix("sqlite:///"))
    for gone in (path, path.with_name(f"{path.name}-wal"), path.with_name(f"{path.name}-shm")):
        gone.unlink(missing_ok=True)  # e.g. moved away by someone restoring a backup
    tmux.open("a", gateway.ssh(keys["alice"], "-tt"))
    screen = tmux.wait_for("a", "SSH-EXIT=", timeout=60)
    assert f"campaign-console: error: no campaign-console workspace at {path}" in screen.replace(
        "\n", ""
    ), screen
    assert "SSH-EXIT=1" in screen
    assert "Traceback" not in screen and "File " not in screen
    poll(lambda: not gateway.consoles(), what="console gone")
    assert gateway.proc.poll() is None  # the gateway keeps serving


def test_unknown_key_and_key_without_role_are_refused(start_gateway, keys):
    gateway = start_gateway()
    unknown = gateway.run_ssh(keys["eve"], "-T")
    assert unknown.returncode == 255 and "Permission denied (publickey)" in unknown.stderr
    nora = gateway.run_ssh(keys["nora"], "-tt")
    assert nora.returncode == 1
    assert "this key has no role" in nora.stderr + nora.stdout
    rows = poll(lambda: [r for r in audit_rows(gateway.db_url) if r["outcome"] == "refused"]
                if len(audit_rows(gateway.db_url)) >= 2 else None, what="two refusals")  # fmt: skip
    reasons = {r["details"]["reason"]: r for r in rows}
    assert reasons["unknown_key"]["details"]["key_fingerprint"] == keys["eve"].fingerprint
    assert reasons["no_role"]["actor"] == "nora"
    assert reasons["no_role"]["details"]["key_fingerprint"] == keys["nora"].fingerprint
    assert not gateway.consoles()


def test_exec_no_pty_sftp_forwarding_and_agent_are_refused(start_gateway, keys, tmp_path):
    gateway = start_gateway(session_open_timeout=3)
    alice = keys["alice"]
    exec_ = gateway.run_ssh(alice, command="id")
    assert exec_.returncode == 1 and "commands are not available" in exec_.stderr
    assert "uid=" not in exec_.stdout
    no_pty = gateway.run_ssh(alice, "-T")
    assert no_pty.returncode == 1 and "needs a terminal" in no_pty.stderr
    sftp = subprocess.run(
        ["sftp", *SSH_OPTIONS, "-P", str(gateway.port), "-i", str(alice.path), "console@127.0.0.1"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert sftp.returncode != 0 and "subsystem is not available" in sftp.stderr
    # -R is refused when asked; -L when a connection is opened through it.
    remote = gateway.run_ssh(alice, "-o", "ExitOnForwardFailure=yes", "-R", "0:127.0.0.1:9", "-T")
    assert remote.returncode == 255 and "forwarding failed" in remote.stderr
    # -L: the listener is the client's; the gateway refuses the channel when used.
    # `-N` opens no session, so the gateway also closes the connection after
    # session_open_timeout.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    forward = subprocess.Popen(
        gateway.ssh(alice, "-N", "-L", f"{port}:127.0.0.1:9"),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip

    def refused_through_forward() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
                return conn.recv(1) == b""  # the client closes it: the gateway refused
        except OSError:
            return False  # not listening yet

    poll(refused_through_forward, what="a refused connection through -L")
    assert forward.wait(timeout=60) == 255  # closed: no session opened in time
    # -A: the client asks only when it has an agent to forward.
    agent_socket = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(agent_socket)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        poll(agent_socket.exists, what="ssh-agent socket")
        forwarded = subprocess.run(
            gateway.ssh(alice, "-A", "-T"), capture_output=True, text=True, timeout=60,
            stdin=subprocess.DEVNULL, env={**os.environ, "SSH_AUTH_SOCK": str(agent_socket)},
        )  # fmt: skip
    finally:
        agent.terminate()
        agent.wait()
    assert forwarded.returncode == 1  # agent refused (audited), then: no PTY

    def reasons():
        rows = audit_rows(gateway.db_url)
        return {r["details"].get("reason") for r in rows if r["outcome"] == "refused"}

    expected = {"exec", "no_pty", "subsystem", "forwarding", "agent_forwarding", "no_session"}
    poll(lambda: expected <= reasons(), what=f"refusals {expected}")
    assert not gateway.consoles()


def test_client_environment_cannot_change_the_role(start_gateway, keys, tmux, tmp_path):
    gateway = start_gateway()
    evil = tmp_path / "evil.toml"
    evil.write_text('role = "operator"\n')
    tmux.open("b", gateway.ssh(
        keys["bob"], "-tt", "-o", f"SetEnv=CAMPAIGN_CONSOLE_CONFIG={evil} CC_ROLE=operator "
        "ROLE=operator LD_PRELOAD=/nonexistent.so",
    ))  # fmt: skip
    screen = tmux.wait_for("b", "bob (read_only) via ssh")
    assert "(operator)" not in screen
    child = gateway.consoles()["bob"]
    environ = Path(f"/proc/{child}/environ").read_bytes()
    names = {item.split(b"=", 1)[0] for item in environ.split(b"\0") if item}
    assert names <= {b"TERM", b"COLORTERM", b"LANG", b"PATH", b"HOME",
                     b"CAMPAIGN_CONSOLE_DB", b"CAMPAIGN_CONSOLE_CONFIG"}  # fmt: skip


def test_session_caps_per_key_and_in_total_hold(start_gateway, keys, tmux):
    gateway = start_gateway(
        [
            authorized_line(keys["alice"], "operator", "alice"),
            authorized_line(keys["bob"], "read_only", "bob"),
            authorized_line(keys["carol"], "read_only", "carol"),
        ],
        max_sessions_per_key=1,
        max_sessions=2,
    )
    tmux.open("a", gateway.ssh(keys["alice"], "-tt"))
    tmux.wait_for("a", "alice (operator) via ssh")
    second = gateway.run_ssh(keys["alice"], "-tt")
    assert second.returncode == 1 and "already has 1 sessions open" in second.stderr
    tmux.open("b", gateway.ssh(keys["bob"], "-tt"))
    tmux.wait_for("b", "bob (read_only) via ssh")
    full = gateway.run_ssh(keys["carol"], "-tt")
    assert full.returncode == 1 and "the gateway is full (2 sessions)" in full.stderr
    assert set(gateway.consoles()) == {"alice", "bob"}
    poll(lambda: [r for r in audit_rows(gateway.db_url)
                         if r["details"].get("reason") == "cap_reached"][1:], what="two caps")  # fmt: skip
    assert {r["actor"] for r in audit_rows(gateway.db_url)
            if r["details"].get("reason") == "cap_reached"} == {"alice", "carol"}  # fmt: skip


def test_new_connections_are_rate_limited_per_address(start_gateway, keys):
    gateway = start_gateway(connections_per_minute=3)
    for _ in range(3):
        allowed = gateway.run_ssh(keys["alice"], "-T")
        assert allowed.returncode == 1 and "needs a terminal" in allowed.stderr
    limited = gateway.run_ssh(keys["alice"], "-T")
    assert limited.returncode == 255
    poll(lambda: any(r["details"].get("reason") == "rate_limited"
                     for r in audit_rows(gateway.db_url)), what="rate_limited row")  # fmt: skip


def test_a_frozen_client_loses_its_console_after_missed_keepalives(start_gateway, keys, tmux):
    gateway = start_gateway()  # keepalive every 5 s, two missed: gone within about 15 s
    tmux.open("a", gateway.ssh(keys["alice"], "-tt"))
    tmux.wait_for("a", "alice (operator) via ssh")
    console = gateway.consoles()["alice"]
    client = client_pid(tmux, "a")
    os.kill(client, signal.SIGSTOP)
    try:
        poll(lambda: pid_gone(console), timeout=60, what="the frozen client's console to end")
    finally:
        os.kill(client, signal.SIGCONT)
    ends = poll(lambda: [r for r in audit_rows(gateway.db_url)
                         if r["action"] == "gateway.session_end"], what="session end row")  # fmt: skip
    assert "connection lost" in ends[0]["details"]["reason"]


def test_authorized_keys_edit_applies_without_restart_and_malformed_keeps_last_good(
    start_gateway, keys
):
    gateway = start_gateway([authorized_line(keys["alice"], "operator", "alice")])
    carol = keys["carol"]

    def authenticated(key) -> bool:
        # -T: an authenticated key is told it needs a terminal (exit 1); unknown: 255.
        result = gateway.run_ssh(key, "-T")
        return result.returncode == 1 and "needs a terminal" in result.stderr

    assert not authenticated(carol)
    with gateway.authorized_keys.open("a") as handle:
        handle.write(authorized_line(carol, "read_only", "carol") + "\n")
    assert authenticated(carol)
    # A malformed edit (and one that would drop carol) is rejected as a whole.
    gateway.authorized_keys.write_text(
        authorized_line(keys["alice"], "operator", "alice") + "\nrole=operator ssh-ed25519 AAAA\n"
    )
    assert authenticated(carol)
    assert "authorized_keys rejected" in gateway.log.read_text()
    gateway.authorized_keys.write_text(authorized_line(keys["alice"], "operator", "alice") + "\n")
    assert not authenticated(carol)


def test_host_key_is_private_and_its_fingerprint_survives_a_restart(start_gateway, keys):
    gateway = start_gateway()
    first = gateway.fingerprint
    assert first.startswith("SHA256:")
    assert stat.S_IMODE(gateway.host_key.stat().st_mode) == 0o600
    printed = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(gateway.host_key)],
        capture_output=True, text=True, check=True,
    ).stdout.split()[1]  # fmt: skip
    assert printed == first
    gateway.stop()
    gateway.start()
    assert gateway.fingerprint == first
    # A client that pinned the key connects with strict checking.
    known = gateway.directory / "known_hosts"
    known.write_text(
        f"[127.0.0.1]:{gateway.port} {gateway.host_key.with_name(gateway.host_key.name + '.pub').read_text()}"
    )
    pinned = gateway.run_ssh(
        keys["alice"], "-T", "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known}"
    )
    assert pinned.returncode == 1 and "needs a terminal" in pinned.stderr


def test_audit_rows_name_the_key_id_fingerprint_and_client_address(start_gateway, keys, tmux):
    gateway = start_gateway()
    tmux.open("a", gateway.ssh(keys["alice"], "-tt"))
    tmux.wait_for("a", "alice (operator) via ssh")
    tmux.keys("a", "q")
    tmux.wait_for("a", "SSH-EXIT=0")
    rows = poll(lambda: (r := audit_rows(gateway.db_url)) and r[-1]["action"] ==
                "gateway.session_end" and r, what="session end row")  # fmt: skip
    assert [r["action"] for r in rows] == [
        "gateway.login", "gateway.session_start", "gateway.session_end",
    ]  # fmt: skip
    for row in rows:
        assert row["actor"] == "alice" and row["role"] == "operator"
        assert row["details"]["key_fingerprint"] == keys["alice"].fingerprint
        assert row["origin"].startswith("ssh 127.0.0.1:")
    assert rows[2]["details"]["reason"] == "console exited"
