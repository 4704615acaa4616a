"""The Monitor's per-window figures kept per group of days: always what a query over the whole log gives, through new
files on a past day, compaction, rows in the database's table and feedback; kept only for days before today."""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from core.model import registry
from core.production import prediction_log
from core.production.monitoring import drift, queries, window_store
from core.workspace import log_table, store
from core.workspace.paths import Workspace
from tests.helpers import cli, fake_prediction

FILTERS = [
    queries.LogFilter(window=w, version=v) for w in ("hour", "day", "week") for v in (None, "v1")
]  # fmt: skip


def rows(ws: Workspace, n: int, day: int, seed: int, source: str = "api") -> pd.DataFrame:
    """n predictions `day` days before today (0: today, at midnight's first minutes and later), varied."""
    rng = np.random.default_rng(seed)
    now = store.now()
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    times = [min(midnight - timedelta(days=day) + timedelta(minutes=int(m)), now) for m in rng.integers(0, 24 * 60, n)]
    frame = prediction_log.to_frame(ws, [fake_prediction(i) for i in range(n)], source, "v1", ts=times)
    return frame.assign(
        confidence=rng.uniform(0.3, 1.0, n),
        predicted=rng.choice(["red", "blue", "green"], n),
        sha256=[f"{k:064x}" for k in rng.integers(0, n // 2 + 1, n)],  # some images sent twice
        ood=rng.random(n) < 0.2,
        latency_ms=rng.gamma(2, 10, n),
        model_version=rng.choice(["v1", "v2"], n, p=[0.7, 0.3]),
        served=rng.random(n) < 0.9,
    )


def everything(ws: Workspace, f: queries.LogFilter) -> tuple[pd.DataFrame, ...]:
    counted = pd.DataFrame({"n": [queries.count(ws, f)]})
    return (queries.windows(ws, f), queries.class_mix(ws, f), queries.window_samples(ws, f, per_window=7), counted)


def assert_same_as_the_whole_log(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    for f in FILTERS:
        kept = everything(ws, f)
        with monkeypatch.context() as m:
            m.setattr(window_store, "groups", lambda *_: None)  # every query over the whole log at once
            whole = everything(ws, f)
        for a, b in zip(kept, whole, strict=True):
            assert len(b) > 0
            pd.testing.assert_frame_equal(a, b, check_dtype=True)


def kept_days(ws: Workspace) -> set[str]:
    return {p.name.split("-", 2)[2][:10] for p in window_store.folder(ws).glob("*.parquet")}


def test_kept_figures_are_always_those_of_the_whole_log(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    store.init_db(ws)
    for day in (9, 3, 2, 1, 0):
        for part, replica in enumerate(("api-1", "api-2")):
            log_table.append(ws, "predictions", rows(ws, 60, day, seed=10 * day + part), replica)
    old = rows(ws, 40, 2, seed=99, source="batch")
    with store.connect(ws) as con:  # rows logged before the log became files stay in the table
        con.register("old", old)
        con.execute(f"INSERT INTO predictions SELECT {log_table.select_sql('predictions')} FROM old")
    labelled = [*old["id"][:5], *rows(ws, 1, 0, seed=1)["id"]]  # one id logged nowhere: feedback on nothing
    for i, pid in enumerate(labelled):
        prediction_log.add_feedback(ws, pid, ["red", "blue"][i % 2], ["red", "blue", "green"], source="api")
    assert_same_as_the_whole_log(ws, monkeypatch)  # cold: computed, and kept for the days before today
    today = store.now().date()
    past = [today - timedelta(days=d) for d in (9, 3, 2, 1)]
    mondays = {d - timedelta(days=d.weekday()) for d in past} - {today - timedelta(days=today.weekday())}
    assert kept_days(ws) == {d.isoformat() for d in [*past, *mondays]}  # not today's day, nor this week
    files_before = sorted(window_store.folder(ws).glob("*.parquet"))
    assert_same_as_the_whole_log(ws, monkeypatch)  # warm: read back
    assert sorted(window_store.folder(ws).glob("*.parquet")) == files_before

    # what is kept is what is shown: a kept day's figures are read, not computed again
    day = queries.LogFilter(window="day")
    kept = next(p for p in files_before if p.name.startswith("windows-day-"))
    with store.connect(ws) as con:
        con.execute(
            f"COPY (SELECT * REPLACE (predictions + 1000 AS predictions) FROM read_parquet('{kept}')) "
            f"TO '{kept}.x' (FORMAT parquet)"
        )
    kept.with_name(kept.name + ".x").replace(kept)
    assert queries.windows(ws, day)["predictions"].max() > 1000
    kept.unlink()  # only a cache: computed again
    assert queries.windows(ws, day)["predictions"].max() < 1000

    log_table.append(ws, "predictions", rows(ws, 30, 3, seed=7), "api-3")  # late rows for a past day
    assert_same_as_the_whole_log(ws, monkeypatch)
    assert len(list(window_store.folder(ws).glob(f"windows-day-{today - timedelta(days=3)}-*.parquet"))) == 2  # version None, v1

    more = rows(ws, 10, 1, seed=5, source="batch")
    with store.connect(ws) as con:  # rows for a past day in the table (a spool an earlier version left, drained)
        con.register("more", more)
        con.execute(f"INSERT INTO predictions SELECT {log_table.select_sql('predictions')} FROM more")
    assert_same_as_the_whole_log(ws, monkeypatch)

    prediction_log.add_feedback(ws, old["id"][9], "green", ["red", "blue", "green"], source="api")  # feedback: never kept
    assert_same_as_the_whole_log(ws, monkeypatch)

    log_table.compact(ws, "predictions", retention_h=0)
    log_table.compact(ws, "predictions", retention_h=0)  # the inputs go
    assert_same_as_the_whole_log(ws, monkeypatch)

    damaged = sorted(window_store.folder(ws).glob("samples-day-*.parquet"))[0]
    damaged.write_bytes(b"not parquet")  # a full disk, a hand: only a cache
    assert_same_as_the_whole_log(ws, monkeypatch)
    with store.connect(ws) as con:  # and it was written again
        assert con.execute("SELECT count(*) FROM read_parquet(?)", [str(damaged)]).fetchone()[0] > 0


def test_a_log_with_nothing_the_filter_shows_gives_empty_figures(ws: Workspace) -> None:
    store.init_db(ws)
    log_table.append(ws, "predictions", rows(ws, 20, 2, seed=3), "api-1")
    for _ in range(2):  # computed, then read back
        nothing = queries.LogFilter(window="day", sources=("app",))
        win, mix, sample = queries.windows(ws, nothing), queries.class_mix(ws, nothing), queries.window_samples(ws, nothing)
        assert len(win) == len(mix) == len(sample) == 0 and "feedback" in win.columns and "feedback_label" in sample.columns


def test_the_true_accuracy_of_simulated_traffic_per_window(ws: Workspace) -> None:
    store.init_db(ws)
    simulated = pd.concat([rows(ws, 40, 2, seed=4, source="simulation"), rows(ws, 30, 1, seed=5, source="simulation")])
    log_table.append(ws, "predictions", simulated, "sim")
    log_table.append(ws, "predictions", rows(ws, 25, 1, seed=6, source="app"), "app")
    truth = simulated["predicted"].where(np.arange(len(simulated)) % 4 != 0, "wrong")  # every fourth is wrong
    prediction_log.add_simulation_truth(ws, pd.DataFrame({"prediction_id": simulated["id"], "label": truth, "shift": None}))
    for f in (queries.LogFilter(window="day"), queries.LogFilter(window="predictions", size=50)):
        found = queries.truth_by_window(ws, f)
        served = simulated[simulated["served"]]
        right = (truth[simulated["served"].to_numpy()] == served["predicted"]).to_numpy()
        assert int(found["truth_n"].sum()) == len(served)
        assert (found["accuracy_true"] * found["truth_n"]).sum() == pytest.approx(right.sum())
    assert queries.truth_by_window(ws, queries.LogFilter(window="day", sources=("app", "api"))).empty


def test_log_compact_prepares_the_monitors_figures_for_the_days_it_folded(prod: Workspace) -> None:
    """A compaction renames every file it folds: it computes the Monitor's first view again itself, so that the first
    look after it does not pay for every day."""
    version = registry.production_version(prod)
    for day in (3, 2):
        for seed in (1, 2):
            log_table.append(prod, "predictions", rows(prod, 30, day, seed=10 * day + seed).assign(model_version=version), "a")
    done = json.loads(cli("log", "compact", "--workspace", prod.name, "--json").stdout)
    assert done["figures"]["prepared"] is True
    today = store.now().date()
    assert {(today - timedelta(days=d)).isoformat() for d in (3, 2)} <= kept_days(prod)
    before = sorted(window_store.folder(prod).glob("*.parquet"))
    drift.drift_report(prod, queries.LogFilter(window="day", sources=queries.default_sources(prod)))
    assert sorted(window_store.folder(prod).glob("*.parquet")) == before  # the Monitor's first view: all read back
