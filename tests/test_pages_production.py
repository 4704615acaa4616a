"""Predict and Monitor through AppTest, in the analyst's app and in end-user mode."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core.model import registry
from core.production import deployment, prediction_log, simulation_jobs, traffic
from core.workspace import store
from core.workspace.paths import Workspace
from tests.helpers import answered, app, cli, colour_image, derived_version, errors, upload

ROOT = Path(__file__).resolve().parents[1]


def logged(ws: Workspace, source: str) -> list[tuple]:
    prediction_log.background(ws).flush()
    with store.connect(ws) as con:
        return con.execute(
            "SELECT id, predicted, probs, sha256 FROM log_predictions WHERE source = ? ORDER BY name", [source]
        ).fetchall()


def test_predict_page_scores_logs_once_and_takes_feedback(prod: Workspace) -> None:
    at = upload(app("app_pages/predict.py", "prod"), [("red.png", colour_image(0, 1))])
    assert not at.exception and not errors(at)
    assert answered(at, "red")
    assert [m.value.splitlines()[0] for m in at.markdown if "█" in m.value][0].startswith(
        "**red** "
    )  # top classes, drawn in text
    rows = logged(prod, "app")
    assert len(rows) == 1 and rows[0][1] == "red"
    with store.connect(prod) as con:  # measured on the writer's thread, not in the request
        assert (
            con.execute("SELECT count(*) FROM log_predictions WHERE brightness IS NOT NULL AND sharpness > 0").fetchone()[0] == 1
        )
    pid = rows[0][0]
    at.selectbox(key=f"predict_truth_{pid}").set_value("blue").run()
    at.button(key=f"predict_send_{pid}").click()
    at.run()
    assert any("recorded **blue**" in s.value for s in at.success)
    assert len(logged(prod, "app")) == 1  # reruns reuse the scored upload: logged once
    with store.connect(prod) as con:
        assert con.execute("SELECT prediction_id, label FROM log_feedback").fetchall() == [(pid, "blue")]


def test_the_app_path_and_the_batch_path_agree(prod: Workspace, tmp_path: Path) -> None:
    images = [(f"img{k}.png", colour_image(k, 40 + k)) for k in range(3)]
    upload(app("app_pages/predict.py", "prod"), images[:1])
    folder = tmp_path / "incoming"
    folder.mkdir()
    for name, data in images:
        (folder / name).write_bytes(data)
    done = cli("predict", "--workspace", "prod", str(folder), "--json")
    assert done.returncode == 0, done.stderr
    app_row = logged(prod, "app")[0]
    batch_row = next(r for r in logged(prod, "batch") if r[3] == app_row[3])
    assert app_row[1] == batch_row[1]
    assert np.abs(np.array(app_row[2]) - np.array(batch_row[2])).max() < 1e-5
    assert len(json.loads(done.stdout)["predictions"]) == 3


def test_a_bad_upload_gets_a_message_and_the_rest_is_scored(prod: Workspace) -> None:
    from tests.helpers import bad_files

    cmyk = dict(bad_files())["cmyk.jpg"]
    files = [("broken.jpg", b"not an image"), ("ok.png", colour_image(2, 3)), ("cmyk.jpg", cmyk)]
    at = upload(app("app_pages/predict.py", "prod"), files)
    assert not at.exception
    assert any("broken.jpg" in e and "not an image" in e for e in errors(at))
    assert answered(at, "green")
    assert any("Converted before scoring: cmyk" in c.value for c in at.caption)


def test_analyst_saves_the_scope_statement(prod: Workspace) -> None:
    at = app("app_pages/predict.py", "prod")
    at.text_area(key="predict_scope").input("This only knows red, green and blue squares.")
    at.button(key="predict_save_settings").click()
    at.run()
    assert not at.exception
    assert store.get_setting(prod, "scope_statement") == "This only knows red, green and blue squares."
    assert at.info[0].value == "This only knows red, green and blue squares."


def test_end_user_mode_serves_only_the_prediction(prod: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    store.set_setting(prod, "scope_statement", "Only colours, please.")
    monkeypatch.setenv("IMAGEDP_END_USER", "1")
    monkeypatch.setenv("IMAGEDP_WORKSPACE", "prod")
    at = AppTest.from_file("../streamlit_app.py", default_timeout=120).run()
    assert not at.exception and not errors(at)
    assert at.info[0].value == "Only colours, please."
    assert not at.sidebar.selectbox and not at.expander  # no workspace picker, no deployment settings
    at = upload(at, [("blue.png", colour_image(1, 2))])
    assert answered(at, "blue")
    assert not any("Action:" in m.value for m in at.markdown)
    assert len(logged(prod, "app")) == 1


def end_user_app(monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("IMAGEDP_END_USER", "1")
    monkeypatch.setenv("IMAGEDP_WORKSPACE", "prod")
    return AppTest.from_file("../streamlit_app.py", default_timeout=120).run()


def test_the_public_gets_a_plain_answer_limits_in_their_terms_and_what_is_kept(
    prod: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = end_user_app(monkeypatch)
    assert not at.exception
    assert "up to 50 MB each" in at.file_uploader(key="predict_upload").label
    assert any("kept so that a person can check" in c.value for c in at.caption)  # the queue's images are always kept
    at = upload(at, [("blue.png", colour_image(1, 2))])
    assert answered(at, "blue") and not any("Action:" in m.value for m in at.markdown)
    pid = logged(prod, "app")[0][0]
    at.toggle(key=f"predict_wrong_{pid}").set_value(True).run()  # "Wrong answer?"
    at.selectbox(key=f"predict_truth_{pid}").set_value("green").run()
    at.button(key=f"predict_send_{pid}").click().run()
    with store.connect(prod) as con:
        assert con.execute("SELECT prediction_id, label, source FROM log_feedback").fetchall() == [(pid, "green", "end user")]

    deployment.save_settings(prod, deployment.AppSettings(keep_images=True, show_internals=True))
    at = upload(end_user_app(monkeypatch), [("red.png", colour_image(0, 3))])
    assert any("The images you send are kept" in c.value for c in at.caption)
    assert any("Action:" in m.value for m in at.markdown)  # the analyst turned the internals on


def test_an_image_unlike_the_training_images_gets_no_class_as_its_headline(
    prod: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    flags_all = derived_version(prod, registry.production_version(prod), ood_threshold=1e9)
    registry.promote(prod, flags_all)
    classes = registry.read_meta(prod, flags_all)["classes"]
    at = upload(end_user_app(monkeypatch), [("house.png", colour_image(0, 4)), ("tree.png", colour_image(1, 5))])
    assert not at.exception and not errors(at)
    heads = [m.value for m in at.markdown if m.value.startswith("### ")]
    assert heads == [f"### This doesn't look like any of: {', '.join(classes)}."] * 2
    assert all("closest is" in w.value for w in at.warning)
    table = at.dataframe[0].value
    assert list(table.columns) == ["image", "answer", "how sure"]  # no internals for the public
    assert set(table["answer"]) == {f"none of these ({', '.join(classes)})"}


def test_example_images_the_analyst_chose_are_one_click_away_and_not_logged(
    prod: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    analyst = app("app_pages/predict.py", "prod")
    chosen = analyst.multiselect(key="predict_examples").options[:2]
    assert chosen
    analyst.multiselect(key="predict_examples").set_value(chosen).run()
    analyst.button(key="predict_save_settings").click().run()
    ids = deployment.load_settings(prod).examples
    assert len(ids) == 2 and set(ids) <= set(store.images(prod).query("split == 'test'")["id"])
    at = end_user_app(monkeypatch)
    at.button(key=f"predict_example_{ids[0]}").click().run()
    assert not at.exception and not errors(at)
    assert sum(m.value.startswith("### This") for m in at.markdown) == 1
    assert any("its answer is not logged" in c.value for c in at.caption)
    assert logged(prod, "app") == []  # not logged, so no feedback button either
    assert not [t for t in at.toggle if t.key.startswith("predict_wrong_")]
    at = upload(at, [("red.png", colour_image(0, 6))])  # an upload replaces the example
    assert len(logged(prod, "app")) == 1 and not any("its answer is not logged" in c.value for c in at.caption)


def test_end_user_mode_on_a_missing_workspace_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEDP_END_USER", "1")
    monkeypatch.setenv("IMAGEDP_WORKSPACE", "nowhere")
    at = AppTest.from_file("../streamlit_app.py", default_timeout=120).run()
    assert not at.exception and errors(at)


def test_monitor_shows_a_simulated_history(prod: Workspace) -> None:
    traffic.replay_traffic(prod, traffic.TrafficConfig(days=4, per_day=40, shift_day=2))
    at = app("app_pages/monitor.py", "prod")
    assert not at.exception and not errors(at)
    labels = [m.label for m in at.metric]
    assert labels[0] == "Predictions" and re.fullmatch(r"Out of domain, last 3 day\(s\) · n [\d,]+", labels[1])
    assert re.fullmatch(r"Accuracy, all traffic in view · n [\d,]+", labels[3])  # every rate with its n
    assert all(" points vs validation" in m.delta for m in at.metric if m.delta and "vs validation" in m.delta)
    assert any(m.value.startswith("### ") and "Production" in m.value for m in at.markdown)  # the verdict leads
    charts = [c.key for c in at.get("plotly_chart")]
    assert charts == ["monitor_overview", "monitor_grid", "monitor_mix", "monitor_distribution", "monitor_estimates"]
    at.selectbox(key="monitor_version").set_value(at.selectbox(key="monitor_version").options[1])
    at.run()
    assert not at.exception and len(at.get("plotly_chart")) == 5
    at.segmented_control(key="monitor_window").set_value("predictions").run()
    at.number_input(key="monitor_size").set_value(30).run()
    assert not at.exception and not errors(at) and len(at.get("plotly_chart")) == 5


def test_monitor_offers_a_simulation_when_the_log_is_empty(prod: Workspace) -> None:
    at = app("app_pages/monitor.py", "prod")
    assert "Nothing is logged yet" in at.info[0].value
    at.number_input(key="monitor_sim_days").set_value(3)
    at.button(key="monitor_simulate").click()
    at.run()  # started in the background: no rerun of the page stops it halfway
    assert not at.exception and not errors(at)
    job = simulation_jobs.current(prod)
    assert job is not None
    if job.running:  # the page shows its progress, not a second button
        assert not [b for b in at.button if b.key == "monitor_simulate"] and at.get("progress")
    job.thread.join(timeout=600)
    at.run()
    assert prediction_log.count(prod, "simulation") > 0 and simulation_jobs.current(prod) is None  # shown once
    assert any("Simulated" in s.value for s in at.success) and len(at.get("plotly_chart")) >= 2


def test_a_page_that_reads_the_log_shows_what_this_app_just_scored(prod: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """Predictions go to the log in the background: the Monitor page opened right after scoring waits (a bounded
    time) until they are written, so it shows them; while the disk refuses them, it says they are on their way."""
    from core.production import serving
    from core.workspace import log_table

    monkeypatch.setattr(prediction_log.BackgroundLog, "linger_s", 3.0)  # the rows are still held when the page opens
    _, scored = serving.Service(prod).serve([(f"{i}.png", colour_image(i % 3, 5100 + i)) for i in range(3)], "app")
    at = app("app_pages/monitor.py", "prod")
    assert not at.exception and not errors(at) and not any("Nothing is logged yet" in i.value for i in at.info)
    assert prediction_log.count(prod, "app") == 3
    real = log_table.append
    monkeypatch.setattr(log_table, "append", lambda *a, **k: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    monkeypatch.setattr(prediction_log.BackgroundLog, "retry_s", 0.05)
    monkeypatch.setattr("ui.common.LOG_SETTLE_S", 0.5)
    serving.Service(prod).serve([("late.png", colour_image(1, 5200))], "app")
    at.run()
    assert any("1 prediction(s) made in this app are still being written" in c.value for c in at.caption)
    monkeypatch.setattr(log_table, "append", real)
    assert prediction_log.settle(prod, 600) == 0 and prediction_log.count(prod, "app") == 4  # written once it can be


def test_monitor_shows_an_alert_with_its_words_images_and_lever(prod: Workspace) -> None:
    from tests.test_drift import log_day

    for day in range(2):
        log_day(prod, day, 60)
    log_day(prod, 2, 60, darken=0.3, dark_share=0.8)
    at = app("app_pages/monitor.py", "prod")
    assert not at.exception and not errors(at)
    assert any(
        "### :orange[:material/warning:] Production needs attention" in m.value
        or "### :red[:material/error:] Production is failing" in m.value
        for m in at.markdown
    )
    assert any("**2026-03-04 · Image conditions changed**: images darker" in m.value for m in at.markdown)
    assert any("What to do: gather images like these" in c.value and "brightness" in c.value for c in at.caption)
    assert len(at.get("imgs")) >= 1 or len(at.get("image")) >= 1
    assert at.selectbox(key="monitor_close_window").value == "2026-03-04"
    assert any("that show it most" in c.value for c in at.caption)


def test_monitor_tests_again_only_when_the_log_changes(prod: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.production.monitoring import drift
    from tests.test_drift import log_day

    for day in range(2):
        log_day(prod, day, 60)
    calls = []
    real = drift.drift_report
    monkeypatch.setattr(drift, "drift_report", lambda *a, **k: calls.append(1) or real(*a, **k))
    at = app("app_pages/monitor.py", "prod")
    at.selectbox(key="monitor_metric").set_value("brightness").run()
    at.selectbox(key="monitor_close_window").set_value("2026-03-02").run()
    assert not at.exception and len(calls) == 1  # clicking through metrics and windows reuses the report
    with store.connect(prod) as con:
        pid = con.execute("SELECT id FROM log_predictions LIMIT 1").fetchone()[0]
    prediction_log.add_feedback(prod, pid, "red", ["red", "blue", "green"])
    at.run()
    assert not at.exception and len(calls) == 2  # new feedback: tested again
