"""Crash a real `python -m core log compact` at every step where the log's table changes on disk (optimize's commit
in, the files vacuum will delete named in an audit row, the files deleted) and at seeded moments, and a real
migration of the earlier layout (a folder committed to the table, its first file deleted). After each crash the
log, read as every page reads it (log_predictions) and as an outside engine reads the table, holds each acknowledged
row exactly once, `check --repair` leaves nothing, and running again finishes the job with the same rows: compared
with the ids the writers were told were logged."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from core.production import prediction_log
from core.workspace import log_migration, log_table, store
from core.workspace.paths import Workspace
from tests.faults import harness
from tests.helpers import fake_prediction, log_paths
from tests.test_log_table import legacy_layout, outside_count

pytestmark = pytest.mark.faults


def write_batches(ws: Workspace, batches: int, truth: set[str]) -> None:
    """Small commits, as serving replicas leave them: each batch one (its ids acknowledged)."""
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
    assert outside_count(ws) == (len(truth), len(truth)), f"{where}: an outside reader counts otherwise"


def test_a_crashed_compaction_never_loses_or_doubles_a_row(ws: Workspace, data_root: Path) -> None:
    store.init_db(ws)
    truth: set[str] = set()
    tally = harness.Tally("log compact")
    compact = ("log", "compact", "--workspace", ws.name, "--retention-hours", "0", "--json")
    write_batches(ws, 6, truth)
    duration, _ = harness.timed(data_root, *compact)  # a whole run: optimize folds the six files, vacuum deletes them
    holds_the_truth(ws, truth, tally, "a whole compaction")
    for point in ("log.optimized", "log.vacuum_listed", "log.vacuumed"):
        write_batches(ws, 4, truth)
        harness.crash_at(data_root, point, *compact, tally=tally)
        holds_the_truth(ws, truth, tally, f"killed at {point}")
        harness.repaired(ws, tally)
        harness.finish(harness.start(data_root, *compact))
        holds_the_truth(ws, truth, tally, f"compacted again after {point}")
    for k in harness.kills(data_root, duration, 3, 11, *compact, tally=tally, lo=0.3, hi=0.95):
        holds_the_truth(ws, truth, tally, f"seeded kill {k}")
        write_batches(ws, 3, truth)
    harness.repaired(ws, tally)
    harness.finish(harness.start(data_root, *compact))
    holds_the_truth(ws, truth, tally, "the end")
    files = log_paths(ws, "predictions")
    assert len(files) == 1 and set(log_table.root(ws, "predictions").glob("date=*/*.parquet")) == set(files)
    trace = store.audit_log(ws, 10_000)
    assert (trace["action"] == "log_files_deleted").sum() >= 4  # every deletion has its trace first
    tally.print()
    assert tally.lost == 0 and tally.doubled == 0


def test_a_crashed_migration_never_loses_or_doubles_a_row(ws: Workspace, data_root: Path) -> None:
    """A workspace in the earlier layouts, opened by a command killed as it folds them in: a folder committed and
    none of its files gone, the first file of a folder gone, the database's own rows committed and not deleted there.
    Opening it again finishes the migration."""
    tally = harness.Tally("log migration")
    repair = ("check", "--workspace", ws.name, "--repair", "--json")
    for point, nth in (("log.migrated", 2), ("log.migrated_deleted", 3), ("log.migrated_table", 1)):
        for kind in log_table.COLUMNS:  # start from nothing but the earlier layout (a Delta delete of every row)
            with log_table.using(ws, kind) as dt:
                if dt is not None:
                    dt.delete()
        truth = legacy_layout(ws, point)
        in_db = prediction_log.to_frame(ws, [fake_prediction(i) for i in range(4)], "batch", "v1")
        with store.connect(ws) as con:  # rows a workspace logged in its database, before the log had files
            con.register("old", in_db)
            cols = ", ".join(prediction_log.COLUMNS)
            con.execute(f"INSERT INTO predictions ({cols}) SELECT {cols} FROM old")
        truth |= set(in_db["id"])
        harness.crash_at(data_root, point, *repair, nth=nth, tally=tally)
        store.init_db(ws, force=True)  # the next open finishes it
        holds_the_truth(ws, truth, tally, f"killed at {point}, opened again")
        assert not log_migration.legacy_files(ws, "predictions") and not log_migration.legacy_files(ws, "feedback")
        harness.repaired(ws, tally)
        holds_the_truth(ws, truth, tally, f"repaired after {point}")
    tally.print()
    assert tally.lost == 0 and tally.doubled == 0


def test_a_crashed_ingest_never_loses_or_doubles_a_row(ws: Workspace, data_root: Path) -> None:
    """`log status` ingests the table's new commits into the database first: killed with the rows and the watermark
    written in its transaction but not committed, the database holds the previous ingest; the next open ingests
    again, once. The same with a compaction between (the files the killed ingest was reading are folded away)."""
    store.init_db(ws)
    truth: set[str] = set()
    tally = harness.Tally("log ingest")
    status = ("log", "status", "--workspace", ws.name, "--json")
    write_batches(ws, 3, truth)
    holds_the_truth(ws, truth, tally, "first ingest")
    for compacted in (False, True):
        write_batches(ws, 4, truth)
        with store.connect(ws, read_only=True) as con:  # what the database holds before: the last ingest's rows
            before = con.execute("SELECT count(*) FROM log_predictions").fetchone()[0]
        harness.crash_at(data_root, "log.ingesting", *status, tally=tally)
        with store.connect(ws, read_only=True) as con:  # a read-only look ingests nothing: the kill left no half
            assert con.execute("SELECT count(*) FROM log_predictions").fetchone()[0] == before == len(truth) - 28
        if compacted:
            harness.finish(harness.start(data_root, "log", "compact", "--workspace", ws.name, "--retention-hours", "0"))
        holds_the_truth(ws, truth, tally, f"killed at log.ingesting, opened again (compacted between: {compacted})")
        harness.repaired(ws, tally)
    tally.print()
    assert tally.lost == 0 and tally.doubled == 0
