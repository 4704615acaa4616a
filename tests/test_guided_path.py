"""The guided path: each step ends with the next one as a link, and a page that needs something missing says what
and links to where it is done (AppTest; the browser walk clicks through the same links)."""

from __future__ import annotations

import pytest

from core.workspace import store, workspaces
from core.workspace.paths import Workspace
from tests.helpers import app, errors, links


def test_a_new_workspace_leads_to_gather_then_verify_then_train(make_folder) -> None:
    at = app("app_pages/workspaces.py")
    at.text_input(key="ws_new_name").input("bears")
    at.button(key="ws_new_create").click().run()
    assert not at.exception and any("Created 'bears'; it is open now." in s.value for s in at.success)
    assert "gather" in links(at)["Next: gather images"]

    at = app("app_pages/gather.py", "bears")
    assert not links(at)  # nothing imported yet: no next step
    at.text_input(key="gather_folder_path").input(str(make_folder({"black": 3, "grizzly": 3})))
    at.button(key="gather_folder_go").click().run()
    assert at.button(key="gather_verify").label == "Next: verify the images"
    at.button(key="gather_verify").click().run()
    assert not at.exception and not errors(at)
    assert any("Verified 6 images: 0 quarantined" in s.value for s in at.success)
    assert (
        "train" in links(at)["Next: train a model"] and "explore" in links(at)["Or look at the images first (Verify and explore)"]
    )


def test_explore_without_images_leads_to_gather() -> None:
    workspaces.create_workspace("empty")
    at = app("app_pages/explore.py", "empty")
    assert not at.exception and any("No images yet" in i.value for i in at.info)
    assert "gather" in links(at)["Go to Gather"]


def test_pages_that_need_a_production_model_say_which_one_to_promote(prod: Workspace) -> None:
    with store.connect(prod) as con:
        con.execute("DELETE FROM deployments")  # v1 trained, never promoted
    store.publish_serving(prod)  # as a workspace never promoted has it published
    for page in ("app_pages/policy.py", "app_pages/summary.py", "app_pages/predict.py"):
        at = app(page, "prod")
        assert not at.exception and not errors(at), page
        assert any("Model v1 is trained but not in production yet" in i.value for i in at.info), page
        assert "train" in links(at)["Go to Train: make v1 production"], page


def test_pages_that_need_a_model_link_to_train() -> None:
    from tests.helpers import fill

    ws = workspaces.create_workspace("fresh")
    fill(ws, {"red": 3, "blue": 3})
    for page in ("app_pages/evaluate.py", "app_pages/policy.py"):
        at = app(page, "fresh")
        assert not at.exception and "train" in links(at)["Go to Train"], page


def test_training_progress_in_plain_words() -> None:
    from core.model.config import TrainConfig
    from core.model.events import BatchEvent
    from core.model.train_report import progress_words

    cfg = TrainConfig(freeze_epochs=2, epochs=None)  # unfrozen epochs chosen automatically: auto_epochs of them
    assert progress_words(BatchEvent("cache", 261, 375, 12.4), cfg) == (
        "preparing images 261/375 (decoded once, reused by later runs) · about 12 s left in this step"
    )
    assert progress_words(BatchEvent("features", 1, 3, None), cfg) == "measuring the validation images 1/3"
    assert progress_words(BatchEvent("frozen", 17, 32, 5.0), cfg).startswith("training the new head: epoch 2 of 2, batch 1/16")
    assert progress_words(BatchEvent("unfrozen", 16, 32, None), cfg) == (
        f"training all layers: epoch 1 of {cfg.auto_epochs}, batch 16/{32 // cfg.auto_epochs}"
    )


def test_one_bar_for_the_whole_run_with_its_time_left_from_measured_rates() -> None:
    from core.model.events import BatchEvent, StageEvent
    from core.model.train_report import UNFROZEN_PER_FROZEN, RunPlan, overall

    plan = RunPlan(train=64, valid=32, test=10, to_decode=96, test_to_decode=10, batch_size=32, freeze_epochs=1, epochs=None)
    cold = [(0.0, StageEvent("cache", "decoding")), (9.6, BatchEvent("cache", 48, 96, None))]  # 0.2 s per image
    start = overall(plan, cold, 9.6)
    assert (start.step, start.steps, start.eta_s) == (1, 5, None)  # the network's speed is not known yet
    assert start.fraction == pytest.approx(0.5 / 5) and start.words().startswith(
        "Step 1 of 5: preparing images · time left known after"
    )
    timeline = [
        *cold,
        (19.2, BatchEvent("cache", 96, 96, None)),
        (19.2, StageEvent("features", "computing validation features")),
        (20.2, BatchEvent("features", 1, 1, 0.0)),  # 32 images in 1 s: 1/32 s per image through the network
    ]
    now = overall(plan, timeline, 20.2)
    forward = 1 / 32
    later = plan.freeze_epochs * 64 * forward + 10 * (0.2 + forward)  # frozen, then test (decoded, then scored)
    assert now.step == 2 and now.eta_s == pytest.approx(later) and now.undecided
    assert now.fraction == pytest.approx(20.2 / (20.2 + later))
    assert now.words().startswith("Step 2 of 5: measuring the validation images · about 4 s left in all (more if")
    decided = [*timeline, (21.0, StageEvent("frozen", "head")), (23.0, BatchEvent("frozen", 2, 2, 0.0))]
    decided.append((23.5, StageEvent("unfrozen", "12% error: 2 unfrozen epoch(s)", planned=2)))
    after = overall(plan, decided, 23.5)  # the unfrozen epochs now count, at the frozen stage's measured pace
    forward = 2 / 64
    assert after.step == 4 and not after.undecided
    assert after.eta_s == pytest.approx(2 * UNFROZEN_PER_FROZEN * 64 * forward + 10 * (0.2 + forward))
    none = [*decided[:-1], (23.5, StageEvent("unfrozen", "4% error: 0 unfrozen epoch(s)", planned=0))]
    assert overall(plan, none, 23.5).steps == 4  # no unfrozen step: the test images are next
    warm = RunPlan(train=64, valid=32, test=0, to_decode=0, test_to_decode=0, batch_size=32, freeze_epochs=1, epochs=0)
    assert overall(warm, [], 0.0).steps == 2  # nothing to decode, nothing to test: features, then the head


def test_a_training_estimate_comes_from_a_run_measured_here(prod: Workspace) -> None:
    from dataclasses import replace

    from core.model import estimate, registry
    from core.model.config import TrainConfig

    meta = registry.read_meta(prod, "v1")
    cfg = TrainConfig(**{k: v for k, v in meta["config"].items() if k != "data"})
    cfg = replace(cfg, data=replace(cfg.data, size=meta["preprocessing"]["size"]), backbone=meta["config"]["backbone"])
    n = len(meta["train_ids"]) + len(meta["valid_ids"])
    same = estimate.estimate(prod, replace(cfg, epochs=0), n)
    wall = meta["metrics"]["wall_seconds"]
    frozen = sum(h["seconds"] for h in meta["metrics"]["history"] if h["stage"] == "frozen")
    unfrozen = sum(h["seconds"] for h in meta["metrics"]["history"] if h["stage"] == "unfrozen")
    per_frozen = frozen / max(sum(h["stage"] == "frozen" for h in meta["metrics"]["history"]), 1)
    assert same.seconds == pytest.approx(wall - frozen - unfrozen + cfg.freeze_epochs * per_frozen)
    assert "scaled from v1 here" in same.words()
    double = estimate.estimate(prod, replace(cfg, epochs=0), 2 * n)
    assert double.seconds == pytest.approx(2 * same.seconds)  # twice the images, twice the time
    other = estimate.estimate(prod, replace(cfg, data=replace(cfg.data, size=cfg.data.size + 32)), n)
    assert other.seconds is None and "measures it" in other.words()  # another image size: nothing comparable
    asked = meta["config"]["data"]["size"]  # what the form asked (0: automatic) also matches
    automatic = estimate.estimate(prod, replace(cfg, data=replace(cfg.data, size=0)), n)
    assert (automatic.seconds is not None) == (asked == 0)
    if asked:
        assert "the first" in automatic.words() and "at the automatic size" in automatic.words()
