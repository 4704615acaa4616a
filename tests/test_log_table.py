"""The prediction log as Delta tables: each writer commits its rows without the database's lock, a retried batch is
written once, readers (the product's and an outside engine's) see the same rows, optimize and vacuum lose and double
nothing, and a workspace in the earlier layout migrates, once, however often the migration runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from core.production import prediction_log
from core.workspace import log_migration, log_table, store
from core.workspace.paths import Workspace
from tests.helpers import cli, fake_prediction, legacy_spool, log_paths

ROOT = Path(__file__).resolve().parents[1]


def ids(ws: Workspace, where: str = "TRUE") -> list[str]:
    with store.connect(ws) as con:
        return [r[0] for r in con.execute(f"SELECT id FROM log_predictions WHERE {where}").fetchall()]


def test_readers_see_the_table_and_the_files_as_one_log(ws: Workspace) -> None:
    store.init_db(ws)
    new = prediction_log.to_frame(ws, [fake_prediction(i) for i in range(4)], "api", "v1")
    assert log_table.append(ws, "predictions", new, "api-1") == 4
    (written,) = log_paths(ws, "predictions")
    assert written.parent.parent == log_table.root(ws, "predictions") and written.parent.name.startswith("date=")
    assert sorted(ids(ws)) == sorted(new["id"])  # the database ingested the commit (log_ingest)
    old = prediction_log.to_frame(ws, [fake_prediction(i) for i in range(3)], "batch", "v1")
    with store.connect(ws) as con:  # rows a workspace logged in its database before the log had its table
        con.register("old", old)
        cols = ", ".join(prediction_log.COLUMNS)
        con.execute(f"INSERT INTO predictions ({cols}) SELECT {cols} FROM old")
    assert sorted(ids(ws)) == sorted(new["id"])  # readers read the log alone: one truth
    store.init_db(ws, force=True)  # the workspace's first open moves them into the log's table (store.migrate_log)
    assert sorted(ids(ws)) == sorted([*old["id"], *new["id"]])
    assert sorted(ids(ws, "replica = 'api-1'")) == sorted(new["id"]) and len(ids(ws, "replica = 'database'")) == 3
    with store.connect(ws) as con:
        row = con.execute("SELECT probs, embedding, ts, ood FROM log_predictions WHERE id = ?", [new["id"][0]]).fetchone()
    assert row[0] == pytest.approx([0.7, 0.2, 0.1]) and len(row[1]) == 16 and row[3] is False  # the table's types
    prediction_log.add_feedback(ws, new["id"][0], "red", ["red", "blue"], source="api", replica="api-1")
    prediction_log.add_feedback(ws, old["id"][0], "blue", ["red", "blue"], source="review", reviewer="ana")
    with store.connect(ws) as con:
        labels = con.execute("SELECT prediction_id, label, replica FROM log_feedback ORDER BY label DESC").fetchall()
        in_table = con.execute("SELECT count(*) FROM feedback").fetchone()[0]
    assert labels == [(new["id"][0], "red", "api-1"), (old["id"][0], "blue", None)] and in_table == 1  # review: undoable


def test_the_version_of_a_prediction_is_found_in_the_log_without_the_database(ws: Workspace) -> None:
    """Feedback needs the version of the prediction it is about: found in any day's file of the log's table, rows a
    workspace logged in its database before included (moved there by the migration); an id logged nowhere is None."""
    store.init_db(ws)
    old = prediction_log.to_frame(ws, [fake_prediction(i) for i in range(2)], "batch", "v0")
    with store.connect(ws) as con:
        con.register("old", old)
        cols = ", ".join(prediction_log.COLUMNS)
        con.execute(f"INSERT INTO predictions ({cols}) SELECT {cols} FROM old")
    three_days_ago = [store.now() - timedelta(days=3)] * 3
    earlier = prediction_log.to_frame(ws, [fake_prediction(i) for i in range(3)], "api", "v1", ts=three_days_ago)
    later = prediction_log.to_frame(ws, [fake_prediction(i) for i in range(3)], "app", "v2")
    log_table.append(ws, "predictions", earlier, "api-1")
    log_table.append(ws, "predictions", later, "app")
    assert store.migrate_log(ws).rows == 2  # as the first open of a workspace with rows in its database does
    assert len({p.parent.name for p in log_paths(ws, "predictions")}) == 2  # two days
    assert prediction_log.version_of(ws, earlier["id"][1]) == "v1"
    assert prediction_log.version_of(ws, later["id"][2]) == "v2"
    assert prediction_log.version_of(ws, old["id"][0]) == "v0"
    assert prediction_log.version_of(ws, "never-logged") is None


def test_a_batch_retried_after_its_commit_is_written_once(ws: Workspace) -> None:
    """A writer that failed after its commit (an fsync, say) tries the batch again under the same number: nothing
    more is written; its next batch is."""
    store.init_db(ws)
    frame = prediction_log.to_frame(ws, [fake_prediction(i) for i in range(5)], "app", "v1")
    writer = log_table.Writer.new("app")
    batch = writer.take()
    assert log_table.append(ws, "predictions", frame, "app", batch) == 5
    assert log_table.append(ws, "predictions", frame, "app", batch) == 0  # the retry
    later = prediction_log.to_frame(ws, [fake_prediction(i) for i in range(2)], "app", "v1")
    assert log_table.append(ws, "predictions", later, "app", writer.take()) == 2
    assert sorted(ids(ws)) == sorted([*frame["id"], *later["id"]])


def outside_count(ws: Workspace) -> tuple[int, int]:
    """The rows of the predictions table as engines that know nothing of this product read it: delta-rs's own
    reader (pyarrow) and DuckDB over the table's file list (README's recipes)."""
    from deltalake import DeltaTable

    table = DeltaTable(str(log_table.root(ws, "predictions")))
    arrow = table.to_pyarrow_table(columns=["id"]).num_rows
    listed = ", ".join(f"'{u}'" for u in table.file_uris())
    con = duckdb.connect()
    try:
        return arrow, con.execute(f"SELECT count(*) FROM read_parquet([{listed}])").fetchone()[0]
    finally:
        con.close()


WRITER = textwrap.dedent(
    """
    import sys
    from core.production import audit, prediction_log
    from core.workspace import workspaces
    from tests.helpers import fake_prediction
    ws = workspaces.resolve(sys.argv[1])  # a replica starting: it opens the database once
    audit.current(ws)
    print("ready", flush=True)
    sys.stdin.readline()  # then logs while another process holds the database
    written = []
    for b in range(int(sys.argv[2])):
        batch = [fake_prediction(i) for i in range(25)]  # one commit each
        result = prediction_log.log_predictions(ws, batch, "api", "v1", keep_images=False)
        assert result.logged == 25, result
        written += [p.id for p in batch]
    print("\\n".join(written))
    """
)


def three_writers(ws: Workspace, batches: int) -> list[str]:
    """Three replica processes (api-0..2) each log `batches` batches of 25 while another process holds the database;
    returns the ids they acknowledged."""
    procs = []
    for k in range(3):  # started one after another (each opens the database once, with the short wait below)
        env = {**os.environ, log_table.REPLICA_ENV: f"api-{k}", store.LOCK_TIMEOUT_ENV: "0.2"}
        procs.append(subprocess.Popen([sys.executable, "-c", WRITER, str(ws.root), str(batches)], cwd=ROOT,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      env=env))  # fmt: skip
        assert procs[-1].stdout.readline().strip() == "ready", procs[-1].communicate(timeout=600)[1][-3000:]
    holder = duckdb.connect(str(ws.db_path))  # an analyst's long transaction, say: no writer needs the lock
    try:
        for p in procs:  # all three at once
            p.stdin.write("go\n")
            p.stdin.flush()
        outs = [p.communicate(timeout=600) for p in procs]
    finally:
        holder.close()
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-2000:] for _, err in outs]
    return [line for out, _ in outs for line in out.split()]


def test_three_replicas_write_at_once_while_another_process_holds_the_database(ws: Workspace) -> None:
    store.init_db(ws)
    acknowledged = three_writers(ws, 40)
    logged = ids(ws)
    assert len(acknowledged) == 3000 and sorted(logged) == sorted(acknowledged)  # none lost, none twice
    with store.connect(ws) as con:
        per = dict(con.execute("SELECT replica, count(*) FROM log_predictions GROUP BY 1").fetchall())
    assert per == {"api-0": 1000, "api-1": 1000, "api-2": 1000} and outside_count(ws) == (3000, 3000)


def test_compaction_optimizes_and_vacuums_only_past_the_retention_and_outside_readers_agree(ws: Workspace) -> None:
    store.init_db(ws)
    truth = []
    for b in range(6):
        frame = prediction_log.to_frame(ws, [fake_prediction(i) for i in range(10)], "api", "v1")
        log_table.append(ws, "predictions", frame, f"api-{b % 2}")
        truth += list(frame["id"])
    assert outside_count(ws) == (60, 60) and len(log_paths(ws, "predictions")) == 6
    first = json.loads(cli("log", "compact", "--workspace", ws.name, "--json").stdout)  # the default retention: 24 h
    done = first["compacted"]["predictions"]
    assert (done["files_in"], done["files_out"], done["files_deleted"]) == (6, 1, 0)
    assert sorted(ids(ws)) == sorted(truth) and len(log_paths(ws, "predictions")) == 1
    assert outside_count(ws) == (60, 60)
    on_disk = list(log_table.root(ws, "predictions").glob("date=*/*.parquet"))
    assert len(on_disk) == 7  # the folded files stay for readers that listed them within the retention
    second = json.loads(cli("log", "compact", "--workspace", ws.name, "--retention-hours", "0", "--json").stdout)
    assert second["compacted"]["predictions"]["files_deleted"] == 6 and sorted(ids(ws)) == sorted(truth)
    assert len(list(log_table.root(ws, "predictions").glob("date=*/*.parquet"))) == 1 and outside_count(ws) == (60, 60)
    trace = store.audit_log(ws, 100)
    deleted = trace[trace["action"] == "log_files_deleted"]
    assert len(deleted) == 1 and "vacuumed by `log compact`" in deleted["detail"].iloc[0]
    folded = {p.name for p in on_disk} - {log_paths(ws, "predictions")[0].name}
    assert all(name in deleted["detail"].iloc[0] for name in folded)  # each deleted file named first
    status = cli("log", "status", "--workspace", ws.name)
    assert status.returncode == 0 and "predictions: 60 rows (api-0 30, api-1 30); 1 file(s)" in status.stdout


def test_a_damaged_file_is_left_out_of_the_log_and_named_by_check(ws: Workspace) -> None:
    store.init_db(ws)
    for _ in range(2):
        frame = prediction_log.to_frame(ws, [fake_prediction(i) for i in range(4)], "app", "v1")
        log_table.append(ws, "predictions", frame)
    bad, good = log_paths(ws, "predictions")
    bad.write_bytes(bad.read_bytes()[: len(bad.read_bytes()) // 2])  # cut short on disk
    assert len(ids(ws)) == 4  # the pages go on with the rest, and say what is left out
    assert [log_table.root(ws, f.kind) / f.rel for f in log_table.unreadable(ws)] == [bad]
    found = cli("check", "--workspace", ws.name, "--json")
    assert found.returncode == 1 and [p["kind"] for p in json.loads(found.stdout)["problems"]] == ["log_unreadable"]
    assert cli("check", "--workspace", ws.name, "--repair").returncode == 0 and not bad.exists()
    assert (ws.quarantine_dir / "log" / bad.name).exists()
    assert log_paths(ws, "predictions") == [good] and cli("check", "--workspace", ws.name).returncode == 0


def legacy_layout(ws: Workspace, tag: str = "") -> set[str]:
    """A workspace as the earlier layout left it: files per replica and day, one day compacted (its journal names the
    inputs, still on disk, that its output holds), a spool, and feedback; returns the ids it holds. That layout named
    a file by its rows: other rows, other names (`tag`)."""
    con = duckdb.connect()
    truth: set[str] = set()

    def write(path: Path, frame: pd.DataFrame, kind: str = "predictions") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        con.register("rows", frame)
        con.execute(f"COPY (SELECT {log_table.select_sql(kind, set(frame.columns))} FROM rows) TO '{path}' (FORMAT parquet)")
        con.unregister("rows")

    base = log_table.root(ws, "predictions")
    frames = [prediction_log.to_frame(ws, [fake_prediction(i) for i in range(5)], "api", "v1") for _ in range(4)]
    write(base / "replica=api-1" / "date=2026-12-01" / f"{tag}a.parquet", frames[0])
    write(base / "replica=api-2" / "date=2026-12-02" / f"{tag}b.parquet", frames[1])
    folder = base / "replica=api-1" / "date=2026-12-03"
    write(folder / f"{tag}in1.parquet", frames[2])  # compacted into out.parquet: the journal says so
    write(folder / f"{tag}in2.parquet", frames[3])
    write(folder / f"{tag}out.parquet", pd.concat([frames[2], frames[3]]))
    journal = {"inputs": [f"{tag}in1.parquet", f"{tag}in2.parquet"], "output": f"{tag}out.parquet", "done_at": 1.0}
    (folder / f".compact-{tag}out.json").write_text(json.dumps(journal))
    spooled = prediction_log.to_frame(ws, [fake_prediction(i) for i in range(3)], "batch", "v1")
    legacy_spool(ws, spooled.drop(columns=["stage", "served", "request_id", "referred"]), f"{tag}spool.parquet")
    labels = pd.DataFrame({"prediction_id": frames[0]["id"][:2], "ts": [store.now()] * 2, "label": ["red"] * 2,
                           "source": ["api"] * 2})  # fmt: skip
    write(log_table.root(ws, "feedback") / "replica=api-1" / "date=2026-12-05" / f"{tag}f.parquet", labels, "feedback")
    con.close()
    for f in [*frames, spooled]:
        truth |= set(f["id"])
    return truth


def test_a_workspace_in_the_earlier_layout_migrates_once_however_often_it_runs(ws: Workspace) -> None:
    truth = legacy_layout(ws)
    store.init_db(ws, force=True)  # the first open folds it in
    assert sorted(ids(ws)) == sorted(truth) and len(truth) == 23
    assert outside_count(ws) == (23, 23)
    assert not log_migration.legacy_files(ws, "predictions") and not list(log_table.root(ws, "predictions").glob("replica=*"))
    with store.connect(ws) as con:
        assert con.execute("SELECT count(*), any_value(replica) FROM log_feedback").fetchone() == (2, "api-1")
    trace = store.audit_log(ws, 100)
    assert (trace["action"] == "log_migrated").sum() == 1 and (trace["action"] == "log_files_deleted").sum() == 5
    assert not list(log_table.root(ws, "predictions").rglob("in*.parquet"))  # a compaction's inputs went with its output
    assert store.migrate_log(ws).files == 0 and sorted(ids(ws)) == sorted(truth)  # run again: nothing

    legacy_layout(ws)  # the same files again, as a migration cut short before it deleted them leaves them
    again = store.migrate_log(ws)
    assert again.files == 5 and again.rows == 0  # every file's transaction was committed: none is written twice
    assert sorted(ids(ws)) == sorted(truth) and not log_migration.legacy_files(ws, "predictions")


def test_a_table_made_again_under_the_same_path_is_read_afresh(ws: Workspace) -> None:
    """A workspace removed and created anew under its name, in one process (the app's server): its log is the new
    table's, not what this process read of the old one."""
    import shutil

    from core.workspace import workspaces

    store.init_db(ws)
    log_table.append(ws, "predictions", prediction_log.to_frame(ws, [fake_prediction(i) for i in range(5)], "app", "v1"))
    assert len(ids(ws)) == 5
    shutil.rmtree(ws.root)
    again = workspaces.create_workspace(ws.name)
    frame = prediction_log.to_frame(again, [fake_prediction(i) for i in range(2)], "app", "v1")
    log_table.append(again, "predictions", frame)
    assert sorted(ids(again)) == sorted(frame["id"]) and log_table.version(again, "predictions") == 1
