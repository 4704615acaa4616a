"""The prediction log keeps its promise: whatever fails in a batch, the writer thread lives on, every row ends
in the database or the spool exactly once, flush waits with a bound, and an exit that cannot settle says so."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest

from core.production import prediction_log
from core.workspace import store
from core.workspace.paths import Workspace
from tests.helpers import fake_prediction, until

ROOT = Path(__file__).resolve().parents[1]
REAL_INSERT = prediction_log._insert
REAL_SPOOL = prediction_log._spool


def logged_ids(ws: Workspace) -> list[str]:
    prediction_log.drain_spool(ws)
    with store.connect(ws) as con:
        return [r[0] for r in con.execute("SELECT id FROM predictions").fetchall()]


@pytest.fixture
def log(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> prediction_log.BackgroundLog:
    store.init_db(ws)
    monkeypatch.setattr(prediction_log.BackgroundLog, "retry_s", 0.05)
    monkeypatch.setattr(prediction_log.BackgroundLog, "linger_s", 0.01)
    return prediction_log.BackgroundLog(ws)


def test_an_image_that_cannot_be_measured_is_logged_without_its_properties(
    ws: Workspace, log: prediction_log.BackgroundLog
) -> None:
    good = [fake_prediction(i) for i in range(3)]
    broken = dataclasses.replace(fake_prediction(9), properties=None, look=None)  # measuring it raises
    log.submit(prediction_log.LogBatch([good[0], broken, good[1]], "app", "v1"))
    log.submit(prediction_log.LogBatch([good[2]], "app", "v1"))
    assert log.flush(10)
    assert sorted(logged_ids(ws)) == sorted(p.id for p in [*good, broken])
    with store.connect(ws) as con:
        assert con.execute("SELECT brightness FROM predictions WHERE id = ?", [broken.id]).fetchone() == (None,)
    assert "logged without image properties" in log.last_error and log._thread.is_alive()


def test_a_database_bug_sends_the_batch_to_the_spool_and_the_thread_lives_on(
    ws: Workspace, log: prediction_log.BackgroundLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("an error no one expected")

    monkeypatch.setattr(prediction_log, "_insert", broken)
    first = [fake_prediction(i) for i in range(4)]
    log.submit(prediction_log.LogBatch(first, "app", "v1"))
    assert log.flush(10) and log.spooled == 4 and "an error no one expected" in log.last_error
    monkeypatch.undo()  # the database works again (retry_s and linger_s patches go too: they only speed things up)
    second = [fake_prediction(10 + i) for i in range(2)]
    log.submit(prediction_log.LogBatch(second, "app", "v1"))
    assert log.flush(30) and log._thread.is_alive()
    ids = logged_ids(ws)
    assert sorted(ids) == sorted(p.id for p in first + second) and len(ids) == len(set(ids))


def test_rows_neither_written_nor_spooled_are_held_and_flush_waits_for_them_with_a_bound(
    ws: Workspace, log: prediction_log.BackgroundLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    failures = {"insert": 0, "spool": 0}

    def no_insert(*_: object) -> None:
        failures["insert"] += 1
        raise duckdb.IOException("database locked")

    def no_spool(*_: object) -> None:
        failures["spool"] += 1
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(prediction_log, "_insert", no_insert)
    monkeypatch.setattr(prediction_log, "_spool", no_spool)
    rows = [fake_prediction(i) for i in range(5)]
    log.submit(prediction_log.LogBatch(rows, "app", "v1"))
    assert not log.flush(0.5)  # bounded: returns, saying the rows are not settled
    until(lambda: failures["spool"] >= 2, "the writer never tried the spool twice")  # retried (however busy the machine)
    assert log.pending == 5 and "No space left" in log.last_error  # not dropped
    assert log._thread.is_alive()
    late = fake_prediction(99)
    log.submit(prediction_log.LogBatch([late], "app", "v1"))
    monkeypatch.setattr(prediction_log, "_insert", REAL_INSERT)  # the disk and the database are back
    monkeypatch.setattr(prediction_log, "_spool", REAL_SPOOL)
    assert log.flush(30) and log.pending == 0
    ids = logged_ids(ws)
    assert sorted(ids) == sorted(p.id for p in [*rows, late]) and len(ids) == len(set(ids))


EXITING = textwrap.dedent(
    """
    import sys
    import time
    from core.production import prediction_log
    from core.workspace import workspaces
    from tests.helpers import fake_prediction, until

    def fail(*_):
        raise OSError(30, "Read-only file system")

    ws = workspaces.resolve(sys.argv[1], create=True)
    prediction_log._insert = prediction_log._spool = fail
    prediction_log.EXIT_WAIT_S = 0.5
    prediction_log.BackgroundLog.retry_s = 0.05
    prediction_log.BackgroundLog.linger_s = 0.01
    log = prediction_log.background(ws)
    log.submit(prediction_log.LogBatch([fake_prediction(i) for i in range(3)], "app", "v1"))
    while log.last_error is None:  # the writer has tried and failed once (on a busy machine, later than 0.5 s)
        time.sleep(0.01)
    """
)


def test_an_exit_that_cannot_settle_its_rows_says_so(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", EXITING, str(tmp_path / "exiting")], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "3 prediction(s) could be neither written" in done.stderr and "Read-only file system" in done.stderr
