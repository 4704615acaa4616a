"""Changes to the stored splits, each audited: counts, origins, drawing a test set, re-splitting,
completing a split so every label can be learnt and checked. The rule itself is `splits`."""

from __future__ import annotations

from dataclasses import asdict

import pandas as pd

from core.errors import UserError
from core.workspace import failpoints, store
from core.workspace.paths import Workspace
from core.workspace.splits import SPLITS, SplitPlan, check_plan, position, split_for


def plan_of(ws: Workspace) -> SplitPlan:
    """The workspace's plan, stored when its database was made."""
    with store.connect(ws) as con:
        return store.split_plan(con)


def counts(ws: Workspace) -> pd.DataFrame:
    """Usable images per label and split (columns train, valid, test), with a total row."""
    with store.connect(ws) as con:
        frame = con.execute("SELECT label, split, count(*) AS n FROM images WHERE status = 'ok' GROUP BY label, split").df()
    table = frame.pivot_table(index="label", columns="split", values="n", aggfunc="sum", fill_value=0)
    table = table.reindex(columns=list(SPLITS), fill_value=0).astype(int)
    table.loc["all labels"] = table.sum()
    return table


def origins(ws: Workspace) -> dict[str, int]:
    """How the usable images got their split: origin -> count."""
    with store.connect(ws) as con:
        rows = con.execute(
            "SELECT coalesce(split_by, 'earlier'), count(*) FROM images WHERE status = 'ok' GROUP BY 1 ORDER BY 1"
        ).fetchall()
    return {k: int(n) for k, n in rows}


def draw_test(ws: Workspace, share: float | None = None) -> int:
    """Move training images into test, chosen by hash, until test is `share` of all usable images (for
    workspaces made before test sets existed). Validation images stay where they are. Returns how many moved."""
    with store.transaction(ws) as con:  # read and write together: two draws at once move one set
        plan = store.split_plan(con)
        share = plan.test if share is None else share
        if not 0.02 <= share <= 0.4:
            raise UserError(f"Test share {share} is outside 0.02-0.4.")
        rows = con.execute("SELECT id, sha256, split FROM images WHERE status = 'ok'").fetchall()
        failpoints.hit("split.deciding")
        have = sum(split == "test" for _, _, split in rows)
        need = round(share * len(rows)) - have
        if need <= 0:
            raise UserError(f"Test already holds {have} of {len(rows)} images ({have / max(len(rows), 1):.0%}); nothing to draw.")
        train = sorted((position(sha, plan.seed + 1), i) for i, sha, split in rows if split == "train")
        if len(train) - need < 2:
            raise UserError("Too few training images to draw a test set from; add images first.")
        chosen = [i for _, i in train[:need]]
        store.move_splits(con, pd.DataFrame({"id": chosen, "split": "test", "split_by": "drawn"}), "test_drawn", {"share": share})
        failpoints.hit("split.changing")
    return len(chosen)


def resplit(ws: Workspace, plan: SplitPlan) -> dict[str, int]:
    """A new plan for the whole workspace: every image not placed by a folder gets its hash split under it.
    Versions trained before keep their own ids, so comparisons stay on images each one held out."""
    check_plan(plan)
    with store.transaction(ws) as con:
        rows = con.execute("SELECT id, sha256 FROM images WHERE coalesce(split_by, '') <> 'folder'").fetchall()
        failpoints.hit("split.deciding")
        moves = pd.DataFrame({"id": [r[0] for r in rows], "split": [split_for(r[1], plan) for r in rows], "split_by": "hash"})
        store.put_setting(con, "split_plan", asdict(plan))
        if len(moves):
            store.move_splits(con, moves, "resplit", {"plan": asdict(plan)})
        failpoints.hit("split.changing")
    return {s: int((moves["split"] == s).sum()) for s in SPLITS}


def complete(ws: Workspace, catalog: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Every label with two or more images gets a training and a validation image, taken from test first
    (then from the other split), lowest hash position first; stored and audited. Returns the catalog and
    one sentence per move."""
    with store.transaction(ws) as con:  # the splits as they are now (another process may have moved some), then the moves
        plan = store.split_plan(con)
        ids = catalog["id"].astype(str).tolist()
        now = dict(con.execute("SELECT id, split FROM images WHERE id IN (SELECT unnest(?::VARCHAR[]))", [ids]).fetchall())
        split = catalog.set_index("id")["split"].copy()
        split.update(pd.Series(now, dtype=object))
        moves, said = _completing(catalog, split, plan.seed)
        if moves:
            why = {"reason": "every label needs a train and a valid image"}
            store.move_splits(con, pd.DataFrame(moves), "split_completed", why)
    return catalog.assign(split=catalog["id"].map(split)), said


def _completing(catalog: pd.DataFrame, split: pd.Series, seed: int) -> tuple[list[dict[str, str]], list[str]]:
    """The moves that give every label of two or more images a train and a valid image (`split` is changed in
    place), and one sentence per move."""
    moves, said = [], []
    for label, group in catalog.groupby("label"):
        if len(group) < 2:
            continue
        ordered = sorted(group.itertuples(), key=lambda r: position(r.sha256, seed))
        for need, donors in (("train", ("test", "valid")), ("valid", ("test", "train"))):
            if (split[group["id"]] == need).any():
                continue
            for donor in donors:
                pool = [r for r in ordered if split[r.id] == donor]
                if not pool or (donor == "train" and len(pool) < 2):
                    continue
                split[pool[0].id] = need
                moves.append({"id": pool[0].id, "split": need, "split_by": "completed"})
                said.append(f"{label!r} had no {need} image: moved {pool[0].id} there from {donor}")
                break
    return moves, said
