"""`check` finds what an interrupted process or a hand on the files left behind; `--repair` fixes what it can
without deleting anything, each fix audited; what it cannot fix it says."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from core.model import registry, runs
from core.production import check, prediction_log
from core.workspace import log_table, store
from core.workspace.paths import Workspace
from tests.helpers import app, cli, colour_image, derived_version, fake_prediction, legacy_spool, log_paths


def dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    return int(done.stdout)


def damage(ws: Workspace) -> dict[str, object]:
    """One of everything check looks for."""
    catalog = store.images(ws)
    gone = catalog.iloc[0]
    (ws.root / gone["path"]).unlink()  # a row whose file is gone
    orphan = ws.images_dir / "red" / "left-behind.png"
    orphan.write_bytes(colour_image(0, 77))  # a file no row names
    leftover = ws.models_dir / ".tmp-0123abcd"
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"half")
    with store.connect(ws) as con:  # a run a killed process left running, and its lock
        con.execute("INSERT INTO runs VALUES ('deadbeef0000', now(), NULL, 'running', '{}', NULL, NULL)")
        con.execute("UPDATE models SET checksums = NULL")  # a version registered before checksums (not published)
    (ws.root / runs.LOCK).write_text(json.dumps({"pid": dead_pid(), "host": socket.gethostname(), "started": "x"}))
    frame = prediction_log.to_frame(ws, [fake_prediction(i) for i in range(3)], "batch", "v1")
    log = log_damage(ws)
    legacy_spool(ws, frame)  # rows a busy database sent to an earlier version's spool: folded into the table
    broken = derived_version(ws, registry.production_version(ws))
    weights = ws.models_dir / broken / registry.WEIGHTS
    weights.write_bytes(weights.read_bytes()[:1000])  # a damaged model: no repair
    return {"gone": gone["id"], "orphan": orphan, "leftover": leftover, "broken": broken, "log": log}


def log_damage(ws: Workspace) -> list[Path]:
    """The log's table as a disk or a hand leaves it: a file it names cut short, a file it names deleted (of three
    logged one at a time: one file each)."""
    whole = [prediction_log.log_predictions(ws, [fake_prediction(i)], "batch", "v1") for i in range(3)]
    assert all(w.logged == 1 for w in whole)
    cut, gone, _ = log_paths(ws, "predictions")
    cut.write_bytes(b"PAR1" + b"\0" * 100)
    gone.unlink()
    return [cut, gone]


def test_a_clean_workspace_has_no_problems(prod: Workspace) -> None:
    report = check.check(prod)
    assert report.problems == () and report.as_dict()["ok"]


def test_check_reports_without_changing_anything_and_repair_fixes_without_deleting(prod: Workspace) -> None:
    made = damage(prod)
    orphan_bytes = made["orphan"].read_bytes()
    before = store.audit_log(prod, 10_000)
    report = check.check(prod)
    kinds = sorted(p.kind for p in report.problems)
    assert kinds == sorted(["missing_file", "orphan_file", "leftover", "run", "lock", "checksum", "model",
                            "log_unreadable", "log_missing", "log_legacy", "serving_stale"])  # fmt: skip
    assert report.repaired == () and len(report.remaining) == len(report.problems)
    assert made["orphan"].exists() and made["leftover"].exists() and (prod.root / "logs" / "spool").is_dir()
    assert len(store.audit_log(prod, 10_000)) == len(before)  # looking changes nothing

    fixed = check.check(prod, repair=True)
    assert len(fixed.repaired) == 10 and [p.kind for p in fixed.remaining] == ["model"]
    cut, gone = made["log"]
    assert not cut.exists() and (prod.quarantine_dir / check.LOG / cut.name).exists()  # moved, not deleted
    assert not log_table.unreadable(prod) and gone not in log_paths(prod, "predictions")  # the table forgot both
    assert made["broken"] in fixed.remaining[0].subject
    moved = prod.quarantine_dir / check.ORPHANS / "left-behind.png"
    assert not made["orphan"].exists() and moved.read_bytes() == orphan_bytes  # moved, not deleted
    assert (
        not made["leftover"].exists() and (prod.quarantine_dir / check.LEFTOVERS / ".tmp-0123abcd" / "model.safetensors").exists()
    )
    catalog = store.images(prod, status=None).set_index("id")
    assert catalog.loc[made["gone"], "status"] == "missing"
    with store.connect(prod) as con:
        assert con.execute("SELECT status FROM runs WHERE run_id = 'deadbeef0000'").fetchone() == ("interrupted",)
        assert con.execute("SELECT count(*) FROM models WHERE checksums IS NULL").fetchone()[0] == 0
    assert not (prod.root / runs.LOCK).exists() and not (prod.root / "logs" / "spool").exists()
    assert prediction_log.count(prod) == 3 + 1  # the spool's rows, and the one whole file's (the deleted one's is lost)
    actions = set(store.audit_log(prod, 10_000)["action"])
    assert {"image_marked_missing", "orphan_file_moved", "model_folder_moved", "run_interrupted", "stale_lock_removed",
            "model_checksums_recorded", "workspace_repaired", "log_file_moved", "log_files_forgotten", "log_migrated",
            "log_files_deleted"} <= actions  # fmt: skip

    again = check.check(prod)
    assert [p.kind for p in again.problems] == ["model"]  # only what no repair can fix
    # training and the pages work on the repaired workspace: the missing image is simply left out
    assert made["gone"] not in set(store.images(prod)["id"])


def test_a_live_training_is_not_stale(prod: Workspace) -> None:
    runs.acquire_lock(prod)  # this process trains
    try:
        with store.connect(prod) as con:
            con.execute("INSERT INTO runs VALUES ('live00000000', now(), NULL, 'running', '{}', NULL, NULL)")
        assert check.check(prod).problems == ()
    finally:
        runs.release_lock(prod)


def test_check_command_and_the_workspaces_page(prod: Workspace) -> None:
    damage(prod)
    done = cli("check", "--workspace", "prod", "--json")
    assert done.returncode == 1, done.stderr  # problems found: a script (cron, CI) learns it from the status
    data = json.loads(done.stdout)
    assert not data["ok"] and len(data["problems"]) == 11 and data["repaired"] == []
    at = app("app_pages/workspaces.py", "prod")
    at.selectbox(key="ws_check_name").set_value("prod").run()
    at.button(key="ws_check_run").click().run()
    assert not at.exception and any("11 problem(s) found" in w.value for w in at.warning)
    at.button(key="ws_check_repair").click().run()
    assert sum("Repaired:" in s.value for s in at.success) == 10
    assert any("1 problem(s) remain" in w.value for w in at.warning)
    text = cli("check", "--workspace", "prod")
    assert text.returncode == 1 and "[model]" in text.stdout and "repair: nothing" in text.stdout  # one remains
    assert cli("check", "--workspace", "prod", "--failpoints").returncode == 0
    assert os.path.isdir(prod.quarantine_dir / check.ORPHANS)


def test_a_quarantine_stopped_halfway_is_put_back_and_done_once_when_run_again(prod: Workspace) -> None:
    """Quarantining moves the file to quarantine/ and then updates its row: a kill between the two leaves the row
    pointing at the old place. The repair finds the file by name and bytes and puts it back where the row says
    (the row's state wins), so the interrupted command, run again, quarantines it once, in its own batch."""
    from core.data import verify

    row = store.images(prod).iloc[0]
    prod.quarantine_dir.mkdir(exist_ok=True)
    (prod.root / row["path"]).rename(prod.quarantine_dir / Path(row["path"]).name)  # moved, row not updated
    report = check.check(prod)
    assert [(p.kind, p.subject) for p in report.problems] == [("moved", row["id"])]
    check.check(prod, repair=True)
    assert (prod.root / row["path"]).is_file() and not (prod.quarantine_dir / Path(row["path"]).name).exists()
    assert check.check(prod).problems == ()
    verify.quarantine(prod, row["id"], "broken", action="clean_delete", batch="b1")
    fixed = store.images(prod, status=None).set_index("id").loc[row["id"]]
    assert fixed["status"] == "quarantined" and (prod.root / fixed["path"]).is_file()


def test_a_relabel_stopped_halfway_is_moved_back(prod: Workspace) -> None:
    """Cleaning moves a relabelled file to its new label's folder and then updates its row: a kill between the two
    leaves the file in the new folder, untracked, and the row naming the old place. The repair recognises the
    file by name and bytes (not an orphan: nothing goes to quarantine) and puts it back where its row says."""
    catalog = store.images(prod)
    row = catalog.iloc[0]
    other = next(label for label in catalog["label"].unique() if label != row["label"])
    src = prod.root / row["path"]
    (prod.images_dir / other / src.name).write_bytes(src.read_bytes())
    src.unlink()  # the same as a move, done by hand
    report = check.check(prod)
    assert [(p.kind, p.subject) for p in report.problems] == [("moved", row["id"])]
    check.check(prod, repair=True)
    assert src.is_file() and not (prod.images_dir / other / src.name).exists()
    assert store.images(prod, status=None).set_index("id").loc[row["id"], "path"] == row["path"]
    assert check.check(prod).problems == () and not (prod.quarantine_dir / check.ORPHANS).exists()


def test_check_exits_0_only_when_nothing_is_left_to_fix(prod: Workspace) -> None:
    assert cli("check", "--workspace", "prod").returncode == 0
    (prod.images_dir / "red" / "stray.png").write_bytes(b"not tracked")  # an orphan: repairable
    assert cli("check", "--workspace", "prod").returncode == 1
    assert cli("check", "--workspace", "prod", "--repair").returncode == 0  # repaired: nothing remains
    assert cli("check", "--workspace", "prod").returncode == 0
    listed = cli("check", "--failpoints", "--json")
    assert listed.returncode == 0 and {p["failpoint"] for p in json.loads(listed.stdout)["failpoints"]} >= {"gather.committed"}
    assert "needs --workspace" in cli("check").stderr


def test_checksums_are_recorded_only_for_a_model_that_matches_its_registration(prod: Workspace) -> None:
    version = registry.production_version(prod)
    with store.connect(prod) as con:
        con.execute("UPDATE models SET checksums = NULL")  # registered before checksums existed
        con.execute("UPDATE models SET backbone = 'resnet50' WHERE version = ?", [version])  # its files are another model's
    store.publish_serving(prod)  # as this version's first open of such a workspace publishes it
    found = check.check(prod, repair=True)
    assert [(p.kind, p.repairable) for p in found.problems] == [("model", False)] and "backbone" in found.problems[0].detail
    assert registry.recorded(prod, version)[0] is None  # nothing recorded for it


def test_a_staged_copy_of_a_cataloged_file_is_seen_and_moved_to_quarantine(prod: Workspace) -> None:
    """What a second import of the same images left before imports checked inside their transaction."""
    row = store.images(prod).iloc[0]
    final = prod.root / row["path"]
    staged = final.with_name(f".{final.name}.part")
    staged.write_bytes(final.read_bytes())
    found = check.check(prod, repair=True)
    assert [(p.kind, p.subject) for p in found.problems] == [("orphan_file", str(staged.relative_to(prod.root)))]
    assert not staged.exists() and final.is_file() and check.check(prod).problems == ()
    assert any(p.name == staged.name for p in (prod.quarantine_dir / check.ORPHANS).iterdir())


def test_the_databases_copy_of_the_log_is_checked_against_the_table_and_read_again(ws: Workspace) -> None:
    """Rows of the ingested copy changed by hand (an analyst in the DuckDB shell): check sees the counts differ,
    and repair reads the whole table again; the log's own files are never touched."""
    store.init_db(ws)
    prediction_log.log_predictions(ws, [fake_prediction(i) for i in range(5)], "batch", "v1")
    assert check.check(ws).problems == ()
    with store.connect(ws) as con:
        con.execute("DELETE FROM log_rows_predictions WHERE id IN (SELECT id FROM log_rows_predictions LIMIT 2)")
    files = log_paths(ws, "predictions")
    (found,) = check.check(ws).problems
    assert found.kind == "log_ingest" and "3 rows" in found.detail and "count 5" in found.detail
    fixed = check.check(ws, repair=True)
    assert fixed.repaired == ("read the log's predictions into the database again (5 rows)",)
    assert prediction_log.count(ws) == 5 and log_paths(ws, "predictions") == files and check.check(ws).problems == ()
    assert "log_ingested_again" in set(store.audit_log(ws, 100)["action"])
