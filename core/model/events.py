"""Training progress as named events: the training loop emits them, and a page, the command line or a
test subscribes (fastai's callbacks, reduced to one function that receives each event)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class Cancelled(Exception):
    """Raised inside training when the user asked to stop; nothing is saved."""


@dataclass(frozen=True)
class StageEvent:
    """A new stage begins (cache, features, frozen, unfrozen), with a sentence for the user."""

    stage: str
    message: str
    planned: int | None = None  # "unfrozen": the epochs decided once the frozen ones are done (0: none)


@dataclass(frozen=True)
class BatchEvent:
    """Progress within a stage of known size; eta_s is None where the stage cannot estimate it."""

    stage: str
    done: int
    total: int
    eta_s: float | None


@dataclass(frozen=True)
class EpochMetrics:
    """One finished epoch: the figures the Train page charts and the runs table stores."""

    epoch: int
    stage: str  # frozen / unfrozen
    train_loss: float
    valid_loss: float
    error_rate: float
    accuracy: float
    seconds: float


@dataclass(frozen=True)
class DoneEvent:
    """The run registered a model version; summary is what `python -m core train --json` prints."""

    summary: dict[str, Any]


TrainEvent = StageEvent | BatchEvent | EpochMetrics | DoneEvent
EventFn = Callable[[TrainEvent], None]
