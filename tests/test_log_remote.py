"""The log's tables in object storage (logs/location.json): replicas on several machines append to one table in an
S3-compatible store (moto's server, a real HTTP server on 127.0.0.1), the workspace ingests it from there, and every
step a local log has works the same: a retried batch written once, an outside reader's count, compaction, check and
its repair (the damaged file copied down to quarantine/log/ before it is removed there)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from core.production import check, prediction_log
from core.workspace import log_table, store
from core.workspace.paths import Workspace
from tests.helpers import cli, fake_prediction, free_port, ready
from tests.test_log_table import three_writers

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, object]]:
    """An S3-compatible server on 127.0.0.1 with a bucket `logs`; credentials in the environment, as a deployment
    gives them to every process. Yields the endpoint and a boto3 client."""
    import boto3

    port = free_port()
    out = (tmp_path / "moto.log").open("w+b")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=out)
    try:
        ready(f"http://127.0.0.1:{port}/moto-api/", proc, out, "the S3 server did not start", 120)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test-key")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
        endpoint = f"http://127.0.0.1:{port}"
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        client.create_bucket(Bucket="logs")
        yield endpoint, client
    finally:
        proc.kill()
        proc.wait()
        out.close()


def options(endpoint: str) -> list[str]:
    return ["--option", f"AWS_ENDPOINT_URL={endpoint}", "--option", "AWS_ALLOW_HTTP=true", "--option", "AWS_REGION=us-east-1"]


def outside_count(ws: Workspace) -> tuple[int, int]:
    """The predictions table's rows as outside engines read it from the store: delta-rs's reader (pyarrow), and
    DuckDB over the table's file list through the same object store."""
    from deltalake import DeltaTable

    found = log_table.location(ws)
    table = DeltaTable(log_table.table_uri(ws, "predictions"), storage_options=found.storage_options)
    arrow = table.to_pyarrow_table(columns=["id"]).num_rows
    con = duckdb.connect()
    try:
        listed = [log_table.read_path(con, ws, "predictions", f.rel) for f in log_table.files(ws, "predictions")]
        return arrow, con.execute("SELECT count(*) FROM read_parquet(?)", [listed]).fetchone()[0]
    finally:
        con.close()


def ingested(ws: Workspace) -> list[str]:
    with store.connect(ws) as con:
        return [r[0] for r in con.execute("SELECT id FROM log_predictions").fetchall()]


def test_replicas_append_to_a_table_in_object_storage_and_the_workspace_ingests_it(ws: Workspace, s3: tuple[str, object]) -> None:
    endpoint, client = s3
    store.init_db(ws)
    set_to = cli("log", "location", "--workspace", ws.name, "--uri", "s3://logs/bears/", *options(endpoint), "--json")
    assert set_to.returncode == 0, set_to.stderr
    said = json.loads(set_to.stdout)
    assert said["changed"] and said["location"]["uri"] == "s3://logs/bears"
    assert said["location"]["storage_options"]["conditional_put"] == "etag"  # concurrent commits are safe on S3
    assert "test-secret" not in log_table.location_file(ws).read_text()  # credentials stay in the environment
    assert store.audit_log(ws, 5)["action"].iloc[0] == "log_location_set"
    assert not (log_table.root(ws, "predictions") / "_delta_log").exists()  # nothing of the tables on this disk
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="logs", Prefix="bears/")["Contents"]]
    assert {k.split("/")[1] for k in keys} == {"predictions", "feedback"}  # both tables made there

    acknowledged = three_writers(ws, 4)  # three replicas, each its own process (its own machine, to the store)

    frame = prediction_log.to_frame(ws, [fake_prediction(i) for i in range(5)], "api", "v1")
    batch = log_table.Writer.new("api-9").take()
    assert log_table.append(ws, "predictions", frame, batch=batch) == 5
    assert log_table.append(ws, "predictions", frame, batch=batch) == 0  # a retry of a committed batch: not twice
    acknowledged += list(frame["id"])

    logged = ingested(ws)
    assert len(acknowledged) == 305 and sorted(logged) == sorted(acknowledged) and outside_count(ws) == (305, 305)
    assert prediction_log.version_of(ws, acknowledged[0]) == "v1"  # serving's lookup reads the store's files
    prediction_log.add_feedback(ws, acknowledged[0], "red", ["red", "blue"], source="api", replica="api-0")
    with store.connect(ws) as con:
        assert con.execute("SELECT label FROM log_feedback WHERE prediction_id = ?", [acknowledged[0]]).fetchall() == [("red",)]
    status = json.loads(cli("log", "status", "--workspace", ws.name, "--json").stdout)["status"]["predictions"]
    assert status["table"] == "s3://logs/bears/predictions" and status["rows"] == status["table_rows"] == 305

    # a file damaged in the store: check names it by its URI; repair copies it down to quarantine, then forgets it
    victim = log_table.files(ws, "predictions")[0]
    con = duckdb.connect()
    lost = con.execute(
        "SELECT count(*) FROM read_parquet(?)", [log_table.read_path(con, ws, "predictions", victim.rel)]
    ).fetchone()[0]
    con.close()
    client.put_object(Bucket="logs", Key=f"bears/predictions/{victim.rel}", Body=b"not parquet")
    found = check.check(ws)
    assert [(p.kind, p.subject) for p in found.problems] == [("log_unreadable", victim.shown)]
    assert victim.shown.startswith("s3://logs/bears/predictions/date=")
    fixed = check.check(ws, repair=True)
    assert len(fixed.repaired) == 1 and not fixed.remaining
    assert (ws.quarantine_dir / check.LOG / Path(victim.rel).name).read_bytes() == b"not parquet"  # kept, with a trace
    actions = list(store.audit_log(ws, 20)["action"])
    assert "log_file_moved" in actions and "log_files_forgotten" in actions
    left = log_table.rows(ws, "predictions")
    assert left == 305 - lost and len(ingested(ws)) == left and check.check(ws).problems == ()

    compacted = cli("log", "compact", "--workspace", ws.name, "--retention-hours", "0", "--json")
    assert compacted.returncode == 0, compacted.stderr
    assert json.loads(compacted.stdout)["compacted"]["predictions"]["files_deleted"] > 0
    assert sorted(ingested(ws)) == sorted(set(ingested(ws))) and len(ingested(ws)) == left
    assert outside_count(ws) == (left, left) and len(log_table.files(ws, "predictions")) == 1  # one day, one file
    with store.connect(ws) as con:  # the optimize's files carry no new rows: the ingest after it read none
        assert con.execute("SELECT rows FROM log_ingests WHERE kind = 'predictions' ORDER BY seq DESC LIMIT 1").fetchone() == (0,)


def test_a_location_is_refused_when_it_would_hide_rows_leak_a_secret_or_cannot_be_written(
    ws: Workspace, s3: tuple[str, object]
) -> None:
    endpoint, _ = s3
    store.init_db(ws)
    bad = cli("log", "location", "--workspace", ws.name, "--uri", "/mnt/shared/logs")
    assert bad.returncode != 0 and "not an object store's URI" in bad.stderr and "Traceback" not in bad.stderr
    leak = cli("log", "location", "--workspace", ws.name, "--uri", "s3://logs/x", "--option", "AWS_SECRET_ACCESS_KEY=abc")
    assert leak.returncode != 0 and "environment" in leak.stderr and not log_table.location_file(ws).exists()
    nowhere = cli("log", "location", "--workspace", ws.name, "--uri", "s3://no-such-bucket/x", *options(endpoint))
    assert nowhere.returncode != 0 and "cannot be made" in nowhere.stderr and "stays where it was" in nowhere.stderr
    assert log_table.is_local(ws) and not log_table.location_file(ws).exists()

    log_table.append(ws, "predictions", prediction_log.to_frame(ws, [fake_prediction(0)], "api", "v1"))
    hidden = cli("log", "location", "--workspace", ws.name, "--uri", "s3://logs/y", *options(endpoint))
    assert hidden.returncode != 0 and "holds 1 prediction(s)" in hidden.stderr and log_table.is_local(ws)
    shown = json.loads(cli("log", "location", "--workspace", ws.name, "--json").stdout)
    assert shown["location"]["uri"].startswith("logs/") and not shown["changed"]
