"""Crash a real `python -m core log compact` at every step where a file of the log is written, renamed or deleted: the
folded file written under its temporary name, its journal written, the file renamed into view, an input of an
earlier compaction deleted, an abandoned compaction cleared. After each crash the log, read as every page reads it
(log_predictions), holds each acknowledged row exactly once, `check --repair` leaves nothing, and compacting again
finishes the job with the same rows: compared with the ids the writers were told were logged."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from core.production import prediction_log
from core.workspace import log_table, store
from core.workspace.paths import Workspace
from tests.faults import harness
from tests.helpers import fake_prediction

pytestmark = pytest.mark.faults


def write_files(ws: Workspace, batches: int, truth: set[str]) -> None:
    """Small files, as serving replicas leave them: each batch a file of its replica's (its ids acknowledged)."""
    for b in range(batches):
        frame = prediction_log.to_frame(ws, [fake_prediction(i) for i in range(7)], "api", "v1")
        log_table.append(ws, "predictions", frame, f"api-{b % 2}")
        truth |= set(frame["id"])


def logged(ws: Workspace) -> pd.Series:
    with store.connect(ws) as con:
        return con.execute("SELECT id FROM log_predictions").df()["id"]


def holds_the_truth(ws: Workspace, truth: set[str], tally: harness.Tally, where: str) -> None:
    ids = logged(ws)
    tally.lost += len(truth - set(ids))
    tally.doubled += len(ids) - ids.nunique()
    assert set(ids) == truth and ids.is_unique, where


def test_a_crashed_compaction_never_loses_or_doubles_a_row(ws: Workspace, data_root: Path) -> None:
    store.init_db(ws)
    truth: set[str] = set()
    tally = harness.Tally("log compact")
    compact = ("log", "compact", "--workspace", ws.name, "--grace", "0", "--json")
    write_files(ws, 6, truth)
    duration, _ = harness.timed(data_root, *compact)  # a whole run: folds each replica's three files into one
    tally.duration_s = duration
    holds_the_truth(ws, truth, tally, "a whole compaction")
    steps = [  # (point, nth): each crash then a repair and a whole run
        ("log.compact_written", 1),
        ("log.compact_journalled", 2),
        ("log.compact_renamed", 1),
        ("log.compact_input_deleted", 2),  # the inputs of the folds above go now (grace 0): the second of them
    ]
    for point, nth in steps:
        write_files(ws, 4, truth)
        if point == "log.compact_input_deleted":
            harness.finish(harness.start(data_root, *compact))  # folds; its inputs wait for the next run
        harness.crash_at(data_root, point, *compact, nth=nth, tally=tally)
        holds_the_truth(ws, truth, tally, f"killed at {point}")
        harness.repaired(ws, tally)
        holds_the_truth(ws, truth, tally, f"repaired after {point}")
        harness.finish(harness.start(data_root, *compact))
        holds_the_truth(ws, truth, tally, f"compacted again after {point}")

    write_files(ws, 4, truth)  # a compaction cut short after its journal, cleared by the next one, killed there
    harness.crash_at(data_root, "log.compact_journalled", *compact, tally=tally)
    harness.crash_at(data_root, "log.compact_abandoned", *compact, tally=tally)
    holds_the_truth(ws, truth, tally, "killed clearing an abandoned compaction")
    harness.repaired(ws, tally)
    for _ in range(2):  # fold, then delete the inputs (grace 0)
        harness.finish(harness.start(data_root, *compact))
    holds_the_truth(ws, truth, tally, "the end")
    files = log_table.visible(ws, "predictions")
    assert len(files) == 2 and {f.parent.parent.name for f in files} == {"replica=api-0", "replica=api-1"}
    assert not [p for p in log_table.root(ws, "predictions").rglob("*") if p.name.endswith(".tmp") or ".compact-" in p.name]
    deleted = store.audit_log(ws, 10_000)
    assert (deleted["action"] == "log_files_deleted").sum() >= len(steps)  # every deletion has its trace first
    tally.print()
    assert tally.lost == 0 and tally.doubled == 0
