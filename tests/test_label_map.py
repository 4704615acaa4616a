"""Which prediction every label is on, kept and extended only by what is new: always what a join of every label with
the whole log gives, through new labels (files and the database's table), a label on a prediction logged later, a
compaction, a damaged log file, a damaged kept file, a label taken back, and another process keeping meanwhile."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from core.production import label_map, labelled, prediction_log
from core.production.monitoring import queries
from core.workspace import log_table, store
from core.workspace.paths import Workspace
from tests.test_window_store import rows

CLASSES = ["red", "blue", "green"]
FIELDS = ", ".join(label_map.FIELDS)
ROW = ", ".join(f"{e} AS {k}" for k, (_, e) in label_map.FIELDS.items())


def reference(ws: Workspace) -> pd.DataFrame:
    """Every labelled prediction, from a join of the labels with the whole log."""
    row = ", ".join(f"{e} AS {k}" for k, (_, e) in label_map.FIELDS.items())
    with store.connect(ws) as con:
        return con.execute(
            f"SELECT id AS prediction_id, {row} FROM log_predictions WHERE id IN (SELECT prediction_id FROM log_feedback) "
            "ORDER BY prediction_id"
        ).df()


def mapped(ws: Workspace, searched: list[int] | None = None) -> pd.DataFrame:
    """The map's rows for the labels there are now (each id once, checked), and how many ids each call looked up."""
    with store.connect(ws) as con:
        table = label_map.load(ws, con).table
        counts = con.execute(f"SELECT count(*), count(DISTINCT prediction_id) FROM {table}").fetchone()
        assert counts[0] == counts[1]  # no id twice
        return con.execute(
            f"SELECT prediction_id, {FIELDS} FROM {table} WHERE prediction_id IN (SELECT prediction_id FROM log_feedback) "
            "ORDER BY prediction_id"
        ).df()


def same(ws: Workspace) -> None:
    pd.testing.assert_frame_equal(mapped(ws), reference(ws), check_dtype=False)


def assert_mapped(ws: Workspace) -> None:
    same(ws)
    for f in (queries.LogFilter(window="hour"), queries.LogFilter(window="day", version="v2")):
        with store.connect(ws) as con:  # the Monitor's feedback per window: kept, as from every label joined with the log
            kept = queries._feedback(ws, f, con)
            whole_labelled(con)
            with pytest.MonkeyPatch.context() as m:
                m.setattr(labelled, "load", lambda *_: labelled.TABLE)
                whole = queries._feedback(ws, f, con)
        order = ["window"]
        assert len(whole) > 0
        pd.testing.assert_frame_equal(
            kept.sort_values(order).reset_index(drop=True), whole.sort_values(order).reset_index(drop=True)
        )


def whole_labelled(con: duckdb.DuckDBPyConnection) -> None:
    """labelled's view made from every label joined with the whole log (no map, nothing kept): the reference."""
    con.execute(f"CREATE OR REPLACE TEMP VIEW whole_map AS SELECT id AS prediction_id, {ROW} FROM log_predictions")
    whole = labelled.compute_sql("TRUE", "SELECT * FROM log_feedback", "whole_map")
    con.execute(f"CREATE OR REPLACE TEMP VIEW {labelled.TABLE} AS {whole}")


@pytest.fixture
def looked_up(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many ids each search of the log was asked to find (0: none was needed)."""
    seen: list[int] = []
    search = label_map._search

    def counting(ws: Workspace, con: duckdb.DuckDBPyConnection, ids_sql: str, files: list, first: set) -> int:
        n = con.execute(f"SELECT count(*) FROM ({ids_sql})").fetchone()[0]
        if n and files:
            seen.append(n)
        return search(ws, con, ids_sql, files, first)

    monkeypatch.setattr(label_map, "_search", counting)
    return seen


def label(ws: Workspace, ids: list[str], source: str = "api") -> None:
    for i, pid in enumerate(ids):
        prediction_log.add_feedback(ws, pid, CLASSES[i % 3], CLASSES, source=source)


def test_the_map_is_the_join_of_every_label_with_the_log_and_looks_up_only_what_is_new(
    ws: Workspace, looked_up: list[int]
) -> None:
    store.init_db(ws)
    logged = {day: rows(ws, 40, day, seed=day) for day in (6, 3, 2, 1)}
    for frame in logged.values():
        log_table.append(ws, "predictions", frame[:20], "api-1")
        log_table.append(ws, "predictions", frame[20:], "api-2")
    old = rows(ws, 10, 5, seed=50, source="batch")  # rows logged before the log became files stay in the table
    with store.connect(ws) as con:
        con.register("old", old)
        con.execute(f"INSERT INTO predictions SELECT {log_table.select_sql('predictions')} FROM old")
    later = rows(ws, 3, 2, seed=77)  # logged after its label was given (a writer's queue still held it)
    label(ws, [*logged[6]["id"][:8], *logged[1]["id"][:6], *old["id"][:3], later["id"][0]])  # files
    label(ws, list(logged[3]["id"][:4]), source="review")  # the database's table
    assert_mapped(ws)
    assert looked_up == [19]  # 8 + 6 + 4 in the files, one not logged yet; the three on the table's rows read there
    assert not (set(reference(ws)["prediction_id"]) & {later["id"][0]})

    looked_up.clear()
    assert_mapped(ws)
    assert looked_up == []  # nothing new: nothing looked up
    label(ws, list(logged[2]["id"][:5]))
    label(ws, list(logged[1]["id"][6:8]), source="review")
    assert_mapped(ws)
    assert looked_up == [7]  # only the new labels
    looked_up.clear()

    log_table.append(ws, "predictions", later, "api-1")  # the prediction the early label was on arrives
    assert_mapped(ws)
    assert later["id"][0] in set(reference(ws)["prediction_id"]) and looked_up == [1]  # only it, only in the new file
    looked_up.clear()

    log_table.compact(ws, "predictions", retention_h=0)  # every day's files folded into one: the map follows
    assert_mapped(ws)
    # every day had two files or more (two replicas): the labels on them are looked up again (days 6, 1, 3, 2:
    # 8, 6 + 2, 4, 5 + the late one); the table's three are read there
    assert looked_up == [26]
    looked_up.clear()
    assert_mapped(ws)
    assert looked_up == []

    damaged = next(
        f for f in log_table.visible(ws, "predictions") if log_table.day_of(f) == str((store.now() - timedelta(days=1)).date())
    )
    damaged.write_bytes(damaged.read_bytes()[:100])  # out of view (check quarantines it): its labels map to nothing
    assert_mapped(ws)
    assert not set(logged[1]["id"]) & set(reference(ws)["prediction_id"])

    kept = sorted(label_map.folder(ws).glob(f"{label_map.PREFIX}*.parquet"))
    kept[0].write_bytes(b"not parquet")  # the cache damaged: looked up again, never wrong
    assert_mapped(ws)

    with store.connect(ws) as con:  # a label taken back (review undo deletes its row)
        con.execute("DELETE FROM feedback WHERE prediction_id = ?", [logged[3]["id"][0]])
    assert_mapped(ws)


def ten_labels(ws: Workspace) -> None:
    """A day of 30 predictions in one file, 10 of them labelled."""
    store.init_db(ws)
    frame = rows(ws, 30, 1, seed=3)
    log_table.append(ws, "predictions", frame, "api-1")
    label(ws, list(frame["id"][:10]))


@contextmanager
def held(lock: Path) -> Iterator[None]:
    """`lock` held as another process keeping there would hold it."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        os.close(fd)


def test_a_process_that_cannot_keep_looks_up_for_itself(ws: Workspace, looked_up: list[int]) -> None:
    ten_labels(ws)
    with held(label_map.folder(ws) / ".lock"):  # another process keeping lookups now
        same(ws)
        same(ws)
        assert looked_up == [10, 10] and not list(label_map.folder(ws).glob(f"{label_map.PREFIX}*"))  # kept nothing
    looked_up.clear()
    same(ws)
    same(ws)
    assert looked_up == [10]  # kept once the hold was free
