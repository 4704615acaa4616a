"""Simulated traffic in a background thread, one per workspace in this process: a rerun of the page (another
click, a slow browser) cannot stop it halfway, and the user may visit other pages meanwhile."""

from __future__ import annotations

from dataclasses import dataclass

from core.production import traffic
from core.progress import LatestJobs, ProgressJob, run_reporting
from core.workspace.paths import Workspace


@dataclass
class SimulationJob(ProgressJob):
    days: int = 14  # result: replay_traffic's summary


JOBS: LatestJobs[SimulationJob] = LatestJobs(
    "simulate", "A simulation is already running in this workspace; wait for it to finish."
)


def start(ws: Workspace, days: int) -> SimulationJob:
    """Replay `days` of held-back images as production traffic (drifting from the middle day) in the background;
    refused while this workspace already simulates."""
    job = SimulationJob(ws.name, days=days)
    cfg = traffic.TrafficConfig(days=days, shift_day=days // 2)
    return JOBS.begin(
        ws.root, job, run_reporting, job, "simulation", lambda report: traffic.replay_traffic(ws, cfg, on_progress=report)
    )


def current(ws: Workspace) -> SimulationJob | None:
    """The latest simulation of this workspace in this process (running or just ended)."""
    return JOBS.current(ws.root)


def forget(ws: Workspace) -> None:
    JOBS.forget(ws.root)
