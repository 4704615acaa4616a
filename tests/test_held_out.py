"""Test images are for reporting only: nothing fits, selects or thresholds on them; Evaluate and the
command line report them beside validation; versions are compared on the test images both held out."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from safetensors.numpy import load_file

from core.data import gather
from core.drivetrain import optimizer
from core.model import cleaning, datasets, evaluation, registry, runs, scoring
from core.production import prediction
from core.production.monitoring import reference
from core.workspace import split_ops, store
from core.workspace.paths import Workspace
from core.workspace.splits import SplitPlan
from tests.helpers import TINY, app, cli, colour_image, errors, fill

CFG = replace(TINY, epochs=0, freeze_epochs=2)


@pytest.fixture
def three(ws: Workspace) -> Workspace:
    fill(ws, {"red": 14, "blue": 14, "green": 14})
    split_ops.resplit(ws, SplitPlan(seed=1, valid=0.25, test=0.25))  # enough test images for a small workspace
    tested = store.images(ws).query("split == 'test'")
    assert len(tested) >= 3, "the fixture needs test images to mean anything"
    return ws


def test_no_test_image_reaches_training_selection_or_a_reference(three: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    test_ids = set(store.images(three).query("split == 'test'")["id"])
    phase, loaded = ["fitting"], []
    real_load, real_fit = datasets.load_pixels, runs.fine_tune

    def spy_load(ws, rows, cfg, on_progress=None):  # noqa: ANN001, ANN202
        loaded.append((phase[0], set(rows["id"])))
        return real_load(ws, rows, cfg, on_progress)

    def spy_fit(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        result = real_fit(*args, **kwargs)
        phase[0] = "reporting"  # every choice is made once fine_tune returns
        return result

    monkeypatch.setattr(datasets, "load_pixels", spy_load)
    monkeypatch.setattr(runs, "fine_tune", spy_fit)
    summary = runs.train_workspace(three, CFG)

    fitting = set().union(*(ids for p, ids in loaded if p == "fitting"))
    assert fitting and fitting.isdisjoint(test_ids)  # no test pixel reached a batch, the epoch choice or a feature
    assert [ids for p, ids in loaded if p == "reporting"] == [test_ids]  # scored once, after the model was final
    meta = registry.read_meta(three, summary["version"])
    assert set(meta["test_ids"]) == test_ids
    assert test_ids.isdisjoint(meta["train_ids"]) and test_ids.isdisjoint(meta["valid_ids"])
    arrays = registry.load_reference(three, summary["version"])
    n_valid = len(meta["valid_ids"])
    assert len(arrays["valid_probs"]) == len(arrays["valid_features"]) == len(arrays["valid_ood_scores"]) == n_valid
    assert set(optimizer.validation(three, summary["version"]).ids) == set(meta["valid_ids"])  # the policy's fit data
    assert reference.log_reference(three, summary["version"]).accuracy == pytest.approx(
        float((arrays["valid_probs"].argmax(1) == arrays["valid_labels"]).mean())
    )  # monitoring's reference: validation figures only


def test_test_labels_change_nothing_that_was_fitted(three: Workspace) -> None:
    """The same run after relabelling every test image: identical weights, threshold and validation figures."""
    first = runs.train_workspace(three, CFG)
    catalog = store.images(three)
    tested = catalog.query("split == 'test'")
    swap = {"red": "blue", "blue": "green", "green": "red"}
    cleaning.apply(three, [cleaning.Decision(r.id, "relabel", swap[r.label]) for r in tested.itertuples()])
    second = runs.train_workspace(three, CFG)
    a = load_file(str(three.models_dir / first["version"] / registry.WEIGHTS))
    b = load_file(str(three.models_dir / second["version"] / registry.WEIGHTS))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    ra, rb = registry.load_reference(three, first["version"]), registry.load_reference(three, second["version"])
    for key in ("valid_probs", "valid_labels", "ood_threshold"):
        np.testing.assert_array_equal(ra[key], rb[key])
    assert first["valid_accuracy"] == second["valid_accuracy"]
    ma, mb = registry.read_meta(three, first["version"]), registry.read_meta(three, second["version"])
    by_id = dict(zip(mb["test_ids"], rb["test_probs"], strict=True))
    np.testing.assert_allclose(ra["test_probs"], np.stack([by_id[i] for i in ma["test_ids"]]), atol=1e-5)  # other batches
    assert first["test_accuracy"] != second["test_accuracy"]  # only the report sees the new labels


def test_train_and_evaluate_report_test_beside_valid(three: Workspace) -> None:
    trained = cli("train", "--workspace", three.name, "--freeze-epochs", "2", "--epochs", "0", "--size", "32", "--json")
    assert trained.returncode == 0, trained.stderr
    summary = json.loads(trained.stdout)
    arrays = registry.load_reference(three, summary["version"])
    expected = float((arrays["test_probs"].argmax(1) == arrays["test_labels"]).mean())
    assert summary["test_accuracy"] == pytest.approx(expected) and summary["test_error"] == pytest.approx(1 - expected)
    assert summary["test_images"] == len(store.images(three).query("split == 'test'"))
    evaluated = json.loads(cli("evaluate", "--workspace", three.name, "--json").stdout)
    assert evaluated["test_accuracy"] == pytest.approx(expected) and evaluated["test_error"] == pytest.approx(1 - expected)
    assert evaluated["accuracy"] == evaluated["valid_accuracy"] == pytest.approx(summary["valid_accuracy"])
    assert evaluated["test"]["images"] == summary["test_images"]
    text = cli("evaluate", "--workspace", three.name).stdout
    assert "optimistic" in text and f"test: accuracy {expected:.4f} on {summary['test_images']} held-out images" in text


def test_versions_are_compared_on_the_test_images_both_held_out(ws: Workspace) -> None:
    fill(ws, {"red": 12, "blue": 12})
    with store.connect(ws) as con:  # a workspace from before test sets: no test image
        con.execute("UPDATE images SET split = 'train' WHERE split = 'test'")
    v1 = runs.train_workspace(ws, CFG)["version"]
    assert evaluation.load_test(ws, v1).ids == []
    split_ops.draw_test(ws, 0.25)  # drawn from training images, which v1 learnt from
    assert evaluation.load_test(ws, v1).ids == []  # so none of them is a test image for v1
    v2 = runs.train_workspace(ws, CFG)["version"]
    assert len(evaluation.load_test(ws, v2).ids) == 6
    old, new = evaluation.held_out_by_both(ws, v1, v2)
    assert old.ids == new.ids == []

    for k, label in enumerate(("red", "blue")):  # more images: the new ones that land in test are new to both versions
        gather.ingest(ws, gather.upload_items([(f"n{i}.png", colour_image(k, 700 + 50 * k + i)) for i in range(20)], label))
    catalog = store.images(ws)
    fresh = catalog[(catalog["split"] == "test") & (catalog["split_by"] == "hash")]
    assert len(fresh) >= 1
    old, new = evaluation.held_out_by_both(ws, v1, v2)
    assert old.ids == new.ids and set(old.ids) == set(fresh["id"])
    assert (ws.models_dir / v1 / evaluation.TEST_SCORES).is_file()  # scored on first use, kept for next time

    predictor = scoring.load_predictor(ws, v1)
    files = [(i, (ws.root / catalog.set_index("id").loc[i, "path"]).read_bytes()) for i in old.ids]
    served, _ = prediction.predict_images(predictor, files)
    np.testing.assert_allclose(np.stack([p.probs for p in served]), old.probs, atol=1e-5)  # as production scores them


def test_evaluate_page_shows_test_beside_validation_and_compares_on_common_images(three: Workspace) -> None:
    runs.train_workspace(three, CFG)
    runs.train_workspace(three, CFG)
    test = evaluation.load_test(three, "v2")
    valid = evaluation.load(three, "v2")
    at = app("app_pages/evaluate.py", three.name)
    assert not at.exception and not errors(at)
    assert [m.value for m in at.metric][:4] == [
        test.rate.short(),  # a handful of images: "too few (n 6)", never a bare percentage
        str(len(test.ids)),
        valid.rate.short(),
        str(len(valid.ids)),
    ]
    assert len(test.ids) < 30 and at.metric[0].value == f"too few (n {len(test.ids)})"
    assert any("optimistic" in c.value for c in at.caption)
    assert at.radio(key="eval_images").value == "test"
    assert any(f"On the same {len(test.ids)} test images, held out by both" in h.value for h in at.subheader)
    at.radio(key="eval_images").set_value("validation").run()
    assert not at.exception and any("validation images with the highest loss" in c.value for c in at.caption)
    at.selectbox(key="eval_enlarge").set_value(at.selectbox(key="eval_enlarge").options[1]).run()
    assert not at.exception


def test_evaluate_page_offers_to_draw_a_test_set_when_there_is_none(ws: Workspace) -> None:
    fill(ws, {"red": 10, "blue": 10})
    with store.connect(ws) as con:
        con.execute("UPDATE images SET split = 'train' WHERE split = 'test'")
    runs.train_workspace(ws, CFG)
    at = app("app_pages/evaluate.py", ws.name)
    assert not at.exception and at.metric[0].value == "no test images"
    assert any("no test images to report on" in w.value for w in at.warning)
    at.button(key="eval_draw_test").click().run()
    assert not at.exception and any("into test (audited)" in s.value for s in at.success)
    assert (store.images(ws)["split"] == "test").sum() == 2
