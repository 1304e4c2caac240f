"""Keyboard actions on a campaign, shared by the list and the detail screen.

Each action confirms what it will do (citing the SPEC rule), then calls the store
operation in a thread worker with `expected_version` taken from what the screen showed,
so a change made meanwhile by someone else surfaces as the store's conflict instead of
being overwritten. The store enforces rules and read-only mode and audits the outcome
(ok or refused); a refusal comes back as a clear notification and the console carries on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.text import Text

from console.literal import literal, literal_lines
from store.db import transaction, unreachable_problem
from store.errors import DomainError, StoreError, public_reason
from store.names import printable
from store.states import (
    CampaignStatus,
    CardEventKind,
    check_can_activate,
    check_can_change_lcg,
    check_can_complete,
)
from store.views import read_session

if TYPE_CHECKING:
    from rich.table import Table
    from sqlmodel import Session

    from console.app import CampaignConsole
    from console.widgets.lcg_form import LcgChange


@dataclass(frozen=True)
class CampaignRef:
    """What the screen showed about the campaign an action is about."""

    name: str
    version: int
    status: str
    members: int
    control: int
    lcg_enabled: bool
    segment: str
    segment_kind: str
    lcg_percent_bp: int = 0


StoreOperation = Callable[["Session"], str | None]


def _campaigns():
    from store import campaigns

    return campaigns


def run_store_operation(app: CampaignConsole, title: str, operation: StoreOperation) -> None:
    """Run `operation` in one transaction in a thread; report the outcome as a notification."""

    def work() -> None:
        try:
            with transaction(app.engine) as session:
                message = operation(session)
        except DomainError as exc:  # the store audited the refusal
            app.call_from_thread(
                app.notify, str(exc), title=f"{title}: refused", severity="error", timeout=8
            )
        except StoreError as exc:
            app.call_from_thread(
                app.notify, str(exc), title=f"{title}: failed", severity="error", timeout=8
            )
        except Exception as exc:  # never let an unexpected error take the console down
            # An outage is said as such: which server or file could not be reached.
            problem = unreachable_problem(app.engine, exc)
            app.call_from_thread(
                app.notify,
                str(problem) if problem else public_reason(exc),
                title=f"{title}: {'failed' if problem else 'unexpected error'}",
                severity="error",
                timeout=10,
            )
        else:
            app.call_from_thread(app.notify, message or "done", title=title)
        finally:
            app.call_from_thread(app.poller.poll_now)

    app.run_worker(work, name=title, group="store-op", thread=True, exit_on_error=False)


class CampaignActions:
    """Mixin for screens that show one selected campaign. Needs `campaign_ref()`."""

    app: CampaignConsole

    def campaign_ref(self) -> CampaignRef | None:  # pragma: no cover - screens override
        raise NotImplementedError

    def action_members(self) -> None:
        """Issue 13 §1: the campaign's members, a page at a time."""
        ref = self.campaign_ref()
        if ref is None:
            self.app.notify("no campaign selected", severity="warning")
        else:
            self.app.open_members(ref.name)

    def _ref_or_warn(self) -> CampaignRef | None:
        ref = self.campaign_ref()
        if ref is None:
            self.app.notify("no campaign selected", severity="warning")
        return ref

    def _refused_at_once(
        self, ref: CampaignRef, check: Callable[[CampaignRef], None], now: Callable[[], None]
    ) -> bool:
        """Run the store's own check of an action (store.states) on the selected row before
        asking anything. When it refuses, the action goes straight to the store, which
        refuses it in the same words and audits the refusal, instead of after a dialog that
        asked to confirm what cannot happen. A campaign's state only moves forward (draft,
        active, completed), so a row read a moment ago cannot hide a success."""
        try:
            check(ref)
        except DomainError:
            now()
            return True
        return False

    # ------------------------------------------------------------------ activate (R2a)
    def action_activate(self) -> None:
        from console.widgets.confirm import ConfirmScreen

        ref = self._ref_or_warn()
        if ref is None or self._refused_at_once(
            ref, check_can_activate, lambda: self.activate_now(ref)
        ):
            return
        text = (
            f"Activate campaign {ref.name}? An activation build distributes the profiles "
            f"of segment {ref.segment} between the test group and the local control group "
            "(R2a, R9). Mailings may start sending to the test group."
        )
        self.app.push_screen(
            ConfirmScreen(f"Activate {ref.name}", text, "Activate"),
            lambda ok: ok and self.activate_now(ref),
        )

    def activate_now(self, ref: CampaignRef) -> None:
        def operation(session: Session) -> str:
            campaigns = _campaigns()
            campaign = campaigns.get_campaign(session, ref.name)
            build = campaigns.activate(
                session, self.app.actor, campaign, expected_version=ref.version
            )
            return f"{ref.name} activated; audience build #{build.id} queued"

        run_store_operation(self.app, "Activate", operation)

    # ------------------------------------------------------------------ LCG edit (R6)
    def action_edit_lcg(self) -> None:
        ref = self._ref_or_warn()
        if ref is not None and not self._refused_at_once(
            ref, check_can_change_lcg, lambda: self.lcg_refused_now(ref, "Edit LCG")
        ):
            self.open_lcg_form(ref)

    def lcg_refused_now(self, ref: CampaignRef, title: str) -> None:
        """An LCG change the store refuses whatever it is (store.states.check_can_change_lcg):
        asked of the store with no settings, so that it refuses and audits it."""

        def operation(session: Session) -> str:
            campaigns = _campaigns()
            campaign = campaigns.get_campaign(session, ref.name)
            campaigns.edit_lcg(session, self.app.actor, campaign, expected_version=ref.version)
            return f"LCG of {ref.name} unchanged"

        run_store_operation(self.app, title, operation)

    def open_lcg_form(self, ref: CampaignRef, enable: bool = False) -> None:
        app = self.app

        def load() -> None:
            from store.views import stratifiable_fields

            try:
                with read_session(app.engine) as session:
                    campaign = _campaigns().get_campaign(session, ref.name)
                    fields = stratifiable_fields(session, campaign.database_id)
                    current = (
                        f"{campaign.lcg_percent_bp / 100:g}" if campaign.lcg_percent_bp else "",
                        campaign.lcg_limit,
                        list(campaign.lcg_strata or []),
                    )
            except StoreError as exc:
                app.call_from_thread(app.notify, str(exc), title="Edit LCG", severity="error")
                return
            app.call_from_thread(self._push_lcg_form, ref, fields, current, enable)

        app.run_worker(load, name="lcg-form", group="store-op", thread=True, exit_on_error=False)

    def _push_lcg_form(
        self, ref: CampaignRef, fields: list[str], current: tuple, enable: bool
    ) -> None:
        from console.widgets.lcg_form import LcgFormScreen

        percent, limit, strata = current
        if ref.status == CampaignStatus.ACTIVE:
            note = (
                "R6: applying queues a recalculation build (scheduled mailings pause). Nobody "
                "moves test → control: surplus control goes to test; a deficit waits for newcomers."
            )
        else:
            note = "The settings apply when the campaign is activated."
        if enable:
            note = "The LCG is off: applying enables it (R5). " + note
        elif not ref.lcg_enabled:
            note = "The LCG is off: these settings are kept for when it is enabled (t). "
        self.app.push_screen(
            LcgFormScreen(
                ref.name,
                percent=percent,
                limit=limit,
                strata=strata,
                fields=fields,
                preview=lambda change: self.lcg_preview(ref, change),
                note=note,
            ),
            lambda change: change is not None and self.apply_lcg(ref, change, enable),
        )

    def lcg_preview(self, ref: CampaignRef, change: LcgChange):
        """Runs in the form's thread worker: preview_lcg writes nothing."""
        try:
            with read_session(self.app.engine) as session:
                campaigns = _campaigns()
                campaign = campaigns.get_campaign(session, ref.name)
                preview = campaigns.preview_lcg(
                    session,
                    campaign,
                    percent=change.percent,
                    limit=change.limit,
                    strata=change.strata,
                )
        except StoreError as exc:
            return literal_lines(f"✗ {exc}", style="bold red")
        except Exception as exc:
            return literal_lines(f"✗ preview failed: {public_reason(exc)}", style="bold red")
        return render_preview(preview)

    def apply_lcg(self, ref: CampaignRef, change: LcgChange, enable: bool) -> None:
        def operation(session: Session) -> str:
            campaigns = _campaigns()
            campaign = campaigns.get_campaign(session, ref.name)
            extra: dict[str, Any] = {"enabled": True} if enable else {}
            build = campaigns.edit_lcg(
                session,
                self.app.actor,
                campaign,
                percent=change.percent,
                limit=change.limit,
                strata=change.strata,
                expected_version=ref.version,
                **extra,
            )
            queued = f"; build #{build.id} queued" if build is not None else ""
            return f"LCG of {ref.name} saved{queued}"

        run_store_operation(self.app, "Edit LCG", operation)

    # ------------------------------------------------------------------ toggle (R5, R7)
    def action_toggle_lcg(self) -> None:
        from console.widgets.confirm import ConfirmScreen

        ref = self._ref_or_warn()
        if ref is None or self._refused_at_once(
            ref, check_can_change_lcg, lambda: self.lcg_refused_now(ref, "Toggle LCG")
        ):
            return
        enable = not ref.lcg_enabled
        if enable and not ref.lcg_percent_bp:
            # Nothing to enable yet: ask for the settings first, previewed as with `l`.
            self.open_lcg_form(ref, enable=True)
            return
        if ref.status != CampaignStatus.ACTIVE:
            what = "The change applies at activation; nothing moves now."
        elif enable:
            what = (
                "R5: members already in the campaign stay in the test group; only profiles "
                "that enter the audience from now on can be placed into control. An audience "
                "build starts and scheduled mailings pause while it runs."
            )
        else:
            what = (
                f"R7: all {ref.control:,} control members move to the test group "
                f"({CardEventKind.MOVED_TO_TEST} on each profile card). They can never return "
                "to control."
            )
        verb = "Enable" if enable else "Disable"
        self.app.push_screen(
            ConfirmScreen(f"{verb} the LCG of {ref.name}", what, verb),
            lambda ok: ok and self.toggle_now(ref, enable),
        )

    def toggle_now(self, ref: CampaignRef, enable: bool) -> None:
        def operation(session: Session) -> str:
            campaigns = _campaigns()
            campaign = campaigns.get_campaign(session, ref.name)
            campaigns.set_lcg_enabled(
                session, self.app.actor, campaign, enable, expected_version=ref.version
            )
            return f"LCG of {ref.name} {'enabled' if enable else 'disabled'}"

        run_store_operation(self.app, "Toggle LCG", operation)

    # ------------------------------------------------------------------ complete (R8)
    def action_complete(self) -> None:
        from console.widgets.confirm import TypeToConfirmScreen

        ref = self._ref_or_warn()
        if ref is None or self._refused_at_once(
            ref, check_can_complete, lambda: self.complete_now(ref)
        ):
            return
        text = (
            f"R8: every one of the {ref.members:,} current members gets "
            f"{CardEventKind.LEFT_CAMPAIGN}, all "
            "memberships close, the mailings stop and the campaign becomes read-only. "
            f"This cannot be undone. Type {ref.name} and press enter to complete it."
        )
        self.app.push_screen(
            TypeToConfirmScreen(f"Complete {ref.name}", text, ref.name),
            lambda ok: ok and self.complete_now(ref),
        )

    def complete_now(self, ref: CampaignRef) -> None:
        def operation(session: Session) -> str:
            campaigns = _campaigns()
            campaign = campaigns.get_campaign(session, ref.name)
            campaigns.complete(session, self.app.actor, campaign, expected_version=ref.version)
            return f"{ref.name} completed"

        run_store_operation(self.app, "Complete", operation)

    # ------------------------------------------------------------------ segment refresh
    def action_refresh_segment(self) -> None:
        ref = self._ref_or_warn()
        if ref is not None:
            self.refresh_segment_now(ref)

    def refresh_segment_now(self, ref: CampaignRef) -> None:
        def operation(session: Session) -> str:
            from store import segments

            segment = segments.get_segment(session, ref.segment)
            result = segments.refresh(session, self.app.actor, segment)
            return f"segment {ref.segment}: {result.entered:,} entered, {result.left:,} left"

        run_store_operation(self.app, "Refresh segment", operation)

    # ------------------------------------------------------------------ copy
    def action_copy_id(self) -> None:
        ref = self.campaign_ref()
        if ref is not None:
            self.app.copy_to_clipboard(ref.name)  # OSC 52: the operator's clipboard
            self.app.notify(f"copied {ref.name!r}")


def render_preview(preview: Any) -> Table:
    """An LcgPreview as a small table: target, per-stratum quotas, warnings (R9, R10)."""
    from rich.table import Table

    title = f"control target {preview.target:,} of cohort {preview.cohort_size:,}"
    if preview.limit_binds:
        title += f" (limit binds; {preview.unlimited_target:,} without it)"
    table = Table(title=title, title_justify="left", expand=True, box=None, pad_edge=False)
    for column in ("stratum", "members", "cohort", "control now", "quota", "ideal"):
        table.add_column(column, justify="left" if column == "stratum" else "right")
    for row in preview.rows:
        table.add_row(
            literal(row.label or "(all)"),
            f"{row.members:,}",
            f"{row.cohort:,}",
            f"{row.control:,}",
            f"{row.quota:,}",
            f"{row.ideal:.2f}",
        )
    caption = Text()
    if preview.surplus:
        caption.append(f"R6: {preview.surplus:,} control members would move to test\n")
    if preview.deficit:
        caption.append(f"R6: {preview.deficit:,} control places wait for newcomers\n")
    for warning in preview.warnings:
        message = warning.get("message") if isinstance(warning, dict) else str(warning)
        caption.append(f"⚠ {printable(str(message))}\n", style="bold yellow")
    if preview.note:
        caption.append(preview.note, style="dim")
    if caption.plain:
        table.caption = caption
        table.caption_justify = "left"
    return table
