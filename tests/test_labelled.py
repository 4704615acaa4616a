"""The labelled requests' predictions with their labels, kept and brought up to date by what changed: always what every
label joined with the whole log gives (through new labels in files and in the table, a label on a prediction logged
later, a compaction, a label taken back, a damaged kept file, the delta folded), and computing again only the
requests that changed."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from core.production import kept_files, labelled, prediction_log
from core.workspace import log_table, store
from core.workspace.paths import Workspace
from tests.test_label_map import CLASSES, ROW, held, label, ten_labels, whole_labelled
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
        log_table.append(ws, "predictions", frame[:20], "api-1")
        log_table.append(ws, "predictions", frame[20:], "api-2")
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

    log_table.append(ws, "predictions", later, "api-1")  # the prediction the early label was on arrives
    assert check(ws) >= 1  # its request, with what the map looked up anew
    assert check(ws) == 0

    with store.connect(ws) as con:  # a label taken back (review undo deletes its row): everything again
        con.execute("DELETE FROM feedback WHERE prediction_id = ?", [logged[3]["id"][0]])
    assert check(ws) == "whole"

    log_table.compact(ws, "predictions", retention_h=0)  # the map checks every label again: so does this
    assert check(ws) == "whole"
    assert check(ws) == 0

    files = sorted(labelled.folder(ws).glob(f"{labelled.PREFIX}*.parquet"))
    for f in files:
        f.write_bytes(b"not parquet")  # the cache damaged: computed again, never wrong
    assert check(ws) == "whole"


def test_the_requests_computed_since_are_folded_into_the_base_once_they_outgrow_a_quarter_of_it(ws: Workspace) -> None:
    store.init_db(ws)
    frame = rows(ws, 80, 1, seed=5)
    log_table.append(ws, "predictions", frame, "api-1")
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
    ten_labels(ws)
    with held(labelled.folder(ws) / ".labelled.lock"):  # another process keeping now
        assert check(ws) == "whole"
        assert check(ws) == "whole"
        assert not list(labelled.folder(ws).glob(f"{labelled.PREFIX}*"))
    assert check(ws) == "whole"
    assert check(ws) == 0


@pytest.fixture(autouse=True)
def _no_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kept_files, "GRACE_S", 0.0)  # replaced kept files deleted at once (their readers are done)


def test_the_queue_its_backlog_and_the_joinable_images_equal_what_every_label_joined_with_the_log_gives(
    ws: Workspace,
) -> None:
    from core.production import review, review_queue

    store.init_db(ws)
    frames = []
    for day in (3, 2, 1):
        frame = rows(ws, 60, day, seed=10 + day)
        rng = np.random.default_rng(day)
        frame = frame.assign(
            served=True, referred=rng.random(60) < 0.3, audit=rng.random(60) < 0.2, audit_p=0.2,
            image_path=[f"production/{i}.png" if i % 4 else None for i in range(60)],
        )  # fmt: skip
        log_table.append(ws, "predictions", frame, "api-1")
        frames.append(frame)
    every = pd.concat(frames, ignore_index=True)
    waiting = every[every["ood"] | every["referred"] | every["audit"]]
    label(ws, list(waiting["id"][:12]))  # app feedback (a file)
    label(ws, list(waiting["id"][12:24]), source="review")  # reviewers (the table): some agree, some not
    label(ws, list(every["id"][:6]), source="import")
    label(ws, list(waiting["id"][:3]), source="review")  # a second, later label on labelled ones
    for pid in waiting.loc[waiting["ood"], "id"][-3:]:  # "none of these" on an out-of-domain image agrees with the model
        prediction_log.add_feedback(ws, pid, prediction_log.NONE_OF_THESE, CLASSES, source="review")

    def whole() -> tuple[object, ...]:
        with store.connect(ws) as con:
            con.execute(f"CREATE TEMP VIEW whole_map AS SELECT id AS prediction_id, {ROW} FROM log_predictions")
            sql, params = review_queue._waiting_candidates("log_predictions")
            con.execute(f"CREATE TEMP TABLE {review_queue.CANDIDATES} AS {sql}", params)
            old = review_queue._QUEUE.replace(labelled.TABLE, "whole_map")
            old = old.replace("SELECT DISTINCT request FROM whole_map", ANSWERED).replace(
                "SELECT DISTINCT sha256 FROM whole_map WHERE reviewed AND sha256 IS NOT NULL", SETTLED
            )
            queue = con.execute(f"SELECT first.id FROM ({old.replace('SELECT first.*, copies', 'SELECT first')})").fetchall()
            agreed = con.execute(AGREED, [review_queue.NONE_OF_THESE]).fetchone()
            joinable = con.execute(OLD_JOINABLE).df()
        return sorted(r[0] for r in queue), agreed, joinable

    queue_ids, (reviewed, agreed), candidates = whole()
    found, backlog = review.pending_rows(ws, limit=10_000), review.backlog(ws)
    assert sorted(found["id"]) == queue_ids and 0 < len(queue_ids) < len(waiting)
    assert (backlog.pending, backlog.reviewed, backlog.agreed) == (len(queue_ids), reviewed, agreed)
    assert 0 < agreed < reviewed
    ready, held = review.joinable(ws)
    human = candidates[candidates["label"].notna() & (candidates["label_source"] != "simulation")]
    none = human["label"] == prediction_log.NONE_OF_THESE
    assert sorted(ready["id"]) == sorted(human.loc[~none, "id"]) and len(ready) > 0
    assert held == {f"labelled {prediction_log.NONE_OF_THESE!r}: not one of the classes": int(none.sum())} and none.any()


ANSWERED = "SELECT DISTINCT m.request FROM log_feedback f JOIN whole_map m ON m.prediction_id = f.prediction_id"
SETTLED = (
    "SELECT DISTINCT m.sha256 FROM log_feedback f JOIN whole_map m ON m.prediction_id = f.prediction_id "
    "WHERE f.source IN ('review', 'import') AND m.sha256 IS NOT NULL"
)
AGREED = (
    "SELECT count(*), count_if(fb.label = p.predicted OR (fb.label = ? AND p.ood)) FROM log_feedback fb "
    "LEFT JOIN log_predictions p ON p.id = fb.prediction_id WHERE fb.source = 'review'"
)
OLD_JOINABLE = """
    WITH fb AS (SELECT prediction_id, arg_max(label, ts) AS label, arg_max(source, ts) AS source, max(ts) AS labelled_at
                FROM log_feedback GROUP BY prediction_id),
    req AS (SELECT coalesce(p.request_id, p.id) AS request, arg_max(fb.label, fb.labelled_at) AS label,
                   arg_max(fb.source, fb.labelled_at) AS label_source
            FROM log_predictions p JOIN fb ON fb.prediction_id = p.id GROUP BY ALL)
    SELECT p.id, r.label, r.label_source FROM log_predictions p LEFT JOIN req r ON r.request = coalesce(p.request_id, p.id)
    WHERE p.served IS NOT FALSE AND p.image_path IS NOT NULL
"""
