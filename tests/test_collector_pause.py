"""Loads pause the cyclic garbage collector while they read and write rows (issue 14,
loads): the pause covers the load, nests, is shared by concurrent loads, and always ends
with the collector as it was."""

from __future__ import annotations

import gc
import io
import threading

import pytest

from store import imports, profiles
from store.csv_import import collector_paused, scan_records
from store.db import transaction


@pytest.fixture
def collector_on():
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_the_pause_nests_and_ends_with_the_collector_as_it_was(collector_on):
    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    with collector_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()  # it was off: it stays off


def test_the_pause_ends_after_an_error(collector_on):
    with pytest.raises(ValueError), collector_paused():
        raise ValueError
    assert gc.isenabled()


def test_concurrent_pauses_end_when_the_last_one_ends(collector_on):
    inside, release = threading.Barrier(2), threading.Event()
    states = []

    def load():
        with collector_paused():
            inside.wait()
            release.wait(5)
        states.append(gc.isenabled())

    other = threading.Thread(target=load)
    other.start()
    with collector_paused():
        inside.wait()
        release.set()
        other.join(5)
        states.append(gc.isenabled())  # the other load ended first: still paused
    assert states == [False, False]
    assert gc.isenabled()


def test_a_file_is_scanned_with_the_collector_paused(collector_on):
    seen = []
    scan_records(io.BytesIO(b"external_id\nP1\n"), 10, lambda r, p: seen.append(gc.isenabled()))
    assert seen == [False]
    assert gc.isenabled()


def test_imports_leave_the_collector_enabled(engine, operator, collector_on):
    with transaction(engine) as session:
        database = profiles.create_database(session, operator, "retail", [("tier", "int")])
        imports.import_profiles(
            session, operator, database, io.BytesIO(b"external_id,tier\nP1,1\n")
        )
        assert gc.isenabled()  # the first load
        imports.import_profiles(
            session, operator, database, io.BytesIO(b"external_id,tier\nP1,2\n")
        )
        assert gc.isenabled()  # the general path
        with pytest.raises(imports.ImportRejected):
            imports.import_profiles(
                session, operator, database, io.BytesIO(b"external_id,tier\nP1,x\n")
            )
    assert gc.isenabled()
