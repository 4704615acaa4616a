"""The human loop: the review queue (review_queue: what waits, in which order), labels with their provenance,
their undo and import, and reviewed production images back into the training data.

Labels no human gave (the model's own predictions) enter the data only when asked explicitly, marked
`label_source = 'model'`, and training refuses them unless told otherwise: a model trained on its own outputs
learns its own mistakes (the fastai book's feedback loops).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from core.data import gather
from core.errors import UserError
from core.production import audit, labelled, prediction_log
from core.production.prediction_log import NONE_OF_THESE
from core.production.review_queue import (  # noqa: F401  (the queue's names, as callers know them)
    FLAGS,
    ORDERS,
    REASONS,
    Backlog,
    Item,
    Queue,
    backlog,
    classes_of,
    pending,
    pending_rows,
    queue,
    why,
)
from core.workspace import failpoints, store
from core.workspace.paths import Workspace


def label(ws: Workspace, prediction_id: str, answer: str, reviewer: str | None) -> bool:
    """A reviewer's answer for one queued prediction: a class, or 'none of these', recorded with who gave it. One
    label per prediction: the same answer again (a second click, a page left open) records nothing and returns
    False; a different one is refused with whose label is there (the queue had moved on)."""
    who = (reviewer or "").strip()
    if not who:
        raise UserError(
            "Say who gives this label (a name or initials): every label is recorded with who gave it. "
            "On the Review page, fill in 'Your name'; on the command line, pass --reviewer NAME."
        )
    with store.transaction(ws) as con:  # read and write in one transaction: two at once record one
        row = con.execute("SELECT model_version, name FROM log_predictions WHERE id = ?", [prediction_id]).fetchone()
        if row is None:
            raise UserError(f"No prediction {prediction_id!r} in this workspace's log.")
        there = con.execute(
            "SELECT label, reviewer FROM log_feedback WHERE prediction_id = ? AND source = 'review' ORDER BY ts DESC LIMIT 1",
            [prediction_id],
        ).fetchone()
        if there == (answer, who):
            return False
        if there is not None:
            raise UserError(
                f"{row[1] or prediction_id} was already labelled {there[0]!r} by {there[1]} (the queue has moved on). "
                f"If that label was yours and wrong, 'Undo my last label' takes it back."
            )
        prediction_log.add_feedback(ws, prediction_id, answer, classes_of(ws, row[0]), "review", who, con=con)
        failpoints.hit("review.labelling")
    return True


@dataclass(frozen=True)
class Undone:
    prediction_id: str
    name: str
    label: str


def undo_last(ws: Workspace, reviewer: str | None) -> Undone:
    """Take back the reviewer's latest label: the prediction waits in the queue again. The label is not lost: an
    audit row keeps it, and who took it back. A label whose image already joined the data stays (relabel it on
    Explore instead, where that change is audited with the image)."""
    who = (reviewer or "").strip()
    if not who:
        raise UserError("Say who you are ('Your name'): you can take back only your own labels.")
    with store.transaction(ws) as con:
        row = con.execute(
            "SELECT fb.prediction_id, fb.ts, fb.label, p.name FROM log_feedback fb "
            "LEFT JOIN log_predictions p ON p.id = fb.prediction_id "
            "WHERE fb.source = 'review' AND fb.reviewer = ? ORDER BY fb.ts DESC LIMIT 1",
            [who],
        ).fetchone()
        if row is None:
            raise UserError(f"{who} has no label to take back.")
        prediction_id, ts, answer, name = row
        joined = con.execute("SELECT id FROM images WHERE prediction_id = ? LIMIT 1", [prediction_id]).fetchone()
        if joined:
            raise UserError(
                f"{name or prediction_id} was already added to the data as image {joined[0]}: relabel it on Clean "
                "(audited there) instead of undoing the review."
            )
        con.execute(
            "DELETE FROM feedback WHERE prediction_id = ? AND ts = ? AND source = 'review' AND reviewer = ?",
            [prediction_id, ts, who],
        )
        store.audit(
            ws, "undo review label", None, answer, None, {"prediction_id": prediction_id, "reviewer": who, "ts": str(ts)}, con
        )
        failpoints.hit("review.undoing")
    return Undone(prediction_id, str(name or prediction_id), str(answer))


@dataclass
class Imported:
    labelled: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)  # {row, reason}
    unchanged: int = 0  # the same label from the same reviewer, imported before: not recorded twice


MAX_FIELD = 10_000  # characters in one CSV field: far beyond any id, hash, label or name


def _read_csv(data: bytes) -> pd.DataFrame:
    """The labels file's rows (number, prediction_id, sha256, label, reviewer), or UserError saying what is wrong."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UserError("The labels file is not UTF-8 text: export it as CSV (comma-separated, UTF-8).") from None
    reader = csv.DictReader(io.StringIO(text))
    try:
        fields = set(reader.fieldnames or ())
        if "label" not in fields or not fields & {"prediction_id", "sha256"}:
            raise UserError(
                "The labels file needs a header with `label` and `prediction_id` (or `sha256`); found: "
                f"{', '.join(sorted(fields))[:300] or 'no header'}."
            )
        rows = [
            (reader.line_num, *((row.get(k) or "").strip() for k in ("prediction_id", "sha256", "label", "reviewer")))
            for row in reader
        ]
    except csv.Error as exc:  # a field past the csv module's limit, a NUL byte, ...
        raise UserError(
            f"The labels file cannot be read as CSV at line {reader.line_num}: {exc}. Nothing was imported."
        ) from None
    frame = pd.DataFrame(rows, columns=["row", "prediction_id", "sha256", "label", "reviewer"])
    long = frame[frame[["prediction_id", "sha256", "label", "reviewer"]].apply(lambda c: c.str.len()).max(axis=1) > MAX_FIELD]
    if len(long):
        raise UserError(f"The labels file has a field over {MAX_FIELD:,} characters at line {long['row'].iloc[0]}: "
                        "it is not a labels file. Nothing was imported.")  # fmt: skip
    frame["sha256"] = frame["sha256"].str.lower()
    return frame


_MATCH = """
    SELECT i.row, p.id AS pid, p.model_version, i.label, i.reviewer
    FROM incoming i JOIN log_predictions p ON p.id = i.prediction_id WHERE i.prediction_id <> ''
    UNION ALL
    SELECT i.row, p.id, p.model_version, i.label, i.reviewer FROM incoming i JOIN log_predictions p ON p.sha256 = i.sha256
    WHERE i.prediction_id = '' AND i.sha256 <> '' AND p.served IS NOT FALSE
"""
_LATEST = """
    SELECT prediction_id, arg_max(label, ts) AS label, arg_max(source, ts) AS source, arg_max(reviewer, ts) AS reviewer
    FROM log_feedback WHERE prediction_id IN (SELECT pid FROM matched) GROUP BY prediction_id
"""


def import_labels(ws: Workspace, data: bytes, reviewer: str | None = None) -> Imported:
    """Labels from elsewhere, as CSV with a header: `prediction_id` (or `sha256`: every prediction of that image)
    and `label`, optionally `reviewer`. Each label lands in feedback with source 'import'; bad rows are reported,
    the rest kept. Importing the same file again records nothing new (a label already the latest one, from the same
    reviewer by import, is unchanged). Matched in a few set queries: the database is held for a moment, not a row
    at a time."""
    incoming = _read_csv(data)
    incoming["reviewer"] = incoming["reviewer"].where(incoming["reviewer"] != "", (reviewer or "").strip())
    out = Imported()
    with store.transaction(ws) as con:  # matched, compared and written together: two imports at once record once
        con.register("incoming", incoming)
        matched = con.execute(_MATCH).df()
        con.register("matched", matched)
        latest = con.execute(_LATEST).df().set_index("prediction_id")
        seen: dict[str, tuple[str, ...]] = {}
        unmatched = incoming[~incoming["row"].isin(matched["row"])]
        for r in unmatched.itertuples():
            out.failed.append({"row": str(r.row), "reason": f"no prediction {r.prediction_id or r.sha256!r} in the log"})
        valid = [
            a in classes_of(ws, v, seen) or a == NONE_OF_THESE
            for v, a in zip(matched["model_version"], matched["label"], strict=True)
        ]
        bad = matched[~np.array(valid, dtype=bool)]
        for number, group in bad.groupby("row", sort=True):
            classes = classes_of(ws, group["model_version"].iloc[0], seen)
            why = f"label {group['label'].iloc[0]!r} is not one of {', '.join(classes)} or {NONE_OF_THESE!r}"
            out.failed.append({"row": str(number), "reason": why})
        good = matched[~matched["row"].isin(bad["row"])].drop_duplicates("pid", keep="last")  # a later line wins
        now = good.merge(latest, left_on="pid", right_index=True, how="left", suffixes=("", "_now"))
        same = ((now["label_now"] == now["label"]) & (now["source"] == "import")
                & (now["reviewer_now"].fillna("") == now["reviewer"])).to_numpy()  # fmt: skip
        out.unchanged = int(same.sum())
        fresh = good[~same]
        if len(fresh):
            frame = pd.DataFrame(
                {"prediction_id": fresh["pid"], "label": fresh["label"], "reviewer": fresh["reviewer"].replace("", None)}
            )
            con.register("imported", frame.assign(ts=store.now(), source="import"))
            con.execute(
                "INSERT INTO feedback (prediction_id, ts, label, source, reviewer) "
                "SELECT prediction_id, ts, label, source, reviewer FROM imported"
            )
        detail = {"labels": len(fresh), "unchanged": out.unchanged, "failed": len(out.failed)}
        store.audit(ws, "labels_imported", detail=detail, con=con)
        failpoints.hit("review.importing")
    out.failed.sort(key=lambda f: int(f["row"]))
    out.labelled = len(fresh)
    return out


@dataclass
class Added:
    """What adding production images to the data did."""

    added: list[str] = field(default_factory=list)  # new catalog ids
    skipped: list[dict[str, str]] = field(default_factory=list)  # {source, reason}
    model_labelled: int = 0  # added with the model's own label (no human confirmed it)


# Every production prediction whose image was kept, with its request's latest label (from the whole log: with
# model_labels, unlabelled ones are asked for too).
_CANDIDATES = """
    WITH fb AS (SELECT prediction_id, arg_max({{'label': label, 'source': source, 'reviewer': reviewer}}, ts) AS what,
                       max(ts) AS labelled_at FROM log_feedback GROUP BY prediction_id),
    req AS (SELECT coalesce(p.request_id, p.id) AS request, arg_max(fb.what, fb.labelled_at) AS what
            FROM log_predictions p JOIN fb ON fb.prediction_id = p.id
            WHERE coalesce(p.stage, 'production') <> 'backtest' GROUP BY ALL)
    SELECT p.id, p.name, p.model_version, p.predicted, p.ood, p.image_path, p.source,
           r.what.label AS label, r.what.source AS label_source, r.what.reviewer AS reviewer, {known}
    FROM log_predictions p LEFT JOIN req r ON r.request = coalesce(p.request_id, p.id)
    WHERE {joinable}
    ORDER BY p.ts, p.id
"""
# The same for the labelled ones alone, from the labelled requests kept with their labels (labelled): no join.
_LABELLED = f"""
    SELECT p.id, p.name, p.model_version, p.predicted, p.ood, p.image_path, p.source, p.label, p.label_source,
           p.reviewer, {{known}}
    FROM {labelled.AS_LOG} p WHERE p.label IS NOT NULL AND {{joinable}} ORDER BY p.ts, p.id
"""
_KNOWN = "p.sha256 IN (SELECT sha256 FROM images) AS known"
_JOINABLE = (  # served, its image kept, not in the data yet
    "p.served IS NOT FALSE AND p.image_path IS NOT NULL "
    "AND p.id NOT IN (SELECT prediction_id FROM images WHERE prediction_id IS NOT NULL)"
)


def _candidates(ws: Workspace, model_labels: bool) -> pd.DataFrame:
    """Production predictions whose image was kept and that a person labelled (or, with model_labels, any
    in-domain one, labelled by the model) and that did not join the data yet; `why_not` says what keeps one
    out (None: ready)."""
    with store.connect(ws) as con:
        if not model_labels:
            labelled.load(ws, con)
        sql = _CANDIDATES if model_labels else _LABELLED
        frame = con.execute(sql.format(known=_KNOWN, joinable=_JOINABLE)).df()
    human = frame["label"].notna() & (frame["label_source"] != "simulation")
    chosen = frame[human | (frame["label"].isna() & ~frame["ood"].astype(bool))] if model_labels else frame[human]
    held = pd.Series(None, index=chosen.index, dtype=object)
    held[chosen["known"].astype(bool)] = "already in the data (the same bytes)"
    held[chosen["label"] == NONE_OF_THESE] = f"labelled {NONE_OF_THESE!r}: not one of the classes"
    return chosen.assign(why_not=held)


def addable(ws: Workspace, model_labels: bool = False) -> pd.DataFrame:
    """The labelled production images ready to join the data."""
    frame = _candidates(ws, model_labels)
    return frame[frame["why_not"].isna()]


def held_back(ws: Workspace) -> dict[str, int]:
    """Labelled production images that will not join the data, counted by reason."""
    return _held(_candidates(ws, False))


def _held(frame: pd.DataFrame) -> dict[str, int]:
    return {str(k): int(v) for k, v in frame["why_not"].value_counts().items()}


def joinable(ws: Workspace) -> tuple[pd.DataFrame, dict[str, int]]:
    """`addable` and `held_back` from one reading (the Review page's)."""
    frame = _candidates(ws, False)
    return frame[frame["why_not"].isna()], _held(frame)


def add_to_data(ws: Workspace, ids: Sequence[str] | None = None, model_labels: bool = False) -> Added:
    """Reviewed production images into the catalog (source `production`), each with the prediction it came
    from, the model version that made it, and who labelled it. 'none of these' is not a class and the same
    bytes are never stored twice: such images stay out (said so when asked for by id). With model_labels,
    unlabelled in-domain predictions join too, labelled by the model and marked so: training refuses them
    until told to accept them."""
    frame = _candidates(ws, model_labels)
    out = Added()
    if ids is not None:  # the ones asked for: each is added or said why not
        frame = frame[frame["id"].isin(list(ids))]
        out.skipped += [{"source": r["name"], "reason": r["why_not"]} for r in frame[frame["why_not"].notna()].to_dict("records")]
    items: list[gather.Incoming] = []
    for r in frame[frame["why_not"].isna()].to_dict("records"):
        by_model = not isinstance(r["label"], str)
        answer = r["predicted"] if by_model else r["label"]
        path = ws.root / r["image_path"]
        if not path.is_file():
            out.skipped.append({"source": r["name"], "reason": f"its kept image {r['image_path']} is missing"})
            continue
        provenance = {
            "label_source": "model" if by_model else r["label_source"],
            "labelled_by": None if by_model or not isinstance(r["reviewer"], str) else r["reviewer"],
            "prediction_id": r["id"],
            "model_version": r["model_version"],
        }
        source = f"prediction {r['id']} ({r['name']})"
        items.append(gather.Incoming(gather.file_loader(path), answer, "production", source, provenance=provenance))
    if items:
        report = gather.ingest(ws, items)
        out.added += report.added
        out.skipped += report.skipped + report.failed
        with store.connect(ws) as con:
            placeholders = ", ".join("?" for _ in report.added) or "NULL"
            out.model_labelled = int(
                con.execute(
                    f"SELECT count(*) FROM images WHERE id IN ({placeholders}) AND label_source = 'model'", report.added
                ).fetchone()[0]
            )
    store.audit(
        ws,
        "production_images_added",
        detail={"added": len(out.added), "skipped": len(out.skipped), "model_labelled": out.model_labelled},
    )
    return out


def model_labelled(ws: Workspace) -> int:
    """Usable catalog images whose label only a model gave (they would feed the model its own outputs)."""
    with store.connect(ws) as con:
        return int(con.execute("SELECT count(*) FROM images WHERE status = 'ok' AND label_source = 'model'").fetchone()[0])


def summary(ws: Workspace, limit: int = 20, order: str = "oldest") -> dict[str, Any]:
    """The queue as the CLI prints it (--json): each item as a reviewer sees it before labelling (Item.shown)."""
    b = backlog(ws)
    return {
        "pending": b.pending,
        "by_reason": b.by_reason,
        "oldest": str(b.oldest) if b.oldest else None,
        "reviewed": b.reviewed,
        "order": order,
        "audit_share": audit.current(ws).share,
        "items": [i.shown() for i in pending(ws, limit, order=order)],
        "addable": int(len(addable(ws))),
        "held_back": held_back(ws),
        "model_labelled": model_labelled(ws),
    }
