"""Simulated traffic in a background thread, one per workspace in this process: a rerun of the page (another
click, a slow browser) cannot stop it halfway, and the user may visit other pages meanwhile."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from core.errors import UserError
from core.production import traffic
from core.progress import LatestJobs
from core.workspace.paths import Workspace


@dataclass
class SimulationJob:
    workspace: str
    days: int
    progress: tuple[int, int, str] = (0, 0, "starting")
    status: str = "running"  # running / finished / failed
    result: dict[str, Any] | None = None
    error: str | None = None
    thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self.status == "running"

    def record(self, done: int, total: int, message: str) -> None:
        self.progress = (done, total, message)


JOBS: LatestJobs[SimulationJob] = LatestJobs(
    "simulate", "A simulation is already running in this workspace; wait for it to finish."
)


def _run(ws: Workspace, job: SimulationJob, cfg: traffic.TrafficConfig) -> None:
    try:
        job.result = traffic.replay_traffic(ws, cfg, on_progress=job.record)
        job.status = "finished"
    except UserError as exc:
        job.error, job.status = str(exc), "failed"
    except OSError as exc:
        job.error, job.status = f"the simulation stopped: {exc}", "failed"
    finally:
        if job.status == "running":  # an unexpected error: say so, and let the thread report the traceback
            job.error, job.status = "the simulation stopped on an internal error; see the server log", "failed"


def start(ws: Workspace, days: int) -> SimulationJob:
    """Replay `days` of held-back images as production traffic (drifting from the middle day) in the background;
    refused while this workspace already simulates."""
    job = SimulationJob(ws.name, days)
    return JOBS.begin(ws.root, job, _run, ws, job, traffic.TrafficConfig(days=days, shift_day=days // 2))


def current(ws: Workspace) -> SimulationJob | None:
    """The latest simulation of this workspace in this process (running or just ended)."""
    return JOBS.current(ws.root)


def forget(ws: Workspace) -> None:
    JOBS.forget(ws.root)
