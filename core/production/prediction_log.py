"""The production log: every prediction and every piece of feedback.

Every serving process (the app, batch `predict`, the API's replicas, the simulator) appends its rows to the log's
Delta table under logs/ (core.workspace.log_table: one commit per batch, fsynced), never waiting for another process
or for the database's write lock; readers see the table and the database's tables as one relation (log_predictions,
log_feedback). A write that fails (a full disk) keeps its rows with the writer, who says why and tries again under the
same batch number, so a batch whose commit came through before the failure is not written twice: a logging failure
never breaks a prediction and never loses or doubles a row. Labels given on the analyst's pages (review, import,
Predict) go to the database, where they can be taken back.
"""

from __future__ import annotations

import atexit
import queue
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pandas as pd

from core.data.images import PROPERTIES
from core.errors import UserError
from core.production import audit
from core.workspace import failpoints, log_ingest, log_table, store
from core.workspace.paths import Workspace, write_atomic

if TYPE_CHECKING:  # the log stores predictions; it needs no model to do so
    from core.production.prediction import Prediction

SOURCES = ("app", "batch", "simulation", "api")  # served traffic: what monitoring reads
REPLAY = "backtest"  # a candidate's replay of kept production images: logged, never served, never monitored
NONE_OF_THESE = "none of these"
KEEP_IMAGES = "keep_production_images"  # workspace setting: store each scored image under production/
COLUMNS = tuple(log_table.COLUMNS["predictions"])  # the log's columns, in order: one list, with their types


def keep_image(ws: Workspace, p: Prediction) -> str | None:
    """Store the scored bytes once per content (production/<sha16>.<ext>) and return the relative path."""
    if not p.data:
        return None
    folder = ws.root / "production"
    folder.mkdir(exist_ok=True)
    ext = Path(p.name).suffix.lower() if Path(p.name).suffix.lower() in {".jpg", ".jpeg", ".png", ".webp"} else ".img"
    path = folder / f"{p.sha256[:16]}{ext}"
    if not path.exists():  # named by content: a file there is whole (written under another name, then renamed)
        write_atomic(path, p.data)
        failpoints.hit("log.kept")
    return str(path.relative_to(ws.root))


@dataclass(frozen=True)
class LogBatch:
    """Predictions waiting to be logged, with what the log needs to know about them."""

    predictions: Sequence[Prediction]
    source: str
    version: str
    ts: Sequence[datetime] | None = None  # None: the time they were handed over
    keep_images: bool = False
    stamp: datetime = field(default_factory=store.now)


def _measured(p: Prediction, problems: list[str]) -> dict[str, float | None]:
    """The image's properties, or none of them (said in `problems`) when they cannot be measured: the
    prediction is logged whatever its measurement does."""
    try:
        return p.measured()  # deferred by the app: measured here, on the writer's thread
    except Exception as exc:  # noqa: BLE001
        problems.append(f"{p.name}: logged without image properties ({exc!r})"[:300])
        return dict.fromkeys(PROPERTIES)


def frame_of(ws: Workspace, batches: Sequence[LogBatch], problems: list[str] | None = None) -> pd.DataFrame:
    """One DataFrame of log rows for many batches (built once: per-row frames cost milliseconds each); an image
    that cannot be measured is logged without its properties, and said so in `problems`."""
    rows: dict[str, list[object]] = {c: [] for c in COLUMNS}
    problems = problems if problems is not None else []
    sampling = audit.current(ws)  # drawn here, where every writer passes: the app, batch, the API, the simulator
    for b in batches:
        if b.source not in (*SOURCES, REPLAY):
            raise ValueError(f"unknown log source {b.source!r}")  # a programming error
        n = len(b.predictions)
        rows["ts"] += list(b.ts) if b.ts is not None else [b.stamp] * n
        rows["source"] += [b.source] * n
        drawn = [sampling.chosen(p.request_id or p.id) for p in b.predictions]  # a request's predictions alike
        rows["audit"] += drawn
        rows["audit_p"] += [sampling.share] * n
        # the review queue needs its images (the audit's too) even where the workspace keeps no others
        rows["image_path"] += [
            keep_image(ws, p) if b.keep_images or p.needs_review or (d and p.served) else None
            for p, d in zip(b.predictions, drawn, strict=True)
        ]
        for p in b.predictions:
            rows["model_version"].append(p.version or b.version)
            rows["stage"].append(p.stage)
            rows["served"].append(p.served)
            rows["request_id"].append(p.request_id or p.id)
            rows["referred"].append(p.referred)
            props = _measured(p, problems)
            rows["id"].append(p.id)
            rows["name"].append(p.name)
            rows["sha256"].append(p.sha256)
            for k in PROPERTIES:
                rows[k].append(props[k])
            rows["probs"].append(p.probs.tolist())
            rows["predicted"].append(p.label)
            rows["confidence"].append(p.confidence)
            rows["energy"].append(p.energy)
            rows["ood_score"].append(p.ood_score)
            rows["ood"].append(p.ood)
            rows["embedding"].append(p.embedding.tolist())
            rows["action"].append(p.action)
            rows["latency_ms"].append(p.latency_ms)
    return pd.DataFrame(rows, columns=list(COLUMNS))


def to_frame(
    ws: Workspace,
    predictions: Sequence[Prediction],
    source: str,
    version: str,
    ts: Sequence[datetime] | None = None,
    keep_images: bool = False,
) -> pd.DataFrame:
    """Log rows for predictions (now, unless simulated times are given); images stored if asked."""
    return frame_of(ws, [LogBatch(predictions, source, version, ts, keep_images)])


@dataclass
class LogResult:
    logged: int = 0
    errors: list[str] = field(default_factory=list)


def write(ws: Workspace, frame: pd.DataFrame, replica: str | None = None, batch: log_table.Batch | None = None) -> LogResult:
    """Commit rows to the log's table under this process's replica (raises when the disk refuses: the caller keeps
    the rows and may write them again under the same `batch`)."""
    if frame.empty:
        return LogResult()
    failpoints.hit("log.writing")
    log_table.append(ws, "predictions", frame, replica, batch)
    return LogResult(logged=len(frame))


def keeps_images(ws: Workspace) -> bool:
    """Whether the workspace opted in to keeping scored images, as the deployment snapshot says (no database)."""
    snap = store.deployed(ws)
    return bool(snap.settings.get(KEEP_IMAGES)) if snap is not None else False


def log_predictions(
    ws: Workspace,
    predictions: Sequence[Prediction],
    source: str,
    version: str,
    ts: Sequence[datetime] | None = None,
    keep_images: bool | None = None,
) -> LogResult:
    """Write predictions to the log now."""
    keep = keeps_images(ws) if keep_images is None else keep_images
    return write(ws, to_frame(ws, predictions, source, version, ts, keep))


class BackgroundLog:
    """One writer thread per workspace per process: the app's sessions hand it rows and never wait.

    Rows leave its care only when their commit is in the log's table (fsynced). Whatever fails in a batch (the
    disk, measuring an image, a bug), the thread lives on, keeps the rows, says why, and tries again under the same
    batch number (written at most once); `flush` waits, with a bound, until every row submitted is in the log."""

    max_rows = 5000  # per write: one file however many rows it carries
    linger_s = 0.5  # rows reach the log at most this much later; fewer, larger files
    retry_s = 5.0  # after a batch could not be written

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.replica: str | None = None  # its name in the log (log_table.replica_name: the host's, unless named)
        self._writer: log_table.Writer | None = None  # made on the first write, under the replica's name
        self._queue: queue.Queue[LogBatch] = queue.Queue()
        self._settled = threading.Condition()
        self._unsettled = 0  # rows submitted and not yet in the log
        self._through = 0  # rows submitted so far, counted in order: a batch's ticket is this after its rows
        self._settled_through = 0  # rows in the log, counted in the same order (batches settle in turn)
        self.submitted = self.logged = self.failed = 0
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name=f"prediction-log-{ws.name}", daemon=True)
        self._thread.start()

    def submit(self, batch: LogBatch) -> int:
        """Hand rows over; returns the batch's ticket, for `wait`."""
        with self._settled:
            self._unsettled += len(batch.predictions)
            self._through += len(batch.predictions)
            ticket = self._through
            self._queue.put(batch)  # in ticket order
        self.submitted += len(batch.predictions)
        return ticket

    def wait(self, ticket: int, timeout: float | None = 60.0) -> bool:
        """Wait until the batch with this ticket (and every one before it) is in the log: True;
        False when `timeout` seconds pass first (its rows stay held and are tried again)."""
        with self._settled:
            return self._settled.wait_for(lambda: self._settled_through >= ticket, timeout)

    def _next(self) -> list[LogBatch]:
        """The next batches to write: what waits now, gathered for a moment (one write instead of many)."""
        batches = [self._queue.get()]
        rows = len(batches[0].predictions)
        deadline = time.monotonic() + self.linger_s
        while rows < self.max_rows:
            try:
                batches.append(self._queue.get(timeout=max(deadline - time.monotonic(), 0.0)))
            except queue.Empty:
                break
            rows += len(batches[-1].predictions)
        return batches

    def _run(self) -> None:
        # At normal priority: an answer waits for its rows (the API), so a writer that yielded the CPU to predictions
        # (nice 19, until 2026-12) starved on a busy machine and held every answer with it.
        held: list[LogBatch] = []
        number: log_table.Batch | None = None  # the held batches' number: a retry commits them at most once
        while True:
            batches, held = held or self._next(), []
            rows = sum(len(b.predictions) for b in batches)
            try:
                self._writer = self._writer or log_table.Writer.new(self.replica)
                number = number or self._writer.take()
                problems: list[str] = []
                result = write(self.ws, frame_of(self.ws, batches, problems), self.replica, number)
            except BaseException as exc:  # noqa: BLE001 - not written: keep the rows, try again
                self.failed += rows
                self.last_error = f"could not log {rows} row(s), retrying in {self.retry_s:g} s: {exc!r}"[:500]
                held = batches
                time.sleep(self.retry_s)
                continue
            number = None
            self.logged += result.logged
            errors = problems + result.errors
            self.last_error = errors[-1] if errors else self.last_error
            with self._settled:
                self._unsettled -= rows
                self._settled_through += rows
                self._settled.notify_all()

    def flush(self, timeout: float | None = 60.0) -> bool:
        """Wait until every submitted row is in the log (True), or `timeout` seconds pass with some still held
        because writing failed (False: they stay held and are tried again)."""
        with self._settled:
            return self._settled.wait_for(lambda: self._unsettled == 0, timeout)

    @property
    def pending(self) -> int:
        """Rows submitted and not yet in the log."""
        return self._unsettled


_BACKGROUND: dict[str, BackgroundLog] = {}
_GUARD = threading.Lock()


def settle(ws: Workspace, timeout: float) -> int:
    """Wait, at most `timeout` seconds, until the rows this process scored for `ws` are in the log (a page that
    reads the log then shows what the user just did); returns the rows still on their way (0: all in)."""
    with _GUARD:
        log = _BACKGROUND.get(str(ws.db_path))
    if log is None or log.flush(timeout):
        return 0
    return log.pending


def background(ws: Workspace) -> BackgroundLog:
    with _GUARD:
        key = str(ws.db_path)
        if key not in _BACKGROUND:
            _BACKGROUND[key] = BackgroundLog(ws)
        return _BACKGROUND[key]


EXIT_WAIT_S = 30.0


@atexit.register
def _flush_all() -> None:
    """At exit, give each writer time to settle its rows; say so on stderr (never silently) when it cannot."""
    for log in list(_BACKGROUND.values()):
        if not log.flush(EXIT_WAIT_S):
            print(
                f"prediction log: {log.pending} prediction(s) could not be written to "
                f"{log_table.table_uri(log.ws, 'predictions')} "
                f"before exit: {log.last_error or 'still being written when the wait ran out'}",
                file=sys.stderr,
            )


# provenance of a label: app (the analyst's Predict page), end user (the deployed app), review, import, simulation
FEEDBACK_SOURCES = ("app", "end user", "review", "import", "simulation", "api")
SERVED_FEEDBACK = ("end user", "api", "simulation")  # given to a serving process: appended to the log, as its predictions


def add_feedback(
    ws: Workspace,
    prediction_id: str,
    label: str,
    classes: Sequence[str],
    source: str = "app",
    reviewer: str | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
    replica: str | None = None,
) -> None:
    """A human's answer for one prediction: a class of the model, or 'none of these', with where it came from.
    Given to a serving process (an end user, the API), it is appended to the log's table, as predictions are; given on the
    analyst's pages, it goes to the database, through `con` when given (the caller's transaction)."""
    if source not in FEEDBACK_SOURCES:
        raise ValueError(f"unknown feedback source {source!r}")  # a programming error
    if label not in classes and label != NONE_OF_THESE:
        raise UserError(f"Feedback {label!r} is not one of the model's classes ({', '.join(classes)}) or {NONE_OF_THESE!r}.")
    if source in SERVED_FEEDBACK and con is None:
        row = {
            "prediction_id": [prediction_id],
            "ts": [store.now()],
            "label": [label],
            "source": [source],
            "reviewer": [reviewer],
        }
        log_table.append(ws, "feedback", pd.DataFrame(row), replica)
        return
    with store.reuse(ws, con) as con:
        con.execute(
            "INSERT INTO feedback (prediction_id, ts, label, source, reviewer) VALUES (?, ?, ?, ?, ?)",
            [prediction_id, store.now(), label, source, reviewer],
        )


def add_feedback_rows(ws: Workspace, frame: pd.DataFrame) -> None:
    """Bulk feedback (prediction_id, ts, label, source), e.g. from the traffic simulator: appended to the log."""
    if not frame.empty:
        log_table.append(ws, "feedback", frame)  # a column the frame lacks (reviewer) is written NULL


def add_simulation_truth(ws: Workspace, frame: pd.DataFrame) -> None:
    """The true class (and the shift applied) of simulated predictions, so estimates can be scored."""
    if frame.empty:
        return
    with store.connect(ws) as con:
        con.register("truth_rows", frame[["prediction_id", "label", "shift"]])
        con.execute("INSERT INTO simulation_truth SELECT prediction_id, label, shift FROM truth_rows")


def stamp(ws: Workspace) -> tuple[object, ...]:
    """What changes whenever the log or its labels do: the latest ingest of the log (log_ingest, made by this very
    connection) and the database's labels (how many, the latest time). A cache key for figures computed from the log."""
    with store.connect(ws) as con:
        labels = con.execute("SELECT count(*), max(ts), sum(hash(prediction_id, label, ts)) FROM feedback").fetchone()
        return (log_ingest.seq(con), *labels)


def counts(ws: Workspace) -> dict[str, int]:
    """Logged predictions per source, counted day by day and kept (log_figures): no count over the whole log."""
    from core.production import log_figures  # the log's kept figures (they read this module)

    def sql(src: str) -> tuple[str, list[object]]:
        return f"SELECT date_trunc('day', ts) AS \"window\", source, count(*) AS n FROM {src} GROUP BY ALL", []

    with store.connect(ws) as con:
        days = log_figures.grouped(ws, con, "day", "source-counts", sql, ["window", "source"])
    return {str(k): int(v) for k, v in days.groupby("source")["n"].sum().items()}


def count(ws: Workspace, source: str | None = None) -> int:
    found = counts(ws)
    return sum(found.values()) if source is None else found.get(source, 0)


def version_of(ws: Workspace, prediction_id: str) -> str | None:
    """The model version of a logged prediction, or None. The log's table is searched newest day first (the feedback
    a serving process is given is mostly about recent predictions), through an in-memory connection: no database, no
    scan of the whole log. (Rows a workspace logged in its database before are moved to the log's table on its first
    open: store.migrate_log.)"""
    by_day: dict[str, list[str]] = {}
    for f in log_table.readable(ws, "predictions"):
        by_day.setdefault(f.day or "", []).append(f.rel)
    con = duckdb.connect()
    try:
        for day in sorted(by_day, reverse=True):
            listed = [log_table.read_path(con, ws, "predictions", rel) for rel in by_day[day]]
            found = con.execute("SELECT model_version FROM read_parquet(?) WHERE id = ? LIMIT 1", [listed, prediction_id])
            if (row := found.fetchone()) is not None:
                return str(row[0])
    finally:
        con.close()
    return None


def recent(ws: Workspace, limit: int = 50) -> pd.DataFrame:
    with store.connect(ws) as con:
        return con.execute(
            "SELECT ts, source, model_version, name, predicted, confidence, ood, action, latency_ms "
            "FROM log_predictions ORDER BY ts DESC LIMIT ?",
            [limit],
        ).df()
