"""The split rule, pure (changes to stored splits are `split_ops`). Train / valid / test per image: a
function of its content hash and the workspace's split plan, stored in the catalog when the image
arrives and never recomputed.

Relabelling or deleting an image moves no other image; exact copies of one file always share a
split (no copy leaks from train into test); `train/ valid/ test/` folders a user brings win. The
only later moves are explicit and audited: drawing a test set in a workspace made before test
sets existed, completing a split so that every label can be learnt and checked, and re-splitting
with a new plan.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from core.errors import UserError

SPLITS = ("train", "valid", "test")
ORIGINS = {
    "hash": "drawn from the content hash and the split seed",
    "folder": "from the train/ valid/ test/ folder it was imported from",
    "earlier": "kept from before splits were stored per image",
    "drawn": "drawn into test from training images on request",
    "completed": "moved so that every label has a training and a validation image",
}


@dataclass(frozen=True)
class SplitPlan:
    seed: int = 42
    valid: float = 0.2
    test: float = 0.1

    @property
    def train(self) -> float:
        return 1.0 - self.valid - self.test


def check_plan(plan: SplitPlan) -> None:
    if not 0.05 <= plan.valid <= 0.5:
        raise UserError(f"Validation share {plan.valid} is outside 0.05-0.5.")
    if not 0.0 <= plan.test <= 0.4:
        raise UserError(f"Test share {plan.test} is outside 0-0.4.")
    if plan.train < 0.3:
        raise UserError(f"Validation and test shares leave {plan.train:.0%} for training; keep at least 30%.")


def position(sha256: str, seed: int) -> float:
    """Where an image falls in [0, 1) for a seed: uniform over contents, the same on every machine."""
    digest = hashlib.sha256(f"{seed}:{sha256}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_for(sha256: str, plan: SplitPlan) -> str:
    """test below plan.test, valid up to plan.test + plan.valid, train above: stratified in expectation."""
    u = position(sha256, plan.seed)
    return "test" if u < plan.test else "valid" if u < plan.test + plan.valid else "train"
