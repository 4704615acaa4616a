"""The prediction log as files: each writer appends Parquet files of its own replica without the database's lock,
readers see the table and the files as one relation, and compaction folds files without losing or doubling a row."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest

from core.production import prediction_log
from core.workspace import log_files, store
from core.workspace.paths import Workspace
from tests.helpers import cli, fake_prediction

ROOT = Path(__file__).resolve().parents[1]


def ids(ws: Workspace, where: str = "TRUE") -> list[str]:
    with store.connect(ws) as con:
        return [r[0] for r in con.execute(f"SELECT id FROM log_predictions WHERE {where}").fetchall()]


def test_readers_see_the_table_and_the_files_as_one_log(ws: Workspace) -> None:
    store.init_db(ws)
    old = prediction_log.to_frame(ws, [fake_prediction(i) for i in range(3)], "batch", "v1")
    with store.connect(ws) as con:  # rows a workspace logged before the log became files stay where they are
        con.register("old", old)
        cols = ", ".join(prediction_log.COLUMNS)
        con.execute(f"INSERT INTO predictions ({cols}) SELECT {cols} FROM old")
    new = prediction_log.to_frame(ws, [fake_prediction(i) for i in range(4)], "api", "v1")
    written = log_files.append(ws, "predictions", new, "api-1")
    assert [p.parent.parent.name for p in written] == ["replica=api-1"] and written[0].parent.name.startswith("date=")
    assert sorted(ids(ws)) == sorted([*old["id"], *new["id"]])
    assert sorted(ids(ws, "replica = 'api-1'")) == sorted(new["id"]) and len(ids(ws, "replica IS NULL")) == 3
    with store.connect(ws) as con:
        row = con.execute("SELECT probs, embedding, ts, ood FROM log_predictions WHERE id = ?", [new["id"][0]]).fetchone()
    assert row[0] == pytest.approx([0.7, 0.2, 0.1]) and len(row[1]) == 16 and row[3] is False  # the table's types
    prediction_log.add_feedback(ws, new["id"][0], "red", ["red", "blue"], source="api", replica="api-1")
    prediction_log.add_feedback(ws, old["id"][0], "blue", ["red", "blue"], source="review", reviewer="ana")
    with store.connect(ws) as con:
        labels = con.execute("SELECT prediction_id, label, replica FROM log_feedback ORDER BY label DESC").fetchall()
        in_table = con.execute("SELECT count(*) FROM feedback").fetchone()[0]
    assert labels == [(new["id"][0], "red", "api-1"), (old["id"][0], "blue", None)] and in_table == 1  # review: undoable


def test_the_version_of_a_prediction_is_found_in_the_files_and_in_the_table(ws: Workspace) -> None:
    """Feedback needs the version of the prediction it is about: found in any day's file and in the database's table
    (rows logged before the log became files); an id logged nowhere is None."""
    store.init_db(ws)
    old = prediction_log.to_frame(ws, [fake_prediction(i) for i in range(2)], "batch", "v0")
    with store.connect(ws) as con:
        con.register("old", old)
        cols = ", ".join(prediction_log.COLUMNS)
        con.execute(f"INSERT INTO predictions ({cols}) SELECT {cols} FROM old")
    three_days_ago = [store.now() - timedelta(days=3)] * 3
    earlier = prediction_log.to_frame(ws, [fake_prediction(i) for i in range(3)], "api", "v1", ts=three_days_ago)
    later = prediction_log.to_frame(ws, [fake_prediction(i) for i in range(3)], "app", "v2")
    log_files.append(ws, "predictions", earlier, "api-1")
    log_files.append(ws, "predictions", later, "app")
    assert len({p.parent.name for p in log_files.visible(ws, "predictions")}) == 2  # two days
    assert prediction_log.version_of(ws, earlier["id"][1]) == "v1"
    assert prediction_log.version_of(ws, later["id"][2]) == "v2"
    assert prediction_log.version_of(ws, old["id"][0]) == "v0"
    assert prediction_log.version_of(ws, "never-logged") is None


def test_a_file_is_in_view_only_once_whole(ws: Workspace) -> None:
    store.init_db(ws)
    frame = prediction_log.to_frame(ws, [fake_prediction(i) for i in range(5)], "app", "v1")
    (path,) = log_files.append(ws, "predictions", frame)
    tmp = path.parent / f".{path.name}.host.1.tmp"
    tmp.write_bytes(path.read_bytes()[:100])  # a writer's temporary, still being written
    assert log_files.visible(ws, "predictions") == [path] and len(ids(ws)) == 5


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
        batch = [fake_prediction(i) for i in range(25)]
        result = prediction_log.log_predictions(ws, batch, "api", "v1", keep_images=False)
        assert result.logged == 25, result
        written += [p.id for p in batch]
    print("\\n".join(written))
    """
)


def test_three_replicas_write_at_once_while_another_process_holds_the_database(ws: Workspace) -> None:
    store.init_db(ws)
    procs = []
    for k in range(3):  # started one after another (each opens the database once, with the short wait below)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", WRITER, str(ws.root), "12"],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env={**os.environ, log_files.REPLICA_ENV: f"api-{k}", store.LOCK_TIMEOUT_ENV: "0.2"},
            )
        )
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
    acknowledged = [line for out, _ in outs for line in out.split()]
    logged = ids(ws)
    assert len(acknowledged) == 900 and sorted(logged) == sorted(acknowledged)  # none lost, none twice
    with store.connect(ws) as con:
        per = dict(con.execute("SELECT replica, count(*) FROM log_predictions GROUP BY 1").fetchall())
    assert per == {"api-0": 300, "api-1": 300, "api-2": 300}


def test_compaction_folds_each_partition_and_deletes_inputs_only_after_their_grace(ws: Workspace) -> None:
    store.init_db(ws)
    truth = []
    for b in range(6):
        frame = prediction_log.to_frame(ws, [fake_prediction(i) for i in range(10)], "api", "v1")
        log_files.append(ws, "predictions", frame, f"api-{b % 2}")
        truth += list(frame["id"])
    first = json.loads(cli("log", "compact", "--workspace", ws.name, "--json").stdout)  # the default grace: 600 s
    assert first["compacted"]["predictions"] | {"busy": []} == {
        "partitions_folded": 2, "files_in": 6, "files_out": 2, "rows": 60, "inputs_deleted": 0, "busy": [],
    }  # fmt: skip
    assert sorted(ids(ws)) == sorted(truth) and len(log_files.visible(ws, "predictions")) == 2
    on_disk = list(log_files.root(ws, "predictions").rglob("*.parquet"))
    assert len(on_disk) == 8  # the inputs stay for readers that listed them a moment ago
    second = json.loads(cli("log", "compact", "--workspace", ws.name, "--grace", "0", "--json").stdout)
    assert second["compacted"]["predictions"]["inputs_deleted"] == 6 and sorted(ids(ws)) == sorted(truth)
    assert len(list(log_files.root(ws, "predictions").rglob("*.parquet"))) == 2
    trace = store.audit_log(ws, 100)
    deleted = trace[trace["action"] == "log_files_deleted"]
    assert len(deleted) == 2 and "folded by `log compact`" in deleted["detail"].iloc[0]
    status = cli("log", "status", "--workspace", ws.name)
    assert status.returncode == 0 and "predictions: 60 rows (api-0 30, api-1 30); 2 file(s)" in status.stdout


def test_a_damaged_file_is_left_out_of_the_log_and_named_by_check(ws: Workspace) -> None:
    store.init_db(ws)
    frame = prediction_log.to_frame(ws, [fake_prediction(i) for i in range(4)], "app", "v1")
    (path,) = log_files.append(ws, "predictions", frame)
    bad = path.parent / "0000.parquet"
    bad.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])  # cut short on disk
    assert sorted(ids(ws)) == sorted(frame["id"])  # the pages go on with the rest, and say what is left out
    assert log_files.unreadable(ws) == [bad]
    found = cli("check", "--workspace", ws.name, "--json")
    assert found.returncode == 1 and [p["kind"] for p in json.loads(found.stdout)["problems"]] == ["log_unreadable"]
    assert cli("check", "--workspace", ws.name, "--repair").returncode == 0 and not bad.exists()
    assert (ws.quarantine_dir / "log" / "0000.parquet").exists()
