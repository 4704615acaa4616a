"""The log's Delta tables ingested into the workspace database, and every figure kept from them: always what the table
holds and what one query over the whole log gives, through appends, a compaction before and after an ingest, rows
changed in place, a lost file removed by repair, a damaged file, a table made again, late labels, a label taken back,
a shadow period and a replay."""

from __future__ import annotations

import shutil
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from core.production import labelled, log_figures, prediction_log
from core.production.monitoring import queries
from core.workspace import log_ingest, log_table, store
from core.workspace.paths import Workspace
from tests.helpers import edit_log, fake_prediction, log_paths
from tests.test_log_table import outside_count

CLASSES = ["red", "blue", "green"]
FILTERS = [queries.LogFilter(window=w, version=v) for w in ("hour", "day", "week") for v in (None, "v1")]


def rows(ws: Workspace, n: int, day: int, seed: int, source: str = "api", stage: str = "production") -> pd.DataFrame:
    """n predictions `day` days before today (0: today, up to now), varied; some images sent twice."""
    rng = np.random.default_rng(seed)
    now = store.now()
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    times = [min(midnight - timedelta(days=day) + timedelta(minutes=int(m)), now) for m in rng.integers(0, 24 * 60, n)]
    frame = prediction_log.to_frame(ws, [fake_prediction(i) for i in range(n)], source, "v1", ts=times)
    return frame.assign(
        confidence=rng.uniform(0.3, 1.0, n),
        predicted=rng.choice(CLASSES, n),
        sha256=[f"{k:064x}" for k in rng.integers(0, n // 2 + 1, n)],
        ood=rng.random(n) < 0.2,
        latency_ms=rng.gamma(2, 10, n),
        model_version=rng.choice(["v1", "v2"], n, p=[0.7, 0.3]),
        stage=stage,
        served=(rng.random(n) < 0.9) if stage == "production" else False,
        audit=rng.random(n) < 0.1,
        audit_p=0.1,
    )


def ingested(ws: Workspace) -> pd.Series:
    with store.connect(ws) as con:
        return con.execute("SELECT id FROM log_predictions").df()["id"]


def same_as_the_table(ws: Workspace) -> log_ingest.Ingested | None:
    """The database holds the table's rows, each once, as an outside reader counts them; returns the last ingest."""
    ids = ingested(ws)
    assert ids.is_unique and outside_count(ws) == (len(ids), len(ids))
    with store.connect(ws) as con:
        last = con.execute(f"SELECT seq, kind, version, whole, days, redone, files, rows FROM {log_ingest.JOURNAL} "
                           "WHERE kind = 'predictions' ORDER BY seq DESC LIMIT 1").fetchone()  # fmt: skip
    if last is None:
        return None
    return log_ingest.Ingested(last[1], last[0], last[2], last[3], tuple(str(d) for d in last[4] or []), last[6], last[7])


def redone(ws: Workspace) -> list[str]:
    with store.connect(ws) as con:
        row = con.execute(f"SELECT redone FROM {log_ingest.JOURNAL} WHERE kind = 'predictions' ORDER BY seq DESC").fetchone()
    return [str(d) for d in row[0]]


def test_the_database_holds_the_tables_rows_once_through_every_change_of_the_table(ws: Workspace) -> None:
    store.init_db(ws)
    for day in (3, 2, 1):
        log_table.append(ws, "predictions", rows(ws, 20, day, seed=day), "api-1")
    first = same_as_the_table(ws)
    assert first is not None and first.whole and first.rows == 60  # the first ingest reads everything
    log_table.append(ws, "predictions", rows(ws, 5, 0, seed=7), "api-2")
    log_table.append(ws, "predictions", rows(ws, 5, 0, seed=17), "api-1")
    new = same_as_the_table(ws)
    assert not new.whole and new.rows == 10 and new.files == 2  # only what the commits added

    assert log_table.compact(ws, "predictions", retention_h=0).files_in == 2  # folded after it was ingested
    folded = same_as_the_table(ws)
    assert folded.seq == new.seq + 1 and folded.rows == 0 and folded.days == () and len(ingested(ws)) == 70

    day2 = (store.now() - timedelta(days=2)).date().isoformat()
    log_table.append(ws, "predictions", rows(ws, 4, 2, seed=8), "api-1")  # added, then folded before any ingest
    log_table.compact(ws, "predictions", retention_h=0)
    late = same_as_the_table(ws)
    assert late.days == (day2,) and redone(ws) == [day2] and late.rows == 24 and len(ingested(ws)) == 74

    assert edit_log(ws, {"model_version": "'v9'"}, "source = 'api' AND confidence < 0.5") > 0  # changed in place
    same_as_the_table(ws)
    with store.connect(ws) as con:
        counted = con.execute("SELECT count(*) FROM log_predictions WHERE model_version = 'v9'").fetchone()[0]
        assert counted == con.execute("SELECT count(*) FROM log_predictions WHERE confidence < 0.5").fetchone()[0] > 0

    (lost, *_) = [f for f in log_paths(ws, "predictions") if f.parent.name == f"date={day2}"]
    lost.unlink()  # a file gone: left out and listed, then removed by repair (its day read again)
    with store.connect(ws) as con:
        left = con.execute(f"SELECT count(*) FROM {log_ingest.PENDING}").fetchone()[0]
    log_table.forget_missing(ws, "predictions")
    after = same_as_the_table(ws)
    assert day2 in redone(ws) and len(ingested(ws)) == 74 - 24 and after.version == log_table.version(ws, "predictions")
    assert left == 0  # nothing new since the last ingest: the file was never asked for until the table changed

    shutil.rmtree(log_table.root(ws, "predictions"))  # the table made again (the log removed by hand): read whole
    log_table.append(ws, "predictions", rows(ws, 3, 0, seed=9), "api-1")
    again = same_as_the_table(ws)
    assert again.whole and len(ingested(ws)) == 3


def test_a_file_cut_short_is_left_out_until_it_is_whole_again(ws: Workspace) -> None:
    store.init_db(ws)
    log_table.append(ws, "predictions", rows(ws, 10, 1, seed=1), "api-1")
    assert len(ingested(ws)) == 10
    log_table.append(ws, "predictions", rows(ws, 6, 0, seed=2), "api-1")
    (newest,) = [f for f in log_paths(ws, "predictions") if f.parent.name.endswith(store.now().date().isoformat())]
    whole = newest.read_bytes()
    newest.write_bytes(whole[:100])
    assert len(ingested(ws)) == 10  # not read: listed as pending (check names it)
    with store.connect(ws) as con:
        assert con.execute(f"SELECT count(*) FROM {log_ingest.PENDING}").fetchone()[0] == 1
    newest.write_bytes(whole)  # put back (from a backup, say): read in by the next ingest
    assert len(ingested(ws)) == 16
    with store.connect(ws) as con:
        assert con.execute(f"SELECT count(*) FROM {log_ingest.PENDING}").fetchone()[0] == 0


def everything(ws: Workspace, f: queries.LogFilter) -> tuple[pd.DataFrame, ...]:
    counted = pd.DataFrame({"n": [queries.count(ws, f)]})
    return queries.windows(ws, f), queries.class_mix(ws, f), queries.window_samples(ws, f, per_window=7), counted


def whole_labelled(con) -> pd.DataFrame:  # noqa: ANN001
    """labelled's rows from every label joined with the whole log (nothing kept): the reference."""
    sql = labelled.compute_sql("TRUE", "SELECT * FROM log_feedback", labelled.mapped_sql("TRUE"))
    return con.execute(f"SELECT * FROM ({sql}) ORDER BY prediction_id").df()


def assert_same_as_the_whole_log(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    for f in FILTERS:
        kept = everything(ws, f)
        with monkeypatch.context() as m:  # every query over the whole log at once, nothing kept

            def whole(ws: Workspace, con, window, what, query, order):  # noqa: ANN001, ANN202
                sql, params = query("log_predictions")
                return con.execute(sql, params).df().sort_values(order, kind="stable").reset_index(drop=True)

            m.setattr(log_figures, "grouped", whole)
            fresh = everything(ws, f)
        for a, b in zip(kept, fresh, strict=True):
            assert len(b) > 0
            pd.testing.assert_frame_equal(a, b, check_dtype=True)
    with store.connect(ws) as con:
        labelled.load(ws, con)
        kept_rows = con.execute(f"SELECT * FROM {labelled.TABLE} ORDER BY prediction_id").df()
        pd.testing.assert_frame_equal(kept_rows, whole_labelled(con), check_dtype=False)


def test_kept_figures_are_always_those_of_the_whole_log(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    store.init_db(ws)
    for day in (9, 3, 2, 1, 0):
        for part, replica in enumerate(("api-1", "api-2")):
            log_table.append(ws, "predictions", rows(ws, 60, day, seed=10 * day + part), replica)
    shadow = rows(ws, 30, 1, seed=77, stage="shadow")  # a candidate's answers beside production's, same requests
    with store.connect(ws) as con:
        served = con.execute("SELECT id, request_id, ts FROM log_predictions WHERE CAST(ts AS DATE) = ? LIMIT 30",
                             [(store.now() - timedelta(days=1)).date()]).df()  # fmt: skip
    shadow = shadow.assign(request_id=list(served["request_id"].fillna(served["id"])), ts=list(served["ts"]))
    log_table.append(ws, "predictions", shadow, "api-1")
    replay = rows(ws, 20, 2, seed=78, stage="backtest")  # a replay: no part of what production did
    log_table.append(ws, "predictions", replay, "backtest")
    assert_same_as_the_whole_log(ws, monkeypatch)

    with store.connect(ws) as con:
        ids = con.execute("SELECT id FROM log_predictions ORDER BY id LIMIT 40").df()["id"].tolist()
    for i, pid in enumerate(ids[:20]):  # late labels, from use and from review
        prediction_log.add_feedback(ws, pid, CLASSES[i % 3], CLASSES, source="app" if i % 2 else "review")
    for pid in shadow["id"][:5]:  # labels on the candidate's prediction count for the request
        prediction_log.add_feedback(ws, pid, "blue", CLASSES, source="api", replica="api-1")
    assert_same_as_the_whole_log(ws, monkeypatch)

    log_table.compact(ws, "predictions", retention_h=0)
    log_table.append(ws, "predictions", rows(ws, 25, 3, seed=5), "api-3")  # a late file on an old day
    with store.connect(ws) as con:  # a label taken back (review's undo deletes its row)
        con.execute("DELETE FROM feedback WHERE prediction_id = ?", [ids[0]])
    prediction_log.add_feedback(ws, ids[1], "green", CLASSES, source="review")  # and one changed
    assert_same_as_the_whole_log(ws, monkeypatch)


def test_a_figure_is_computed_again_only_for_the_days_an_ingest_changed(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    store.init_db(ws)
    for day in (4, 3, 2, 1, 0):
        log_table.append(ws, "predictions", rows(ws, 30, day, seed=day), "api-1")
    computed: list[str] = []
    over = log_figures._over

    def counting(con, start, end, query):  # noqa: ANN001, ANN202
        computed.append(start.isoformat())
        return over(con, start, end, query)

    monkeypatch.setattr(log_figures, "_over", counting)
    f = queries.LogFilter(window="day")
    first = queries.windows(ws, f)
    assert len(computed) == 5 + 1  # every day once (and the empty table's shape)
    computed.clear()
    assert queries.windows(ws, f).equals(first) and computed == []  # nothing new: read back
    log_table.append(ws, "predictions", rows(ws, 4, 0, seed=11), "api-2")
    grown = queries.windows(ws, f)
    assert computed == [store.now().date().isoformat()]  # only today's
    computed.clear()
    assert log_table.compact(ws, "predictions", retention_h=0).files_in == 2  # today's folded: the same rows
    assert queries.windows(ws, f).equals(grown) and computed == []  # nothing computed again


def test_figures_of_an_empty_log_are_empty_tables_of_the_querys_columns(ws: Workspace) -> None:
    store.init_db(ws)
    f = queries.LogFilter(window="day")
    assert queries.windows(ws, f).empty and queries.count(ws, f) == 0  # asked twice: the kept table is there both times
    assert queries.windows(ws, f).empty and list(queries.windows(ws, f).columns)[:2] == ["window", "predictions"]
