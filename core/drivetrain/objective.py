"""Drivetrain step 1, the objective: the outcome wanted, the decision served, who is affected, how success is measured."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from core.workspace import store
from core.workspace.paths import Workspace


@dataclass(frozen=True)
class Objective:
    statement: str = ""  # the outcome wanted, in words
    decision: str = ""  # the decision the model serves
    affected: str = ""  # who is affected by it
    success: str = ""  # how success is measured

    @property
    def complete(self) -> bool:
        return all(v.strip() for v in asdict(self).values())


OBJECTIVE_KEY = "objective"


def load_objective(ws: Workspace) -> Objective:
    return Objective(**(store.get_setting(ws, OBJECTIVE_KEY) or {}))


def save_objective(ws: Workspace, objective: Objective) -> None:
    before = store.get_setting(ws, OBJECTIVE_KEY)
    store.set_setting(ws, OBJECTIVE_KEY, asdict(objective))
    store.audit(ws, "objective_saved", before=before, after=asdict(objective))
