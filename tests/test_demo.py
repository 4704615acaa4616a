"""The demo `make run` opens, as a worked example (two digits and a tiny recipe here, the same steps)."""

from __future__ import annotations

from dataclasses import replace

from core.drivetrain import accepted, levers, objective
from core.model import registry
from core.production import audit, demo, gate, prediction_log, review, rollout
from core.production.monitoring import accuracy, queries
from core.workspace import store, workspaces
from tests.helpers import TINY


def test_the_demo_arrives_with_every_step_of_the_walk_done_once() -> None:
    cfg = replace(TINY, freeze_epochs=2, epochs=0, lr=1e-2)
    said: list[str] = []
    done = demo.prepare_demo("demo", days=4, say=said.append, classes=("0", "1"), cfg=cfg, per_day=25)
    ws = workspaces.resolve("demo")
    production, candidate = registry.production_version(ws), done["candidate"]
    assert production == "v1" and candidate == "v2"
    assert objective.load_objective(ws).complete
    assert levers.load_utility(ws, ["0", "1"])[1]  # a saved matrix, not the default shown as unsaved
    assert accepted.active(ws, production) is not None and accepted.active(ws, candidate) is not None
    active = rollout.current(ws)
    assert (active.candidate, active.stage, active.production) == (candidate, "shadow", production)
    assert 0 < done["reviewed"] <= demo.REVIEWED
    assert audit.read(ws).share == demo.AUDIT_SHARE
    with store.connect(ws) as con:
        reviews = con.execute("SELECT DISTINCT source, reviewer FROM log_feedback WHERE source = 'review'").fetchall()
        shadow_days = con.execute("SELECT count(DISTINCT ts::DATE) FROM log_predictions WHERE stage = 'shadow'").fetchone()[0]
        days = con.execute("SELECT count(DISTINCT ts::DATE) FROM log_predictions").fetchone()[0]
        drawn = con.execute("SELECT count(*) FROM log_predictions WHERE audit AND served IS NOT FALSE").fetchone()[0]
    assert reviews == [("review", demo.REVIEWER)]
    assert 0 < shadow_days < days  # the candidate ran over part of the history only
    comparison = gate.compare(ws, candidate)
    assert comparison.paired > 0 and comparison.accuracy.labelled > 0  # the simulator's feedback labels the pairs
    # every audit item drawn is labelled (those among the first reviews were already): the audit's estimate has them all
    flt = queries.LogFilter(sources=prediction_log.SOURCES)
    found = accuracy.accuracy(ws, flt)
    assert found.drawn == drawn and found.audit.n == drawn and done["reviewed"] + done["audited"] >= drawn
    assert review.backlog(ws).reviewed == done["reviewed"] + done["audited"]

    count = prediction_log.count(ws)
    again = demo.prepare_demo("demo", days=4, say=said.append, classes=("0", "1"), cfg=cfg, per_day=25)
    assert prediction_log.count(ws) == count and "simulated" not in again and "trained" not in again
    assert any("shadow" in line for line in said)
