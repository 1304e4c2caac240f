"""Key bindings with ids, so operators can remap them in the config file's [keys] table.

Every binding the console offers is declared here once, with a stable id; screens take
their BINDINGS from these lists, and `App.set_keymap` applies the remapping. Keys that
terminals, tmux or macOS swallow (ctrl+a, ctrl+d, cmd/super, option/meta) are refused:
over SSH they would silently never arrive (STYLE.md habits).
"""

from __future__ import annotations

from collections.abc import Callable

from textual import events
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Input

# Ids of bindings that change state: hidden from footer and help in read-only mode.
WRITE_ACTIONS = frozenset(
    {
        "activate",
        "edit_lcg",
        "toggle_lcg",
        "complete",
        "refresh_segment",
        "pause_mailing",
        "retry_build",
        "cancel_build",
    }
)

HELP = Binding("question_mark", "app.help", "Help", id="help")
APP_BINDINGS = [
    Binding("q", "quit", "Quit", id="quit"),
    Binding("question_mark", "help", "Help", id="help", show=False),
    Binding("b", "show_builds", "Builds", id="builds"),
    Binding("f", "find_profile", "Profile", id="profile"),
    Binding("A", "show_audit", "Audit log", id="audit", show=False),
    Binding("g", "show_segments", "Segments", id="segments"),
]

CAMPAIGN_ACTION_BINDINGS = [
    Binding("a", "activate", "Activate", id="activate"),
    Binding("l", "edit_lcg", "Edit LCG", id="edit_lcg"),
    Binding("t", "toggle_lcg", "Toggle LCG", id="toggle_lcg"),
    Binding("c", "complete", "Complete", id="complete"),
    Binding("r", "refresh_segment", "Refresh seg.", id="refresh_segment"),
    Binding("y", "copy_id", "Copy name", id="copy_id", show=False),
]


class TypedAhead(Message):
    """A priority binding's action, sent along the path of the keys typed before it."""

    def __init__(self, screen: Screen, action: Callable[[], None]) -> None:
        super().__init__()
        self.screen = screen
        self.action = action


def after_keys_typed_ahead(screen: Screen, action: Callable[[], None]) -> None:
    """Run the action of a priority binding after the keys typed before it.

    The app runs a priority binding as soon as it reads its key, but the keys before it
    travel from the focused widget up to the app, which runs their bindings when they
    arrive. Over SSH a burst ("down down enter") arrives in one read, and enter would
    open the row selected before the arrows moved. Sent along the same path, the action
    reaches the app behind them (CampaignConsole.on_typed_ahead), and only runs if its
    screen is still the one on top."""
    (screen.focused or screen).post_message(TypedAhead(screen, action))


def open_filter(box: Input) -> None:
    """What `/` does on a screen with a filter box. `/` is a priority binding, so the app
    runs this as soon as it reads the key, and the focus moves at once (not on a later
    turn, as `Widget.focus` does): the keys typed after it in the same burst ("/spring"
    arrives over SSH in one read) go into the box. Before, they went to the table and
    its bindings: `r` refreshed a segment, `q` quit. In any text box (the filter, the
    members screen's stratum box) `/` is text, typed behind the keys before it (they may
    still wait in the box's queue)."""
    focused = box.screen.focused
    if isinstance(focused, Input):
        focused.post_message(events.Key("slash", "/"))
    else:
        box.screen.set_focus(box)


# `?` leads every screen's footer, so at 80 columns it is never the part that is cut.
LIST_BINDINGS = [
    HELP,
    # priority: the table's own (hidden) enter binding would otherwise hide "Open" from the footer
    Binding("enter", "open", "Open", id="open", priority=True),
    Binding("slash", "filter", "Filter", id="filter", priority=True),
    Binding("escape", "clear_filter", "Clear filter", id="clear_filter", show=False),
]

DETAIL_BINDINGS = [
    HELP,
    Binding("escape", "back", "Back", id="back"),
    Binding("p", "pause_mailing", "Pause/resume mailing", id="pause_mailing"),
]

BUILDS_BINDINGS = [
    HELP,
    Binding("escape", "back", "Back", id="back"),
    Binding("R", "retry_build", "Retry failed", id="retry_build"),
    Binding("x", "cancel_build", "Cancel build", id="cancel_build"),
]
AUDIT_BINDINGS = [
    HELP,
    Binding("slash", "filter", "Filter", id="filter", priority=True),
    Binding("escape", "back", "Back", id="back"),
]
PROFILE_BINDINGS = [
    HELP,
    Binding("escape", "back", "Back", id="back"),
    Binding("y", "copy_id", "Copy id", id="copy_id", show=False),
]

# Inspection (issue 13): from a campaign to its people.
INSPECT_BINDINGS = [Binding("m", "members", "Members", id="members")]
MEMBERS_BINDINGS = [
    HELP,
    Binding("escape", "back", "Back", id="back"),
    # priority: the table's own (hidden) enter binding would otherwise hide it from the footer
    Binding("enter", "open_profile", "Profile card", id="open_profile", priority=True),
    Binding("n", "next_page", "Next page", id="next_page"),
    Binding("N", "previous_page", "Prev. page", id="previous_page"),
    Binding("slash", "filter", "Filter", id="filter", priority=True),
]

SEGMENTS_BINDINGS = [
    HELP,
    Binding("escape", "back", "Back", id="back"),
    Binding("r", "refresh_segment", "Refresh", id="refresh_segment"),
]

SWALLOWED_KEYS = ("ctrl+a", "ctrl+d")  # tmux prefix, EOF on many terminals
SWALLOWED_MODIFIERS = ("super+", "cmd+", "meta+", "alt+", "option+")


def swallowed(key: str) -> bool:
    return key in SWALLOWED_KEYS or key.startswith(SWALLOWED_MODIFIERS)


# What one screen offers at a time: the app's keys with the screen's own.
CAMPAIGNS_SCREEN_BINDINGS = LIST_BINDINGS + CAMPAIGN_ACTION_BINDINGS + INSPECT_BINDINGS
CAMPAIGN_SCREEN_BINDINGS = DETAIL_BINDINGS + CAMPAIGN_ACTION_BINDINGS + INSPECT_BINDINGS
SCREENS = (
    CAMPAIGNS_SCREEN_BINDINGS,
    CAMPAIGN_SCREEN_BINDINGS,
    BUILDS_BINDINGS,
    AUDIT_BINDINGS,
    PROFILE_BINDINGS,
    MEMBERS_BINDINGS,
    SEGMENTS_BINDINGS,
)


def binding_ids() -> set[str]:
    return {b.id for group in (APP_BINDINGS, *SCREENS) for b in group if b.id}


def _keys(binding: Binding, keymap: dict[str, str]) -> set[str]:
    key = keymap.get(binding.id, binding.key) if binding.id else binding.key
    return {part.strip() for part in key.split(",")}


def _taken_by(binding_id: str, keymap: dict[str, str]) -> tuple[str, str] | None:
    """(key, other binding id) when `binding_id`'s key under `keymap` is another binding's
    on a screen where both are offered (the closer one would hide the other)."""
    mine = next(b for group in (APP_BINDINGS, *SCREENS) for b in group if b.id == binding_id)
    for screen in SCREENS:
        offered = APP_BINDINGS + screen
        if all(b.id != binding_id for b in offered):
            continue
        for other in offered:
            if other.id and other.id != binding_id:
                shared = _keys(mine, keymap) & _keys(other, keymap)
                if shared:
                    return min(shared), other.id
    return None


def checked_keymap(keys: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """The usable part of settings.keys, and one problem message per refused entry: an
    unknown id, a key terminals swallow, or a key another binding of the same screen has
    (it would silently lose its key)."""
    known = binding_ids()
    keymap: dict[str, str] = {}
    problems: list[str] = []
    for binding_id, key in keys.items():
        if binding_id not in known:
            problems.append(
                f"[keys] {binding_id}: no such binding (known: {', '.join(sorted(known))})"
            )
            continue
        bad = [k for k in (part.strip().lower() for part in key.split(",")) if swallowed(k)]
        if bad:
            problems.append(
                f"[keys] {binding_id} = {key!r}: terminals or tmux swallow {bad[0]}; pick another key"
            )
            continue
        keymap[binding_id] = key
    for binding_id, key in list(keymap.items()):
        taken = _taken_by(binding_id, keymap)
        if taken is not None:
            problems.append(
                f"[keys] {binding_id} = {key!r}: {taken[0]} is already {taken[1]}'s key; "
                "pick another key (or remap that one too)"
            )
            del keymap[binding_id]
    return keymap, problems
