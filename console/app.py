"""The Textual operator console: app factory shared by the CLI, the tests and the benchmark.

Screens: campaigns (list) → campaign (detail) with enter/escape, builds monitor (`b`),
profile card (`f`), help (`?`), command palette (ctrl+p). The header of every screen
shows the database (no password), the scheduler's state and the acting user and role.
The scheduler runs embedded when no other scheduler holds the lease (SPEC Scheduler).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

from textual.app import App, SystemCommand
from textual.notifications import SeverityLevel
from textual.screen import Screen

from console.actions import CampaignActions
from console.keymap import APP_BINDINGS, TypedAhead, checked_keymap
from console.live import LivePoller
from console.screens.campaigns import CampaignsScreen  # the first screen; others load lazily
from console.widgets.status_header import StatusHeader
from store.actors import Actor
from store.db import as_connected, engine_options, open_store, unreachable_problem, where
from store.errors import public_reason
from store.monitor import SchedulerHealth
from store.names import printable, printable_lines
from store.settings import SchedulerSettings, Settings
from store.views import database_names, read_session

EXIT_TERMINAL_GONE = 129  # 128 + SIGHUP
TERMINAL_GONE_GRACE_SECONDS = 5.0


def freeze_startup_objects() -> None:
    """Move every object allocated so far (modules, the app, its first screen, the embedded
    scheduler) out of the cyclic garbage collector's reach: they live as long as the
    process. Without it a full collection during a 1M build walked all of them and held the
    event loop for 150-350 ms, the slowest key presses of the build (issue 14 target 5)."""
    gc.freeze()


class CampaignConsole(App):
    TITLE = "campaign-console"
    CSS_PATH = Path(__file__).with_name("console.tcss")
    BINDINGS = APP_BINDINGS

    def __init__(
        self,
        db_url: str,
        actor: Actor,
        *,
        embed_scheduler: bool | None = None,
        poll_interval: float = 1.0,
        keys: dict[str, str] | None = None,
        db_label: str | None = None,
        scheduler_settings: SchedulerSettings | None = None,
        scheduler_options: dict | None = None,
        store_options: dict | None = None,
    ) -> None:
        super().__init__()
        self.db_url = db_url
        # An existing workspace only (issue 15.7); timeouts from the settings (15.6); a
        # read-only actor opens an SQLite file read-only, and a PostgreSQL role that may
        # only read makes the actor read-only whatever it was given (15.5).
        self.engine = open_store(db_url, read_only=actor.read_only, **(store_options or {}))
        actor = as_connected(self.engine, actor)
        self.actor = actor
        self.db_label = db_label or where(db_url)
        # A read-only console only looks: by default it never embeds a scheduler that
        # would run builds and send mailings on the viewer's behalf (header: NOT RUNNING).
        self.embed_scheduler = not actor.read_only if embed_scheduler is None else embed_scheduler
        self.embedded_service = None
        self._scheduler_requested = False
        self._startup_frozen = False
        self._scheduler_starting = False
        self._scheduler_lock = threading.Lock()
        self._terminal_gone = False
        # The embedded scheduler runs with the same tunables as the daemon (CC_SCHEDULER_*,
        # [scheduler] in the config file); `scheduler_options` override them (tests).
        self.scheduler_settings = scheduler_settings or SchedulerSettings()
        self.scheduler_options = dict(scheduler_options or {})
        self.embedded_holder: str | None = None
        self.scheduler_text = "checking…"
        # Since when (monotonic) the poller's reads fail or hang, None while they succeed;
        # and whether the reason was said (a hang says nothing until its read fails).
        self.outage_since: float | None = None
        self._outage_told = False
        self.poller = LivePoller(self, poll_interval)
        self.keymap_problems: list[str] = []
        self.requested_keys = dict(keys or {})
        self.title = "campaign-console"
        self.sub_title = f"{self.db_label} · {actor.user} ({actor.role})"
        with read_session(self.engine) as session:  # a single tiny query, before the first frame
            self.databases = database_names(session)

    # ------------------------------------------------------------------ life cycle
    def on_mount(self) -> None:
        keymap, self.keymap_problems = checked_keymap(self.requested_keys)
        if keymap:
            self.set_keymap(keymap)
        for problem in self.keymap_problems:
            self.notify(problem, title="config [keys]", severity="warning", timeout=10)
        self.push_screen(CampaignsScreen())
        self.poller.start()
        self._install_hangup_handler()

    def first_frame_shown(self) -> None:
        """Called once the campaigns are on screen. Only then start the embedded scheduler:
        importing APScheduler and acquiring the lease in a thread would otherwise compete
        with the first frame for the GIL."""
        if not self._startup_frozen:
            self._startup_frozen = True
            # The first screen reads only the catalogue (store.catalog). The rest of the
            # schema and what the other screens and actions use load here, on the event
            # loop once the campaigns are on screen (issue 14 target 5), rather than before
            # the first frame or later in a poll thread; and are frozen with the rest.
            from store import audit, lease, models, validity  # noqa: F401

            freeze_startup_objects()
        if self.embed_scheduler and not self._scheduler_requested:
            self._scheduler_requested = True
            self._scheduler_starting = True
            self.run_worker(
                self._start_embedded_scheduler, thread=True, group="scheduler", exit_on_error=False
            )

    def on_typed_ahead(self, message: TypedAhead) -> None:
        """A priority binding's action, now that the keys typed before it have acted: only
        while its screen is still the one on top (not under a dialog those keys opened)."""
        if self.screen is message.screen:
            message.action()

    def on_unmount(self) -> None:
        self.poller.stop()
        self.stop_embedded_scheduler()

    def _start_embedded_scheduler(self) -> None:
        """Embed the scheduler unless another one holds a live lease (SPEC Scheduler)."""
        try:
            from store.lease import live_lease

            with read_session(self.engine) as session:
                lease = live_lease(session)
            if lease is not None:
                return
            from scheduler.service import SchedulerService
            from store.lease import make_holder

            holder = make_holder(f"console-{uuid.uuid4().hex[:8]}")
            service = SchedulerService(
                self.db_url,
                holder=holder,
                settings=self.scheduler_settings,
                connect_timeout=engine_options(self.engine).connect_timeout,
                **self.scheduler_options,
            )
            service.start()
            self.embedded_service = service
            self.embedded_holder = holder
        except Exception as exc:
            message = f"embedded scheduler not started: {public_reason(exc)}"
            with contextlib.suppress(RuntimeError):
                self.call_from_thread(
                    self.notify, message, title="Scheduler", severity="warning", timeout=10
                )
        finally:
            freeze_startup_objects()  # APScheduler's modules and the service's objects
            self._scheduler_starting = False
            with contextlib.suppress(RuntimeError):
                self.call_from_thread(self.poller.poll_now)

    def stop_embedded_scheduler(self) -> None:
        # The lock makes a second caller wait until the first one's shutdown has finished.
        with self._scheduler_lock:
            service, self.embedded_service = self.embedded_service, None
            if service is not None:
                # Builds stop at their next chunk and resume later from the checkpoint.
                with contextlib.suppress(Exception):
                    service.shutdown(timeout=5.0)

    def _install_hangup_handler(self) -> None:
        """Exit within seconds when the terminal goes away (SSH drop) instead of spinning."""
        try:
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGHUP, self.terminal_gone)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread (tests) or no SIGHUP on this platform

    def terminal_gone(self) -> None:
        """SIGHUP: stop the embedded scheduler cleanly (lease released, running builds
        back to the queue with their checkpoint), then leave. Textual's own shutdown may
        block on the dead terminal, so the process exits as soon as the scheduler is down,
        and in any case after TERMINAL_GONE_GRACE_SECONDS."""
        if self._terminal_gone:
            return
        self._terminal_gone = True
        self.poller.stop()
        # Nothing can reach the terminal any more: writes go to /dev/null from now on.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            for fd in (1, 2):
                os.dup2(devnull, fd)

        def leave() -> None:
            self.stop_embedded_scheduler()
            os._exit(EXIT_TERMINAL_GONE)

        last_resort = threading.Timer(
            TERMINAL_GONE_GRACE_SECONDS, lambda: os._exit(EXIT_TERMINAL_GONE)
        )
        last_resort.daemon = True
        last_resort.start()
        threading.Thread(target=leave, name="terminal-gone", daemon=True).start()
        self.exit(return_code=EXIT_TERMINAL_GONE)

    # ------------------------------------------------------------------ header
    def scheduler_line(self, health: SchedulerHealth) -> str:
        """`embedded, heard 1s ago` / `external, heard 3s ago` for a live scheduler."""
        embedded = self.embedded_holder is not None and health.holder == self.embedded_holder
        age = health.heartbeat_age_seconds or 0.0
        return f"{'embedded' if embedded else 'external'}, heard {age:.0f}s ago"

    def show_scheduler_state(self, state: SchedulerHealth) -> None:
        if state.alive:
            text = self.scheduler_line(state)
        elif self.embedded_service is not None:
            text = "NOT RUNNING (embedded: awaiting lease)"
        elif self.embed_scheduler and self._scheduler_starting:
            text = "NOT RUNNING (embedded: starting)"
        else:
            text = "NOT RUNNING"
        self.scheduler_text = text
        for header in self.screen.query(StatusHeader):
            header.scheduler = text

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = False,
    ) -> None:
        """Notifications quote names and store errors: shown literally, never as markup, with
        control characters escaped (issue 15.2, 15.3), whatever the caller asked for."""
        super().notify(
            printable_lines(message),
            title=printable(title),
            severity=severity,
            timeout=timeout,
            markup=False,
        )

    def show_poll_error(self, error: Exception) -> None:
        """The poller could not read the database. The screens keep what they last read,
        the header says the database is unreachable (or a read failed) and for how long,
        in place of the scheduler's state, which cannot be known then; one notice says why
        when it starts, another when the database answers again (`show_poll_ok`)."""
        problem = unreachable_problem(self.engine, error)
        now = time.monotonic()
        if self.outage_since is None:
            self.outage_since = now
        if not self._outage_told:
            self._outage_told = True
            reason = str(problem) if problem is not None else public_reason(error)
            self.notify(
                f"{reason}. The screens show what was read before; reading again every "
                f"{self.poller.interval:g} s.",
                title="database unreachable" if problem is not None else "read failed",
                severity="error",
                timeout=15,
            )
        state = "DATABASE UNREACHABLE" if problem is not None else "READ FAILED"
        self._show_outage(f"{state} for {now - self.outage_since:.0f}s")

    def show_poll_stalled(self, waited: float) -> None:
        """The poller's read has had no answer for `waited` seconds (LivePoller)."""
        if self.outage_since is None:
            self.outage_since = time.monotonic() - waited
        self._show_outage(f"DATABASE NOT ANSWERING for {time.monotonic() - self.outage_since:.0f}s")

    def _show_outage(self, text: str) -> None:
        self.scheduler_text = text
        for header in self.screen.query(StatusHeader):
            header.scheduler = text

    def show_poll_ok(self) -> None:
        """A poll read the database: after an outage, say it answers again."""
        if self.outage_since is not None:
            seconds = time.monotonic() - self.outage_since
            self.outage_since = None
            self._outage_told = False
            self.notify(f"the database answers again (after {seconds:.0f}s)", timeout=8)

    # ------------------------------------------------------------------ navigation
    def open_campaign(self, name: str) -> None:
        from console.screens.campaign import CampaignScreen

        self.push_screen(CampaignScreen(name))
        self.poller.poll_now()

    def open_members(self, campaign: str) -> None:
        from console.screens.members import MembersScreen

        self.push_screen(MembersScreen(campaign))

    def open_profile(self, database: str, external_id: str) -> None:
        from console.screens.profile import ProfileScreen

        if not self.databases:
            with read_session(self.engine) as session:
                self.databases = database_names(session)
        self.push_screen(ProfileScreen(self.databases, database, external_id=external_id))
        self.poller.poll_now()

    def go_to(self, kind: type[Screen]) -> None:
        """The builds, audit and segments screens are one each: their key opens the screen,
        or, when it is already open further back, returns to it (closing the screens
        above it), as `b` → `g` → `b` would otherwise stack a second copy of one id."""
        if isinstance(self.screen, kind):
            return
        if any(isinstance(screen, kind) for screen in self.screen_stack):
            while not isinstance(self.screen, kind):
                self.pop_screen()
        else:
            self.push_screen(kind())
        self.poller.poll_now()

    def action_show_builds(self) -> None:
        from console.screens.builds import BuildsScreen

        self.go_to(BuildsScreen)

    def action_show_audit(self) -> None:
        from console.screens.audit import AuditScreen

        self.go_to(AuditScreen)

    def action_show_segments(self) -> None:
        from console.screens.segments import SegmentsScreen

        self.go_to(SegmentsScreen)

    def action_find_profile(self) -> None:
        from console.screens.campaign import CampaignScreen
        from console.screens.profile import ProfileScreen

        if isinstance(self.screen, ProfileScreen):
            return
        database = None
        if isinstance(self.screen, CampaignScreen) and self.screen.detail is not None:
            database = self.screen.detail.database
        if not self.databases:
            with read_session(self.engine) as session:
                self.databases = database_names(session)
        self.push_screen(ProfileScreen(self.databases, database))

    def action_show_campaigns(self) -> None:
        while len(self.screen_stack) > 2 and not isinstance(self.screen, CampaignsScreen):
            self.pop_screen()
        self.poller.poll_now()

    def action_help(self) -> None:
        from console.screens.help import HelpScreen

        self.push_screen(HelpScreen(self.binding_rows(self.screen), self.actor.read_only))

    def binding_rows(self, screen: Screen) -> list[tuple[str, str, str]]:
        """Every binding active on `screen` (read-only hides write actions, R: k9s)."""
        rows: list[tuple[str, str, str]] = []
        for active in screen.active_bindings.values():
            binding = active.binding
            if binding.system or not binding.description:
                continue
            rows.append((self.get_key_display(binding), binding.description, binding.id or ""))
        rows.append(("ctrl+p", "Command palette", ""))
        # The console's own bindings (with ids) first, widget navigation keys after.
        return sorted(rows, key=lambda row: not row[2])

    # ------------------------------------------------------------------ command palette
    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        from console.screens.campaign import CampaignScreen

        for command in super().get_system_commands(screen):
            # A remote session must not write files on the server (GATEWAY.md: App side).
            if command.title == "Screenshot" and self.actor.origin != "local":
                continue
            yield command
        yield SystemCommand("Campaigns", "Go to the campaign list", self.action_show_campaigns)
        yield SystemCommand("Builds monitor", "Builds across campaigns", self.action_show_builds)
        yield SystemCommand("Find profile", "Open a profile card", self.action_find_profile)
        yield SystemCommand("Audit log", "A: recent audit entries", self.action_show_audit)
        yield SystemCommand(
            "Segments", "Every segment and its refreshes", self.action_show_segments
        )
        yield SystemCommand("Keys", "Every key binding of this screen", self.action_help)
        if isinstance(screen, CampaignActions) and not self.actor.read_only:
            yield SystemCommand("Activate campaign", "a", screen.action_activate)
            yield SystemCommand("Edit LCG", "l: percent, limit, strata", screen.action_edit_lcg)
            yield SystemCommand(
                "Toggle LCG", "t: enable (R5) or disable (R7)", screen.action_toggle_lcg
            )
            yield SystemCommand("Complete campaign", "c: final (R8)", screen.action_complete)
            yield SystemCommand("Refresh segment", "r: now", screen.action_refresh_segment)
        if isinstance(screen, CampaignScreen) and not self.actor.read_only:
            yield SystemCommand("Pause/resume mailing", "p", screen.action_pause_mailing)
        if isinstance(screen, CampaignActions):
            yield SystemCommand("Copy campaign name", "y: OSC 52", screen.action_copy_id)
            yield SystemCommand("Campaign members", "m: who is in it", screen.action_members)


def run_console(settings: Settings, actor: Actor) -> int:
    app = CampaignConsole(
        settings.db,
        actor,
        poll_interval=settings.poll_interval,
        keys=settings.keys,
        scheduler_settings=settings.scheduler,
        store_options={
            "connect_timeout": settings.connect_timeout,
            "statement_timeout": settings.statement_timeout,
        },
    )
    app.run()
    return app.return_code or 0
