"""The prediction service's counters, in Prometheus' text format (GET /metrics)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from core.production.batching import sizes_histogram


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

    def text(self, batches: Sequence[int], waiting: int, log_pending: int, replica: str) -> str:
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
        per_size = sizes_histogram(sizes, BATCH_BUCKETS)
        histogram(lines, r, "imagedp_batch_images", "Images per forward pass (latest 1000).", BATCH_BUCKETS, per_size, sum(sizes))
        metric("imagedp_queue_images", "gauge", "Images waiting to be scored.", [(r, waiting)])
        metric("imagedp_images_total", "counter", "Images answered.", [(r, images)])
        metric("imagedp_out_of_domain_total", "counter", "Images answered that were flagged out of domain.", [(r, ood)])
        metric("imagedp_log_backlog_rows", "gauge", "Predictions handed to the log, not yet committed.", [(r, log_pending)])
        return "\n".join(lines) + "\n"
