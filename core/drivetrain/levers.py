"""Drivetrain step 2, the levers: the actions, each one's cost of use, and the utility matrix (true class x action)."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from core.errors import UserError
from core.workspace import store
from core.workspace.paths import Workspace

OUT_OF_DOMAIN = "out of domain"


REFER = "refer to a human"


@dataclass(frozen=True)
class Utility:
    """Actions with a cost of use, and payoffs: rows = true class + out of domain, columns = actions."""

    actions: tuple[str, ...]
    costs: tuple[float, ...]
    rows: tuple[str, ...]
    payoff: tuple[tuple[float, ...], ...]
    refer: str = REFER  # the action that hands the image to a human
    unit: str = "points"

    def net(self) -> np.ndarray:
        """Payoff minus each action's cost of use: [rows, actions]."""
        return np.asarray(self.payoff, np.float64) - np.asarray(self.costs, np.float64)[None, :]

    @property
    def classes(self) -> tuple[str, ...]:
        return self.rows[:-1]


def default_utility(classes: list[str] | tuple[str, ...]) -> Utility:
    """One "act on <class>" per class plus referral: +10 right, -10 wrong, a review costs 2."""
    actions = tuple(f"act on {c}" for c in classes) + (REFER,)
    rows = tuple(classes) + (OUT_OF_DOMAIN,)
    payoff = []
    for r in range(len(rows)):
        payoff.append(tuple(10.0 if a == r else (0.0 if a == len(classes) else -10.0) for a in range(len(actions))))
    costs = tuple(0.0 for _ in classes) + (2.0,)
    return Utility(actions, costs, rows, tuple(payoff))


def utility_from_tables(
    actions: pd.DataFrame, matrix: pd.DataFrame, refer: str, classes: list[str], unit: str = "points"
) -> Utility:
    """Validate the Levers page's two tables (actions with costs; payoffs) into a Utility, or say what is wrong."""
    names = [str(n).strip() for n in actions["action"].tolist() if isinstance(n, str) and n.strip()]
    if len(names) != len(actions) or not names:
        raise UserError("Every action needs a name; remove empty rows from the actions table.")
    if len(set(names)) != len(names):
        raise UserError(f"Action names must differ; repeated: {sorted({n for n in names if names.count(n) > 1})}.")
    costs = [_number(v, f"cost of {n!r}") for n, v in zip(names, actions["cost"].tolist(), strict=True)]
    rows = [*classes, OUT_OF_DOMAIN]
    missing_rows = [r for r in rows if r not in matrix.index]
    missing_cols = [n for n in names if n not in matrix.columns]
    if missing_rows or missing_cols:
        raise UserError(f"The utility matrix lacks row(s) {missing_rows} or column(s) {missing_cols}; reload the page.")
    payoff = tuple(tuple(_number(matrix.loc[r, n], f"payoff of {n!r} when the truth is {r!r}") for n in names) for r in rows)
    if refer not in names:
        raise UserError(f"The referral action {refer!r} is not among the actions {names}.")
    return Utility(tuple(names), tuple(costs), tuple(rows), payoff, refer, unit.strip() or "points")


def unsaved(
    saved: Utility, actions: pd.DataFrame, matrix: pd.DataFrame, refer: str, classes: list[str], unit: str = "points"
) -> bool:
    """Whether the Levers page's tables say something other than the saved matrix (an incomplete table does)."""
    try:
        return utility_from_tables(actions, matrix, refer, classes, unit) != saved
    except UserError:
        return True  # a cell is empty or not a number: saving says which


def _number(value: object, what: str) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise UserError(f"The {what} is {value!r}: enter a number (e.g. -1000, -10 or 0).") from None
    if not math.isfinite(number):
        raise UserError(f"The {what} is missing: enter a number (e.g. -1000, -10 or 0).")
    return number


def matrix_frame(u: Utility) -> pd.DataFrame:
    return pd.DataFrame(np.asarray(u.payoff), index=list(u.rows), columns=list(u.actions))


def carried_matrix(known: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """The matrix for the actions table as edited, from the grid it replaces (the saved matrix, or the one on the
    page with its unsaved edits): each action keeps its column; when the table has as many rows as that grid has
    columns, a row whose name changed is a rename and its column goes with it (with rows added or removed a changed
    name could be either, so its column starts empty rather than take another action's payoffs)."""
    before = [str(c) for c in known.columns]
    renamed = len(names) == len(before)
    columns = {}
    for i, name in enumerate(names):
        source = name if name in before else (before[i] if renamed and before[i] not in names else None)
        columns[name] = known[source].tolist() if source is not None else [None] * len(known)
    return pd.DataFrame(columns, index=known.index)


MATRIX_WIDTH = 720  # px for the action columns: with the class column, the grid fits a laptop's page (~850 px)


def column_widths(names: list[str]) -> dict[str, int]:
    """Pixel widths of the matrix's action columns, each as wide as its name (header and icon) but together no wider
    than MATRIX_WIDTH, so that every action, "refer to a human" included, shows without a sideways scroll."""
    wanted = {n: 8 * len(n) + 44 for n in names}
    scale = min(1.0, MATRIX_WIDTH / max(1, sum(wanted.values())))
    return {n: max(60, int(w * scale)) for n, w in wanted.items()}


def suggest_actions(decision: str) -> list[str]:
    """Actions named in the objective's "decision served" ("alert rangers, do nothing or ask a ranger"): the
    parts between commas, semicolons, slashes and a final "or", when there are at least two ("and" often joins
    one action's words: "search and rescue")."""
    text = re.sub(r"\s+or\s+(?=[^,;/]*$)", ",", decision.strip().rstrip("."))
    parts = [p.strip().strip("\"'") for p in re.split(r"[,;/]", text)]
    found = list(dict.fromkeys(p for p in parts if 0 < len(p) <= 40))
    return found if len(found) >= 2 else []


REFER_WORDS = ("ask", "refer", "human", "review", "check", "person", "manual", "escalate", "expert", "clerk", "staff")


def suggested_utility(u: Utility, decision: str) -> Utility | None:
    """u with the actions the objective names (the one that sounds like asking a person refers; else "refer to a
    human" is added), or None when the objective names fewer than two or u already has them."""
    names = suggest_actions(decision)
    if not names or set(names) <= set(u.actions):
        return None
    refer = next((n for n in names if any(w in n.lower() for w in REFER_WORDS)), None)
    if refer is None:
        names, refer = [*names, REFER], REFER
    return with_actions(u, names, refer)


def with_actions(u: Utility, names: list[str], refer: str) -> Utility:
    """u with these actions instead of its own: payoffs of actions it already had are kept, new ones start at 0
    (the analyst fills them in); `refer` is the one that hands an image to a person (a cost of use of 2 when new)."""
    if refer not in names:
        raise UserError(f"The action that refers an image to a person ({refer!r}) must be one of the actions.")
    known = matrix_frame(u)
    cost = dict(zip(u.actions, u.costs, strict=True))
    payoff = tuple(tuple(float(known.loc[r, a]) if a in known.columns else 0.0 for a in names) for r in u.rows)
    costs = tuple(cost.get(a, 2.0 if a == refer else 0.0) for a in names)
    return Utility(tuple(names), costs, u.rows, payoff, refer, u.unit)


def actions_frame(u: Utility) -> pd.DataFrame:
    return pd.DataFrame({"action": list(u.actions), "cost": list(u.costs)})


UTILITY_KEY = "utility"


def load_utility(ws: Workspace, classes: list[str] | tuple[str, ...]) -> tuple[Utility, bool]:
    """The saved utility (True) when it fits these classes, else the default (False)."""
    saved = store.get_setting(ws, UTILITY_KEY)
    if saved and tuple(saved["rows"]) == (*classes, OUT_OF_DOMAIN):
        return _from_dict(saved), True
    return default_utility(classes), False


def save_utility(ws: Workspace, u: Utility, base: Utility | None = None) -> Utility:
    """Save u; with `base` (what this editor started from), merge into whatever another session saved since,
    cell by cell, so neither loses a change (the same cell changed both ways is refused). Returns what was saved."""
    with store.transaction(ws) as con:  # read and write together: sessions and processes one at a time
        before = store.get_settings(ws, (UTILITY_KEY,), con)[UTILITY_KEY]
        current = _from_dict(before) if before else None
        saved = merge(base, u, current) if base is not None and current is not None and current != base else u
        if saved == current:
            return saved  # nothing new (another session saved the same): no write, no audit row
        store.put_setting(con, UTILITY_KEY, asdict(saved))
        store.audit(ws, "utility_saved", before=before, after=asdict(saved), con=con)
    store.publish_serving(ws)
    return saved


def merge(base: Utility, mine: Utility, theirs: Utility) -> Utility:
    """A three-way merge of two sessions' edits of one utility: each field and cell takes the side that changed
    it; one changed by both to different values is a conflict, refused with what to do."""
    if tuple(mine.rows) != tuple(theirs.rows):
        raise UserError("The classes changed while you edited (another session or a new model): reload the page.")

    def pick(what: str, b: object, m: object, t: object) -> Any:
        if m == b or t == m:
            return t
        if t == b:
            return m
        raise UserError(
            f"{what} was changed in another session (to {t!r}) while you changed it (to {m!r}): reload the page to "
            "see the saved matrix, then make your change again."
        )

    actions = pick("The list of actions", base.actions, mine.actions, theirs.actions)
    costs = [dict(zip(u.actions, u.costs, strict=True)) for u in (base, mine, theirs)]
    cells = [{(r, a): v for r, row in zip(u.rows, u.payoff, strict=True) for a, v in zip(u.actions, row, strict=True)}
             for u in (base, mine, theirs)]  # fmt: skip
    return Utility(
        tuple(actions),
        tuple(pick(f"The cost of {a!r}", *(c.get(a) for c in costs)) for a in actions),
        tuple(mine.rows),
        tuple(
            tuple(pick(f"The payoff of {a!r} when the truth is {r!r}", *(c.get((r, a)) for c in cells)) for a in actions)
            for r in mine.rows
        ),
        pick("The referral action", base.refer, mine.refer, theirs.refer),
        pick("The unit", base.unit, mine.unit, theirs.unit),
    )


def _from_dict(saved: dict[str, Any]) -> Utility:
    return Utility(
        tuple(saved["actions"]),
        tuple(saved["costs"]),
        tuple(saved["rows"]),
        tuple(tuple(r) for r in saved["payoff"]),
        saved.get("refer", REFER),
        saved.get("unit", "points"),
    )
