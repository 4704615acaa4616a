"""A backtest in a background thread, one per workspace in this process: a long period's replay holds no page (the
user may change a setting or visit another page meanwhile), and a rerun cannot stop it halfway. Stopped anyway (the
server ends), it loses nothing: a replay scores only the requests not replayed yet, so the next one goes on."""

from __future__ import annotations

from dataclasses import dataclass

from core.production import backtest
from core.progress import LatestJobs, ProgressJob, run_reporting
from core.workspace.paths import Workspace


@dataclass
class BacktestJob(ProgressJob):
    version: str = ""
    days: int = 7  # result: a backtest.Backtest


JOBS: LatestJobs[BacktestJob] = LatestJobs("backtest", "A backtest is already running in this workspace; wait for it to finish.")


def start(ws: Workspace, version: str, days: int) -> BacktestJob:
    """Replay the last `days` of kept production images through `version` in the background; refused while this
    workspace already backtests."""
    job = BacktestJob(ws.name, version=version, days=days)
    return JOBS.begin(ws.root, job, run_reporting, job, "backtest", lambda report: backtest.run(ws, version, days, report))


def current(ws: Workspace) -> BacktestJob | None:
    """The latest backtest of this workspace in this process (running or just ended)."""
    return JOBS.current(ws.root)


def forget(ws: Workspace) -> None:
    JOBS.forget(ws.root)
