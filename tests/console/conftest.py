"""Fixtures for console tests: a deterministic workspace, built once and copied per test."""

from __future__ import annotations

import gc
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from pilot_helpers import DB_LABEL, OPERATOR
from workspace import build_workspace

from console.app import CampaignConsole
from store.actors import Actor


@pytest.fixture(autouse=True)
def unfreeze_after_the_test():
    """The console freezes its start-up objects out of the garbage collector's reach
    (console.app.freeze_startup_objects); in the test process that would keep every earlier
    test's garbage alive, so each test gives them back."""
    yield
    gc.unfreeze()


@pytest.fixture(scope="session")
def workspace_template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("console-template") / "workspace.db"
    workspace = build_workspace(f"sqlite:///{path}")
    workspace.engine.dispose()
    with sqlite3.connect(path) as conn:  # fold the WAL in, so one file is the whole database
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


@pytest.fixture
def workspace_url(workspace_template: Path, tmp_path: Path) -> str:
    target = tmp_path / "workspace.db"
    shutil.copyfile(workspace_template, target)
    return f"sqlite:///{target}"


@pytest.fixture
def make_app(workspace_url: str) -> Callable[..., CampaignConsole]:
    def factory(actor: Actor = OPERATOR, **kwargs) -> CampaignConsole:
        kwargs.setdefault("embed_scheduler", False)
        kwargs.setdefault("db_label", DB_LABEL)
        kwargs.setdefault("poll_interval", 0.2)
        return CampaignConsole(workspace_url, actor, **kwargs)

    return factory
