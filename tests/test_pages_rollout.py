"""Rollout and Review through AppTest, and what they change on Predict, Train, Explore and Monitor."""

from __future__ import annotations

import dataclasses

from core.drivetrain import accepted
from core.model import registry, scoring
from core.production import prediction, prediction_log, review, rollout
from core.workspace import store
from core.workspace.paths import Workspace
from tests.helpers import answered, app, colour_image, derived_version, errors, upload


def test_shadow_from_the_rollout_page_never_reaches_the_predict_page(prod: Workspace) -> None:
    v1 = registry.production_version(prod)
    v2 = derived_version(prod, v1, permute=[1, 2, 0])  # answers differently on every image
    at = app("app_pages/rollout.py", "prod")
    assert not at.exception and not errors(at)
    at.selectbox(key="rollout_candidate").set_value(v2).run()
    at.text_input(key="rollout_start_note").set_value("try it").run()
    at.button(key="rollout_start").click().run()
    assert not at.exception and any(f"{v2} is in shadow" in s.value for s in at.success)
    assert rollout.current(prod).stage == "shadow"
    assert any("Promotion gate: not met yet" in m.value for m in at.markdown)

    page = upload(app("app_pages/predict.py", "prod"), [("red.png", colour_image(0, 1))])
    assert not page.exception and not errors(page)
    assert answered(page, "red")  # production's answer, not the candidate's
    assert any("In the review queue" in c.value and "the candidate disagreed" in c.value for c in page.caption)
    prediction_log.background(prod).flush()
    with store.connect(prod) as con:
        rows = con.execute(
            "SELECT model_version, stage, served, predicted FROM log_predictions ORDER BY model_version"
        ).fetchall()
    assert rows[0][:3] == (v1, "production", True) and rows[0][3] == "red"
    assert rows[1][:3] == (v2, "shadow", False) and rows[1][3] != "red"

    at = app("app_pages/rollout.py", "prod")
    assert any("Latest disagreements** (1 shown" in m.value for m in at.markdown)
    assert at.button(key="rollout_expand").disabled  # the gate is not met: the analyst must say so
    at.checkbox(key="rollout_anyway").check().run()
    at.button(key="rollout_expand").click().run()
    assert registry.production_version(prod) == v2 and rollout.current(prod) is None
    assert rollout.history(prod)[0]["figures"]["gate_passed"] is False
    at.button(key="rollout_back_production").click().run()
    assert registry.production_version(prod) == v1


def test_limited_and_stop_from_the_rollout_page(prod: Workspace) -> None:
    v2 = derived_version(prod, registry.production_version(prod))
    rollout.start(prod, v2, "shadow")
    at = app("app_pages/rollout.py", "prod")
    assert any("has no accepted decision policy" in w.value for w in at.warning)
    at.button(key="rollout_policy").click().run()
    assert accepted.active(prod, v2) is not None and not any("no accepted decision policy" in w.value for w in at.warning)
    at.slider(key="rollout_limited_share").set_value(0.3).run()
    at.button(key="rollout_limit").click().run()
    active = rollout.current(prod)
    assert active.stage == "limited" and abs(active.scope.share - 0.3) < 1e-9
    at.button(key="rollout_stop").click().run()
    assert rollout.current(prod) is None and not at.exception


def queue(ws: Workspace, n: int) -> list[prediction.Prediction]:
    predictor = scoring.load_predictor(ws)
    preds, _ = prediction.predict_images(
        predictor, [(f"q{i}.png", colour_image(i % 3, 300 + i)) for i in range(n)], keep_bytes=True
    )
    preds = [dataclasses.replace(p, ood=True) for p in preds]
    prediction_log.log_predictions(ws, preds, "app", predictor.version, keep_images=False)
    return preds


def test_review_page_labels_with_one_click_and_adds_to_the_data(prod: Workspace) -> None:
    preds = queue(prod, 3)
    at = app("app_pages/review.py", "prod")
    assert not at.exception and not errors(at)
    assert at.metric[0].value == "3"
    first = review.pending(prod)[0]
    assert at.button(key=f"label_{first.id}_green").disabled  # no label without a name
    labels = [b.key for b in at.button if str(b.key).startswith("label_") and str(b.key).endswith("_green")]
    assert labels == [f"label_{i.id}_green" for i in review.pending(prod)]  # oldest first
    at.session_state["review_order"] = "Newest first"  # what the order control holds once clicked
    at.run()
    newest = [b.key for b in at.button if str(b.key).startswith("label_") and str(b.key).endswith("_green")]
    assert newest == labels[::-1] and at.metric[0].value == "3"
    at.session_state["review_order"] = "Oldest first"
    at.run()
    assert any("Type your name above to label" in i.value for i in at.info)
    at.text_input(key="review_reviewer").set_value("ana").run()
    assert not at.button(key=f"label_{first.id}_green").disabled
    at.button(key=f"label_{first.id}_green").click().run()
    assert any("as green" in s.value for s in at.success)
    with store.connect(prod) as con:
        assert con.execute("SELECT prediction_id, label, source, reviewer FROM log_feedback").fetchall() == [
            (first.id, "green", "review", "ana")
        ]
    assert at.metric[0].value == "2"
    agreed = int(first.predicted == "green")
    assert any(f"Reviewers agreed with the model on {agreed} of 1 (too few (n 1) for a rate)" in c.value for c in at.caption)
    at.button(key="review_undo").click().run()
    assert any("waits in the queue again" in s.value for s in at.success) and at.metric[0].value == "3"
    at.button(key=f"label_{first.id}_green").click().run()
    assert at.metric[0].value == "2"
    at.button(key="review_add").click().run()
    assert any("Added 1 image(s) to the data" in s.value for s in at.success)
    added = store.images(prod).query("source_kind == 'production'")
    assert added["prediction_id"].tolist() == [first.id] and added["labelled_by"].tolist() == ["ana"]
    assert {p.id for p in preds} >= {first.id}

    explore = app("app_pages/explore.py", "prod")
    assert not explore.exception
    assert any("Production images came back" in c.value for c in explore.caption)
    monitor = app("app_pages/monitor.py", "prod")
    assert not monitor.exception
    estimates = next(d.value for d in monitor.dataframe if "estimate" in d.value.columns).set_index("estimate")
    reviewed = estimates.loc["reviewed items (the hard cases: lower by design)"]
    assert reviewed["n"] == 1 and reviewed["reading"] == "too few (n 1)"  # one label: counted, never a headline
    assert review.backlog(prod).agreed == agreed  # the label itself is counted where it is one of a count
    assert any("1 of the 3 hard cases are labelled" in c.value for c in monitor.caption)


def test_train_page_warns_about_model_labels_and_asks_per_run(prod: Workspace) -> None:
    predictor = scoring.load_predictor(prod)
    preds, _ = prediction.predict_images(
        predictor, [(f"m{i}.png", colour_image(i % 3, 600 + i)) for i in range(4)], keep_bytes=True
    )
    prediction_log.log_predictions(
        prod, [dataclasses.replace(p, ood=False) for p in preds], "app", predictor.version, keep_images=True
    )
    review.add_to_data(prod, model_labels=True)
    at = app("app_pages/train.py", "prod")
    assert not at.exception
    assert any("carry labels only the model gave" in w.value for w in at.warning)
    assert not at.checkbox(key="train_allow_model_labels").value
