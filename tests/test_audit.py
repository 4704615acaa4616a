"""The random audit sample: drawn by hash, logged with its probability, unmarked in the queue until labelled; the
estimates of production's accuracy it makes possible; the queue ordered by the value of a label."""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from core.drivetrain.levers import default_utility
from core.production import audit, prediction, review, review_order
from core.production.monitoring import accuracy
from core.production.monitoring.queries import LogFilter
from core.workspace import store
from core.workspace.paths import Workspace
from tests.helpers import cli, colour_image, derived_version, edit_log, log_scored


def test_the_audit_share_holds_within_binomial_error_and_is_deterministic() -> None:
    ids = [f"{i:032x}" for i in range(10_000)]
    for seed in ("a", "b", "c", "d", "e"):
        sampling = audit.Sampling(0.02, seed)
        drawn = [i for i in ids if sampling.chosen(i)]
        sd = np.sqrt(10_000 * 0.02 * 0.98)
        assert abs(len(drawn) - 200) < 4 * sd, (seed, len(drawn))
        assert drawn == [i for i in ids if audit.Sampling(0.02, seed).chosen(i)]  # the same requests every time
    assert {i for i in ids if audit.Sampling(0.02, "a").chosen(i)} != {i for i in ids if audit.Sampling(0.02, "b").chosen(i)}
    assert not any(audit.Sampling(0.0, "a").chosen(i) for i in ids) and not any(audit.OFF.chosen(i) for i in ids)


def log_plain(ws: Workspace, n: int, seed: int = 0, **changes: object) -> list[prediction.Prediction]:
    return log_scored(ws, n, seed, prefix="a", base=900, apart=timedelta(minutes=1), days=1, **changes)


def logged_rows(ws: Workspace) -> pd.DataFrame:
    with store.connect(ws) as con:
        return con.execute("SELECT id, request_id, audit, audit_p, image_path FROM log_predictions ORDER BY ts").df()


def test_served_requests_are_drawn_by_the_stored_seed_logged_with_their_probability_and_queued(prod: Workspace) -> None:
    assert audit.set_share(prod, 0.5) == 0.5
    sampling = audit.read(prod)
    assert len(sampling.seed) == 32 and sampling.share == 0.5
    log_plain(prod, 24)
    rows = logged_rows(prod)
    expected = [sampling.chosen(r) for r in rows["request_id"]]
    assert rows["audit"].tolist() == expected and 0 < sum(expected) < 24
    assert (rows["audit_p"] == 0.5).all()
    # the reviewer needs the drawn images (the workspace keeps no others)
    assert rows["image_path"].notna().tolist() == expected
    queued = {i.id for i in review.pending(prod, 100)}
    assert queued == set(rows.loc[rows["audit"], "id"]) and review.backlog(prod).audit == sum(expected)
    with store.connect(prod) as con:
        assert con.execute("SELECT before, after FROM audit WHERE action = 'audit share set'").fetchall() == [("0.0", "0.5")]
    with pytest.raises(Exception, match="at most 0.5"):
        audit.set_share(prod, 0.9)


def test_audit_items_look_like_any_other_item_until_labelled(prod: Workspace) -> None:
    audit.set_share(prod, 0.5)
    log_plain(prod, 16)
    for seed in range(1, 11):  # each referred request is drawn for the audit too with chance 0.5: until one is not
        log_plain(prod, 3, seed=seed, referred=True, action="refer to a person")
        if any("audit" not in i.reasons for i in review.pending(prod, 100) if "referred" in i.reasons):
            break
    items = review.pending(prod, 100)
    drawn = [i for i in items if "audit" in i.reasons]
    hard = [i for i in items if "referred" in i.reasons and "audit" not in i.reasons]
    assert drawn and hard
    shown = [i.shown() for i in items]
    assert {tuple(s) for s in shown} == {tuple(shown[0])}  # the same fields for every item
    text = json.dumps(shown)
    for tell in ("audit", "referred", "refer to a person", "out of domain", "disputed"):
        assert tell not in text, tell
    listing = cli("review", "--workspace", "prod", "--limit", "100")
    assert listing.returncode == 0 and "refer to a person" not in listing.stdout and "[" not in listing.stdout.split("\n", 1)[1]
    as_json = json.loads(cli("review", "--workspace", "prod", "--limit", "100", "--json").stdout)
    assert as_json["items"] == json.loads(text) and "audit" not in as_json["by_reason"]
    # once labelled, it is told why it waited
    done = cli("review", "--workspace", "prod", "--label", drawn[0].id, drawn[0].predicted, "--reviewer", "ann")
    assert done.returncode == 0 and "drawn at random for the audit sample" in done.stdout
    assert "referred" in review.why(prod, hard[0].id)


def test_the_value_of_a_label_is_the_utility_the_decision_is_expected_to_have_lost() -> None:
    u = default_utility(["cat", "dog"])  # +10 right, -10 wrong, referral costs 2 (and pays 0)
    net = u.net()
    act_cat = u.actions.index("act on cat")
    probs = np.array([[0.99, 0.01], [0.55, 0.45], [0.55, 0.45]])
    lost = review_order.utility_lost(net, probs, np.array([act_cat, act_cat, u.actions.index(u.refer)]))
    # 0.01 * 20 lost on the sure one, 0.45 * 20 on the coin toss acted on, 12 (the referral's cost against being sure)
    assert lost == pytest.approx([0.2, 9.0, 12.0])
    assert review_order.tempered(probs, 2.0)[0, 0] < 0.99 and review_order.tempered(probs, 1.0) is probs


def test_the_audit_keeps_its_share_of_every_page_when_ordered_by_value() -> None:
    value = np.array([9, 8, 7, 6, 5, 4, 3, 2, 0.1, 0.2])
    drawn = np.array([False] * 8 + [True, True])  # the least valuable two, 20% of the queue
    order = review_order.interleave(value, drawn)
    assert sorted(order) == list(range(10))
    assert [i for i, o in enumerate(order) if drawn[o]] == [4, 9]  # the 5th and the 10th: at least 1 in 5 by then
    assert review_order.interleave(value, np.zeros(10, bool)).tolist() == list(np.argsort(-value))


def test_the_queue_ordered_by_value_puts_the_costly_doubt_first(prod: Workspace) -> None:
    sure, doubt = log_plain(prod, 2, seed=3, referred=True)
    # the newer one a near coin-toss between two classes, the older one sure (set by hand in the log)
    assert edit_log(prod, {"probs": "arrow_cast(make_array(0.98, 0.01, 0.01), 'List(Float32)')"}, f"id = '{sure.id}'") == 1
    assert edit_log(prod, {"probs": "arrow_cast(make_array(0.5, 0.45, 0.05), 'List(Float32)')"}, f"id = '{doubt.id}'") == 1
    assert [i.id for i in review.pending(prod)] == [sure.id, doubt.id]
    assert [i.id for i in review.pending(prod, order="valuable")] == [doubt.id, sure.id]
    assert [i.id for i in review.pending(prod, order="newest")] == [doubt.id, sure.id]
    out = cli("review", "--workspace", "prod", "--order", "valuable", "--json")
    assert [i["id"] for i in json.loads(out.stdout)["items"]] == [doubt.id, sure.id]


def simulated_log(
    rng: np.random.Generator, n: int = 3000, share: float = 0.05, label_hard: float = 1.0
) -> tuple[pd.DataFrame, float]:
    """A log with known truth: 90% right, the mistakes far more often flagged; every audit item and a random
    `label_hard` of the flagged ones labelled; a few unflagged items labelled by whoever chose to (end users)."""
    right = rng.random(n) < 0.9
    flagged = rng.random(n) < np.where(right, 0.05, 0.6)
    drawn = rng.random(n) < share
    labelled = drawn | (flagged & (rng.random(n) < label_hard)) | (~right & (rng.random(n) < 0.1))
    frame = pd.DataFrame(
        {
            "predicted": "a",
            "ood": False,
            "flagged": flagged,
            "audit": drawn,
            "audit_p": share,
            "label": np.where(labelled, np.where(right, "a", "b"), None),
        }
    )
    return frame, float(right.mean())


@pytest.mark.parametrize("label_hard", [1.0, 0.6])
def test_the_inverse_probability_estimate_is_unbiased_on_a_simulated_log(label_hard: float) -> None:
    errors, covered, naive = [], 0, []
    for seed in range(300):
        frame, truth = simulated_log(np.random.default_rng(seed), label_hard=label_hard)
        found = accuracy.estimate(frame)
        errors.append(found.weighted.value - truth)
        covered += found.weighted.low <= truth <= found.weighted.high
        labelled = frame[frame["label"].notna()]
        naive.append((labelled["label"] == labelled["predicted"]).mean() - truth)
    errors = np.array(errors)
    se = errors.std(ddof=1) / np.sqrt(len(errors))
    assert abs(errors.mean()) < 3 * se, (errors.mean(), se)
    assert covered / 300 >= 0.9  # the interval holds the truth about as often as it says
    assert np.mean(naive) < -0.1  # every label alike: the hard cases drag it down, as the test must be able to see


def test_the_audit_estimate_has_an_exact_interval_and_the_advice_follows_the_figures() -> None:
    assert accuracy.clopper_pearson(30, 30)[1] == 1.0 and accuracy.clopper_pearson(0, 30)[0] == 0.0
    low, high = accuracy.clopper_pearson(27, 30)
    assert low == pytest.approx(0.7347, abs=1e-3) and high == pytest.approx(0.9789, abs=1e-3)
    few, _ = simulated_log(np.random.default_rng(1), n=200, share=0.05)
    assert "Too few audit labels" in accuracy.estimate(few).advice() and accuracy.estimate(few).exact.value is None
    weighted = accuracy.estimate(few).weighted  # no estimate: it says which stratum lacks labels, not "too few (n 40)"
    others = int((~few["flagged"]).sum())
    labelled = int((~few["flagged"] & few["audit"] & few["label"].notna()).sum())
    assert weighted.value is None
    assert weighted.text() == f"too few: {labelled} label(s) among the {others:,} other requests (audit labels only); 30 needed"
    full, _ = simulated_log(np.random.default_rng(2), n=3000, label_hard=1.0)
    est = accuracy.estimate(full)
    assert est.believed is est.weighted and "Believe the weighted estimate" in est.advice()
    partial, _ = simulated_log(np.random.default_rng(2), n=3000, label_hard=0.5)
    est = accuracy.estimate(partial)
    assert est.believed == est.exact and "Believe the audit sample" in est.advice() and f"{est.coverage:.0%}" in est.advice()


def test_the_estimates_over_a_real_log(prod: Workspace) -> None:
    audit.set_share(prod, 0.5)
    preds = log_plain(prod, 40)
    rows = logged_rows(prod)
    drawn = rows.loc[rows["audit"], "id"].tolist()
    for p in preds:
        if p.id in drawn:
            review.label(prod, p.id, p.label if p.id != drawn[0] else "none of these", "ann")
    found = accuracy.accuracy(prod, LogFilter(sources=("app",)))
    assert found.served == 40 and found.drawn == len(drawn) and found.audit == accuracy.Rate(len(drawn) - 1, len(drawn))
    assert found.flagged == 0 and found.reviewed.n == 0
    shown = accuracy.table(found, (0.8, 40), None).set_index("estimate")["reading"]  # each with its n, or why none
    assert shown["audit sample (random, labelled blind)"] == found.exact.text() and "n " in shown.iloc[0]
    assert shown["reviewed items (the hard cases: lower by design)"] == "too few (n 0)"
    assert shown["ATC (no labels)"] == "80.0% (a point value: no interval, n 40)"


def pairs_frame(n: int, disputed: list[tuple[bool, bool, bool]], hard_agreeing: int, audit_right: list[bool]) -> pd.DataFrame:
    """n requests both models scored. `disputed`: (labelled, production right, candidate right) per disputed request;
    then `hard_agreeing` referred requests both answered alike, labelled right; then audit items of the rest, each
    right or wrong as given; the others unlabelled and unflagged."""
    rows = []
    for labelled, p_right, c_right in disputed:
        truth = "x" if not labelled else ("p" if p_right else ("c" if c_right else "z"))
        rows.append(("p", "c", truth if labelled else None, True, False))
    rows += [("a", "a", "a", True, False)] * hard_agreeing
    rows += [("a", "a", "a" if right else "z", False, True) for right in audit_right]
    rows += [("a", "a", None, False, False)] * (n - len(rows))
    frame = pd.DataFrame(rows, columns=["production_label", "candidate_label", "truth", "flagged", "audit"])
    return frame.assign(audit_p=0.05)


def test_the_gate_weighs_the_difference_by_the_disputed_share_not_by_the_labelled_items() -> None:
    from core.production import gate

    # 10 disputed of 100 (all labelled: the candidate right on 7, production on 3), 20 hard cases alike, 0 audit
    disputed = [(True, False, True)] * 7 + [(True, True, False)] * 3
    frame = pairs_frame(100, disputed, 20, [])
    weighted = gate.weighted_paired(frame)
    labelled = frame[frame["truth"].notna()]
    naive = gate.paired_accuracy(
        labelled["production_label"] == labelled["truth"], labelled["candidate_label"] == labelled["truth"]
    )
    assert naive.difference == pytest.approx(4 / 30)  # 4 points in 30 labels: the hard cases, over-represented
    assert weighted.difference == pytest.approx(0.04) and (weighted.disputed, weighted.disputed_labelled) == (10, 10)
    b, c, total = 7.5, 3.5, 102.0  # Agresti-Min over all 100 requests: every disputed one is known
    half = gate.Z95 * np.sqrt(((b + c) - (b - c) ** 2 / total) / total**2)
    assert weighted.low == pytest.approx((b - c) / total - half) and weighted.high == pytest.approx((b - c) / total + half)
    assert weighted.production is None  # no audit label among the 70 others: nothing says how right they are
    # half the disputed labelled: the same mean, a wider interval
    half_known = gate.weighted_paired(pairs_frame(100, disputed[:4] + disputed[7:8] + [(False, False, False)] * 5, 20, []))
    assert half_known.difference == pytest.approx(2 * (4 - 1) / 100)
    assert half_known.high - half_known.low > weighted.high - weighted.low
    none_known = gate.weighted_paired(pairs_frame(100, [(False, False, False)] * 10, 20, []))
    assert none_known.difference is None and "none of the 10 disputed" in gate.difference_words(none_known)
    # with audit labels on the rest, each model's accuracy: hard cases (30 of 100) and the audit's sample of the others
    assert gate.weighted_paired(pairs_frame(100, disputed, 20, [True] * 9 + [False])).production is None  # 10: too few
    with_audit = gate.weighted_paired(pairs_frame(100, disputed, 20, [True] * 27 + [False] * 3))
    production = 0.3 * (3 + 20) / 30 + 0.7 * 0.9
    assert with_audit.production == pytest.approx(production) and with_audit.candidate == pytest.approx(production + 0.04)


def per_prediction_accuracy(ws: Workspace, f: LogFilter) -> accuracy.Accuracy:
    """The estimates from every prediction of the log read into Python, a request's flags and latest label taken over
    its predictions (replays aside): how `accuracy.requests` counts, computed independently of its SQL."""
    with store.connect(ws) as con:
        rows = con.execute("SELECT * FROM log_predictions").df()
        feedback = con.execute("SELECT prediction_id, label, ts FROM log_feedback").df()
    latest = feedback.sort_values("ts").groupby("prediction_id").tail(1).set_index("prediction_id")
    rows = rows.assign(
        request=rows["request_id"].fillna(rows["id"]),
        label=rows["id"].map(latest["label"]),
        at=rows["id"].map(latest["ts"]),
        hard=(rows["served"] != False) & (rows["ood"] | rows["referred"].fillna(False).astype(bool)),  # noqa: E712
    )
    live = rows[rows["stage"].fillna("production") != "backtest"]
    by_request = {}
    for request, group in live.groupby("request"):
        labelled = group[group["label"].notna()].sort_values("at")
        by_request[request] = {
            "flagged": bool(group["hard"].any() or group["predicted"].nunique() > 1),
            "audit": bool(group["audit"].fillna(False).astype(bool).any()),
            "audit_p": float(group["audit_p"].fillna(0).max()),
            "label": labelled["label"].iloc[-1] if len(labelled) else None,
        }
    shown = rows[rows["source"].isin(f.sources)]
    shown = shown[shown["model_version"] == f.version] if f.version else shown[shown["served"] != False]  # noqa: E712
    frame = pd.DataFrame(
        [
            {**by_request[r], "predicted": p, "ood": o}
            for r, p, o in zip(shown["request"], shown["predicted"], shown["ood"], strict=True)
        ]
    )
    return accuracy.estimate(frame)


def test_the_accuracy_counted_in_the_database_is_the_accuracy_of_every_prediction_counted_in_python(prod: Workspace) -> None:
    """A log with a candidate in shadow then limited (disputed requests, labels on either model's prediction), a
    replay of an earlier request, the audit drawing half the traffic and a few referrals: accuracy.requests counts
    in the database, per request, exactly what reading each prediction into Python gives, for every filter."""
    from core.model import registry
    from core.production import backtest, rollout, serving

    audit.set_share(prod, 0.5)
    v1 = registry.production_version(prod)
    v2 = derived_version(prod, v1, permute=[1, 2, 0])  # disagrees on every image
    plain = log_plain(prod, 12) + log_plain(prod, 4, seed=1, referred=True)
    rollout.start(prod, v2, "shadow")
    service = serving.Service(prod)
    _, shadow = service.serve([(f"s{i}.png", colour_image(i % 3, 3000 + i)) for i in range(8)], "api")
    rollout.start(prod, v2, "limited", rollout.Scope(share=0.5))
    service = serving.Service(prod)
    _, limited = service.serve([(f"l{i}.png", colour_image(i % 3, 4000 + i)) for i in range(8)], "api")
    assert service.log.flush(60)
    backtest.run(prod, v2)
    with store.connect(prod) as con:
        rows = con.execute("SELECT id, request_id, stage FROM log_predictions").df()
    assert {"shadow", "limited", "backtest", "production"} <= set(rows["stage"].fillna("production"))
    unlabelled = shadow.shown[1].request_id  # not labelled below
    candidate = rows[(rows["stage"] == "shadow") & (rows["request_id"] == unlabelled)]["id"].tolist()
    for i, p in enumerate([*plain[::3], *shadow.shown[::2], *limited.shown[::3]]):
        review.label(prod, p.id, p.label if i % 2 else "none of these", "ann")
    review.label(prod, candidate[0], "red", "ann")  # a label on the candidate's prediction: the request's label
    for f in (
        LogFilter(),
        LogFilter(sources=("app",)),
        LogFilter(version=v2),
        LogFilter(version=v1, sources=("api",)),
    ):
        found = accuracy.accuracy(prod, f)
        assert found == per_prediction_accuracy(prod, f), f
        assert found.served > 0
    # a label given later on the unlabelled request's candidate prediction (the kept map is extended by it, with the
    # production prediction beside it), and one taken back
    review.label(
        prod, rows[(rows["stage"] == "shadow") & (rows["request_id"] == shadow.shown[3].request_id)]["id"].iloc[0], "blue", "bo"
    )
    review.undo_last(prod, "ann")
    for f in (LogFilter(), LogFilter(version=v2)):
        assert accuracy.accuracy(prod, f) == per_prediction_accuracy(prod, f), f


def test_the_value_order_computed_in_the_database_is_the_one_computed_in_python(monkeypatch: pytest.MonkeyPatch) -> None:
    """review_order.top (the Review page's, in SQL) against the value computed row by row in numpy: tempered
    probabilities, the action taken (or the best one for the top class when the matrix does not name it), a version
    whose matrix is for other classes, and the audit's share."""
    from types import SimpleNamespace

    import duckdb

    two, three = default_utility(["cat", "dog"]), default_utility(["cat", "dog", "eel"])
    policies = {"v1": (two, 2.5), "v3": (two, 1.0)}  # v2: no policy, the workspace's matrix (three classes)
    monkeypatch.setattr(
        review_order.accepted, "active",
        lambda ws, v, con: SimpleNamespace(utility=policies[v][0], policy=SimpleNamespace(temperature=policies[v][1]))
        if v in policies else None,
    )  # fmt: skip
    monkeypatch.setattr(review_order, "_utility", lambda ws, v: three)
    rng = np.random.default_rng(4)
    n = 400
    p = rng.dirichlet([0.6, 0.6], n)
    actions = rng.choice([*two.actions, "something else"], n)
    frame = pd.DataFrame(
        {
            "id": [f"{i:04d}" for i in rng.permutation(n)],
            "ts": pd.Timestamp("2026-01-01") + pd.to_timedelta(rng.integers(0, 50, n), unit="min"),  # ties in time
            "model_version": rng.choice(["v1", "v2", "v3"], n),
            "probs": [row.astype(np.float32).tolist() for row in p],
            "action": actions,
            "audit": rng.random(n) < 0.15,
        }
    ).sort_values(["ts", "id"], ignore_index=True)

    def values(part: pd.DataFrame, version: str) -> np.ndarray:
        u, temperature = policies.get(version, (three, 1.0))
        probs = review_order.tempered(np.stack([np.asarray(x, np.float64) for x in part["probs"]]), temperature)
        if probs.shape[1] != len(u.classes):
            return np.zeros(len(part))
        own = review_order.best_actions(u)[probs.argmax(axis=1)]
        taken = np.array([u.actions.index(a) if a in u.actions else o for a, o in zip(part["action"], own, strict=True)])
        return review_order.utility_lost(u.net(), probs, taken)

    value = np.zeros(n)
    for version, part in frame.groupby("model_version"):
        value[part.index] = values(part, str(version))
    expected = frame["id"].iloc[review_order.interleave(value, frame["audit"].to_numpy(bool))].tolist()
    assert value[frame["model_version"] == "v2"].max() == 0 and value.max() > 0
    con = duckdb.connect()
    con.register("frame", frame)
    con.execute("CREATE TABLE waiting AS SELECT id, ts, model_version, probs::FLOAT[] AS probs, action, audit FROM frame")
    for k in (1, 7, 60, n):
        assert review_order.top(None, con, "waiting", k) == expected[:k]  # type: ignore[arg-type]
