"""The one progress callback every stage reports through: (done, total, message). Pages turn it into a
progress bar, the command line into lines on stderr, tests into a list."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from core.errors import UserError

ProgressFn = Callable[[int, int, str], None]


class _Job(Protocol):
    thread: threading.Thread | None

    @property
    def running(self) -> bool: ...


J = TypeVar("J", bound=_Job)


class LatestJobs(Generic[J]):
    """Background jobs of one kind (training, simulated traffic): the latest of each workspace in this process,
    running or just ended, and at most one running per workspace (keyed by the workspace's folder)."""

    def __init__(self, kind: str, busy: str) -> None:
        self._kind, self._busy = kind, busy
        self._jobs: dict[str, J] = {}
        self._lock = threading.Lock()

    def begin(self, key: object, job: J, target: Callable[..., None], *args: object) -> J:
        """Run target(*args) in a daemon thread as this workspace's job; refused (`busy`) while one still runs."""
        with self._lock:
            current = self._jobs.get(str(key))
            if current is not None and current.running:
                raise UserError(self._busy)
            job.thread = threading.Thread(target=target, args=args, name=f"{self._kind}-{key}", daemon=True)
            self._jobs[str(key)] = job
            job.thread.start()
        return job

    def current(self, key: object) -> J | None:
        return self._jobs.get(str(key))

    def forget(self, key: object) -> None:
        """Drop an ended job (a running one stays)."""
        with self._lock:
            job = self._jobs.get(str(key))
            if job is not None and not job.running:
                del self._jobs[str(key)]


@dataclass
class ProgressJob:
    """A background job that reports (done, total, message) as it goes and ends with a result or a message."""

    workspace: str
    progress: tuple[int, int, str] = (0, 0, "starting")
    status: str = "running"  # running / finished / failed
    result: Any = None
    error: str | None = None
    thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self.status == "running"

    def record(self, done: int, total: int, message: str) -> None:
        self.progress = (done, total, message)


def run_reporting(job: ProgressJob, what: str, work: Callable[[ProgressFn], Any]) -> None:
    """Run work(progress) as the job's body: its result kept, a user's error or a disk's kept as the job's message
    (`what` names the job in it), anything else said to be an internal error (the thread reports the traceback)."""
    try:
        job.result = work(job.record)
        job.status = "finished"
    except UserError as exc:
        job.error, job.status = str(exc), "failed"
    except OSError as exc:
        job.error, job.status = f"the {what} stopped: {exc}", "failed"
    finally:
        if job.status == "running":
            job.error, job.status = f"the {what} stopped on an internal error; see the server log", "failed"
