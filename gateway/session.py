"""One SSH session: the unchanged console in its own process on a fresh PTY.

Why a process per session: Textual's driver is process-global (it reads
`sys.__stdin__`, draws on `sys.__stderr__`, owns SIGWINCH), so two consoles cannot share
one process (GATEWAY.md). The gateway pumps bytes between the SSH channel and the PTY
master: keystrokes in (they alone reset the idle timer), frames out, window changes as
TIOCSWINSZ, and tears the process group down when the session ends for any reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
import signal
import struct
import sys
import tempfile
import termios
import time
import uuid
from typing import TYPE_CHECKING

import asyncssh

if TYPE_CHECKING:
    from gateway.server import GatewayConnection

log = logging.getLogger("gateway")

# Leave the alternate screen, mouse reporting off, cursor on, bracketed paste off,
# Kitty keyboard protocol popped: the client's terminal is usable whatever the child left.
RESTORE_TERMINAL = (
    b"\x1b[?1049l\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1006l\x1b[?2004l\x1b[<u\x1b[?25h\x1b[0m"
)
HANGUP_GRACE = 0.7  # SIGHUP lets the console leave cleanly; then SIGTERM
TERM_GRACE = 2.0  # then SIGKILL


def _set_window_size(fd: int, cols: int, rows: int, xpixels: int = 0, ypixels: int = 0) -> None:
    # struct winsize is rows first (GATEWAY.md).
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, xpixels, ypixels))


def refusal_text(message: str) -> bytes:
    return f"campaign-console gateway: {message}\r\n".encode()


class RefusedSession(asyncssh.SSHServerSession):
    """Answers any request with a short message on stderr and exit status 1."""

    def __init__(self, message: str) -> None:
        self.message = message
        self.chan: asyncssh.SSHServerChannel | None = None

    def connection_made(self, chan: asyncssh.SSHServerChannel) -> None:
        self.chan = chan

    def pty_requested(self, term_type, term_size, term_modes) -> bool:  # noqa: ANN001
        return True

    def shell_requested(self) -> bool:
        return True

    def exec_requested(self, command: str) -> bool:
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        return True

    def session_started(self) -> None:
        assert self.chan is not None
        self.chan.write_stderr(refusal_text(self.message))
        self.chan.exit(1)


class ConsoleSession(asyncssh.SSHServerSession):
    """A PTY console session; anything else on the channel is refused and audited."""

    def __init__(self, connection: GatewayConnection) -> None:
        self.connection = connection
        self.gateway = connection.gateway
        self.settings = connection.gateway.settings
        self.session_id = uuid.uuid4().hex[:12]
        self.chan: asyncssh.SSHServerChannel | None = None
        self.term_type: str | None = None
        self.term_size: tuple[int, int, int, int] = (80, 24, 0, 0)
        self.command: str | None = None
        self.subsystem: str | None = None
        self.master: int | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self.home: str | None = None
        self.started_at = time.monotonic()
        self.last_keystroke = time.monotonic()
        self.ended = False
        self._reading = False
        self._pending_input = bytearray()
        self._timers: list[asyncio.TimerHandle] = []
        self._output_done = asyncio.Event()
        self.loop = asyncio.get_running_loop()

    # ------------------------------------------------------------- SSH requests
    def connection_made(self, chan: asyncssh.SSHServerChannel) -> None:
        self.chan = chan

    def pty_requested(self, term_type, term_size, term_modes) -> bool:  # noqa: ANN001
        self.term_type = term_type
        self.term_size = term_size
        return True

    def shell_requested(self) -> bool:
        return True

    def exec_requested(self, command: str) -> bool:
        self.command = command  # accepted only to answer with a message (session_started)
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        self.subsystem = subsystem
        return True

    def session_started(self) -> None:
        assert self.chan is not None
        for notice in self.connection.notices:
            self.chan.write_stderr(refusal_text(notice))
        if self.subsystem is not None:
            self._refuse(
                "subsystem",
                f"the {self.subsystem} subsystem is not available here "
                "(no file transfer); connect with: ssh -t",
                subsystem=self.subsystem,
            )
        elif self.command is not None:
            self._refuse(
                "exec",
                "commands are not available here; this gateway serves only "
                "the console: ssh -t without a command",
                command=self.command[:200],
            )
        elif self.term_type is None:
            self._refuse(
                "no_pty",
                "the console needs a terminal: connect without -T "
                "(add -t when ssh has no terminal)",
            )
        else:
            self.gateway.spawn(self._run())

    def _refuse(self, reason: str, message: str, **details: object) -> None:
        self.connection.audit_refusal(reason, message, **details)
        assert self.chan is not None
        self.chan.write_stderr(refusal_text(message))
        self.chan.exit(1)
        self.ended = True
        self.connection.session_closed(self)

    def data_received(self, data: bytes, datatype: int | None) -> None:
        self.last_keystroke = time.monotonic()  # app output never resets the idle timer
        self._write_input(data)

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        self.term_size = (width, height, pixwidth, pixheight)
        if self.master is not None and width and height:
            with contextlib.suppress(OSError):
                _set_window_size(self.master, width, height, pixwidth, pixheight)

    def eof_received(self) -> bool:
        self.gateway.spawn(self.end("client closed its input"))
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        reason = "client disconnected" if exc is None else f"connection lost: {exc}"
        self.gateway.spawn(self.end(reason))

    def pause_writing(self) -> None:
        # The client is slow: stop reading frames until the channel drains.
        self._stop_reading()

    def resume_writing(self) -> None:
        self._start_reading()

    # ------------------------------------------------------------- the child console
    async def _run(self) -> None:
        cols, rows, xpixels, ypixels = self.term_size
        master, slave = os.openpty()
        self.master = master
        _set_window_size(master, cols or 80, rows or 24, xpixels, ypixels)
        self.home = tempfile.mkdtemp(prefix=f"cc-session-{self.session_id}-")
        identity = self.connection.identity
        assert identity is not None
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "gateway.child",
                "--key-id",
                identity.key_id,
                "--role",
                identity.role,
                "--fingerprint",
                identity.fingerprint,
                "--client",
                f"{self.connection.client_address}:{self.connection.client_port}",
                stdin=slave,
                stdout=slave,
                stderr=slave,  # Textual draws on stderr
                start_new_session=True,
                env=self.gateway.child_environment(self.term_type, self.home),
                cwd=self.home,
            )
        except OSError as exc:
            os.close(slave)
            log.error("session %s: cannot start the console: %s", self.session_id, exc)
            await self.end(f"console did not start: {exc}", exit_status=1)
            return
        os.close(slave)
        os.set_blocking(master, False)
        self.connection.audit(
            "gateway.session_start",
            target_name=self.session_id,
            pid=self.proc.pid,
            term=self.term_type,
            size=f"{cols}x{rows}",
        )
        log.info("session %s: %s console pid %d", self.session_id, identity.key_id, self.proc.pid)
        self._start_reading()
        self._schedule_idle_check(self.settings.idle_timeout)
        self._timers.append(
            self.loop.call_later(
                self.settings.max_session,
                lambda: self.gateway.spawn(
                    self.end(
                        "maximum session length reached",
                        notice=(
                            f"session ended: it reached the maximum length of "
                            f"{self.settings.max_session / 60:.0f} minutes"
                        ),
                    )
                ),
            )
        )
        returncode = await self.proc.wait()
        # Frames written just before exit are still in the PTY: send them first.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._output_done.wait(), 2.0)
        await self.end(
            "console exited" if returncode == 0 else f"console exited with {returncode}",
            exit_status=returncode,
        )

    def _start_reading(self) -> None:
        if self.master is not None and not self._reading and not self._output_done.is_set():
            self.loop.add_reader(self.master, self._read_output)
            self._reading = True

    def _stop_reading(self) -> None:
        if self.master is not None and self._reading:
            self.loop.remove_reader(self.master)
            self._reading = False

    def _read_output(self) -> None:
        try:
            data = os.read(self.master, 65536)  # type: ignore[arg-type]
        except BlockingIOError:
            return
        except OSError:  # EIO: every slave end is closed, the console is gone
            data = b""
        if not data:
            self._stop_reading()
            self._output_done.set()
            return
        if self.chan is not None and not self.ended:
            self.chan.write(data)

    def _write_input(self, data: bytes) -> None:
        if self.master is None or self.ended:
            return
        self._pending_input += data
        self._flush_input()

    def _flush_input(self) -> None:
        while self._pending_input and self.master is not None:
            try:
                written = os.write(self.master, self._pending_input)
            except BlockingIOError:
                self.loop.add_writer(self.master, self._drain_input)
                return
            except OSError:
                self._pending_input.clear()
                return
            del self._pending_input[:written]

    def _drain_input(self) -> None:
        self.loop.remove_writer(self.master)  # type: ignore[arg-type]
        self._flush_input()

    def _schedule_idle_check(self, delay: float) -> None:
        self._timers.append(self.loop.call_later(delay, self._check_idle))

    def _check_idle(self) -> None:
        if self.ended:
            return
        remaining = self.last_keystroke + self.settings.idle_timeout - time.monotonic()
        if remaining > 0:
            self._schedule_idle_check(remaining)
            return
        minutes = self.settings.idle_timeout / 60
        idle = f"{minutes:.0f} minutes" if minutes >= 1 else f"{self.settings.idle_timeout:g} s"
        self.gateway.spawn(
            self.end("idle timeout", notice=f"session ended after {idle} without a keystroke")
        )

    # ------------------------------------------------------------- teardown
    async def end(self, reason: str, *, exit_status: int | None = None, notice: str = "") -> None:
        """Stop the console's process group, restore the client's terminal, close the
        channel and audit the end. Idempotent: the first reason wins."""
        if self.ended:
            return
        self.ended = True
        for timer in self._timers:
            timer.cancel()
        killed = await self._stop_console()
        self._stop_reading()
        if self.master is not None:
            with contextlib.suppress(Exception):
                self.loop.remove_writer(self.master)
            with contextlib.suppress(OSError):
                os.close(self.master)
        if self.home:
            shutil.rmtree(self.home, ignore_errors=True)
        if self.chan is not None and self.connection.connected:
            with contextlib.suppress(Exception):
                if killed or notice:
                    self.chan.write(RESTORE_TERMINAL)
                if notice:
                    self.chan.write(f"\r\n{notice}\r\n".encode())
                status = exit_status if exit_status is not None else (0 if not killed else 1)
                self.chan.exit(max(0, min(255, status)) if status >= 0 else 128 - status)
        duration = time.monotonic() - self.started_at
        if self.proc is not None:
            self.connection.audit(
                "gateway.session_end",
                target_name=self.session_id,
                reason=reason,
                duration_seconds=round(duration, 1),
            )
        log.info("session %s ended: %s (%.1fs)", self.session_id, reason, duration)
        self.connection.session_closed(self)

    async def _stop_console(self) -> bool:
        """SIGHUP, then SIGTERM, then SIGKILL to the console's process group. True when
        it had to be stopped (it had not exited by itself)."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return False
        for sig, grace in (
            (signal.SIGHUP, HANGUP_GRACE),
            (signal.SIGTERM, TERM_GRACE),
            (signal.SIGKILL, None),
        ):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                await asyncio.wait_for(proc.wait(), grace)
                break
            except TimeoutError:
                continue
        # Anything else left in its group (it is a session leader) goes too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        return True
