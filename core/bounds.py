"""Every numeric flag and setting's allowed range, in one table, checked before any work starts: the command line
uses them as argparse types (refused with exit status 2 before the command runs), and the configs the pages build
are checked against the same table (`check`) before a run starts."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass

from core.errors import UserError


@dataclass(frozen=True)
class Bound:
    what: str  # in words, for the message
    lo: float
    hi: float
    lo_open: bool = False  # lo itself is refused
    hi_open: bool = False  # hi itself is refused
    integer: bool = False

    def words(self) -> str:
        kind = "a whole number" if self.integer else "a number"
        lo = f"above {self.lo:g}" if self.lo_open else f"at least {self.lo:g}"
        hi = f"below {self.hi:g}" if self.hi_open else f"at most {self.hi:g}"
        return f"{kind} {lo} and {hi}"

    def check(self, value: float, name: str) -> float:
        """The value, or UserError naming the flag, the range and what it is."""
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        ok = ok and (not self.integer or float(value).is_integer())
        ok = ok and (value > self.lo if self.lo_open else value >= self.lo)
        ok = ok and (value < self.hi if self.hi_open else value <= self.hi)
        if not ok:
            raise UserError(f"{name} takes {self.words()} ({self.what}); got {value}.")
        return int(value) if self.integer else float(value)


BOUNDS: dict[str, Bound] = {
    # training
    "lr": Bound("the head's learning rate", 0, 10, lo_open=True),
    "body_lr_factor": Bound("the body's rate as a share of the head's", 0, 100),
    "label_smoothing": Bound("the share of each label spread over the other classes", 0, 1, hi_open=True),
    "batch_size": Bound("images per step", 1, 4096, integer=True),
    "freeze_epochs": Bound("head-only epochs", 0, 1000, integer=True),
    "epochs": Bound("whole-network epochs", 0, 1000, integer=True),
    "size": Bound("pixels per side", 32, 512, integer=True),
    "min_scale": Bound("the smallest share of an image a random crop keeps", 0.05, 1),
    "seed": Bound("a random seed", 0, 2**32 - 1, integer=True),
    # data
    "results": Bound("search results per query", 1, 1000, integer=True),
    "workers": Bound("downloads at once", 1, 256, integer=True),
    "timeout": Bound("seconds to wait for one download", 0, 3600, lo_open=True),
    "max_bytes": Bound("the largest file accepted, in bytes", 1, 2_000_000_000, integer=True),
    "min_side": Bound("the smallest width or height accepted, in pixels", 1, 100_000, integer=True),
    "max_distance": Bound("perceptual-hash bits for near duplicates", 0, 64, integer=True),
    "share": Bound("a share of the images", 0, 1, lo_open=True, hi_open=True),
    "split_share": Bound("a share of the images", 0, 1, hi_open=True),
    # production
    "predict_batch_size": Bound("images per forward pass", 1, 4096, integer=True),
    "limit": Bound("items to list", 1, 1_000_000, integer=True),
    "days": Bound("days", 1, 3650, integer=True),
    "per_day": Bound("predictions per day", 1, 1_000_000, integer=True),
    "day": Bound("a day of the simulation", 0, 3650, integer=True),
    "window_size": Bound("predictions per window", 10, 1_000_000, integer=True),
    "rollout_share": Bound("the share of requests the candidate answers", 0, 1, lo_open=True),
    "confidence": Bound("a confidence", 0, 1),
    "audit_share": Bound("the share of served predictions drawn at random for review", 0, 0.5),
    "port": Bound("a TCP port", 0, 65535, integer=True),
    "max_batch": Bound("images per forward pass", 1, 4096, integer=True),
    "max_wait_ms": Bound("milliseconds a batch waits to fill", 0, 10_000),
    "max_queue": Bound("images waiting before the API answers 429", 1, 1_000_000, integer=True),
    "lock_timeout": Bound("seconds a writer waits for another process's hold on the database", 0, 3600, lo_open=True),
    "decoders": Bound("decodes at once (0: one per core)", 0, 1024, integer=True),
}


def check(key: str, value: float, name: str | None = None) -> float:
    return BOUNDS[key].check(value, name or key.replace("_", " "))


def arg(key: str, flag: str) -> Callable[[str], float]:
    """An argparse type: the flag's text as a number within its bound, or a usage error before anything runs."""
    bound = BOUNDS[key]

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}; {flag} takes {bound.words()}") from None
        try:
            return bound.check(value, flag)
        except UserError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = key  # argparse names the type in some messages
    return parse
