"""Background training jobs: training goes on while the user visits other pages, one per workspace."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from core.errors import UserError
from core.model import runs, train_report
from core.model.config import TrainConfig
from core.model.events import BatchEvent, Cancelled, EpochMetrics, StageEvent, TrainEvent
from core.model.train_report import Overall, RunPlan
from core.progress import LatestJobs
from core.workspace.paths import Workspace


@dataclass
class Job:
    workspace: str
    config: TrainConfig
    cancel: threading.Event = field(default_factory=threading.Event)
    events: list[TrainEvent] = field(default_factory=list)
    times: list[float] = field(default_factory=list)  # time.monotonic() each event arrived, in step with events
    plan: RunPlan | None = None
    status: str = "running"  # running / finished / cancelled / failed
    summary: dict[str, Any] | None = None
    error: str | None = None
    started: float = field(default_factory=time.time)
    thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self.status == "running"

    def epochs(self) -> list[EpochMetrics]:
        return [e for e in self.events if isinstance(e, EpochMetrics)]

    def record(self, event: TrainEvent) -> None:
        self.times.append(time.monotonic())  # first: a reader pairs them up to the shorter list
        self.events.append(event)

    def overall(self) -> Overall | None:
        """The whole run's progress and time left (None without a plan)."""
        if self.plan is None:
            return None
        return train_report.overall(self.plan, list(zip(self.times, self.events, strict=False)), time.monotonic())

    def last_batch(self) -> BatchEvent | StageEvent | None:
        return next((e for e in reversed(self.events) if isinstance(e, BatchEvent | StageEvent)), None)


JOBS: LatestJobs[Job] = LatestJobs("train", "A training is already running in this workspace; wait for it or cancel it.")


def _run(ws: Workspace, job: Job) -> None:
    try:
        job.summary = runs.train_workspace(ws, job.config, job.record, job.cancel)
        job.status = "finished"
    except Cancelled:
        job.status = "cancelled"
    except UserError as exc:
        job.error, job.status = str(exc), "failed"
    finally:
        if job.status == "running":  # an unexpected error: say so, and let the thread report the traceback
            job.error, job.status = "training stopped on an internal error; see the server log", "failed"


def start(ws: Workspace, cfg: TrainConfig, save_as_defaults: bool = False) -> Job:
    """Check the settings and data (and, when asked, keep them as the workspace's defaults), then train in
    a background thread; refuse while this workspace already trains."""
    prepared = runs.prepare(ws, cfg)
    if save_as_defaults:
        runs.save_defaults(ws, cfg)
    job = Job(ws.name, cfg, plan=runs.plan_of(ws, prepared))
    return JOBS.begin(ws.root, job, _run, ws, job)


def retrain(ws: Workspace, version: str) -> Job:
    """Train again with the settings a version was trained with (after cleaning its data, say)."""
    return start(ws, runs.config_of(ws, version))


def current(ws: Workspace) -> Job | None:
    """The latest job of this workspace in this process (running or just ended)."""
    return JOBS.current(ws.root)


def forget(ws: Workspace) -> None:
    JOBS.forget(ws.root)
