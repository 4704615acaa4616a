"""The labelled requests' predictions with their labels, kept and brought up to date by what changed: always what every
label joined with the whole log gives (through new labels in files and in the table, a label on a prediction logged
later, a compaction, a label taken back, a damaged kept file, the delta folded), and computing again only the
requests that changed."""

from __future__ import annotations

import fcntl
import os

import duckdb
import pandas as pd
import pytest

from core.production import labelled
from core.workspace import log_files, store
from core.workspace.paths import Workspace
from tests.test_label_map import label, whole_labelled
from tests.test_window_store import rows

ORDER = ["prediction_id"]


def kept(ws: Workspace) -> tuple[pd.DataFrame, object]:
    """The view's rows and what the call computed: 'whole', or how many requests it computed again."""
    with store.connect(ws) as con:
        con.execute("DROP TABLE IF EXISTS labelled_base")
        con.execute("DROP TABLE IF EXISTS labelled_touched")
        labelled.load(ws, con)
        frame = _rows(con)
        tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE temporary").fetchall()}
        if "labelled_base" in tables:
            return frame, "whole"
        return frame, con.execute("SELECT count(*) FROM labelled_touched").fetchone()[0]


def _rows(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    frame = con.execute(f"SELECT * FROM {labelled.TABLE}").df()
    return frame.sort_values(ORDER).reset_index(drop=True)


def reference(ws: Workspace) -> pd.DataFrame:
    with store.connect(ws) as con:
        whole_labelled(con)
        return _rows(con)


def check(ws: Workspace) -> object:
    frame, computed = kept(ws)
    whole = reference(ws)
    assert len(whole) > 0
    pd.testing.assert_frame_equal(frame, whole, check_dtype=False)
    return computed


def test_kept_labelled_rows_equal_the_whole_join_and_only_changed_requests_are_computed_again(ws: Workspace) -> None:
    store.init_db(ws)
    logged = {day: rows(ws, 40, day, seed=day) for day in (4, 3, 2, 1)}
    for frame in logged.values():
        log_files.append(ws, "predictions", frame[:20], "api-1")
        log_files.append(ws, "predictions", frame[20:], "api-2")
    later = rows(ws, 3, 2, seed=77)  # logged after its label was given
    label(ws, [*logged[4]["id"][:8], *logged[1]["id"][:6], later["id"][0]])
    label(ws, list(logged[3]["id"][:4]), source="review")  # the database's table
    assert check(ws) == "whole"  # the first call
    assert check(ws) == 0  # nothing new: nothing computed

    label(ws, list(logged[2]["id"][:5]))  # a new feedback file
    assert check(ws) == 5
    label(ws, [logged[4]["id"][0]], source="review")  # a second, later label on a labelled request: in the table
    assert check(ws) == 1
    label(ws, [logged[4]["id"][1]])  # and in a feedback file (the map has its prediction: nothing to look up)
    assert check(ws) == 1
    assert check(ws) == 0

    log_files.append(ws, "predictions", later, "api-1")  # the prediction the early label was on arrives
    assert check(ws) >= 1  # its request, with what the map looked up anew
    assert check(ws) == 0

    with store.connect(ws) as con:  # a label taken back (review undo deletes its row): everything again
        con.execute("DELETE FROM feedback WHERE prediction_id = ?", [logged[3]["id"][0]])
    assert check(ws) == "whole"

    log_files.compact(ws, "predictions", grace_s=0)  # the map checks every label again: so does this
    assert check(ws) == "whole"
    assert check(ws) == 0

    files = sorted(labelled.folder(ws).glob(f"{labelled.PREFIX}*.parquet"))
    for f in files:
        f.write_bytes(b"not parquet")  # the cache damaged: computed again, never wrong
    assert check(ws) == "whole"


def test_the_requests_computed_since_are_folded_into_the_base_once_they_outgrow_a_quarter_of_it(ws: Workspace) -> None:
    store.init_db(ws)
    frame = rows(ws, 80, 1, seed=5)
    log_files.append(ws, "predictions", frame, "api-1")
    label(ws, list(frame["id"][:40]))
    assert check(ws) == "whole"
    base = labelled._read_state(ws).base
    label(ws, list(frame["id"][40:45]))
    assert check(ws) == 5
    state = labelled._read_state(ws)
    assert state.base == base and state.delta is not None  # a small delta beside the same base
    label(ws, list(frame["id"][45:70]))
    assert check(ws) == 25
    state = labelled._read_state(ws)
    assert state.base != base and state.delta is None  # folded
    assert check(ws) == 0


def test_a_process_without_the_hold_computes_for_itself_and_keeps_nothing(ws: Workspace) -> None:
    store.init_db(ws)
    frame = rows(ws, 30, 1, seed=3)
    log_files.append(ws, "predictions", frame, "api-1")
    label(ws, list(frame["id"][:10]))
    labelled.folder(ws).mkdir(parents=True, exist_ok=True)
    fd = os.open(labelled.folder(ws) / ".labelled.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another process keeping now
    try:
        assert check(ws) == "whole"
        assert check(ws) == "whole"
        assert not list(labelled.folder(ws).glob(f"{labelled.PREFIX}*"))
    finally:
        os.close(fd)
    assert check(ws) == "whole"
    assert check(ws) == 0


@pytest.fixture(autouse=True)
def _no_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(log_files, "GRACE_S", 0.0)  # replaced kept files deleted at once (their readers are done)
