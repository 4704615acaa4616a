"""The human loop: a review queue of the predictions a person should look at (referred by the policy, flagged
out of domain, disputed by a candidate in shadow or limited, or drawn at random for the audit sample), labels with
their provenance, and reviewed production images back into the training data.

The queue never tells a reviewer why an item waits until it is labelled: an audit item looks like any other, so
its label is given as blind as the rest (`Item.shown`).

Labels no human gave (the model's own predictions) enter the data only when asked explicitly, marked
`label_source = 'model'`, and training refuses them unless told otherwise: a model trained on its own outputs
learns its own mistakes (the fastai book's feedback loops).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import duckdb
import numpy as np
import pandas as pd

from core.data import gather
from core.errors import UserError
from core.model import registry
from core.model.rates import Rate
from core.production import audit, label_map, prediction_log, review_order
from core.production.monitoring import window_store
from core.production.monitoring.queries import AGREES
from core.production.prediction_log import NONE_OF_THESE
from core.workspace import failpoints, store
from core.workspace.paths import Workspace

T = TypeVar("T")
REASONS = ("referred", "out of domain", "disputed", "audit")  # why a prediction waits for a person
FLAGS = REASONS[:3]  # the model's reasons (the audit is chance's): the only ones a reviewer may count before labelling
ORDERS = ("oldest", "newest", "valuable")  # how the queue is ordered (review_order.py: the value of a label)

_PAIRS = """pairs AS (  -- requests scored by production and a candidate: the other model's answer
    SELECT request_id, count(DISTINCT predicted) > 1 AS disputed,
           arg_max(CASE WHEN NOT served THEN predicted END, ts) AS other_label,
           arg_max(CASE WHEN NOT served THEN model_version END, ts) AS other_version
    FROM log_predictions WHERE request_id IS NOT NULL AND coalesce(stage, 'production') <> 'backtest'
      AND request_id IN (SELECT request_id FROM log_predictions WHERE stage IN ('shadow', 'limited'))
    GROUP BY request_id HAVING count(*) > 1  -- a candidate scored it (only then has a request two predictions)
)"""
CANDIDATES = "review_candidates"  # the relation `_queue` makes: every prediction the queue may hold


def _waiting_candidates(src: str) -> tuple[str, list[object]]:
    """The predictions of `src` that wait for a person unless labelled: served, and referred, out of domain,
    disputed or drawn by the audit. Found day by day and kept (window_store): a request's predictions are logged
    together, so its other model's answer is on the same day."""
    pairs = _PAIRS.replace("FROM log_predictions", f"FROM {src}")
    return (
        f"""WITH {pairs}
        SELECT p.id, p.ts, p.source, p.name, p.model_version, coalesce(p.stage, 'production') AS stage, p.predicted,
               p.confidence, p.probs, p.action, p.ood, coalesce(p.referred, FALSE) AS referred,
               coalesce(d.disputed, FALSE) AS disputed, coalesce(p.audit, FALSE) AS audit, d.other_label, d.other_version,
               p.image_path, coalesce(p.sha256, p.id) AS image, p.sha256, coalesce(p.request_id, p.id) AS request
        FROM {src} p LEFT JOIN pairs d ON d.request_id = p.request_id
        WHERE p.served IS NOT FALSE AND (p.ood OR coalesce(p.referred, FALSE) OR coalesce(d.disputed, FALSE)
                                         OR coalesce(p.audit, FALSE))""",
        [],
    )


FIRSTS = "review_firsts"  # the queue in this connection, one row per image (`_queue` makes it)
_FLAGS = ("referred", "ood", "disputed", "audit")
# One entry per image: an image sent several times waits once (its oldest waiting prediction, with how many wait),
# and leaves the queue when a reviewer (or an imported label) settles any of its predictions; feedback from the app
# or the simulator settles only its own request.
_QUEUE = f"""WITH labelled AS (  -- requests someone already labelled (on any of their predictions)
    SELECT DISTINCT m.request FROM log_feedback f JOIN {label_map.TABLE} m ON m.prediction_id = f.prediction_id
), reviewed AS (  -- images a reviewer (or an imported label) already settled: their other requests need no one
    SELECT DISTINCT m.sha256 FROM log_feedback f JOIN {label_map.TABLE} m ON m.prediction_id = f.prediction_id
    WHERE f.source IN ('review', 'import') AND m.sha256 IS NOT NULL
), waiting AS (
    SELECT id, ts, image, {", ".join(_FLAGS)} FROM {CANDIDATES}
    WHERE request NOT IN (SELECT request FROM labelled) AND (sha256 IS NULL OR sha256 NOT IN (SELECT sha256 FROM reviewed))
), firsts AS (
    SELECT arg_min({{'id': id, 'ts': ts, {", ".join(f"'{f}': {f}" for f in _FLAGS)}}}, {{'ts': ts, 'id': id}}) AS first,
           count(*) AS copies
    FROM waiting GROUP BY image
)
SELECT first.*, copies FROM firsts"""
_ROWS = (
    "id, ts, source, name, model_version, stage, predicted, confidence, probs, action, ood, referred, disputed, audit, "
    "other_label, other_version, image_path"
)  # an item's columns, as the page and the CLI read them


def _queue(ws: Workspace, con: duckdb.DuckDBPyConnection) -> None:
    """FIRSTS in this connection (a view): the queue as one row per image (id, ts, flags, copies), from the
    candidates kept day by day and the labels' map (label_map), never a scan of the whole log."""
    label_map.load(ws, con)
    window_store.relation(ws, con, "day", "review-candidates", _waiting_candidates, "v1", CANDIDATES)
    con.execute(f"CREATE OR REPLACE TEMP VIEW {FIRSTS} AS {_QUEUE}")


def _again(ws: Workspace, con: duckdb.DuckDBPyConnection, ask: Callable[[], T]) -> T:
    """ask() over the queue made in `con`; made again and asked once more when another process replaced a kept file
    meanwhile (window_store.relation)."""
    _queue(ws, con)
    try:
        return ask()
    except duckdb.IOException:
        _queue(ws, con)
        return ask()


def _rows(con: duckdb.DuckDBPyConnection, copies: dict[str, int]) -> pd.DataFrame:
    """The queue's rows of these ids (with how many copies of each image wait), in the order given."""
    if not copies:
        return con.execute(f"SELECT {_ROWS}, 0::BIGINT AS copies FROM {CANDIDATES} LIMIT 0").df()
    ids = list(copies)
    marks = ", ".join("?" for _ in ids)
    page = con.execute(f"SELECT {_ROWS} FROM {CANDIDATES} WHERE id IN ({marks})", ids).df()
    page = page.drop_duplicates("id").set_index("id", drop=False).loc[ids].reset_index(drop=True)
    return page.assign(copies=[copies[i] for i in ids]).astype({"copies": "int64"})


@dataclass(frozen=True)
class Backlog:
    pending: int
    by_reason: dict[str, int]  # the model's reasons (FLAGS); a prediction can have several
    oldest: datetime | None
    reviewed: int  # labels given through the review queue, ever
    agreed: int = 0  # of them, labels that agree with the model (queries.AGREES: "none of these" on a flagged image too)
    audit: int = 0  # waiting because the audit drew them (some flagged too): for Monitor, never shown to reviewers

    @property
    def agreement(self) -> Rate:
        return Rate(self.agreed, self.reviewed)


@dataclass(frozen=True)
class Item:
    """One prediction waiting for a person: what the model said and why it waits."""

    id: str
    ts: datetime
    source: str
    name: str
    version: str
    stage: str
    predicted: str
    confidence: float
    top: tuple[tuple[str, float], ...]  # the model's three most probable classes
    action: str
    reasons: tuple[str, ...]  # told after the label (`why`), never before: audit items must look like the rest
    other: str | None  # the other model's answer, when disputed
    image_path: str | None  # relative to the workspace; None when the image was not kept
    classes: tuple[str, ...] = ()  # every class of the model that made it: the reviewer's choices
    copies: int = 1  # predictions of this same image waiting (the image was sent that many times)

    def shown(self) -> dict[str, Any]:
        """What a reviewer sees before labelling, the same for every item: the image, when and where it came from,
        the model's three most probable classes and the choices. Not why it waits, the action taken or the other
        model's answer: each differs between the hard cases and the audit sample, and would tell them apart."""
        return {
            "id": self.id, "ts": str(self.ts), "name": self.name, "version": self.version, "source": self.source,
            "top": [list(t) for t in self.top], "image_path": self.image_path, "choices": [*self.classes, NONE_OF_THESE],
            "copies": self.copies,
        }  # fmt: skip

    def why(self) -> str:
        """Why it waited, told once it is labelled."""
        return _why(self.reasons, self.other)


def _why(reasons: Sequence[str], other: str | None) -> str:
    said = {"audit": "drawn at random for the audit sample", "disputed": f"disputed (the other model said {other})"}
    return ", ".join(said.get(r, r) for r in reasons) or "no reason on record"


def why(ws: Workspace, prediction_id: str) -> str:
    """Why a prediction waited in the queue, told once it is labelled (never before: Item.shown)."""
    with store.connect(ws) as con:
        row = con.execute(
            f"WITH {_PAIRS} SELECT coalesce(p.referred, FALSE), p.ood, coalesce(d.disputed, FALSE), coalesce(p.audit, FALSE), "
            "d.other_label FROM log_predictions p LEFT JOIN pairs d ON d.request_id = p.request_id WHERE p.id = ?",
            [prediction_id],
        ).fetchone()
    if row is None:
        return "no reason on record"
    return _why([r for r, on in zip(REASONS, row[:4], strict=True) if on], row[4])


def backlog(ws: Workspace, con: duckdb.DuckDBPyConnection | None = None) -> Backlog:
    with store.reuse(ws, con) as c:
        return _again(ws, c, lambda: _backlog(c, FIRSTS))


def _backlog(con: duckdb.DuckDBPyConnection, queue: str) -> Backlog:
    """The backlog from `queue` (FIRSTS, or a table made of it)."""
    counted = f"SELECT count(*), {', '.join(f'count_if({f})' for f in _FLAGS)}, min(ts) FROM {queue}"
    n, referred, ood, disputed, drawn, oldest = con.execute(counted).fetchone()
    reviewed, agreed = con.execute(
        f"SELECT count(*), count_if({AGREES}) FROM log_feedback fb "
        f"LEFT JOIN {label_map.TABLE} p ON p.prediction_id = fb.prediction_id "
        "WHERE fb.source = 'review'",
        [NONE_OF_THESE],
    ).fetchone()
    by_reason = {"referred": int(referred or 0), "out of domain": int(ood or 0), "disputed": int(disputed or 0)}
    return Backlog(int(n), by_reason, oldest, int(reviewed), int(agreed or 0), int(drawn or 0))


def pending_rows(ws: Workspace, limit: int = 20, offset: int = 0, order: str = "oldest") -> pd.DataFrame:
    """The queue's rows as the log holds them: oldest first (the backlog), newest first (what production sees now),
    or the most valuable label first (review_order: the audit keeps at least its share of every page)."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, not {order!r}")  # pages and the CLI offer only these
    with store.connect(ws) as con:
        return _again(ws, con, lambda: _page(ws, con, FIRSTS, limit, offset, order))


def _page(ws: Workspace, con: duckdb.DuckDBPyConnection, queue: str, limit: int, offset: int, order: str) -> pd.DataFrame:
    """A page of `queue` (FIRSTS, or a table made of it) in the order asked."""
    if order != "valuable":
        by = "ts DESC, id DESC" if order == "newest" else "ts, id"
        found = con.execute(f"SELECT id, copies FROM {queue} ORDER BY {by} LIMIT ? OFFSET ?", [int(limit), int(offset)])
        return _rows(con, dict(found.fetchall()))
    scores = con.execute(
        f"SELECT c.id, c.ts, c.model_version, c.probs, c.action, c.audit, f.copies FROM {CANDIDATES} c "
        f"JOIN {queue} f USING (id) ORDER BY c.ts, c.id"
    ).df()
    chosen = review_order.ranked(ws, scores, con)[int(offset) : int(offset) + int(limit)]
    return _rows(con, dict(zip(chosen, scores.set_index("id").loc[chosen, "copies"], strict=True)))


@dataclass(frozen=True)
class Queue:
    backlog: Backlog
    items: list[Item]


def queue(ws: Workspace, limit: int = 20, order: str = "oldest") -> Queue:
    """The backlog and the first page, from one reading of the queue (the Review page's)."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, not {order!r}")  # pages and the CLI offer only these
    with store.connect(ws) as con:

        def both() -> tuple[Backlog, pd.DataFrame]:
            con.execute(f"CREATE OR REPLACE TEMP TABLE review_queue_now AS SELECT * FROM {FIRSTS}")
            return _backlog(con, "review_queue_now"), _page(ws, con, "review_queue_now", limit, 0, order)

        found, frame = _again(ws, con, both)
    return Queue(found, _items(ws, frame))


def pending(ws: Workspace, limit: int = 20, offset: int = 0, order: str = "oldest") -> list[Item]:
    """The queue's items in the chosen order (ORDERS)."""
    return _items(ws, pending_rows(ws, limit, offset, order))


def _items(ws: Workspace, frame: pd.DataFrame) -> list[Item]:
    items, seen = [], {}
    for r in frame.to_dict("records"):
        names = _classes(ws, r["model_version"], seen)
        probs = np.asarray(r["probs"], float)
        top3 = np.argsort(-probs)[:3]
        flags = (r["referred"], r["ood"], r["disputed"], r["audit"])
        reasons = tuple(w for w, on in zip(REASONS, flags, strict=True) if on)
        items.append(
            Item(
                r["id"], r["ts"], r["source"], r["name"], r["model_version"], r["stage"], r["predicted"],
                float(r["confidence"]), tuple((names[i], float(probs[i])) for i in top3), r["action"], reasons,
                r["other_label"] if isinstance(r["other_label"], str) else None,
                r["image_path"] if isinstance(r["image_path"], str) else None, names, int(r["copies"]),
            )
        )  # fmt: skip
    return items


def _classes(ws: Workspace, version: str, seen: dict[str, tuple[str, ...]] | None = None) -> tuple[str, ...]:
    """A version's classes (each version's model.json read once per call site that passes `seen`)."""
    seen = {} if seen is None else seen
    if version not in seen:
        seen[version] = tuple(registry.read_meta(ws, version)["classes"])
    return seen[version]


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
        prediction_log.add_feedback(ws, prediction_id, answer, _classes(ws, row[0]), "review", who, con=con)
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
            a in _classes(ws, v, seen) or a == NONE_OF_THESE
            for v, a in zip(matched["model_version"], matched["label"], strict=True)
        ]
        bad = matched[~np.array(valid, dtype=bool)]
        for number, group in bad.groupby("row", sort=True):
            classes = _classes(ws, group["model_version"].iloc[0], seen)
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


_CANDIDATES = """
    WITH fb AS (SELECT prediction_id, arg_max(label, ts) AS label, arg_max(source, ts) AS source,
                       arg_max(reviewer, ts) AS reviewer, max(ts) AS labelled_at FROM log_feedback GROUP BY prediction_id),
    req AS (SELECT coalesce(p.request_id, p.id) AS request, arg_max(fb.label, fb.labelled_at) AS label,
                   arg_max(fb.source, fb.labelled_at) AS label_source, arg_max(fb.reviewer, fb.labelled_at) AS reviewer
            FROM log_predictions p JOIN fb ON fb.prediction_id = p.id GROUP BY ALL)
    SELECT p.id, p.name, p.model_version, p.predicted, p.ood, p.image_path, p.source,
           r.label, r.label_source, r.reviewer, p.sha256 IN (SELECT sha256 FROM images) AS known
    FROM log_predictions p LEFT JOIN req r ON r.request = coalesce(p.request_id, p.id)
    WHERE p.served IS NOT FALSE AND p.image_path IS NOT NULL
      AND p.id NOT IN (SELECT prediction_id FROM images WHERE prediction_id IS NOT NULL)
"""


# The same over the labelled requests' predictions alone (label_map: kept), without a scan of the whole log: what
# the page shows and adds unless the model's own labels are asked for too.
_LABELLED_CANDIDATES = f"""
    WITH fb AS (SELECT prediction_id, arg_max(label, ts) AS label, arg_max(source, ts) AS source,
                       arg_max(reviewer, ts) AS reviewer, max(ts) AS labelled_at FROM log_feedback GROUP BY prediction_id),
    req AS (SELECT p.request, arg_max(fb.label, fb.labelled_at) AS label, arg_max(fb.source, fb.labelled_at) AS label_source,
                   arg_max(fb.reviewer, fb.labelled_at) AS reviewer
            FROM {label_map.TABLE} p JOIN fb ON fb.prediction_id = p.prediction_id GROUP BY ALL)
    SELECT p.prediction_id AS id, p.name, p.model_version, p.predicted, p.ood, p.image_path, p.source,
           r.label, r.label_source, r.reviewer, p.sha256 IN (SELECT sha256 FROM images) AS known
    FROM {label_map.TABLE} p JOIN req r ON r.request = p.request
    WHERE p.served IS NOT FALSE AND p.image_path IS NOT NULL
      AND p.prediction_id NOT IN (SELECT prediction_id FROM images WHERE prediction_id IS NOT NULL)
"""


def _candidates(ws: Workspace, model_labels: bool) -> pd.DataFrame:
    """Production predictions whose image was kept and that a person labelled (or, with model_labels, any
    in-domain one, labelled by the model) and that did not join the data yet; `why_not` says what keeps one
    out (None: ready)."""
    with store.connect(ws) as con:
        if model_labels:
            frame = con.execute(f"{_CANDIDATES} ORDER BY p.ts, p.id").df()
        else:
            label_map.load(ws, con)
            frame = con.execute(f"{_LABELLED_CANDIDATES} ORDER BY p.ts, p.prediction_id").df()
    human = frame["label"].notna() & (frame["label_source"] != "simulation")
    chosen = frame[human | (frame["label"].isna() & ~frame["ood"].astype(bool))] if model_labels else frame[human]
    why = pd.Series(None, index=chosen.index, dtype=object)
    why[chosen["known"].astype(bool)] = "already in the data (the same bytes)"
    why[chosen["label"] == NONE_OF_THESE] = f"labelled {NONE_OF_THESE!r}: not one of the classes"
    return chosen.assign(why_not=why)


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
