"""The prediction log keeps its promise: whatever fails in a batch, the writer thread lives on, every row ends
in the log exactly once, flush waits with a bound, and an exit that cannot settle says so."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from core.production import prediction_log
from core.workspace import log_table, store
from core.workspace.paths import Workspace
from tests.helpers import fake_prediction, log_paths, until

ROOT = Path(__file__).resolve().parents[1]
REAL_APPEND = log_table.append


def logged_ids(ws: Workspace) -> list[str]:
    with store.connect(ws) as con:
        return [r[0] for r in con.execute("SELECT id FROM log_predictions").fetchall()]


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
    assert log.flush(120)  # a hang guard, never a speed limit
    assert sorted(logged_ids(ws)) == sorted(p.id for p in [*good, broken])
    with store.connect(ws) as con:
        assert con.execute("SELECT brightness FROM log_predictions WHERE id = ?", [broken.id]).fetchone() == (None,)
    assert "logged without image properties" in log.last_error and log._thread.is_alive()


def test_a_bug_while_writing_holds_the_batch_and_the_thread_lives_on(
    ws: Workspace, log: prediction_log.BackgroundLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    tries = {"n": 0}

    def broken_twice(*args: object, **kwargs: object) -> object:
        tries["n"] += 1
        if tries["n"] <= 2:
            raise RuntimeError("an error no one expected")
        return REAL_APPEND(*args, **kwargs)

    monkeypatch.setattr(log_table, "append", broken_twice)
    first = [fake_prediction(i) for i in range(4)]
    log.submit(prediction_log.LogBatch(first, "app", "v1"))
    assert log.flush(120) and tries["n"] == 3 and "an error no one expected" in log.last_error
    second = [fake_prediction(10 + i) for i in range(2)]
    log.submit(prediction_log.LogBatch(second, "app", "v1"))
    assert log.flush(120) and log._thread.is_alive()
    ids = logged_ids(ws)
    assert sorted(ids) == sorted(p.id for p in first + second) and len(ids) == len(set(ids))


@pytest.mark.parametrize("fails", ["log.committed", "log.synced"], ids=["before the fsync", "after the fsync"])
def test_a_write_that_fails_after_its_commit_is_retried_without_doubling_a_row(
    ws: Workspace, log: prediction_log.BackgroundLog, monkeypatch: pytest.MonkeyPatch, fails: str
) -> None:
    """The writer retries a batch that raised; a batch whose commit is in the table already must not be written
    again (its rows fall on two days: one commit, a file each)."""
    tries = {"n": 0}
    real_hit = log_table.failpoints.hit

    def fails_once_after_the_commit(name: str) -> None:
        if name == fails:
            tries["n"] += 1
            if tries["n"] == 1:
                raise OSError(28, "No space left on device")  # what a full disk's journal can answer
        real_hit(name)

    monkeypatch.setattr(log_table.failpoints, "hit", fails_once_after_the_commit)
    rows = [fake_prediction(i) for i in range(6)]
    before_midnight = store.now().replace(hour=23, minute=59, second=59, microsecond=0) - timedelta(days=1)
    times = [before_midnight + timedelta(seconds=i) for i in range(6)]  # three rows on each of two days
    log.submit(prediction_log.LogBatch(rows, "app", "v1", times))
    assert log.flush(120) and log._thread.is_alive()
    assert tries["n"] == 1 and log.failed == 6  # it failed once; the retry found its commit in the table
    ids = logged_ids(ws)
    assert sorted(ids) == sorted(p.id for p in rows) and len(ids) == len(set(ids))
    assert len(list(log_table.root(ws, "predictions").glob("date=*/*.parquet"))) == 2  # one file a day, no copy


def test_rows_that_cannot_be_written_are_held_and_flush_waits_for_them_with_a_bound(
    ws: Workspace, log: prediction_log.BackgroundLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    failures = {"n": 0}

    def disk_full(*_: object, **__: object) -> None:
        failures["n"] += 1
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(log_table, "append", disk_full)
    rows = [fake_prediction(i) for i in range(5)]
    log.submit(prediction_log.LogBatch(rows, "app", "v1"))
    assert not log.flush(0.5)  # bounded: returns, saying the rows are not settled
    until(lambda: failures["n"] >= 2, "the writer never tried twice")  # retried (however busy the machine)
    assert log.pending == 5 and "No space left" in log.last_error  # not dropped
    assert log._thread.is_alive()
    late = fake_prediction(99)
    log.submit(prediction_log.LogBatch([late], "app", "v1"))
    monkeypatch.setattr(log_table, "append", REAL_APPEND)  # the disk has room again
    assert log.flush(120) and log.pending == 0
    ids = logged_ids(ws)
    assert sorted(ids) == sorted(p.id for p in [*rows, late]) and len(ids) == len(set(ids))
    on_disk = set(log_table.root(ws, "predictions").glob("date=*/*.parquet"))
    assert on_disk == set(log_paths(ws, "predictions"))  # no file the failed tries left behind


EXITING = textwrap.dedent(
    """
    import sys
    import time
    from core.production import prediction_log
    from core.workspace import log_table, workspaces
    from tests.helpers import fake_prediction, until

    def fail(*_):
        raise OSError(30, "Read-only file system")

    ws = workspaces.resolve(sys.argv[1], create=True)
    log_table.append = fail
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
    assert "3 prediction(s) could not be written" in done.stderr and "Read-only file system" in done.stderr
