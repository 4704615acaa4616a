"""Rollout stages: shadow, limited, expanded, rollback; routing by image hash; what reaches the user and the log."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from core.errors import UserError
from core.model import registry, scoring
from core.production import rollout, serving
from core.production.monitoring import queries
from core.production.rollout import Scope
from core.workspace import store
from core.workspace.paths import Workspace
from tests.helpers import colour_image, derived_version


def audit_actions(ws: Workspace) -> list[str]:
    return list(store.audit_log(ws)["action"])[::-1]


def files(n: int) -> list[tuple[str, bytes]]:
    return [(f"img{i}.png", colour_image(i % 3, 1000 + i)) for i in range(n)]


def test_stages_change_with_an_audit_row_each_and_expand_promotes(prod: Workspace) -> None:
    v1 = registry.production_version(prod)
    v2 = derived_version(prod, v1)
    assert rollout.current(prod) is None

    shadow = rollout.start(prod, v2, "shadow", note="compare first")
    assert (shadow.candidate, shadow.stage, shadow.production) == (v2, "shadow", v1)
    limited = rollout.start(prod, v2, "limited", Scope(share=0.25, min_confidence=0.6), figures={"agreement": 0.97})
    assert limited.stage == "limited" and limited.scope == Scope(0.25, 0.6, False)

    promoted = rollout.expand(prod, figures={"agreement": 0.98, "paired": 300}, note="gate met")
    assert promoted == v2 and registry.production_version(prod) == v2 and rollout.current(prod) is None
    actions = audit_actions(prod)
    assert [a for a in actions if a.startswith("rollout_")] == ["rollout_shadow", "rollout_limited", "rollout_expanded"]
    assert "model_promoted" in actions[actions.index("rollout_limited") :]
    steps = rollout.history(prod)
    assert [s["action"] for s in steps] == ["expanded", "limited", "shadow"]
    assert steps[0]["figures"] == {"agreement": 0.98, "paired": 300} and steps[0]["note"] == "gate met"
    assert steps[1]["scope"] == {"share": 0.25, "min_confidence": 0.6, "in_domain_only": False}

    # rollback one click away: production returns to v1, recorded in both tables
    assert rollout.rollback(prod) == {"stopped": v2, "production": v1}
    assert registry.production_version(prod) == v1
    assert audit_actions(prod)[-2:] == ["model_rolled_back", "rollout_rolled_back"]


def test_rollback_during_shadow_stops_the_candidate_and_keeps_production(prod: Workspace) -> None:
    v1 = registry.production_version(prod)
    v2 = derived_version(prod, v1)
    rollout.start(prod, v2, "shadow")
    assert rollout.rollback(prod, note="too slow") == {"stopped": v2, "production": v1}
    assert rollout.current(prod) is None and registry.production_version(prod) == v1
    detail = json.loads(store.audit_log(prod)["detail"].iloc[0])
    assert detail["note"] == "too slow"


def test_a_stage_change_asked_twice_is_recorded_once(prod: Workspace) -> None:
    """A command run again (by a user, or after it was killed once it had committed) changes nothing more."""
    v1 = registry.production_version(prod)
    v2 = derived_version(prod, v1)
    rollout.start(prod, v2, "shadow")
    rollout.start(prod, v2, "shadow")
    assert [r["action"] for r in rollout.history(prod)] == ["shadow"]
    assert rollout.expand(prod) == v2 and rollout.expand(prod) == v2
    assert [r["action"] for r in rollout.history(prod)] == ["expanded", "shadow"]
    assert audit_actions(prod).count("model_promoted") == 2 and registry.rollback(prod) == v1  # v1's, then v2's once


def test_a_promotion_and_its_stage_change_land_together(prod: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure after the promotion's rows and before the rollout's row leaves neither (one transaction)."""
    v1 = registry.production_version(prod)
    v2 = derived_version(prod, v1)
    rollout.start(prod, v2, "shadow")

    def fail(*args: object) -> None:
        raise OSError("the process died here")

    monkeypatch.setattr(rollout, "_record", fail)
    with pytest.raises(OSError):
        rollout.expand(prod)
    assert registry.production_version(prod) == v1 and rollout.current(prod).candidate == v2
    assert audit_actions(prod).count("model_promoted") == 1  # v1's only


def test_bad_requests_are_refused_with_a_message(prod: Workspace) -> None:
    v1 = registry.production_version(prod)
    with pytest.raises(UserError, match="production model already"):
        rollout.start(prod, v1, "shadow")
    with pytest.raises(UserError, match="No model version 'v9'"):
        rollout.start(prod, "v9", "shadow")
    v2 = derived_version(prod, v1)
    with pytest.raises(UserError, match="share of requests"):
        rollout.start(prod, v2, "limited", Scope(share=0.0))
    with pytest.raises(UserError, match="share of requests"):
        rollout.start(prod, v2, "limited", Scope(share=1.5))
    with pytest.raises(UserError, match="one of shadow, limited"):
        rollout.start(prod, v2, "everywhere")
    with pytest.raises(UserError, match="start one before expanding"):
        rollout.expand(prod)
    assert rollout.history(prod) == []  # nothing refused left a trace in the state


def test_limited_share_holds_within_binomial_error_and_is_deterministic() -> None:
    hashes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(10_000)]
    for share in (0.1, 0.5):
        taken = np.array([rollout.routed(h, "v2", share) for h in hashes])
        sd = np.sqrt(share * (1 - share) / len(hashes))
        assert abs(taken.mean() - share) < 4 * sd
        assert all(rollout.routed(h, "v2", share) == t for h, t in zip(hashes[:500], taken[:500], strict=False))
    # another candidate takes another sample (a new candidate is not judged on the same images by construction)
    first = np.array([rollout.routed(h, "v2", 0.5) for h in hashes])
    other = np.array([rollout.routed(h, "v3", 0.5) for h in hashes])
    assert 0.4 < (first == other).mean() < 0.6


def test_shadow_predictions_are_logged_but_never_shown_or_acted_on(prod: Workspace) -> None:
    v1 = registry.production_version(prod)
    v2 = derived_version(prod, v1, permute=[1, 2, 0])  # answers differently on every image
    rollout.start(prod, v2, "shadow")
    now = serving.read(serving.deployed(prod), v1)
    assert now.rollout is not None and now.rollout.candidate == v2
    service = serving.Service(prod)
    _, scored = service.serve([*files(6), ("bad.png", b"nope")], "app")
    service.log.flush()
    assert [p.version for p in scored.shown] == [v1] * 6 and all(p.served for p in scored.shown)
    assert [f["source"] for f in scored.failed] == ["bad.png"]
    with store.connect(prod) as con:
        rows = con.execute(
            "SELECT model_version, stage, served, request_id, predicted, action, image_path FROM log_predictions ORDER BY name"
        ).df()
    assert len(rows) == 12 and rows["request_id"].nunique() == 6
    shadow = rows[rows["model_version"] == v2]
    assert set(shadow["stage"]) == {"shadow"} and not shadow["served"].any()
    served = rows[rows["served"]]
    assert set(served["model_version"]) == {v1} and set(served["stage"]) == {"production"}
    assert list(served["action"]) == [p.action for p in sorted(scored.shown, key=lambda p: p.name)]
    # every request disagrees, so every served image joins the review queue and is kept though keep_images is off
    assert served["image_path"].notna().all() and shadow["image_path"].isna().all()
    # the Monitor counts each request once
    assert int(queries.windows(prod, queries.LogFilter(window="day"))["predictions"].sum()) == 6
    assert int(queries.windows(prod, queries.LogFilter(window="day", version=v2))["predictions"].sum()) == 6


def test_limited_candidate_acts_on_its_hashed_share_within_scope(prod: Workspace) -> None:
    v1 = registry.production_version(prod)
    v2 = derived_version(prod, v1, permute=[1, 2, 0])
    active = rollout.start(prod, v2, "limited", Scope(share=0.5))
    predictor, candidate = scoring.load_predictor(prod), scoring.load_predictor(prod, v2)
    items = files(40)
    scored = serving.score(predictor, candidate, active, items)
    assert len(scored.shown) == 40 and len(scored.logged) == 80
    for shown in scored.shown:
        expected = rollout.routed(shown.sha256, v2, 0.5)
        assert (shown.version == v2) == expected
        assert shown.stage == ("limited" if expected else "production")
    assert 0 < sum(p.version == v2 for p in scored.shown) < 40
    pairs = {}
    for p in scored.logged:
        pairs.setdefault(p.request_id, []).append(p)
    assert all(len(v) == 2 and sum(x.served for x in v) == 1 for v in pairs.values())  # exactly one acts per request
    again = serving.score(predictor, candidate, active, items)  # the same image goes the same way every time
    assert [p.version for p in again.shown] == [p.version for p in scored.shown]

    confidence = {p.request_id: p.confidence for p in scored.logged if p.version == v2}
    bar = float(np.median(list(confidence.values())))
    scoped = rollout.start(prod, v2, "limited", Scope(share=1.0, min_confidence=bar))
    within = serving.score(predictor, candidate, scoped, items)
    cand = {p.name: p for p in within.logged if p.version == v2}
    assert [p.version == v2 for p in within.shown] == [cand[p.name].confidence >= bar for p in within.shown]
    assert 0 < sum(p.version == v2 for p in within.shown) < 40


def test_after_expansion_new_rows_come_from_the_new_production_and_old_rows_stay(prod: Workspace) -> None:
    v1 = registry.production_version(prod)
    v2 = derived_version(prod, v1)
    rollout.start(prod, v2, "shadow")
    service = serving.Service(prod)
    snap, _ = service.serve(files(4), "app")
    service.log.flush()
    rollout.expand(prod)
    assert serving.read(serving.deployed(prod), v2).rollout is None  # the serving cache saw the change through the stamp
    again, _ = service.serve(files(3), "app")
    service.log.flush()
    assert (snap.predictor.version, snap.candidate.version, again.predictor.version, again.candidate) == (v1, v2, v2, None)
    with store.connect(prod) as con:
        rows = con.execute("SELECT model_version, stage, served FROM log_predictions").df()
    assert len(rows) == 11
    assert ((rows["model_version"] == v2) & (rows["stage"] == "shadow")).sum() == 4  # the shadow history is kept
    assert ((rows["model_version"] == v2) & (rows["stage"] == "production") & rows["served"]).sum() == 3
    assert ((rows["model_version"] == v1) & rows["served"]).sum() == 4


def test_a_candidate_damaged_after_it_started_never_stops_production(prod: Workspace) -> None:
    from tests.helpers import cli

    v1 = registry.production_version(prod)
    v2 = derived_version(prod, v1, permute=[1, 2, 0])
    rollout.start(prod, v2, "shadow")
    weights = prod.models_dir / v2 / registry.WEIGHTS
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a disk error, a copy cut short
    service = serving.Service(prod)
    snap, scored = service.serve(files(3), "app")
    service.log.flush()
    assert snap.candidate is None and "rollout --rollback" in snap.candidate_problem and v2 in snap.candidate_problem
    assert [p.version for p in scored.shown] == [v1] * 3 and len(scored.logged) == 3  # production alone
    batch = cli("predict", "--workspace", "prod", str(prod.root / "images"), "--json")
    assert batch.returncode == 0, batch.stderr
    assert "cannot be loaded" in batch.stderr and "rollout --rollback" in batch.stderr
    from core.production import check

    found = check.check(prod)  # check names the rollout, and --repair ends it (the fix the message names)
    assert any(p.kind == "rollout" and p.subject == v2 and p.repairable for p in found.problems), found.as_dict()
    check.check(prod, repair=True)
    assert rollout.current(prod) is None and registry.production_version(prod) == v1
    assert serving.Service(prod).snapshot().candidate_problem is None
