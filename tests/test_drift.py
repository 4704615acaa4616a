"""Drift per window on a real log: clean windows stay quiet, a shifted window alerts with words, examples and
a lever; small windows are not judged; the reference is measured like production and holds no test image."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import numpy as np
import pytest
from PIL import Image

from core.data import images
from core.model import registry, scoring
from core.production import prediction, prediction_log
from core.production.monitoring import drift, drift_charts, queries, reference
from core.workspace import store
from core.workspace.paths import Workspace
from tests.helpers import cli, edit_log, encode

START = datetime(2026, 3, 2)


def colour(label: int, seed: int, darken: float = 1.0) -> bytes:
    rng = np.random.default_rng(seed)
    base = np.array([[200, 40, 40], [40, 40, 200], [40, 180, 40]][label], dtype=np.float64)
    pixels = np.clip((base + rng.normal(0, 25, (48, 48, 3))) * darken, 0, 255).astype(np.uint8)
    return encode(Image.fromarray(pixels, "RGB"))


def log_day(ws: Workspace, day: int, n: int, darken: float = 1.0, dark_share: float = 0.0, keep: bool = True) -> None:
    predictor = scoring.load_predictor(ws)
    rng = np.random.default_rng(day)
    items = []
    for i in range(n):
        dark = rng.random() < dark_share
        items.append((f"d{day}-{i}{'-dark' if dark else ''}.png", colour(i % 3, 10_000 * (day + 1) + i, darken if dark else 1.0)))
    preds, failed = prediction.predict_images(predictor, items, keep_bytes=keep)
    assert not failed
    stamps = [START + timedelta(days=day, minutes=i) for i in range(len(preds))]
    prediction_log.log_predictions(ws, preds, "simulation", predictor.version, stamps, keep)


def test_clean_windows_stay_quiet_and_a_darker_window_alerts_with_its_images(prod: Workspace) -> None:
    for day in range(4):
        log_day(prod, day, 60)
    log_day(prod, 4, 60, darken=0.35, dark_share=0.8)
    log_day(prod, 5, 12)  # too few to judge
    report = drift.drift_report(prod)

    assert [w.n for w in report.windows] == [60, 60, 60, 60, 60, 12]
    assert [w.judged for w in report.windows] == [True] * 5 + [False]
    metrics = {t.metric for t in report.windows[0].tests}
    assert {"class_mix", "confidence", "energy", "embedding", "ood_rate", *drift.PROPERTY_METRICS} <= metrics
    assert all(0 <= t.p_value <= t.adjusted_p <= 1 for w in report.windows for t in w.tests)
    assert [a.window for a in report.alerts] and {a.window for a in report.alerts} == {"2026-03-06"}

    dark = next(a for a in report.alerts if a.metric == "brightness")
    assert "darker" in dark.words and dark.effect < 0 and dark.adjusted_p < drift.ALERT_Q and dark.n == 60
    assert len(dark.examples) == drift.EXAMPLES and all(e.name.endswith("-dark.png") for e in dark.examples)
    assert all(e.image_path and (prod.root / e.image_path).is_file() for e in dark.examples) and dark.images_kept
    assert [e.value for e in dark.examples] == sorted(e.value for e in dark.examples)  # darkest first
    assert "gather images like these" in dark.lever

    estimates = report.windows[0].estimates
    assert estimates is not None and 0 <= estimates.accuracy_atc <= 1 and 0 <= estimates.accuracy_confidence <= 1
    assert set(estimates.class_mix) == set(registry.read_meta(prod, report.reference_version)["classes"])
    for w in report.windows:  # ATC with its interval, drawn as a band on the estimates chart
        if w.estimates is not None:
            assert w.estimates.accuracy_atc_low <= w.estimates.accuracy_atc <= w.estimates.accuracy_atc_high
    names = [t.name for t in drift_charts.estimates_figure(report).data]
    assert "ATC 95% interval" in names and "estimated (ATC)" in names


def test_a_window_without_kept_images_says_so_and_names_its_examples(prod: Workspace) -> None:
    for day in range(2):
        log_day(prod, day, 60, keep=False)
    log_day(prod, 2, 60, darken=0.3, dark_share=0.8, keep=False)
    report = drift.drift_report(prod)
    dark = next(a for a in report.alerts if a.metric == "brightness")
    assert not dark.images_kept and all(e.image_path is None and e.name for e in dark.examples)


def test_windows_of_the_last_n_predictions(prod: Workspace) -> None:
    log_day(prod, 0, 100)
    log_day(prod, 1, 50)
    report = drift.drift_report(prod, queries.LogFilter(window="predictions", size=40))
    assert [w.n for w in report.windows] == [40, 40, 40, 30]


def test_predictions_of_another_version_are_counted_out_not_mixed_in(prod: Workspace) -> None:
    log_day(prod, 0, 40)
    assert edit_log(prod, {"model_version": "'v9'"}, "name LIKE 'd0-1%'") > 0  # some of them by another version
    with store.connect(prod) as con:
        moved = con.execute("SELECT count(*) FROM log_predictions WHERE model_version = 'v9'").fetchone()[0]
    report = drift.drift_report(prod)
    assert moved > 0 and report.excluded == moved and report.windows[0].n == 40 - moved


def test_the_reference_is_measured_like_production_and_holds_no_test_image(prod: Workspace) -> None:
    version = registry.production_version(prod)
    meta = registry.read_meta(prod, version)
    ref = reference.drift_reference(prod, version)
    assert len(ref.properties) == len(meta["reference_property_ids"]) == len(meta["train_ids"]) + len(meta["valid_ids"])
    assert set(meta["reference_property_ids"]).isdisjoint(meta.get("test_ids", []))
    assert len(ref.confidence) == len(ref.energy) == len(ref.embedding) == len(meta["valid_ids"])
    catalog = store.images(prod).set_index("id")
    image_id = meta["valid_ids"][0]
    served, _ = prediction.predict_images(
        scoring.load_predictor(prod, version), [("x.png", (prod.root / catalog.loc[image_id, "path"]).read_bytes())]
    )
    row = meta["reference_property_ids"].index(image_id)
    for k in ("brightness", "contrast", "saturation", "sharpness", "width", "height"):
        assert ref.properties[k].iloc[row] == pytest.approx(served[0].properties[k], abs=1e-9)  # one function, one input
    position = meta["valid_ids"].index(image_id)
    assert ref.energy[position] == pytest.approx(served[0].energy, abs=1e-4)
    np.testing.assert_allclose(ref.embedding[position], served[0].embedding, atol=1e-4)


def test_an_older_version_derives_its_property_reference_once(prod: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors.numpy import load_file, save_file

    version = registry.production_version(prod)
    path = prod.models_dir / version / registry.REFERENCE
    arrays = {k: v for k, v in load_file(str(path)).items() if k not in ("reference_properties", "valid_logits")}
    save_file(arrays, str(path))
    with store.connect(prod) as con:  # an older version: registered before checksums were recorded too
        con.execute("UPDATE models SET checksums = NULL WHERE version = ?", [version])
    store.publish_serving(prod)  # as this version's first open of such a workspace publishes it
    fresh = reference.drift_reference(prod, version)
    assert len(fresh.properties) == len(registry.read_meta(prod, version)["reference_property_ids"])
    assert (prod.models_dir / version / reference.PROPERTY_CACHE).is_file()

    def no_decoding(*args: object) -> None:
        raise AssertionError("decoded again")

    monkeypatch.setattr(images, "load_rgb", no_decoding)  # the second time reads the kept file
    again = reference.drift_reference(prod, version)
    np.testing.assert_allclose(again.properties.to_numpy(), fresh.properties.to_numpy())


def test_cli_monitor_names_the_window_that_moved_with_its_tests_estimates_and_examples(prod: Workspace) -> None:
    for day in range(2):
        log_day(prod, day, 60)
    log_day(prod, 2, 60, darken=0.3, dark_share=0.8)
    done = cli("monitor", "--workspace", "prod", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["reference_version"] == "v1" and data["predictions"] == 180 and data["excluded"] == 0
    assert all(w["judged"] and len(w["tests"]) >= 12 for w in data["windows"])
    test = data["windows"][0]["tests"][0]
    assert {"metric", "statistic", "p_value", "adjusted_p", "effect", "words", "n"} <= set(test)
    assert len(data["estimates"]) == 3 and {"accuracy_atc", "accuracy_confidence", "class_mix"} <= set(data["estimates"][0])
    alerts = [a for a in data["alerts"] if a["metric"] == "brightness"]
    assert [a["window"] for a in alerts] == ["2026-03-04"] and len(alerts[0]["example_ids"]) == drift.EXAMPLES
    with store.connect(prod) as con:
        names = dict(con.execute("SELECT id, name FROM log_predictions").fetchall())
    assert all(names[i].endswith("-dark.png") for i in alerts[0]["example_ids"])
    text = cli("monitor", "--workspace", "prod").stdout
    assert "alert 2026-03-04 brightness: images" in text and "darker" in text and "lever: gather images like these" in text


def test_a_class_that_grows_is_an_alert_measured_against_the_expected_mix(prod: Workspace) -> None:
    ref = reference.drift_reference(prod, registry.production_version(prod))
    assert ref.prior_n == len(ref.properties) and ref.expected_mix.sum() == pytest.approx(1.0)
    assert ref.expected_counts.sum() == pytest.approx(ref.prior_n)
    for day in range(2):
        log_day(prod, day, 60)
    predictor = scoring.load_predictor(prod)
    items = [(f"red{i}.png", colour(0, 50_000 + i)) for i in range(60)]  # day 2: only red
    preds, _ = prediction.predict_images(predictor, items, keep_bytes=True)
    stamps = [START + timedelta(days=2, minutes=i) for i in range(len(preds))]
    prediction_log.log_predictions(prod, preds, "simulation", predictor.version, stamps, True)
    report = drift.drift_report(prod)
    mix = [a for a in report.alerts if a.metric == "class_mix"]
    assert [a.window for a in mix] == ["2026-03-04"] and "'red' is" in mix[0].words
    assert all(e.predicted == "red" for e in mix[0].examples)


def _without_samples(report: drift.DriftReport) -> tuple[object, ...]:
    return (report.windows, report.alerts, report.excluded, report.reference_version)


def test_completed_windows_tests_are_kept_and_tested_again_only_when_their_inputs_change(
    prod: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    for day in range(3):
        log_day(prod, day, 60)
    log_day(prod, 3, 60, darken=0.35, dark_share=0.8)
    today = datetime.combine(store.now().date(), datetime.min.time())
    predictor = scoring.load_predictor(prod)  # and a window that still grows: today's
    preds, _ = prediction.predict_images(predictor, [(f"t{i}.png", colour(i % 3, 7_000 + i)) for i in range(40)])
    prediction_log.log_predictions(prod, preds, "simulation", predictor.version, [today] * len(preds), False)

    tested: list[int] = []
    window_tests = drift._window_tests
    monkeypatch.setattr(drift, "_window_tests", lambda *a: tested.append(len(a[3])) or window_tests(*a))
    first = drift.drift_report(prod)
    assert len(tested) == 5  # every window, the first time
    tested.clear()
    again = drift.drift_report(prod)
    assert tested == [40]  # only today's: the four completed windows read back
    assert _without_samples(again) == _without_samples(first) and again.alerts  # the same tests, estimates and alerts

    ids = [p.id for p in preds[:0]]  # nothing on today's window; a label given late on day 1's predictions
    with store.connect(prod) as con:
        ids = [r[0] for r in con.execute(
            "SELECT id FROM log_predictions WHERE CAST(ts AS DATE) = ? ORDER BY id LIMIT 12", [(START + timedelta(days=1)).date()]
        ).fetchall()]  # fmt: skip
    for pid in ids:
        prediction_log.add_feedback(prod, pid, "red", ["red", "blue", "green"], source="app")
    tested.clear()
    later = drift.drift_report(prod)
    assert sorted(tested) == [40, 60]  # day 1 (its labels changed) and today's
    assert later.windows[1].feedback == 12 and later.windows[0].tests == first.windows[0].tests
    tested.clear()
    monkeypatch.setattr(drift, "_code", lambda: "edited")  # the tests' code changed: nothing read back
    drift.drift_report(prod)
    assert len(tested) == 5
