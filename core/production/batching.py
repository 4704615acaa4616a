"""Dynamic batching: requests from many threads scored together, one forward pass at a time.

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
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from core.errors import UserError

T = TypeVar("T")  # one request's payload (its images, decoded)
R = TypeVar("R")  # one request's result


class Busy(UserError):
    """Too many images are waiting: try again shortly."""


class TooLate(UserError):
    """The request was still waiting when its deadline passed: nothing was scored or logged for it."""


@dataclass(frozen=True)
class BatchLimits:
    max_images: int = 16  # per forward pass; 16 by measurement (bench/serve_bench.py sweep of 8-64: best at 64 clients)
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for others
    max_queue: int = 256  # images waiting; one more and the request is refused (Busy)
    deadline_s: float = 60.0  # a request still waiting this long is withdrawn (TooLate)
    decoders: int = 0  # requests decoding at once, in their own threads (0: one per core)


@dataclass(eq=False)
class _Request(Generic[T, R]):
    payload: T
    images: int
    done: threading.Event = field(default_factory=threading.Event)
    started: bool = False
    result: R | None = None
    error: BaseException | None = None


class Batcher(Generic[T, R]):
    """Requests from any number of threads, scored together by one worker thread: `score(payloads)` gets the
    payloads of the requests taken together and returns one result per request, in order."""

    def __init__(self, score: Callable[[list[T]], list[R]], limits: BatchLimits = BatchLimits(), name: str = "batcher"):
        self._score, self.limits = score, limits
        self._queue: deque[_Request[T, R]] = deque()
        self._waiting = 0  # images in the queue
        self._lock = threading.Condition()
        self.batches: deque[int] = deque(maxlen=1000)  # images per forward pass, latest last
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        return self._waiting

    def submit(self, payload: T, images: int) -> R:
        """Score this request (of `images` images) with whatever arrives alongside; blocks until done (or raises
        Busy / TooLate, having scored nothing)."""
        return self.result(self.enqueue(payload, images))

    def enqueue(self, payload: T, images: int) -> _Request[T, R]:
        """Queue a request without waiting for it (Busy when the queue is full); `result` waits for it."""
        with self._lock:
            if self._waiting + images > self.limits.max_queue:
                raise Busy(f"{self._waiting} images are waiting to be scored: try again in a second.")
            request: _Request[T, R] = _Request(payload, images)
            self._queue.append(request)
            self._waiting += images
            self._lock.notify_all()
        return request

    def result(self, request: _Request[T, R]) -> R:
        """A queued request's result, once scored; withdrawn unscored (TooLate) if still waiting at its deadline."""
        if not request.done.wait(self.limits.deadline_s):
            with self._lock:
                if not request.started:  # still queued: withdraw it, so it is never scored nor logged
                    self._queue.remove(request)
                    self._waiting -= request.images
                    raise TooLate(
                        f"Not scored within {self.limits.deadline_s:g} s (the server is overloaded): nothing was "
                        "logged; try again."
                    )
            request.done.wait()  # being scored: its answer is on its way, and will be logged
        if request.error is not None:
            raise request.error
        return request.result  # type: ignore[return-value]

    def _take(self) -> list[_Request[T, R]]:
        """The next batch: the first request waiting, then whatever joins it within max_wait_ms, up to max_images."""
        with self._lock:
            self._lock.wait_for(lambda: bool(self._queue))
            batch = [self._queue.popleft()]
            images = batch[0].images
            deadline = time.monotonic() + self.limits.max_wait_ms / 1000
            while images < self.limits.max_images:
                if self._queue and images + self._queue[0].images <= self.limits.max_images:
                    batch.append(self._queue.popleft())
                    images += batch[-1].images
                    continue
                left = deadline - time.monotonic()
                if self._queue or left <= 0:  # the next one does not fit, or the wait is over
                    break
                self._lock.wait(left)
            for r in batch:
                r.started = True
                self._waiting -= r.images
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            try:
                results = self._score([r.payload for r in batch])
                self.batches.append(sum(r.images for r in batch))
                for r, result in zip(batch, results, strict=True):
                    r.result = result
            except BaseException as exc:  # noqa: BLE001 - each waiting request gets the error; the worker lives on
                for r in batch:
                    r.error = exc
            for r in batch:
                r.done.set()


def sizes_histogram(batches: Sequence[int], bounds: Sequence[int]) -> list[int]:
    """How many passes fell in each bucket (one more count than bounds: above the last)."""
    edges = list(zip((0, *bounds), (*bounds, 10**9), strict=True))
    return [sum(1 for s in batches if lo < s <= hi) for lo, hi in edges]
