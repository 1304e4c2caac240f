"""The poll loop that keeps every screen live without ever freezing input (Dolphie style).

* The database is read in a thread worker (`exclusive=True`, group "poll"); widgets are
  touched only back on the event loop, inside `App.batch_update()`.
* The next poll is scheduled only after the previous one finished, so a slow query can
  never pile polls up; the interval is at most one second.
* While a modal (confirmation, LCG form, help) covers the screen, polling pauses: the
  operator reads a still picture and nothing repaints behind the dialog.
* A screen opts in by implementing `LiveScreen.read_snapshot` (thread, plain data, from
  counters only) and `apply_snapshot` (event loop, updates only changed cells).
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

from textual.screen import ModalScreen, Screen
from textual.timer import Timer

from console.keymap import WRITE_ACTIONS
from store.monitor import SchedulerHealth, scheduler_health
from store.views import read_session

if TYPE_CHECKING:
    from sqlmodel import Session

    from console.app import CampaignConsole


class LiveScreen(Screen):
    """A screen the poller refreshes."""

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # k9s --readonly habit: dangerous actions are removed, not failed late. The store
        # refuses a read-only actor anyway (Actor.require_write).
        return not (action in WRITE_ACTIONS and self.app.actor.read_only)

    def read_snapshot(self, session: Session) -> Any:  # runs in a worker thread
        return None

    def apply_snapshot(self, snapshot: Any) -> None:  # runs on the event loop
        pass


# A read in flight this long means the database is not answering (a frozen server, a cut
# network that sends no reset, a lock held by someone else): the header says so, rather
# than keep showing what the last answer said (`heard 3s ago` while nothing is heard).
STALLED_AFTER = 5.0


class LivePoller:
    def __init__(self, app: CampaignConsole, interval: float = 1.0) -> None:
        self.app = app
        self.interval = min(1.0, max(0.05, interval))  # R: at least once a second
        self._timer: Timer | None = None
        self._in_flight = False
        self._again = False
        self._stopped = False
        self.read_started: float | None = None  # monotonic start of the read in flight
        self._watch: Timer | None = None
        self.polls = 0  # completed polls, for tests and the benchmark
        self.skipped_behind_modal = 0

    # ------------------------------------------------------------------ scheduling
    def start(self) -> None:
        self.poll_now()
        self._watch = self.app.set_interval(1.0, self._check_stalled, name="live-poll-watch")

    def stop(self) -> None:
        self._stopped = True
        for timer in (self._timer, self._watch):
            if timer is not None:
                timer.stop()

    def _check_stalled(self) -> None:
        started = self.read_started
        if started is not None and not self._exiting():
            waited = time.monotonic() - started
            if waited >= STALLED_AFTER:
                self.app.show_poll_stalled(waited)

    def _schedule(self, delay: float) -> None:
        if self._exiting():
            return
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.app.set_timer(max(delay, 0.01), self.poll_now, name="live-poll")

    def _exiting(self) -> bool:
        """True once the app has begun to shut down: its screens are being removed, so a
        poll must neither start nor touch widgets (a timer or a finished read can still fire
        in that window; reading `app.screen` then raised ScreenStackError)."""
        app = self.app
        return self._stopped or app._exit or not app.is_running or not app.screen_stack

    def poll_now(self) -> None:
        """Poll at once (after an action), or right after the poll in flight ends."""
        if self._exiting():
            return
        if self._in_flight:
            self._again = True
            return
        screen = self.app.screen
        if isinstance(screen, ModalScreen):
            self.skipped_behind_modal += 1
            self._schedule(self.interval)  # paused behind the modal
            return
        self._in_flight = True
        self.read_started = time.monotonic()
        self.app.run_worker(
            lambda: self._read(screen),
            name="live-poll",
            group="poll",
            thread=True,
            exclusive=True,
            exit_on_error=False,
        )

    # ------------------------------------------------------------------ the poll
    def _read(self, screen: Screen) -> None:
        header: SchedulerHealth | None = None
        snapshot: Any = None
        error: Exception | None = None
        try:
            with read_session(self.app.engine) as session:
                header = scheduler_health(session)
                if isinstance(screen, LiveScreen):
                    snapshot = screen.read_snapshot(session)
        except Exception as exc:  # a database hiccup must never kill the console
            error = exc
        with contextlib.suppress(RuntimeError):  # the app is shutting down
            self.app.call_from_thread(self._apply, screen, header, snapshot, error)

    def _apply(
        self, screen: Screen, header: SchedulerHealth | None, snapshot: Any, error: Exception | None
    ) -> None:
        self._in_flight = False
        self.read_started = None
        self.polls += 1
        if self._exiting():
            return
        try:
            with self.app.batch_update():
                if header is not None:
                    self.app.show_scheduler_state(header)
                if error is not None:
                    self.app.show_poll_error(error)
                    return
                self.app.show_poll_ok()
                if screen is self.app.screen and isinstance(screen, LiveScreen):
                    if screen.is_mounted:
                        screen.apply_snapshot(snapshot)
                    else:  # pushed, its on_mount not run yet (no table columns): read again
                        self._again = True
        finally:
            delay = 0.0 if self._again else self.interval
            self._again = False
            self._schedule(delay)
