"""The review queue: the predictions a person should look at (referred by the policy, flagged out of domain,
disputed by a candidate in shadow or limited, or drawn at random for the audit sample), one entry per image, in
the order asked, with the backlog's counts.

The queue never tells a reviewer why an item waits until it is labelled: an audit item looks like any other, so
its label is given as blind as the rest (`Item.shown`).

Read without a scan of the whole log: the candidates are kept day by day (log_figures), and which requests and
images are already labelled comes from the labelled requests kept with their labels (labelled).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import duckdb
import numpy as np
import pandas as pd

from core.model import registry
from core.model.rates import Rate
from core.production import labelled, log_figures, review_order
from core.production.prediction_log import NONE_OF_THESE
from core.workspace import store
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
    disputed or drawn by the audit. Found day by day and kept (log_figures): a request's predictions are logged
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
_QUEUE = f"""WITH answered AS (  -- requests someone already labelled (on any of their predictions)
    SELECT DISTINCT request FROM {labelled.TABLE}
), reviewed AS (  -- images a reviewer (or an imported label) already settled: their other requests need no one
    SELECT DISTINCT sha256 FROM {labelled.TABLE} WHERE reviewed AND sha256 IS NOT NULL
), waiting AS (
    SELECT id, ts, image, {", ".join(_FLAGS)} FROM {CANDIDATES}
    WHERE request NOT IN (SELECT request FROM answered) AND (sha256 IS NULL OR sha256 NOT IN (SELECT sha256 FROM reviewed))
), firsts AS (
    SELECT min({{'ts': ts, 'id': id, {", ".join(f"'{f}': {f}" for f in _FLAGS)}}}) AS first,  -- the oldest: (ts, id) first
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
    candidates kept day by day and the labelled requests (labelled), never a scan of the whole log."""
    labelled.load(ws, con)
    log_figures.relation(ws, con, "day", "review-candidates", _waiting_candidates, CANDIDATES)
    con.execute(f"CREATE OR REPLACE TEMP VIEW {FIRSTS} AS {_QUEUE}")


def _again(ws: Workspace, con: duckdb.DuckDBPyConnection, ask: Callable[[], T]) -> T:
    """ask() over the queue made in `con`."""
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
    """Why a prediction waited in the queue, told once it is labelled (never before: Item.shown): from the kept
    candidates (a prediction that is not one never waited)."""
    with store.connect(ws) as con:
        log_figures.relation(ws, con, "day", "review-candidates", _waiting_candidates, CANDIDATES)
        row = con.execute(
            f"SELECT referred, ood, disputed, audit, other_label FROM {CANDIDATES} WHERE id = ? LIMIT 1", [prediction_id]
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
    reviewed = con.execute("SELECT count(*) FROM log_feedback WHERE source = 'review'").fetchone()[0]
    agreed = con.execute(f"SELECT sum(review_agreed) FROM {labelled.TABLE}").fetchone()[0]  # queries.AGREES
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
    waiting = (
        f"(SELECT c.id, c.ts, c.model_version, c.probs, c.action, c.audit, f.copies FROM {CANDIDATES} c "
        f"JOIN {queue} f USING (id))"
    )
    chosen = review_order.top(ws, con, waiting, int(offset) + int(limit))[int(offset) :]
    if not chosen:
        return _rows(con, {})
    marks = ", ".join("?" for _ in chosen)
    copies = dict(con.execute(f"SELECT id, copies FROM {queue} WHERE id IN ({marks})", chosen).fetchall())
    return _rows(con, {i: copies[i] for i in chosen})


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
        names = classes_of(ws, r["model_version"], seen)
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


def classes_of(ws: Workspace, version: str, seen: dict[str, tuple[str, ...]] | None = None) -> tuple[str, ...]:
    """A version's classes (each version's model.json read once per call site that passes `seen`)."""
    seen = {} if seen is None else seen
    if version not in seen:
        seen[version] = tuple(registry.read_meta(ws, version)["classes"])
    return seen[version]
