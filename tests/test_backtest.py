"""Backtest before shadow: kept production images replayed through a candidate, as the serving path scores them,
logged as 'backtest' and never part of what monitoring, the review queue or the rollout comparison count."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from core.drivetrain import accepted
from core.errors import UserError
from core.model import registry, scoring
from core.production import backtest, backtest_jobs, gate, prediction, prediction_log, review, serving
from core.production.monitoring import accuracy, queries
from core.production.prediction import Deciders
from core.progress import ProgressFn, ProgressJob, run_reporting
from core.workspace import store
from core.workspace.paths import Workspace
from tests.helpers import app, cli, derived_version, errors, log_scored


def log_day(ws: Workspace, n: int, keep: bool, seed: int, **changes: object) -> list[prediction.Prediction]:
    return log_scored(ws, n, seed, keep, prefix="b", base=300, apart=timedelta(minutes=1), **changes)


def figures(ws: Workspace) -> tuple[object, ...]:
    """What monitoring, the queue and the comparison show."""
    flt = queries.LogFilter(sources=prediction_log.SOURCES)
    win = queries.windows(ws, flt).drop(columns=["latency_p50_ms"])
    every = queries.LogFilter(sources=prediction_log.SOURCES, version=registry.production_version(ws))
    return (
        win.to_json(date_format="iso"),
        queries.class_mix(ws, flt).to_json(date_format="iso"),
        queries.windows(ws, every).drop(columns=["latency_p50_ms"]).to_json(date_format="iso"),
        accuracy.accuracy(ws, flt),
        review.backlog(ws),
        [i.id for i in review.pending(ws, 100)],
        prediction_log.count(ws, "app"),
    )


def test_the_backtest_replays_kept_images_as_the_serving_path_scores_them(prod: Workspace) -> None:
    v1 = registry.production_version(prod)
    kept = log_day(prod, 9, keep=True, seed=1)
    lost = log_day(prod, 4, keep=False, seed=2)  # not kept: cannot be replayed
    flagged = log_day(prod, 2, keep=False, seed=3, referred=True)  # the queue keeps these
    review.label(prod, flagged[0].id, flagged[0].label, "ann")
    v2 = derived_version(prod, v1, permute=[1, 2, 0])  # answers differently everywhere
    accepted.accept_optimized(prod, v2)
    before = figures(prod)

    found = backtest.run(prod, v2, days=7)
    assert (found.period, found.replayed, found.not_kept) == (15, 11, 4)
    assert found.agreement.n == 11 and found.agreement.k == 0 and len(found.changed) == found.replayed - found.same_action.k
    with store.connect(prod) as con:
        rows = con.execute(
            "SELECT name, predicted, probs, action, served, stage, source, request_id FROM log_predictions "
            "WHERE stage = 'backtest' ORDER BY name"
        ).df()
    assert set(rows["served"]) == {False} and set(rows["source"]) == {"backtest"} and len(rows) == 11
    # the same images through the serving path, with the candidate's accepted policy
    items = [(p.name, p.data) for p in kept + flagged]
    direct = serving.score(scoring.load_predictor(prod, v2), None, None, items, Deciders.of(accepted.active(prod, v2)))
    by_name = {p.name: p for p in direct.shown}
    for r in rows.itertuples():
        assert r.predicted == by_name[r.name].label and r.action == by_name[r.name].action
        assert np.allclose(np.asarray(r.probs), by_name[r.name].probs, atol=1e-5)
    assert set(rows["request_id"]) == {p.request_id or p.id for p in kept + flagged}
    # one labelled request (a hard case): realised utility for each side, the paired difference from it
    assert found.utility_n == 1 and found.utility["production"] is not None
    assert found.labelled.labelled == 1 and found.audited.labelled == 0
    assert backtest.words(found.labelled, "x") == "x: too few (n 1) for a rate"

    assert figures(prod) == before  # monitoring, the queue and the comparison never see a replay
    assert gate.compare(prod, v2).paired == 0
    again = backtest.run(prod, v2, days=7)  # replays nothing twice
    assert again.replayed == 11
    with store.connect(prod) as con:
        assert con.execute("SELECT count(*) FROM log_predictions WHERE stage = 'backtest'").fetchone()[0] == 11
    assert {p.id for p in lost}.isdisjoint(set(found.rows.dropna(subset=["backtest_id"])["id"]))


def test_the_backtest_command(prod: Workspace) -> None:
    v1 = registry.production_version(prod)
    log_day(prod, 6, keep=True, seed=4)
    v2 = derived_version(prod, v1)  # the same weights: agrees everywhere
    done = cli("rollout", "--workspace", "prod", "--backtest", v2, "--days", "3", "--json")
    assert done.returncode == 0, done.stderr
    b = json.loads(done.stdout)["backtest"]
    assert (b["served"], b["replayed"], b["agreement"], b["actions_changed"]) == (6, 6, 1.0, 0)
    text = cli("rollout", "--workspace", "prod", "--backtest", v2)
    assert text.returncode == 0 and "backtest of" in text.stdout and "6 of 6 served predictions replayed" in text.stdout
    missing = cli("rollout", "--workspace", "prod", "--backtest", "v99")
    assert missing.returncode == 2 and "No model version 'v99'" in missing.stderr
    assert isinstance(backtest.report(prod, v2, 3).rows, pd.DataFrame)


def test_the_rollout_page_backtests_a_version_before_shadow(prod: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """In the background: the page shows its progress and no second button while it runs (a second start is
    refused), then the result once it has ended."""
    v1 = registry.production_version(prod)
    log_day(prod, 6, keep=True, seed=5)
    log_day(prod, 2, keep=False, seed=6)
    v2 = derived_version(prod, v1, permute=[1, 2, 0])
    held, replay = threading.Event(), backtest.run
    monkeypatch.setattr(backtest, "run", lambda *a: held.wait(300) and replay(*a))  # running until the test lets it go
    at = app("app_pages/rollout.py", "prod")
    assert not at.exception and not errors(at)
    at.selectbox(key="backtest_version").set_value(v2).run()
    at.button(key="backtest_run").click().run()
    assert not at.exception and not errors(at)
    job = backtest_jobs.current(prod)
    assert job is not None and job.running and (job.version, job.days) == (v2, 7)
    assert not [b for b in at.button if b.key == "backtest_run"] and at.get("progress")
    with pytest.raises(UserError, match="already running"):
        backtest_jobs.start(prod, v2, 7)
    held.set()
    job.thread.join(timeout=600)
    at.run()
    assert not at.exception and not errors(at) and backtest_jobs.current(prod) is None  # taken by the page
    assert any("6 of 8" in m.value and "2 could not be" in m.value for m in at.markdown)
    assert any("On the audit sample (random: the one to believe): none labelled" in m.value for m in at.markdown)
    assert [m.value for m in at.metric][-1] == "6"  # every action changes: the candidate answers another class


def test_a_backtest_that_fails_says_why_on_the_page(prod: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    v2 = derived_version(prod, registry.production_version(prod))
    held = threading.Event()

    def refuse(*_: object) -> None:
        held.wait(300)  # ended after the click's run, as a replay that takes a while
        raise UserError("The log cannot be read: run `python -m core check --workspace prod`.")

    monkeypatch.setattr(backtest, "run", refuse)
    at = app("app_pages/rollout.py", "prod")
    at.selectbox(key="backtest_version").set_value(v2).run()
    at.button(key="backtest_run").click().run()
    job = backtest_jobs.current(prod)
    assert job is not None and job.running
    held.set()
    job.thread.join(timeout=600)
    at.run()
    assert not at.exception and backtest_jobs.current(prod) is None
    assert [e.value for e in at.error] == [
        f"Backtest of {v2}: The log cannot be read: run `python -m core check --workspace prod`."
    ]
    assert [b for b in at.button if b.key == "backtest_run"]  # and it can be started again


def test_a_background_job_ends_with_its_result_or_a_message() -> None:
    """run_reporting, the body of the backtest's and the simulator's jobs: the result kept; a user's error as it
    is; a disk's error named with the job; anything else said to be internal, and raised for the thread's log."""

    def body(outcome: object) -> Callable[[ProgressFn], object]:
        def work(report: ProgressFn) -> object:
            report(1, 2, "halfway")
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome

        return work

    done = ProgressJob("ws")
    run_reporting(done, "backtest", body({"replayed": 3}))
    assert (done.status, done.result, done.error, done.progress) == ("finished", {"replayed": 3}, None, (1, 2, "halfway"))
    refused = ProgressJob("ws")
    run_reporting(refused, "backtest", body(UserError("No model version 'v9'.")))
    assert (refused.status, refused.error, refused.running) == ("failed", "No model version 'v9'.", False)
    disk = ProgressJob("ws")
    run_reporting(disk, "backtest", body(OSError(28, "No space left on device")))
    assert disk.status == "failed" and disk.error == "the backtest stopped: [Errno 28] No space left on device"
    broken = ProgressJob("ws")
    with pytest.raises(ZeroDivisionError):
        run_reporting(broken, "simulation", body(ZeroDivisionError()))
    assert broken.status == "failed" and broken.error == "the simulation stopped on an internal error; see the server log"
