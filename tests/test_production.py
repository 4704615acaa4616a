"""Production: inference, the prediction log under concurrency, the simulator, monitoring, and the CLI."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core.data import images
from core.model import config, outputs, registry, scoring
from core.production import deployment, prediction, prediction_log, serving, traffic
from core.production.monitoring import charts, queries, reference
from core.production.prediction import Prediction
from core.workspace import store
from core.workspace.paths import Workspace
from tests.helpers import (
    bad_files,
    cli,
    colour_image,
    encode,
    exif_rotated_jpeg,
    fake_prediction,
    legacy_spool,
    log_paths,
    picture,
    png_bytes,
)

ROOT = Path(__file__).resolve().parents[1]


# --- inference -------------------------------------------------------------------------------


def test_the_ood_threshold_passes_95_percent_of_validation_scores() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (1000, 4))
    feats = rng.normal(0, 1, (1000, 32))
    for kind in config.OOD_SCORES:
        ref = outputs.fit_reference(logits, feats, kind)
        passed = (outputs.in_domain_score(logits, kind) >= ref.ood_threshold).mean()
        assert 0.95 <= passed <= 0.96
        assert ref.pca_components.shape == (config.EMBED_DIM, 32)


def test_rescored_validation_images_pass_the_threshold(prod: Workspace) -> None:
    predictor = scoring.load_predictor(prod)
    meta = registry.read_meta(prod, predictor.version)
    catalog = store.images(prod).set_index("id").loc[meta["valid_ids"]]
    items = [(path, (prod.root / path).read_bytes()) for path in catalog["path"]]
    preds, failed = prediction.predict_images(predictor, items)
    assert not failed and len(preds) == len(items)
    assert np.mean([not p.ood for p in preds]) >= 0.95
    reference = registry.load_reference(prod, predictor.version)
    assert np.abs(np.stack([p.probs for p in preds]) - reference["valid_probs"]).max() < 1e-4


def test_energy_and_max_probability_scores() -> None:
    logits = np.array([[10.0, 0.0, 0.0], [0.1, 0.0, 0.0]])
    e = outputs.energy(logits)
    assert e[0] < e[1]  # a confident input has lower energy
    assert np.allclose(e, -np.log(np.exp(logits).sum(1)))
    assert outputs.in_domain_score(logits, "max_prob")[0] > 0.99


def test_bad_files_get_a_reason_and_the_rest_is_scored(prod: Workspace) -> None:
    predictor = scoring.load_predictor(prod)
    preds, failed = prediction.predict_images(predictor, bad_files(), batch_size=4)
    reasons = {f["source"]: f["reason"] for f in failed}
    assert set(reasons) == {"corrupt.jpg", "bomb.png", "notes.jpg", "empty.png"}
    assert "corrupt or truncated" in reasons["corrupt.jpg"] and "decompression bomb" in reasons["bomb.png"]
    assert "not an image" in reasons["notes.jpg"] and "empty" in reasons["empty.png"]
    scored = {p.name: p for p in preds}
    assert set(scored) == {"cmyk.jpg", "rotated.jpg", "good.png"}
    assert (scored["rotated.jpg"].properties["width"], scored["rotated.jpg"].properties["height"]) == (40, 80)
    deferred, _ = prediction.predict_images(predictor, [("rotated.jpg", exif_rotated_jpeg())], defer_properties=True)
    assert deferred[0].properties is None and deferred[0].measured() == scored["rotated.jpg"].properties
    assert scored["good.png"].label == "blue" and scored["good.png"].notes == ""
    assert "cmyk" in scored["cmyk.jpg"].notes and "exif-rotated" in scored["rotated.jpg"].notes  # each says what it took


def test_no_production_model_is_a_clear_message(ws: Workspace) -> None:
    with pytest.raises(prediction.UserError, match="promote"):
        scoring.load_predictor(ws)


# --- the log ---------------------------------------------------------------------------------


def test_logged_rows_carry_every_field(prod: Workspace) -> None:
    predictor = scoring.load_predictor(prod)
    preds, _ = prediction.predict_images(predictor, [("a.png", colour_image(0, 3))], keep_bytes=True)
    store.set_setting(prod, prediction_log.KEEP_IMAGES, True)
    result = prediction_log.log_predictions(prod, preds, "batch", predictor.version)
    assert result.logged == 1 and not result.errors
    with store.connect(prod) as con:
        row = con.execute("SELECT * FROM log_predictions").df().iloc[0]
    assert row["source"] == "batch" and row["model_version"] == predictor.version and row["predicted"] == preds[0].label
    assert len(row["probs"]) == 3 and len(row["embedding"]) == config.EMBED_DIM
    assert row["sha256"] == preds[0].sha256 and row["latency_ms"] > 0
    assert all(pd.notna(row[k]) for k in ("width", "brightness", "contrast", "saturation", "sharpness", "energy"))
    assert (prod.root / row["image_path"]).read_bytes() == colour_image(0, 3)


def test_images_are_kept_only_for_the_review_queue_unless_the_workspace_opts_in(prod: Workspace) -> None:
    predictor = scoring.load_predictor(prod)
    items = [(f"c{i}.png", colour_image(i % 3, 50 + i)) for i in range(6)]
    preds, _ = prediction.predict_images(predictor, items, keep_bytes=True)
    preds = [dataclasses.replace(p, ood=False, referred=False) for p in preds[:4]] + [
        dataclasses.replace(preds[4], ood=True),  # the queue needs these two images: a reviewer must see them
        dataclasses.replace(preds[5], ood=False, referred=True),
    ]
    prediction_log.log_predictions(prod, preds, "batch", predictor.version)
    with store.connect(prod) as con:
        kept = dict(con.execute("SELECT name, image_path FROM log_predictions").fetchall())
    assert [kept[f"c{i}.png"] is not None for i in range(6)] == [False] * 4 + [True] * 2
    stored = sorted(p.name for p in (prod.root / "production").iterdir())
    assert stored == sorted(Path(kept[n]).name for n in ("c4.png", "c5.png"))
    assert (prod.root / kept["c4.png"]).read_bytes() == items[4][1]


WRITER = textwrap.dedent(
    """
    import sys
    from core.production import prediction_log
    from core.workspace import workspaces
    from tests.helpers import fake_prediction
    ws = workspaces.resolve(sys.argv[1])
    mode, n = sys.argv[2], int(sys.argv[3])
    if mode == "app":  # one prediction at a time through the app's background writer
        log = prediction_log.background(ws)
        for i in range(n):
            log.submit(prediction_log.LogBatch([fake_prediction(i)], "app", "v1"))
        log.flush()
    else:  # batch scoring: a write per chunk of 50
        for start in range(0, n, 50):
            prediction_log.log_predictions(ws, [fake_prediction(i) for i in range(start, start + 50)], "batch", "v1")
    """
)


def test_four_writer_processes_lose_no_row(ws: Workspace) -> None:
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(ws.root), mode, "500"], cwd=ROOT)
        for mode in ("app", "app", "batch", "batch")
    ]
    assert [p.wait(timeout=300) for p in procs] == [0, 0, 0, 0]
    assert prediction_log.count(ws) == 2000
    with store.connect(ws) as con:
        assert con.execute("SELECT count(DISTINCT id) FROM log_predictions").fetchone()[0] == 2000


# the other process holds the database until its stdin closes
HOLDER = "import duckdb, sys; con = duckdb.connect(sys.argv[1]); print('held', flush=True); sys.stdin.read()"


def test_a_held_database_does_not_stop_logging(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    store.init_db(ws)
    monkeypatch.setattr(store, "LOCK_TIMEOUT_S", 0.5)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(ws.db_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "held"
    result = prediction_log.log_predictions(ws, [fake_prediction(i) for i in range(7)], "batch", "v1", keep_images=False)
    assert result.logged == 7 and result.errors == []  # committed to the log's table: no database lock taken
    assert len(log_paths(ws, "predictions")) == 1
    holder.stdin.close()  # the other process lets go of the database
    holder.wait(timeout=30)
    assert prediction_log.count(ws) == 7
    with store.connect(ws) as con:
        assert con.execute("SELECT count(*) FROM predictions").fetchone()[0] == 0  # the table holds none of them


def test_rows_spooled_by_an_earlier_version_are_folded_in_without_the_columns_it_lacked(ws: Workspace) -> None:
    frame = prediction_log.to_frame(ws, [fake_prediction(i) for i in range(4)], "batch", "v1")
    path = legacy_spool(ws, frame.drop(columns=["stage", "served", "request_id", "referred"]))  # before rollouts
    assert store.migrate_log(ws).rows == 4 and not path.exists()
    with store.connect(ws) as con:
        rows = con.execute("SELECT stage, served, request_id, referred FROM log_predictions").fetchall()
    assert rows == [(None, None, None, None)] * 4  # read as production's, served (IS NOT FALSE), not referred


def test_feedback_is_checked_and_kept(prod: Workspace) -> None:
    prediction_log.add_feedback(prod, "abc", "red", ["red", "blue"])
    prediction_log.add_feedback(prod, "abd", prediction_log.NONE_OF_THESE, ["red", "blue"])
    with pytest.raises(prediction.UserError, match="not one of the model's classes"):
        prediction_log.add_feedback(prod, "abe", "purple", ["red", "blue"])
    with store.connect(prod) as con:
        assert con.execute("SELECT label FROM log_feedback ORDER BY label").fetchall() == [("none of these",), ("red",)]


# --- simulator and monitoring ----------------------------------------------------------------


def test_drift_starts_on_the_shift_day_and_rises() -> None:
    cfg = traffic.TrafficConfig(days=14, shift_day=7)
    ramps = [traffic.drift(d, cfg) for d in range(14)]
    assert ramps[:7] == [0.0] * 7 and ramps[-1] == 1.0 and all(a < b for a, b in zip(ramps[7:], ramps[8:], strict=False))


@pytest.mark.parametrize("kind", traffic.SHIFTS)
def test_each_shift_changes_the_image(kind: str) -> None:
    img = Image.open(__import__("io").BytesIO(colour_image(0, 1))).convert("RGB")
    shifted = traffic.shift_image(img, kind, np.random.default_rng(0))
    before, after = images.properties(img.size, img), images.properties(shifted.size, shifted)
    expect = {"darker": ("brightness", -1), "grayscale": ("saturation", -1), "blurred": ("sharpness", -1)}
    if kind in expect:
        key, sign = expect[kind]
        assert sign * (after[key] - before[key]) > 0.02
    else:
        assert shifted.size != img.size or not np.array_equal(np.asarray(shifted), np.asarray(img))


def test_simulation_logs_days_with_drift_and_feedback(prod: Workspace) -> None:
    cfg = traffic.TrafficConfig(days=4, per_day=15, shift_day=2, max_ood=0.8, feedback=0.5)
    end = datetime(2026, 3, 10, 15, 0)
    result = traffic.replay_traffic(prod, cfg, end=end)
    assert result["predictions"] == result["logged"] == prediction_log.count(prod, "simulation") > 30
    assert result["drawings"] > 0 and result["feedback"] > 0
    with store.connect(prod) as con:
        days = con.execute("SELECT DISTINCT ts::DATE FROM log_predictions ORDER BY 1").fetchall()
        drawn_days = con.execute("SELECT DISTINCT ts::DATE FROM log_predictions WHERE name LIKE '%drawing%'").fetchall()
        none = con.execute("SELECT count(*) FROM log_feedback WHERE label = 'none of these'").fetchone()[0]
        latest = con.execute("SELECT (SELECT max(ts) FROM log_predictions), (SELECT max(ts) FROM log_feedback)").fetchone()
    assert max(latest) <= end  # nothing logged in the future (the last day's requests are in its first 15 hours)
    assert [d for (d,) in days] == [datetime(2026, 3, d).date() for d in (7, 8, 9, 10)]
    assert {d for (d,) in drawn_days} <= {datetime(2026, 3, 9).date(), datetime(2026, 3, 10).date()}
    assert none > 0
    assert 0 < result["pool_scored"] <= result["pool"] and 0 <= result["pool_ood"] <= result["pool_scored"]
    assert 0.0 <= result["valid_ood_rate"] <= 0.06  # the threshold lets about 95% of validation through


def test_the_simulator_says_when_its_clean_pool_looks_unlike_validation() -> None:
    note = traffic.pool_note({"pool_ood": 9, "pool_scored": 42, "valid_ood_rate": 0.04})
    assert note.startswith("Note: 9 of the 42 test images replayed as clean traffic (21%) look out of domain")
    assert "against 4% of validation images" in note
    assert traffic.pool_note({"pool_ood": 2, "pool_scored": 42, "valid_ood_rate": 0.04}) == ""  # within its interval
    assert traffic.pool_note({"pool_ood": 0, "pool_scored": 0, "valid_ood_rate": 0.04}) == ""


def log_rows(ws: Workspace, day: datetime, n: int, ood: int, predicted: list[str]) -> list[str]:
    preds = [fake_prediction(i) for i in range(n)]
    preds = [Prediction(**{**p.__dict__, "ood": i < ood, "label": predicted[i % len(predicted)]}) for i, p in enumerate(preds)]
    prediction_log.log_predictions(ws, preds, "simulation", "v1", [day + timedelta(hours=1)] * n)
    return [p.id for p in preds]


def test_windows_count_ood_and_feedback_accuracy_exactly(prod: Workspace) -> None:
    monday, tuesday = datetime(2026, 1, 5), datetime(2026, 1, 6)
    ids = log_rows(prod, monday, 10, 1, ["red"])
    log_rows(prod, tuesday, 20, 10, ["red", "blue"])
    for i, pid in enumerate(ids[:4]):
        prediction_log.add_feedback(prod, pid, "red" if i < 3 else "blue", ["red", "blue", "green"])
    prediction_log.add_feedback(prod, ids[3], "red", ["red", "blue", "green"])  # a corrected answer: the latest counts
    win = queries.windows(prod)
    assert win["predictions"].tolist() == [10, 20]
    assert win["ood_rate"].tolist() == [0.1, 0.5]
    assert win["feedback"].tolist() == [4, 0] and win["feedback_accuracy"].iloc[0] == 1.0
    mix = queries.class_mix(prod)
    assert mix[mix["window"] == pd.Timestamp(tuesday)]["share"].tolist() == [0.5, 0.5]


def test_monitor_figures_build(prod: Workspace) -> None:
    log_rows(prod, datetime(2026, 1, 5), 10, 1, ["red"])
    base = reference.log_reference(prod, registry.production_version(prod))
    assert len(charts.overview_figure(queries.windows(prod), base).data) >= 5
    assert len(charts.class_mix_figure(queries.class_mix(prod), base).data) == 3


# --- command line ----------------------------------------------------------------------------


def test_cli_predict_scores_logs_and_writes_csv(prod: Workspace, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name, data in bad_files():
        (folder / name).write_bytes(data)
    out = tmp_path / "results.csv"
    done = cli("predict", "--workspace", "prod", str(folder), str(tmp_path / "missing.png"), "--out", str(out), "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert {Path(p["path"]).name for p in data["predictions"]} == {"cmyk.jpg", "rotated.jpg", "good.png"}
    assert len(data["failed"]) == 5 and data["logged"] == 3
    assert set(data["predictions"][0]) >= {"path", "label", "confidence", "ood", "action", "notes"}
    table = pd.read_csv(out)
    assert len(table) == 8 and {"p_red", "p_blue", "p_green", "error"} <= set(table.columns)
    assert prediction_log.count(prod, "batch") == 3


def test_cli_predict_and_the_library_agree(prod: Workspace, tmp_path: Path) -> None:
    (tmp_path / "x.png").write_bytes(colour_image(2, 8))
    data = json.loads(cli("predict", "--workspace", "prod", str(tmp_path / "x.png"), "--json").stdout)
    preds, _ = prediction.predict_images(scoring.load_predictor(prod), [("x.png", colour_image(2, 8))])
    assert data["predictions"][0]["label"] == preds[0].label
    assert abs(data["predictions"][0]["confidence"] - preds[0].confidence) < 1e-5


def test_cli_predict_without_a_production_model(ws: Workspace, tmp_path: Path) -> None:
    (tmp_path / "x.png").write_bytes(colour_image(2, 8))
    done = cli("predict", "--workspace", "test", str(tmp_path / "x.png"))
    assert done.returncode == 2 and done.stderr.startswith("error: ") and "promote" in done.stderr


def test_cli_simulate_then_monitor(prod: Workspace) -> None:
    done = cli("simulate", "--workspace", "prod", "--days", "3", "--per-day", "8", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["predictions"] > 0
    report = json.loads(cli("monitor", "--workspace", "prod", "--json").stdout)
    assert len(report["windows"]) == 3 and report["reference_version"] == "v1"
    assert report["predictions"] == prediction_log.count(prod) == sum(w["predictions"] for w in report["windows"])


def test_cli_monitor_on_an_empty_log(prod: Workspace) -> None:
    done = cli("monitor", "--workspace", "prod")
    assert done.returncode == 2 and "empty" in done.stderr


def test_app_settings_round_trip_through_one_read(prod: Workspace) -> None:
    assert deployment.load_settings(prod) == deployment.AppSettings(audit_share=0.0)  # the tests' template audits nothing
    deployment.save_settings(prod, deployment.AppSettings("  Bear or not?  ", " Only bears. ", True, audit_share=0.05))
    assert deployment.load_settings(prod) == deployment.AppSettings("Bear or not?", "Only bears.", True, audit_share=0.05)
    assert store.get_settings(prod, ("scope_statement", "never_set")) == {"scope_statement": "Only bears.", "never_set": None}
    deployment.save_settings(prod, deployment.AppSettings("   ", "", False))
    assert deployment.load_settings(prod).title == deployment.DEFAULT_TITLE


def test_scoring_uploads_hands_every_prediction_to_the_log(prod: Workspace) -> None:
    log = prediction_log.BackgroundLog(prod)
    files = [("a.png", colour_image(0, 1)), ("broken.png", b"not an image"), ("b.png", colour_image(1, 2))]
    now = serving.Serving(deployment.AppSettings(), None)
    scored = serving.score(scoring.load_predictor(prod), None, None, files, now.deciders, keep_bytes=True, defer_properties=True)
    log.submit(prediction_log.LogBatch(scored.logged, "app", scored.logged[0].version))
    preds, failed = scored.shown, scored.failed
    log.flush()
    assert [p.name for p in preds] == ["a.png", "b.png"] and [f["source"] for f in failed] == ["broken.png"]
    with store.connect(prod) as con:
        logged = con.execute("SELECT id, source, brightness, sharpness FROM log_predictions ORDER BY name").fetchall()
    assert [(i, s) for i, s, _, _ in logged] == [(p.id, "app") for p in preds]
    assert all(b is not None and sh is not None for _, _, b, sh in logged)  # measured on the log's thread


def test_serving_reads_settings_and_the_accepted_policy_from_the_published_snapshot(
    prod: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.drivetrain import accepted, levers, optimizer
    from core.drivetrain.decisions import Policy

    v = optimizer.validation(prod)
    accepted.accept(prod, v.version, Policy(refer_below=1.01), levers.load_utility(prod, v.classes)[0])
    deployment.save_settings(prod, deployment.AppSettings("Bears", "Only bears.", False))
    opened = []
    real = store.connect
    monkeypatch.setattr(store, "connect", lambda ws, **kw: opened.append(1) or real(ws, **kw))
    found = serving.read(serving.deployed(prod), v.version)
    assert opened == []  # published by the writes above: serving opens no database
    assert found.settings.title == "Bears" and found.policy.policy == Policy(refer_below=1.01)
    assert found.decide(np.array([5.0, 0.0, 0.0]), False) == levers.REFER


def big_jpeg(size: tuple[int, int] = (1600, 1200), rotate_exif: bool = False) -> bytes:
    exif = Image.Exif()
    if rotate_exif:
        exif[0x0112] = 6  # "rotate 90°": seen as portrait
    return encode(picture(11, size), "JPEG", quality=90, exif=exif.tobytes())


@pytest.mark.parametrize("rotate_exif", [False, True], ids=["landscape", "exif-rotated"])
def test_large_photos_decode_at_reduced_scale_and_keep_their_true_size(rotate_exif: bool) -> None:
    opened = prediction.decode_noted(big_jpeg(rotate_exif=rotate_exif), 64)
    expected = (1200, 1600) if rotate_exif else (1600, 1200)
    assert opened.size == expected
    assert min(opened.rgb.size) >= 64 and max(opened.rgb.size) <= max(expected) // 8  # the decoder's 1/8 scale
    assert opened.rgb.size[0] > opened.rgb.size[1] if not rotate_exif else opened.rgb.size[0] < opened.rgb.size[1]
    assert prediction.decode_noted(big_jpeg(), None).rgb.size == (1600, 1200)  # no side: full size


def test_serving_is_kept_between_uploads_until_any_process_changes_what_is_served(
    prod: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.drivetrain import accepted, levers, optimizer
    from core.drivetrain.decisions import Policy
    from core.production import check

    v = optimizer.validation(prod)
    deployment.save_settings(prod, deployment.AppSettings("First", "", False))
    assert serving.read(serving.deployed(prod), v.version).settings.title == "First"
    opened = []
    real = store.connect
    monkeypatch.setattr(store, "connect", lambda ws, **kw: opened.append(1) or real(ws, **kw))
    for _ in range(5):
        assert serving.read(serving.deployed(prod), v.version).settings.title == "First"
    assert opened == []  # nothing changed: no upload opened the database

    deployment.save_settings(prod, deployment.AppSettings("Second", "", False))  # this process
    assert serving.read(serving.deployed(prod), v.version).settings.title == "Second"
    code = textwrap.dedent(f"""
        import os
        os.environ["IMAGEDP_DATA_ROOT"] = {str(prod.root.parent.parent)!r}
        from core.production import deployment
        from core.workspace import workspaces
        deployment.save_settings(workspaces.resolve("prod"), deployment.AppSettings("Third", "", True))
    """)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])  # another process
    found = serving.read(serving.deployed(prod), v.version)
    assert found.settings.title == "Third" and found.settings.keep_images
    assert found.policy is None
    accepted.accept(prod, v.version, Policy(refer_below=1.01), levers.load_utility(prod, v.classes)[0])
    assert serving.read(serving.deployed(prod), v.version).policy.policy == Policy(refer_below=1.01)

    with store.connect(prod) as con:  # a write that bypasses publication (another tool): check finds it, repair publishes
        con.execute("UPDATE meta SET value = '\"Fourth\"' WHERE key = 'setting:app_title'")
    assert serving.read(serving.deployed(prod), v.version).settings.title == "Third"
    assert [p.kind for p in check.check(prod).problems] == ["serving_stale"]
    assert check.check(prod, repair=True).remaining == ()
    assert serving.read(serving.deployed(prod), v.version).settings.title == "Fourth"


def test_training_and_serving_see_the_same_pixels_for_a_large_photo(ws: Workspace) -> None:
    from types import SimpleNamespace

    from core.data import gather as gather_mod
    from core.model import datasets
    from core.model.config import DataConfig

    data = big_jpeg()
    gather_mod.ingest(ws, gather_mod.upload_items([("big.jpg", data), ("small.png", png_bytes(3))], "x"))
    catalog = store.images(ws).sort_values("path")
    for resize in ("squish", "crop", "pad"):
        trained_on = datasets.load_pixels(ws, catalog, DataConfig(size=48, resize=resize))
        served = prediction.decode_for(SimpleNamespace(size=48, resize=resize), "big.jpg", data)
        big = catalog["path"].str.endswith(".jpg").to_numpy().nonzero()[0][0]
        np.testing.assert_array_equal(trained_on[big], served.pixels)
        assert served.size == (1600, 1200) and served.properties["width"] == 1600
