"""The review queue, labels with provenance, production images back into the data, the feedback-loop guard,
and the paired comparison and promotion gate of a candidate."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.data import explore
from core.errors import UserError
from core.model import rates, registry, runs, scoring
from core.production import gate, prediction, prediction_log, review, rollout, serving
from core.production.monitoring import accuracy
from core.production.prediction_log import NONE_OF_THESE
from core.workspace import store, workspaces
from core.workspace.paths import Workspace
from tests.helpers import TINY, arm, cli, colour_image, derived_version, log_scored, until

CLASSES = ("red", "blue", "green")
ROOT = Path(__file__).resolve().parent.parent


def test_the_queue_holds_referred_out_of_domain_and_disputed_predictions_oldest_first(prod: Workspace) -> None:
    v1 = registry.production_version(prod)
    plain = log_scored(prod, 3, seed=1)
    odd = log_scored(prod, 2, seed=2, ood=True)
    sent = log_scored(prod, 2, seed=3, referred=True)
    # a candidate that disagrees on every image, in shadow: its disputes join the queue
    v2 = derived_version(prod, v1, permute=[1, 2, 0])
    active = rollout.start(prod, v2, "shadow")
    scored = serving.score(
        scoring.load_predictor(prod), scoring.load_predictor(prod, v2), active, [("d.png", colour_image(0, 9))], keep_bytes=True
    )
    prediction_log.log_predictions(prod, scored.logged, "app", v1, keep_images=False)

    b = review.backlog(prod)
    assert b.pending == 5 and b.reviewed == 0
    assert b.by_reason == {"referred": 2, "out of domain": 2, "disputed": 1}
    items = review.pending(prod)
    queued_ids = [i.id for i in items]
    assert set(queued_ids) == {p.id for p in odd + sent} | {scored.shown[0].id}
    assert [i.ts for i in items] == sorted(i.ts for i in items)  # oldest first
    assert [i.id for i in review.pending(prod, order="newest")] == queued_ids[::-1]
    assert not {p.id for p in plain} & set(queued_ids)
    disputed = next(i for i in items if i.reasons == ("disputed",))
    assert disputed.other == scored.logged[1].label and disputed.other != disputed.predicted
    assert all(i.image_path and (prod.root / i.image_path).is_file() for i in items)  # kept for the reviewer
    assert items[0].top[0][0] == items[0].predicted and len(items[0].top) == 3

    review.label(prod, items[0].id, "blue", reviewer="ana")
    assert review.backlog(prod).pending == 4 and review.backlog(prod).reviewed == 1
    with store.connect(prod) as con:
        assert con.execute("SELECT label, source, reviewer FROM log_feedback").fetchall() == [("blue", "review", "ana")]
    with pytest.raises(UserError, match="not one of the model's classes"):
        review.label(prod, items[1].id, "purple", reviewer="ana")
    with pytest.raises(UserError, match="No prediction 'nope'"):
        review.label(prod, "nope", "blue", reviewer="ana")
    with pytest.raises(UserError, match="Say who gives this label"):
        review.label(prod, items[1].id, "blue", reviewer="  ")
    assert review.backlog(prod).reviewed == 1  # nothing recorded without a name


def test_an_image_sent_again_and_again_waits_once_and_one_label_clears_it(prod: Workspace) -> None:
    predictor = scoring.load_predictor(prod)
    data = colour_image(1, 4242)
    preds, _ = prediction.predict_images(predictor, [(f"again{i}.png", data) for i in range(3)], keep_bytes=True)
    preds = [dataclasses.replace(p, ood=True) for p in preds]  # three requests, one image
    start = store.now() - timedelta(days=1)
    prediction_log.log_predictions(prod, preds, "app", predictor.version, [start + timedelta(hours=i) for i in range(3)])
    other = log_scored(prod, 1, seed=4, ood=True)
    items = review.pending(prod)
    assert review.backlog(prod).pending == 2 and len(items) == 2
    again = next(i for i in items if i.copies == 3)
    assert again.id == preds[0].id  # the oldest of the three
    prediction_log.add_feedback(prod, preds[2].id, "blue", CLASSES, source="app")  # feedback settles its own request
    assert {i.id: i.copies for i in review.pending(prod)}[preds[0].id] == 2
    review.label(prod, preds[1].id, "blue", reviewer="ana")  # a reviewer's label settles the image, whichever request
    assert [i.id for i in review.pending(prod)] == [other[0].id]


def test_undo_takes_back_the_reviewers_latest_label_and_keeps_it_in_the_audit(prod: Workspace) -> None:
    preds = log_scored(prod, 3, ood=True)
    first, second, third = review.pending(prod)
    review.label(prod, first.id, "red", reviewer="ana")
    review.label(prod, second.id, "blue", reviewer="ana")
    review.label(prod, third.id, "green", reviewer="bo")  # someone else's label is not ana's to take back
    with pytest.raises(UserError, match="who you are"):
        review.undo_last(prod, "")
    undone = review.undo_last(prod, "ana")
    assert (undone.prediction_id, undone.label) == (second.id, "blue")
    with store.connect(prod) as con:
        kept = con.execute("SELECT prediction_id, label, reviewer FROM log_feedback ORDER BY ts").fetchall()
        trail = con.execute("SELECT before, detail FROM audit WHERE action = 'undo review label'").fetchall()
    assert kept == [(first.id, "red", "ana"), (third.id, "green", "bo")]
    assert len(trail) == 1 and json.loads(trail[0][0]) == "blue" and json.loads(trail[0][1])["reviewer"] == "ana"
    assert review.undo_last(prod, "ana").prediction_id == first.id
    assert [i.id for i in review.pending(prod)] == [first.id, second.id]  # back in the queue (bo's label stays)
    with pytest.raises(UserError, match="no label to take back"):
        review.undo_last(prod, "ana")
    review.label(prod, first.id, "red", reviewer="ana")
    review.add_to_data(prod, [first.id])
    with pytest.raises(UserError, match="already added to the data"):
        review.undo_last(prod, "ana")
    assert {p.id for p in preds} == {first.id, second.id, third.id}


def test_one_label_per_prediction_whoever_clicks_and_however_often(prod: Workspace) -> None:
    log_scored(prod, 1, ood=True)
    item = review.pending(prod)[0]
    assert review.label(prod, item.id, "red", reviewer="ana") is True
    assert review.label(prod, item.id, "red", reviewer="ana") is False  # a second click, a page left open: nothing
    with pytest.raises(UserError, match="already labelled 'red' by ana"):
        review.label(prod, item.id, "blue", reviewer="bo")  # the queue had moved on
    assert cli("review", "--workspace", "prod", "--label", item.id, "red", "--reviewer", "ana").returncode == 0
    with store.connect(prod) as con:
        assert con.execute("SELECT label, reviewer FROM log_feedback WHERE source = 'review'").fetchall() == [("red", "ana")]


def test_reviewers_labelling_one_prediction_at_once_record_one_label(prod: Workspace) -> None:
    """Six processes label the same prediction at once (four say red as ana, two blue as bo): one label is
    recorded, and every process says what became of its own (labelled, already there, or whose label is)."""
    log_scored(prod, 1, ood=True)
    item = review.pending(prod)[0]
    env = {**os.environ, "IMAGEDP_DATA_ROOT": str(workspaces.data_root())}
    who = [("red", "ana")] * 4 + [("blue", "bo")] * 2
    command = [sys.executable, "-m", "core", "review", "--workspace", "prod", "--json", "--label", item.id]
    procs = [
        subprocess.Popen([*command, answer, "--reviewer", name], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for answer, name in who
    ]  # fmt: skip
    done = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    with store.connect(prod) as con:
        rows = con.execute("SELECT label, reviewer FROM log_feedback WHERE source = 'review'").fetchall()
    assert len(rows) == 1  # not one per process
    winner = rows[0]
    for (answer, name), (code, out, err) in zip(who, done, strict=True):
        assert "Traceback" not in err and "internal error" not in err
        if (answer, name) == winner:
            assert code == 0 and {"labelled", "already_labelled"} & set(json.loads(out)["done"])
        else:
            assert code == 2 and f"already labelled {winner[0]!r} by {winner[1]}" in err
    labelled = [json.loads(out)["done"] for code, out, _ in done if code == 0]
    assert sum("labelled" in d for d in labelled) == 1  # exactly one process recorded it


def test_cli_review_needs_a_reviewer_and_can_undo(prod: Workspace) -> None:
    log_scored(prod, 1, ood=True)
    item = review.pending(prod)[0]
    run = cli("review", "--workspace", "prod", "--label", item.id, "red")
    assert run.returncode == 2 and "--reviewer" in run.stderr and "Traceback" not in run.stderr
    assert cli("review", "--workspace", "prod", "--label", item.id, "red", "--reviewer", "ana").returncode == 0
    run = cli("review", "--workspace", "prod", "--undo", "--reviewer", "ana")
    assert run.returncode == 0 and "waits in the queue again" in run.stdout
    assert review.backlog(prod).pending == 1


def test_imported_labels_land_with_their_provenance_and_bad_rows_are_reported(prod: Workspace) -> None:
    preds = log_scored(prod, 3, ood=True)
    csv = (
        "prediction_id,sha256,label\n"
        f"{preds[0].id},,red\n"
        f",{preds[1].sha256},{NONE_OF_THESE}\n"
        "missing,,red\n"
        f"{preds[2].id},,violet\n"
    ).encode()
    done = review.import_labels(prod, csv, reviewer="lab")
    assert done.labelled == 2
    assert [f["row"] for f in done.failed] == ["4", "5"]
    assert "no prediction 'missing'" in done.failed[0]["reason"] and "'violet' is not one of" in done.failed[1]["reason"]
    with store.connect(prod) as con:
        rows = con.execute("SELECT prediction_id, label, source, reviewer FROM log_feedback ORDER BY label").fetchall()
    assert rows == [(preds[1].id, NONE_OF_THESE, "import", "lab"), (preds[0].id, "red", "import", "lab")]
    assert review.backlog(prod).pending == 1
    with pytest.raises(UserError, match="needs a header"):
        review.import_labels(prod, b"id,answer\n1,red\n")
    with pytest.raises(UserError, match="not UTF-8"):
        review.import_labels(prod, b"\xff\xfe\x00bad")


def test_reviewed_images_join_the_data_with_provenance_and_none_of_these_does_not(prod: Workspace) -> None:
    preds = log_scored(prod, 4, ood=True)
    review.label(prod, preds[0].id, "red", reviewer="ana")
    review.label(prod, preds[1].id, NONE_OF_THESE, reviewer="ana")
    prediction_log.add_feedback(prod, preds[2].id, "green", CLASSES, source="app")
    before = len(store.images(prod))

    assert review.held_back(prod) == {f"labelled {NONE_OF_THESE!r}: not one of the classes": 1}
    added = review.add_to_data(prod)
    assert len(added.added) == 2 and added.model_labelled == 0 and added.skipped == []
    catalog = store.images(prod)
    assert len(catalog) == before + 2
    new = catalog[catalog["source_kind"] == "production"].set_index("prediction_id")
    assert new.loc[preds[0].id, ["label", "label_source", "labelled_by", "model_version"]].tolist() == [
        "red", "review", "ana", registry.production_version(prod)
    ]  # fmt: skip
    assert new.loc[preds[2].id, ["label", "label_source"]].tolist() == ["green", "app"]
    assert (prod.root / new.loc[preds[0].id, "path"]).read_bytes() == preds[0].data
    assert set(new["split"]) <= {"train", "valid", "test"}  # split by hash, as every image
    assert review.add_to_data(prod).added == []  # nothing twice
    asked = review.add_to_data(prod, ids=[preds[1].id])
    assert asked.added == [] and [s["reason"] for s in asked.skipped] == [f"labelled {NONE_OF_THESE!r}: not one of the classes"]
    # a labelled production image whose bytes are already in the data (a replayed training photo) stays out
    catalog_bytes = (prod.root / store.images(prod)["path"].iloc[0]).read_bytes()
    predictor = scoring.load_predictor(prod)
    copy, _ = prediction.predict_images(predictor, [("copy.png", catalog_bytes)], keep_bytes=True)
    prediction_log.log_predictions(prod, [dataclasses.replace(copy[0], ood=True)], "app", predictor.version)
    review.label(prod, copy[0].id, "red", reviewer="ana")
    assert review.held_back(prod)["already in the data (the same bytes)"] == 1
    assert review.add_to_data(prod).added == []
    assert "production_images_added" in set(store.audit_log(prod)["action"])
    make_up = explore.provenance_table(store.images(prod))
    assert int(make_up[make_up["labelled_by"] == "a reviewer"]["images"].sum()) == 1
    assert int(make_up[make_up["labelled_by"] == "feedback on the Predict page"]["images"].sum()) == 1
    gathered = make_up[make_up["origin"] != "production"]
    assert set(gathered["labelled_by"]) == {"as gathered (folder, query or upload)"} and gathered["images"].sum() == before


def test_model_labels_never_enter_training_silently(prod: Workspace) -> None:
    log_scored(prod, 6, keep=True)  # in domain, nobody labelled them, images kept
    assert review.add_to_data(prod).added == []  # without asking, nothing
    added = review.add_to_data(prod, model_labels=True)
    assert len(added.added) == 6 and added.model_labelled == 6 and review.model_labelled(prod) == 6
    catalog = store.images(prod)
    fitting = catalog["split"].isin(["train", "valid"]) & (catalog["label_source"] == "model")
    assert fitting.any()  # some landed where training would take them
    with pytest.raises(UserError, match=r"carry labels only the model gave .* feedback loop"):
        runs.train_workspace(prod, TINY)
    with store.connect(prod) as con:
        assert con.execute("SELECT count(*) FROM runs WHERE status = 'running'").fetchone()[0] == 0
    summary = runs.train_workspace(prod, dataclasses.replace(TINY, allow_model_labels=True))
    assert any("labelled only by the model" in note for note in summary["split_notes"])
    assert registry.read_meta(prod, summary["version"])["config"]["allow_model_labels"] is True
    assert runs.config_of(prod, summary["version"]).allow_model_labels is False  # a retrain asks again
    runs.save_defaults(prod, dataclasses.replace(TINY, allow_model_labels=True))
    assert runs.defaults(prod).allow_model_labels is False


def test_paired_accuracy_interval_matches_a_hand_count() -> None:
    production = np.array([True] * 80 + [False] * 20)
    candidate = production.copy()
    candidate[:5] = False  # 5 that production got right and the candidate not
    candidate[80:83] = True  # 3 the other way
    p = gate.paired_accuracy(production, candidate)
    assert (p.labelled, p.production, p.candidate) == (100, 0.8, 0.78) and p.difference == pytest.approx(-0.02)
    b, c, n = 5.5, 3.5, 102.0
    half = gate.Z95 * np.sqrt(((b + c) - (c - b) ** 2 / n) / n**2)
    assert p.low == pytest.approx((c - b) / n - half) and p.high == pytest.approx((c - b) / n + half)
    same = gate.paired_accuracy(production, production)
    assert same.low < 0 < same.high  # never a single point
    assert gate.paired_accuracy(np.array([], bool), np.array([], bool)).difference is None


def test_the_gate_compares_on_the_same_labelled_requests_and_records_the_decision(prod: Workspace) -> None:
    v1 = registry.production_version(prod)
    v2 = derived_version(prod, v1)  # the same weights: agrees everywhere
    active = rollout.start(prod, v2, "shadow")
    items = [(f"g{i}.png", colour_image(i % 3, 700 + i)) for i in range(36)]
    scored = serving.score(scoring.load_predictor(prod), scoring.load_predictor(prod, v2), active, items)
    prediction_log.log_predictions(prod, scored.logged, "app", v1, keep_images=False)
    for p in scored.shown[:31]:
        prediction_log.add_feedback(prod, p.id, p.label, CLASSES)  # labelled on production's prediction only
    comparison = gate.compare(prod, v2)
    assert comparison.paired == 36 and comparison.agreement == 1.0 and comparison.acted == 0
    assert comparison.accuracy.labelled == 31 and comparison.accuracy.difference == 0.0
    # identical answers on all 36: the difference on them is 0 whatever the labels, and 36 requests bound it for the
    # traffic to come to about 5 points (1.96 / 38, half a pseudo-count each way)
    assert comparison.accuracy.disputed == 0 and comparison.accuracy.low == pytest.approx(-gate.Z95 / 38)
    loose = gate.gate(comparison, gate.Criteria(min_paired=30, min_labelled=30, margin=0.07))
    assert [c.met for c in loose.checks] == [True, True, True, True] and loose.passed
    strict = gate.gate(comparison)  # the default asks for 200 requests and a 2-point bound
    assert not strict.passed and [c.met for c in strict.checks] == [False, True, True, False]
    assert len(comparison.windows) >= 1 and comparison.windows["paired"].sum() == 36
    table = gate.windows_table(comparison)
    assert table["scored by both"].sum() == 36
    for shown, n in zip(table["agreement (95% CI)"], table["scored by both"], strict=True):
        assert shown == f"100.0% ({rates.wilson(n, n)[0]:.0%}-100%)"  # all agree, and the interval says how sure that is
    assert comparison.agreement_rate == rates.Rate(36, 36)
    # labels end users chose to give are no sample of the traffic: no accuracy of either model from them
    assert comparison.accuracy.candidate_interval.value is None and comparison.accuracy.production is None
    assert set(table["difference (points)"]) <= {"+0.0", ""} and table["95% interval"].iloc[-1].count(" to ") <= 1
    fig = gate.comparison_figure(comparison)  # no window has both models' accuracy: the chart says so, axes stay rates
    assert [tuple(fig.layout[a].range) for a in ("yaxis", "yaxis2")] == [(0, 1.04), (0, 1.04)]
    assert [a.text for a in fig.layout.annotations][-1] == "no window has labelled requests scored by both yet"
    assert (rates.points(-0.0004), rates.points(0.046), rates.points(-0.012)) == ("+0.0", "+4.6", "-1.2")  # never -0.0

    rollout.expand(prod, gate.figures(comparison, strict), note="enough")
    recorded = rollout.history(prod)[0]["figures"]
    assert recorded["paired"] == 36 and recorded["gate_passed"] is False and len(recorded["checks"]) == 4


def test_the_rollout_comparison_counted_in_the_database_equals_the_one_from_every_request_read_whole(prod: Workspace) -> None:
    """`gate.compare` counts the requests both models scored in the database; here the same comparison is made from
    every logged row read into Python and paired there (shadow, then limited; the audit; labels on either model's
    prediction, one changed later)."""
    from core.production import audit

    v1 = registry.production_version(prod)
    v2 = derived_version(prod, v1, permute=[1, 0, 2])  # red and blue swapped: it agrees on green only
    audit.set_share(prod, 0.5)
    start = store.now() - timedelta(days=3)
    shown = []
    for k, (stage, scope) in enumerate((("shadow", rollout.Scope()), ("limited", rollout.Scope(share=0.5)))):
        active = rollout.start(prod, v2, stage, scope)
        items = [(f"c{k}-{i}.png", colour_image(i % 3, 900 + 40 * k + i)) for i in range(24)]
        scored = serving.score(scoring.load_predictor(prod), scoring.load_predictor(prod, v2), active, items)
        when = {
            r: start + timedelta(hours=3 * (24 * k + i)) for i, r in enumerate(dict.fromkeys(p.request_id for p in scored.logged))
        }
        prediction_log.log_predictions(prod, scored.logged, "app", v1, [when[p.request_id] for p in scored.logged], False)
        shown += scored.logged
    production = [p for p in shown if p.stage == "production"]
    candidate = {p.request_id: p for p in shown if p.stage != "production"}
    for i, p in enumerate(production[::2]):  # labels on production's prediction, some on the candidate's instead
        target = candidate[p.request_id] if i % 3 == 0 else p
        prediction_log.add_feedback(prod, target.id, CLASSES[i % 3], CLASSES)
    prediction_log.add_feedback(prod, production[0].id, CLASSES[2], CLASSES)  # changed later: the latest counts

    with store.connect(prod) as con:
        log = con.execute("SELECT * FROM log_predictions").df()
        fb = con.execute("SELECT prediction_id, label, ts FROM log_feedback").df()
    latest = fb.sort_values("ts").groupby("prediction_id")["label"].last()
    both = log[log["stage"].fillna("production") == "production"].merge(
        log[(log["model_version"] == v2) & log["stage"].isin(["shadow", "limited"])], on="request_id", suffixes=("", "_c")
    )
    truth = both["id"].map(latest).combine_first(both["id_c"].map(latest))
    hard = np.where(both["served_c"], both["ood_c"] | both["referred_c"], both["ood"] | both["referred"])
    rows = pd.DataFrame(
        {
            "production_label": both["predicted"], "candidate_label": both["predicted_c"], "truth": truth,
            "flagged": (both["predicted"] != both["predicted_c"]) | hard, "audit": both["audit"] | both["audit_c"],
            "audit_p": both["audit_p"], "day": both["ts"].dt.floor("D"), "ts": both["ts"], "id": both["id"],
        }
    )  # fmt: skip
    assert len(rows) == 48 and rows["truth"].notna().sum() == 24 and rows["audit"].any()
    assert (rows["production_label"] != rows["candidate_label"]).sum() >= 10 and (
        rows["production_label"] == rows["candidate_label"]
    ).any()

    comparison = gate.compare(prod, v2)
    expected = gate.weighted_paired(rows)
    assert comparison.paired == 48 and comparison.acted == int(both["served_c"].sum()) > 0
    assert comparison.agreement == pytest.approx((rows["production_label"] == rows["candidate_label"]).mean())
    for field in dataclasses.fields(gate.Paired):  # each model's weighted accuracy (an Interval) is compared whole
        got, want = getattr(comparison.accuracy, field.name), getattr(expected, field.name)
        assert got == (want if want is None or isinstance(want, accuracy.Interval) else pytest.approx(want)), field.name
    assert comparison.accuracy.disputed > comparison.accuracy.disputed_labelled > 0 and expected.difference is not None
    by_day = rows.groupby("day")
    assert list(comparison.windows["paired"]) == list(by_day.size())
    for (day, part), (_, w) in zip(by_day, comparison.windows.iterrows(), strict=True):
        want = gate.weighted_paired(part).difference  # None for a day with no labelled disputed request: NaN in the table
        assert w["window"] == day and (pd.isna(w["difference"]) if want is None else w["difference"] == pytest.approx(want))
    differ = rows[rows["production_label"] != rows["candidate_label"]].sort_values("ts", ascending=False)
    assert list(gate.disagreements(comparison)["production_id"]) == list(differ["id"].head(12))
    assert list(gate.disagreements(comparison, 5)["production_id"]) == list(differ["id"].head(5))


def test_kept_pair_counts_that_disagree_with_the_labelled_ones_are_not_used() -> None:
    """The rollout comparison moves the labelled pairs out of counts kept per day; counts that cannot hold them (a
    request split between the database's table and the files) make it count every pair again instead."""
    day = pd.Timestamp("2026-11-02")
    every = pd.DataFrame(
        {"window": [day, day], "production_version": ["v1", "v1"], "acted": [False, False], "disputed": [False, True],
         "labelled": [False, False], "production_right": [False, False], "candidate_right": [False, False],
         "flagged": [False, True], "audit": [False, False], "audit_p": [0.02, 0.02], "n": [10, 3]}
    )  # fmt: skip
    labelled = every.iloc[[1]].assign(labelled=True, production_right=True, n=2)
    moved = gate._moved(every, labelled)
    assert moved is not None and moved["n"].sum() == 13 and int(moved.loc[moved["labelled"], "n"].sum()) == 2
    assert int(moved.loc[moved["disputed"] & ~moved["labelled"], "n"].sum()) == 1
    assert gate._moved(every, labelled.assign(n=4)) is None  # more labelled disputes than pairs kept: not trusted
    assert gate._moved(every.iloc[:0], labelled) is None


def test_rollout_and_review_commands(prod: Workspace) -> None:
    v1 = registry.production_version(prod)
    v2 = derived_version(prod, v1, permute=[1, 2, 0])
    shadow = cli("rollout", "--workspace", "prod", "--shadow", v2, "--note", "first look", "--json")
    assert shadow.returncode == 0, shadow.stderr
    state = json.loads(shadow.stdout)
    assert (state["candidate"], state["stage"], state["production"]) == (v2, "shadow", v1)
    assert state["comparison"]["paired"] == 0 and state["comparison"]["gate_passed"] is False

    folder = prod.root.parent / "incoming"
    folder.mkdir()
    for i in range(3):
        (folder / f"x{i}.png").write_bytes(colour_image(i, 900 + i))
    scored = cli("predict", "--workspace", "prod", str(folder), "--json")
    assert scored.returncode == 0, scored.stderr
    out = json.loads(scored.stdout)
    assert out["rollout"] == {"candidate": v2, "stage": "shadow"} and out["logged"] == 6
    assert all(p["version"] == v1 and p["review"] for p in out["predictions"])  # every one disputed

    queue = json.loads(cli("review", "--workspace", "prod", "--json").stdout)
    assert queue["pending"] == 3 and queue["by_reason"]["disputed"] == 3
    first = queue["items"][0]
    assert "other" not in first  # the candidate's answer is not shown before the label (Item.shown)
    other = next(i.other for i in review.pending(prod) if i.id == first["id"])
    labelled = cli("review", "--workspace", "prod", "--label", first["id"], other, "--reviewer", "bo", "--json")
    assert labelled.returncode == 0 and json.loads(labelled.stdout)["pending"] == 2
    added = json.loads(cli("review", "--workspace", "prod", "--add-to-data", "--json").stdout)
    assert len(added["done"]["added"]["images"]) == 1

    limited = cli("rollout", "--workspace", "prod", "--limited", v2, "--json")
    assert limited.returncode == 2 and "--share" in limited.stderr
    assert cli("rollout", "--workspace", "prod", "--limited", v2, "--share", "0.5").returncode == 0
    status = json.loads(cli("rollout", "--workspace", "prod", "--json").stdout)
    assert status["stage"] == "limited" and status["comparison"]["paired"] == 3
    assert cli("rollout", "--workspace", "prod", "--expand").returncode == 0
    assert registry.production_version(prod) == v2
    back = json.loads(cli("rollout", "--workspace", "prod", "--rollback", "--json").stdout)
    assert back["production"] == v1 and [h["action"] for h in back["history"][:4]] == [
        "rolled_back",
        "expanded",
        "limited",
        "shadow",
    ]
    bad = cli("rollout", "--workspace", "prod", "--shadow", "v99")
    assert bad.returncode == 2 and "No model version 'v99'" in bad.stderr


def test_importing_the_same_labels_again_records_nothing_twice_and_a_huge_field_is_refused(prod: Workspace) -> None:
    preds = log_scored(prod, 3, ood=True)
    csv = ("prediction_id,label\n" + "".join(f"{p.id},red\n" for p in preds)).encode()
    assert review.import_labels(prod, csv, reviewer="lab").labelled == 3
    again = review.import_labels(prod, csv, reviewer="lab")
    assert (again.labelled, again.unchanged, again.failed) == (0, 3, [])
    changed = review.import_labels(prod, f"prediction_id,label\n{preds[0].id},blue\n".encode(), reviewer="lab")
    assert (changed.labelled, changed.unchanged) == (1, 0)  # a new answer is recorded
    with store.connect(prod) as con:
        assert con.execute("SELECT count(*) FROM log_feedback").fetchone()[0] == 4
    before = len(store.audit_log(prod, limit=1000))
    for huge in (f"prediction_id,label\n{preds[0].id},{'x' * 200_000}\n", "prediction_id,label\n" + "y" * 20_000 + ",red\n"):
        with pytest.raises(UserError, match="Nothing was imported"):
            review.import_labels(prod, huge.encode())
    assert len(store.audit_log(prod, limit=1000)) == before
    path = prod.root.parent / "labels.csv"
    path.write_bytes(csv)
    run = cli("review", "--workspace", "prod", "--import", str(path), "--reviewer", "lab")
    assert run.returncode == 0 and "imported 1 label(s); 2 already there" in run.stdout, run.stderr  # preds[0] is blue now


def test_two_sessions_importing_the_same_labels_at_once_record_them_once(prod: Workspace, tmp_path: Path, monkeypatch) -> None:
    """Two sessions of one app process import one file: the first holds still with its labels written inside its
    transaction; the second waits for it, then finds every label there. Read outside the transaction, both found
    none and both recorded all (six rows for three labels)."""
    preds = log_scored(prod, 3, ood=True)
    csv = ("prediction_id,label\n" + "".join(f"{p.id},red\n" for p in preds)).encode()
    gate, waiting = tmp_path / "gate", tmp_path / "waiting"
    arm(monkeypatch, f"review.importing:1:pause={gate},store.lock_wait:1:mark={waiting}")
    done: dict[str, review.Imported] = {}
    first = threading.Thread(target=lambda: done.update(first=review.import_labels(prod, csv, "lab")), daemon=True)
    first.start()
    until(lambda: gate.with_name("gate.reached").exists(), "the first import never reached its commit")
    second = threading.Thread(target=lambda: done.update(second=review.import_labels(prod, csv, "lab")), daemon=True)
    second.start()
    until(lambda: waiting.exists() or not second.is_alive(), "the second import neither waited nor finished")
    assert waiting.exists() and "second" not in done
    gate.touch()
    first.join(60), second.join(60)
    assert (done["first"].labelled, done["second"].labelled, done["second"].unchanged) == (3, 0, 3)
    with store.connect(prod) as con:
        assert con.execute("SELECT count(*) FROM log_feedback WHERE source = 'import'").fetchone()[0] == 3
