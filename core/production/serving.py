"""Serving many requests at once: a batcher that scores the requests arriving together in one forward pass, and
the service's counters in Prometheus' text format.

On a CPU, eight threads each running their own forward pass share the cores and each waits several times longer;
one worker scoring everything that waits, up to `max_images` or `max_wait_ms`, keeps the cores on one pass at a
time (what TorchServe, BentoML and LitServe call dynamic batching). A request never waits behind a full queue:
past `max_queue` images waiting it is refused at once (Busy: the API answers 429 with Retry-After), and one that
is still waiting at its deadline is withdrawn, never scored, so nothing is logged for a request not answered.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Generic, TypeVar

from core.errors import UserError
from core.production.rollout import Scored

S = TypeVar("S")  # what the scoring function served a batch with (the serving snapshot)
SEP = "\x00"  # joins a request's number to each image's name inside a batch


class Busy(UserError):
    """Too many images are waiting: try again shortly."""


class TooLate(UserError):
    """The request was still waiting when its deadline passed: nothing was scored or logged for it."""


@dataclass(frozen=True)
class BatchLimits:
    max_images: int = 32  # per forward pass (a request larger than this is scored whole, alone)
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for others
    max_queue: int = 256  # images waiting; one more and the request is refused (Busy)
    deadline_s: float = 60.0  # a request still waiting this long is withdrawn (TooLate)


@dataclass(eq=False)
class _Request(Generic[S]):
    number: int
    items: list[tuple[str, bytes]]
    done: threading.Event = field(default_factory=threading.Event)
    started: bool = False
    withdrawn: bool = False
    result: tuple[S, Scored] | None = None
    error: BaseException | None = None


class Batcher(Generic[S]):
    """Requests from any number of threads, scored together by one worker thread with `score(items)`, which
    returns what it served them with and the Scored result; each request gets back its own part, in order."""

    def __init__(self, score: Callable[[list[tuple[str, bytes]]], tuple[S, Scored]], limits: BatchLimits = BatchLimits()):
        self._score, self.limits = score, limits
        self._queue: deque[_Request[S]] = deque()
        self._waiting = 0  # images in the queue
        self._lock = threading.Condition()
        self._numbers = 0
        self.batches: deque[int] = deque(maxlen=1000)  # images per forward pass, latest last
        self._thread = threading.Thread(target=self._run, name="batcher", daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        return self._waiting

    def submit(self, items: Sequence[tuple[str, bytes]]) -> tuple[S, Scored]:
        """Score these images with whatever arrives alongside; blocks until done (or raises Busy / TooLate)."""
        with self._lock:
            if self._waiting + len(items) > self.limits.max_queue:
                raise Busy(f"{self._waiting} images are waiting to be scored: try again in a second.")
            self._numbers += 1
            request: _Request[S] = _Request(self._numbers, [(f"{self._numbers}{SEP}{n}", d) for n, d in items])
            self._queue.append(request)
            self._waiting += len(items)
            self._lock.notify_all()
        if not request.done.wait(self.limits.deadline_s):
            with self._lock:
                if not request.started:  # still queued: withdraw it, so it is never scored nor logged
                    request.withdrawn = True
                    self._queue.remove(request)
                    self._waiting -= len(items)
                    raise TooLate(
                        f"Not scored within {self.limits.deadline_s:g} s (the server is overloaded): nothing was "
                        "logged; try again."
                    )
            request.done.wait()  # being scored: its answer is on its way, and will be logged
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def _take(self) -> list[_Request[S]]:
        """The next batch: the first request waiting, then whatever joins it within max_wait_ms, up to max_images."""
        with self._lock:
            self._lock.wait_for(lambda: bool(self._queue))
            batch = [self._queue.popleft()]
            images = len(batch[0].items)
            deadline = time.monotonic() + self.limits.max_wait_ms / 1000
            while images < self.limits.max_images:
                fits = self._queue and images + len(self._queue[0].items) <= self.limits.max_images
                if fits:
                    batch.append(self._queue.popleft())
                    images += len(batch[-1].items)
                    continue
                left = deadline - time.monotonic()
                if self._queue or left <= 0:  # the next one does not fit, or the wait is over
                    break
                self._lock.wait(left)
            for r in batch:
                r.started = True
                self._waiting -= len(r.items)
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            try:
                served, scored = self._score([item for r in batch for item in r.items])
                self.batches.append(sum(len(r.items) for r in batch))
                for r in batch:
                    r.result = (served, _part(scored, r.number))
            except BaseException as exc:  # noqa: BLE001 - each waiting request gets the error; the worker lives on
                for r in batch:
                    r.error = exc
            for r in batch:
                r.done.set()


def _part(scored: Scored, number: int) -> Scored:
    """One request's predictions and failures out of a batch's, with their own names back."""
    prefix = f"{number}{SEP}"

    def mine(name: str) -> bool:
        return name.startswith(prefix)

    def own(name: str) -> str:
        return name[len(prefix) :]

    return Scored(
        [replace(p, name=own(p.name)) for p in scored.shown if mine(p.name)],
        [replace(p, name=own(p.name)) for p in scored.logged if mine(p.name)],
        [f | {"source": own(f["source"])} for f in scored.failed if mine(f["source"])],
    )


def histogram(
    lines: list[str], labels: str, name: str, help_text: str, bounds: Sequence[float], per_bucket: Sequence[int], total: float
) -> None:
    """A Prometheus histogram: cumulative buckets (per_bucket has one more count than bounds: above the last), sum
    and count."""
    lines.extend([f"# HELP {name} {help_text}", f"# TYPE {name} histogram"])
    cumulative = 0
    for bound, n in zip([*(f"{b:g}" for b in bounds), "+Inf"], per_bucket, strict=True):
        cumulative += n
        lines.append(f'{name}_bucket{{{labels},le="{bound}"}} {cumulative}')
    lines.extend([f"{name}_sum{{{labels}}} {total:g}", f"{name}_count{{{labels}}} {cumulative}"])


LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


@dataclass
class Metrics:
    """Counters for GET /metrics (Prometheus text format 0.0.4)."""

    requests: dict[str, int] = field(default_factory=dict)  # by outcome: ok, bad_input, busy, too_late, error
    latency: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    latency_sum: float = 0.0
    images: int = 0
    ood: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def request(self, outcome: str, seconds: float) -> None:
        with self.lock:
            self.requests[outcome] = self.requests.get(outcome, 0) + 1
            self.latency[next((i for i, b in enumerate(LATENCY_BUCKETS) if seconds <= b), len(LATENCY_BUCKETS))] += 1
            self.latency_sum += seconds

    def answered(self, images: int, ood: int) -> None:
        with self.lock:
            self.images += images
            self.ood += ood

    def text(self, batches: Sequence[int], waiting: int, log_pending: int, log_spooled: int, replica: str) -> str:
        """The exposition: one HELP and TYPE line per metric, labels on the replica."""
        r = f'replica="{replica}"'
        lines: list[str] = []

        def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
            lines.extend([f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"])
            lines.extend(f"{name}{{{labels}}} {value:g}" for labels, value in samples)

        with self.lock:
            outcomes = sorted(self.requests.items())
            latency, total, images, ood = list(self.latency), self.latency_sum, self.images, self.ood
        metric(
            "imagedp_requests_total",
            "counter",
            "Prediction requests by outcome.",
            [(f'{r},outcome="{o}"', n) for o, n in outcomes],
        )
        histogram(lines, r, "imagedp_request_seconds", "Time to answer a prediction request.", LATENCY_BUCKETS, latency, total)
        sizes = list(batches)
        per_size = [
            sum(1 for s in sizes if lo < s <= hi) for lo, hi in zip((0, *BATCH_BUCKETS), (*BATCH_BUCKETS, 10**9), strict=True)
        ]
        histogram(lines, r, "imagedp_batch_images", "Images per forward pass (latest 1000).", BATCH_BUCKETS, per_size, sum(sizes))
        metric("imagedp_queue_images", "gauge", "Images waiting to be scored.", [(r, waiting)])
        metric("imagedp_images_total", "counter", "Images answered.", [(r, images)])
        metric("imagedp_out_of_domain_total", "counter", "Images answered that were flagged out of domain.", [(r, ood)])
        metric(
            "imagedp_log_backlog_rows", "gauge", "Predictions handed to the log, not yet written or spooled.", [(r, log_pending)]
        )
        metric("imagedp_log_spooled_rows_total", "counter", "Predictions spooled (the database was busy).", [(r, log_spooled)])
        return "\n".join(lines) + "\n"
