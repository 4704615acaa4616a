"""The workspace database: image catalog, audit trail, gather failures.

Writers open short-lived connections and retry with back-off when another process holds the
file, because DuckDB admits one writing process at a time.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import duckdb
import numpy as np
import pandas as pd

from core import bounds
from core.errors import UserError
from core.workspace import failpoints, holds, log_ingest, log_migration, log_table, published, splits
from core.workspace.paths import Workspace

SCHEMA_VERSION = 1
LOCK_TIMEOUT_ENV = "IMAGEDP_LOCK_TIMEOUT_S"  # how long a connection waits for another process


def _lock_timeout() -> float:
    """The setting from the environment within its bound; 30 s when it is unset or not one (read at import: a
    bad value cannot stop every command)."""
    try:
        return bounds.check("lock_timeout", float(os.environ.get(LOCK_TIMEOUT_ENV, "30")))
    except (ValueError, UserError):
        return 30.0


LOCK_TIMEOUT_S = _lock_timeout()
AUDIT_SEED = "audit_seed"  # setting: the workspace's secret for drawing the random audit sample (production.audit)

IMAGE_COLUMNS = (
    "id",
    "path",
    "label",
    "split",
    "split_by",
    "sha256",
    "phash",
    "width",
    "height",
    "mode",
    "format",
    "bytes",
    "brightness",
    "contrast",
    "source_kind",
    "source",
    "query",
    "url",
    "added_at",
    "status",
    "reason",
    "notes",
    "label_source",
    "labelled_by",
    "prediction_id",
    "model_version",
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS images (
    id VARCHAR PRIMARY KEY,      -- first 16 hex digits of sha256: names never collide
    path VARCHAR NOT NULL,       -- relative to the workspace root
    label VARCHAR NOT NULL,
    split VARCHAR,               -- train / valid / test, set on arrival (core/workspace/splits.py)
    split_by VARCHAR,            -- how: hash / folder / drawn / completed (NULL: kept from before)
    sha256 VARCHAR NOT NULL,
    phash VARCHAR NOT NULL,      -- 64-bit DCT perceptual hash, hex
    width INTEGER, height INTEGER,   -- after EXIF orientation
    mode VARCHAR, format VARCHAR, bytes BIGINT,
    brightness DOUBLE, contrast DOUBLE,
    source_kind VARCHAR NOT NULL,    -- demo / folder / upload / zip / url / search / disk
    source VARCHAR, query VARCHAR, url VARCHAR,
    added_at TIMESTAMP NOT NULL,
    status VARCHAR NOT NULL,     -- ok / quarantined
    reason VARCHAR,              -- why it was quarantined
    notes VARCHAR,               -- conversions training applies (cmyk, 16-bit, alpha, ...)
    label_source VARCHAR,        -- who gave the label of a production image: review / app / import / model
    labelled_by VARCHAR,         -- the reviewer, where one was named
    prediction_id VARCHAR,       -- a production image: the prediction it came from
    model_version VARCHAR        -- ... and the model version that made it
);
CREATE SEQUENCE IF NOT EXISTS audit_seq;
CREATE TABLE IF NOT EXISTS audit (
    seq BIGINT DEFAULT nextval('audit_seq') PRIMARY KEY,
    ts TIMESTAMP NOT NULL,
    action VARCHAR NOT NULL,
    image_id VARCHAR,
    before VARCHAR, after VARCHAR, detail VARCHAR
);
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY, started_at TIMESTAMP NOT NULL, finished_at TIMESTAMP,
    status VARCHAR NOT NULL,     -- running / finished / cancelled / failed
    config VARCHAR NOT NULL,     -- JSON of the training config
    version VARCHAR, message VARCHAR
);
CREATE TABLE IF NOT EXISTS epochs (
    run_id VARCHAR NOT NULL, epoch INTEGER NOT NULL, stage VARCHAR NOT NULL,
    train_loss DOUBLE, valid_loss DOUBLE, error_rate DOUBLE, accuracy DOUBLE, seconds DOUBLE
);
CREATE TABLE IF NOT EXISTS models (
    version VARCHAR PRIMARY KEY, created_at TIMESTAMP NOT NULL, run_id VARCHAR, backbone VARCHAR,
    classes VARCHAR, valid_accuracy DOUBLE, valid_error DOUBLE, path VARCHAR NOT NULL,
    checksums VARCHAR                -- sha256 of each of the version's files at registration (JSON)
);
CREATE TABLE IF NOT EXISTS deployments (   -- history of the production pointer; the latest row wins
    ts TIMESTAMP NOT NULL, version VARCHAR NOT NULL, action VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS gather_failures (
    ts TIMESTAMP NOT NULL, source_kind VARCHAR, source VARCHAR, label VARCHAR, reason VARCHAR
);
CREATE TABLE IF NOT EXISTS predictions (     -- the production log: one row per scored image
    id VARCHAR NOT NULL,             -- uuid hex, the key feedback refers to
    ts TIMESTAMP NOT NULL, source VARCHAR NOT NULL,   -- app / batch / simulation
    model_version VARCHAR NOT NULL, name VARCHAR, sha256 VARCHAR NOT NULL,
    width INTEGER, height INTEGER, brightness DOUBLE, contrast DOUBLE, saturation DOUBLE, sharpness DOUBLE,
    probs FLOAT[] NOT NULL,          -- in the model version's class order
    predicted VARCHAR NOT NULL, confidence DOUBLE NOT NULL,
    energy DOUBLE, ood_score DOUBLE, ood BOOLEAN NOT NULL,
    embedding FLOAT[],               -- penultimate features through the version's PCA
    action VARCHAR, latency_ms DOUBLE,
    image_path VARCHAR,              -- when the workspace keeps production images, or the review queue needs it
    stage VARCHAR,                   -- production / shadow / limited (a candidate's rollout stage); NULL: production
    served BOOLEAN,                  -- whether this prediction was the one shown and acted on; NULL: it was
    request_id VARCHAR,              -- the request: a production and a candidate prediction of the same image share it
    referred BOOLEAN,                -- the decision policy handed it to a human
    audit BOOLEAN,                   -- the request was drawn for the random audit sample (review queue, whatever it said)
    audit_p DOUBLE                   -- the probability it had of being drawn (the audit share in force); NULL: before audits
);
CREATE TABLE IF NOT EXISTS feedback (
    prediction_id VARCHAR NOT NULL, ts TIMESTAMP NOT NULL,
    label VARCHAR NOT NULL,          -- the true class, or 'none of these'
    source VARCHAR,                  -- provenance: app (Predict page) / review / import / simulation
    reviewer VARCHAR
);
CREATE TABLE IF NOT EXISTS simulation_truth (  -- what the traffic simulator knows: scores the estimates
    prediction_id VARCHAR NOT NULL, label VARCHAR NOT NULL, shift VARCHAR
);
CREATE TABLE IF NOT EXISTS rollouts (   -- a candidate version beside production; the latest row is the state
    ts TIMESTAMP NOT NULL, candidate VARCHAR, stage VARCHAR NOT NULL,  -- shadow / limited / expanded / ended
    production VARCHAR, scope VARCHAR, action VARCHAR NOT NULL, figures VARCHAR, note VARCHAR
);
CREATE TABLE IF NOT EXISTS policies (   -- decision policies accepted for a model version; the latest wins
    policy_id VARCHAR NOT NULL, model_version VARCHAR NOT NULL, accepted_at TIMESTAMP NOT NULL,
    policy VARCHAR NOT NULL, utility VARCHAR NOT NULL, report VARCHAR
);
"""


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc).lower()
    return "lock" in text or "conflicting" in text or "being used by another process" in text


def _unwritable(exc: Exception) -> str | None:
    text = str(exc).lower()
    return next((why for why in ("read-only file system", "permission denied", "no space left on device") if why in text), None)


@contextmanager
def connect(ws: Workspace, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short-lived connection; waits with jittered back-off while another process has the database (each
    process holds it while it has a connection open: `holds`)."""
    deadline = time.monotonic() + LOCK_TIMEOUT_S
    try:
        holds.acquire(ws.db_path, deadline, lambda: failpoints.hit("store.lock_wait"))
    except holds.Busy:
        raise _busy(ws) from None
    try:
        con = _open(ws, read_only, deadline)
        try:
            _log_views(con, ws, read_only)
            yield con
        finally:
            con.close()
    finally:
        holds.release(ws.db_path)


def _log_views(con: duckdb.DuckDBPyConnection, ws: Workspace, read_only: bool) -> None:
    """The log's new commits folded into the database (log_ingest; a read-only connection reads what was ingested),
    and log_predictions, log_feedback over them."""
    try:
        if not read_only:
            log_ingest.refresh(con, ws)
        log_ingest.create_views(con)
    except duckdb.CatalogException:
        pass  # a database made before its tables (init_db creates them on this very connection): nothing to read yet


def _busy(ws: Workspace) -> UserError:
    return UserError(
        f"The workspace database {ws.db_path} stayed locked by another process for {LOCK_TIMEOUT_S:g} s; "
        "try again when it finishes."
    )


def _open(ws: Workspace, read_only: bool, deadline: float) -> duckdb.DuckDBPyConnection:
    """duckdb.connect, waiting while a process outside this tool (a DuckDB shell, say) has the file."""
    delay = 0.01
    while True:
        try:
            return duckdb.connect(str(ws.db_path), read_only=read_only)
        except (duckdb.IOException, duckdb.ConnectionException) as exc:
            if why := _unwritable(exc):
                raise UserError(
                    f"The workspace database {ws.db_path} cannot be written ({why}): make the data root "
                    "writable, or copy the workspace somewhere writable and point IMAGEDP_DATA_ROOT there. Nothing was changed."
                ) from exc
            if not _is_lock_error(exc):
                raise
            failpoints.hit("store.lock_wait")
            if time.monotonic() > deadline:
                raise _busy(ws) from exc
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.1)


@contextmanager
def transaction(ws: Workspace) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short-lived connection inside one transaction: everything written through it lands together, or nothing
    does (an exception, or a killed process, leaves the database as it was). Transactions on one workspace run one
    at a time: across processes the database file's lock sees to it (a writer holds the file), and within one (the
    app's sessions, the API's threads) a lock per workspace, so what a transaction reads is still true when it
    writes (two sessions cannot both read 'not yet done' and both do it)."""
    serial = holds.serial(ws.db_path)
    if not serial.acquire(blocking=False):
        failpoints.hit("store.lock_wait")
        serial.acquire()
    try:
        with connect(ws) as con:
            con.execute("BEGIN")
            yield con
            con.execute("COMMIT")
    finally:
        serial.release()


@contextmanager
def within(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """The block in a transaction of its own, committed at its end (rolled back if it raises); inside the caller's
    open transaction, in that one (the caller's commit keeps it)."""
    try:
        con.execute("BEGIN TRANSACTION")
    except duckdb.TransactionException:
        yield
        return
    try:
        yield
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


@contextmanager
def reuse(ws: Workspace, con: duckdb.DuckDBPyConnection | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """The given connection (a caller reading several things at once), else a short-lived one."""
    if con is not None:
        yield con
        return
    with connect(ws) as own:
        yield own


_READY: set[str] = set()


def init_db(ws: Workspace, force: bool = False) -> None:
    """Create tables if missing (once per process per workspace unless forced), record the schema version
    and the split plan, and bring a workspace made by an earlier version up to date."""
    if str(ws.db_path) in _READY and not force:
        return
    with connect(ws) as con:
        _refuse_newer(ws, con)
        if not _up_to_date(con):  # most opens find everything in place and write nothing
            con.execute(_SCHEMA)
            for table, columns in _ADDED.items():
                for column, kind in columns.items():
                    con.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {kind}")
            con.execute(
                "INSERT INTO meta VALUES ('schema_version', ?) ON CONFLICT (key) DO NOTHING",
                [str(SCHEMA_VERSION)],
            )
            con.execute(
                "INSERT INTO meta VALUES ('setting:split_plan', ?) ON CONFLICT (key) DO NOTHING",
                [json.dumps(asdict(splits.SplitPlan()))],
            )
            con.execute(  # drawn once per workspace: the audit sample is a hash of it and the request's id
                f"INSERT INTO meta VALUES ('setting:{AUDIT_SEED}', ?) ON CONFLICT (key) DO NOTHING",
                [json.dumps(secrets.token_hex(16))],
            )
        _split_unsplit(con)
        in_table = con.execute("SELECT count(*) FROM predictions").fetchone()[0]
        if not (ws.root / published.FILE).exists():  # a workspace an earlier version made: serving reads this file
            published.publish(ws, con)
    if in_table or any(log_migration.legacy_files(ws, kind) for kind in log_table.COLUMNS):
        migrate_log(ws)
    for earlier in ("log-windows", "log-labels"):  # what earlier versions kept as files: the database keeps it now
        shutil.rmtree(ws.root / "cache" / earlier, ignore_errors=True)
    _READY.add(str(ws.db_path))


def migrate_log(ws: Workspace) -> log_migration.Migration:
    """Fold the log's earlier layout (Parquet files per replica and day) into its Delta tables, each file once, with
    an audit row naming the files before they are deleted; safe to run again after a crash, or by two at once."""
    total = log_migration.Migration()
    for kind in log_table.COLUMNS:

        def audited(files: list[str], kind: str = kind) -> None:
            audit(ws, "log_files_deleted", detail={"kind": kind, "files": files,
                  "why": "the earlier log layout, folded into the log's Delta table (their rows are in it, once)"})  # fmt: skip

        done = log_migration.migrate(ws, kind, before_delete=audited)
        total.files, total.rows, total.removed = total.files + done.files, total.rows + done.rows, total.removed + done.removed
    total.rows += _migrate_table(ws)
    if total.rows or total.files:
        audit(ws, "log_migrated", detail={"files": total.files, "rows": total.rows})
    return total


MIGRATED_BATCHES = "log_table_batches"  # meta: how many batches of the predictions table went to the log's table


def _migrate_table(ws: Workspace) -> int:
    """Move the rows of the database's predictions table (logged before the log had files) into the log's table:
    committed there under transaction `migrate:database` with this migration's number, then deleted here with the
    number recorded, in one transaction. Cut short between the two, the next run finds its number committed and
    only deletes. Returns the rows moved."""
    with transaction(ws) as con:
        rows = con.execute(f"SELECT {', '.join(log_table.COLUMNS['predictions'])} FROM predictions").df()
        if rows.empty:
            return 0
        done = con.execute("SELECT value FROM meta WHERE key = ?", [MIGRATED_BATCHES]).fetchone()
        number = (int(done[0]) if done else 0) + 1
        moved = log_table.append(ws, "predictions", rows, "database", log_table.Batch("migrate:database", number))
        failpoints.hit("log.migrated_table")
        con.execute("DELETE FROM predictions")
        con.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    [MIGRATED_BATCHES, str(number)])  # fmt: skip
    return moved


_TABLES = ("meta", "images", "audit", "runs", "epochs", "models", "deployments", "gather_failures", "predictions",
           "feedback", "simulation_truth", "policies", "rollouts")  # fmt: skip
_ADDED = {  # columns later versions added: a workspace made before gets them on first open
    "images": {"split_by": "VARCHAR", "label_source": "VARCHAR", "labelled_by": "VARCHAR", "prediction_id": "VARCHAR",
               "model_version": "VARCHAR"},
    "predictions": {"stage": "VARCHAR", "served": "BOOLEAN", "request_id": "VARCHAR", "referred": "BOOLEAN",
                    "audit": "BOOLEAN", "audit_p": "DOUBLE"},
    "feedback": {"reviewer": "VARCHAR"},
    "models": {"checksums": "VARCHAR"},
}  # fmt: skip


def _refuse_newer(ws: Workspace, con: duckdb.DuckDBPyConnection) -> None:
    """A workspace a newer version of this tool made may hold what this one would misread or overwrite."""
    try:
        row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except duckdb.CatalogException:
        return  # a new workspace: no meta table yet
    if row is not None and int(row[0]) > SCHEMA_VERSION:
        raise UserError(
            f"Workspace {ws.name!r} was made by a newer version of this tool (schema {row[0]}; this one knows "
            f"{SCHEMA_VERSION}): update the tool to open it. Nothing was changed."
        )


def _up_to_date(con: duckdb.DuckDBPyConnection) -> bool:
    """Every table and every added column, the schema version, the split plan and the audit seed are there."""
    tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    if not set(_TABLES) <= tables:
        return False
    present = {tuple(r) for r in con.execute("SELECT table_name, column_name FROM information_schema.columns").fetchall()}
    added = all((table, column) in present for table, columns in _ADDED.items() for column in columns)
    wanted = ["schema_version", "setting:split_plan", f"setting:{AUDIT_SEED}"]
    keys = {r[0] for r in con.execute("SELECT key FROM meta WHERE list_contains(?, key)", [wanted]).fetchall()}
    return added and len(keys) == len(wanted)


def split_plan(con: duckdb.DuckDBPyConnection) -> splits.SplitPlan:
    rows = con.execute("SELECT value FROM meta WHERE key = 'setting:split_plan'").fetchall()
    saved = json.loads(rows[0][0]) if rows else {}
    return splits.SplitPlan(**{k: saved[k] for k in ("seed", "valid", "test") if k in saved})


def move_splits(con: duckdb.DuckDBPyConnection, moves: pd.DataFrame, action: str, detail: Any) -> None:
    """Set split and split_by for the rows in moves (id, split, split_by), one audit row each, on con."""
    con.register("moves", moves)
    con.execute(
        "INSERT INTO audit (ts, action, image_id, before, after, detail) "
        "SELECT ?, ?, m.id, to_json(i.split)::VARCHAR, to_json(m.split)::VARCHAR, ? "
        "FROM moves m JOIN images i ON i.id = m.id",
        [now(), action, _dump(detail)],
    )
    con.execute("UPDATE images SET split = moves.split, split_by = moves.split_by FROM moves WHERE images.id = moves.id")
    con.unregister("moves")


def _split_unsplit(con: duckdb.DuckDBPyConnection) -> None:
    """Images that arrived before splits were set on arrival get their hash split (kept ones stay)."""
    rows = con.execute("SELECT id, sha256 FROM images WHERE split IS NULL").fetchall()
    if rows:
        plan = split_plan(con)
        moves = pd.DataFrame({"id": [r[0] for r in rows], "split": [splits.split_for(r[1], plan) for r in rows]})
        move_splits(con, moves.assign(split_by="hash"), "split_assigned", {"plan": asdict(plan)})


def get_setting(ws: Workspace, key: str) -> Any:
    """A JSON value from the workspace's settings (None when unset)."""
    return get_settings(ws, (key,))[key]


def get_settings(ws: Workspace, keys: Sequence[str], con: duckdb.DuckDBPyConnection | None = None) -> dict[str, Any]:
    """Several settings through one connection (the given one, else a new one): key -> JSON value (None when unset)."""
    with reuse(ws, con) as c:
        rows = c.execute("SELECT key, value FROM meta WHERE list_contains(?, key)", [[f"setting:{k}" for k in keys]]).fetchall()
    found = {key.removeprefix("setting:"): json.loads(value) for key, value in rows}
    return {k: found.get(k) for k in keys}


def set_setting(ws: Workspace, key: str, value: Any) -> None:
    with connect(ws) as con:
        put_setting(con, key, value)
        published.publish(ws, con)  # serving reads settings from the published snapshot


def deployed(ws: Workspace) -> published.Published | None:
    """The deployment snapshot as published; a workspace never published (made by an earlier version) is published
    first, which needs its database this once. None when that cannot be (the database busy past its wait, damaged)."""
    snap = published.read(ws)
    if snap is None:
        try:
            publish_serving(ws)
        except (UserError, duckdb.Error, OSError):
            return None
        snap = published.read(ws)
    return snap


def publish_serving(ws: Workspace) -> None:
    """Publish the deployment snapshot after a change serving must see (a promotion, a stage change, a policy): read
    and written while this process holds the database, so a later commit's publication is never overtaken."""
    with connect(ws) as con:
        published.publish(ws, con)


def put_setting(con: duckdb.DuckDBPyConnection, key: str, value: Any) -> None:
    con.execute(
        "INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [f"setting:{key}", json.dumps(value)],
    )


def _dump(value: Any) -> str | None:
    return None if value is None else json.dumps(value, default=str, sort_keys=True)


def audit(
    ws: Workspace,
    action: str,
    image_id: str | None = None,
    before: Any = None,
    after: Any = None,
    detail: Any = None,
    con: duckdb.DuckDBPyConnection | None = None,
) -> None:
    """Append one audit row (on con if given, else on a fresh connection)."""
    row = [now(), action, image_id, _dump(before), _dump(after), _dump(detail)]
    sql = "INSERT INTO audit (ts, action, image_id, before, after, detail) VALUES (?, ?, ?, ?, ?, ?)"
    if con is not None:
        con.execute(sql, row)
        return
    with connect(ws) as c:
        c.execute(sql, row)


def insert_images(ws: Workspace, rows: Sequence[dict[str, Any]], action: str = "image_added") -> set[str]:
    """Insert catalog rows and one audit row each, in one transaction (bulk: executemany is slow). Rows another
    process cataloged since the caller looked (the same content from the same source, or the same id) are left
    out, decided inside the same transaction: two imports of the same images at once add each once, while a copy
    from another source is kept as gathering keeps it. Returns the ids left out."""
    if not rows:
        return set()
    frame = pd.DataFrame([[r.get(c) for c in IMAGE_COLUMNS] for r in rows], columns=list(IMAGE_COLUMNS))
    placed = frame["split"].isin(splits.SPLITS)
    stamp = now()
    audit_rows = pd.DataFrame(
        {
            "ts": [stamp] * len(rows),
            "action": [action] * len(rows),
            "image_id": [r["id"] for r in rows],
            "after": [_dump({"path": r["path"], "label": r["label"]}) for r in rows],
            "detail": [_dump({"source_kind": r["source_kind"], "source": r.get("source"), "url": r.get("url")}) for r in rows],
        }
    )
    cols = ", ".join(IMAGE_COLUMNS)
    with transaction(ws) as con:
        plan = split_plan(con)  # each new image's split, from its content: nothing else moves
        frame["split_by"] = np.where(placed, frame["split_by"].fillna("folder"), "hash")
        frame.loc[~placed, "split"] = [splits.split_for(sha, plan) for sha in frame.loc[~placed, "sha256"]]
        con.register("incoming_keys", frame[["id", "sha256", "source"]])
        taken = {r[0] for r in con.execute(
            "SELECT k.id FROM incoming_keys k WHERE k.id IN (SELECT id FROM images) "
            "OR EXISTS (SELECT 1 FROM images i WHERE i.sha256 = k.sha256 AND i.source IS NOT DISTINCT FROM k.source)"
        ).fetchall()}  # fmt: skip
        con.register("new_images", frame[~frame["id"].isin(taken)])
        con.register("new_audit", audit_rows[~audit_rows["image_id"].isin(taken)])
        con.execute(f"INSERT INTO images ({cols}) SELECT {cols} FROM new_images")
        con.execute(
            "INSERT INTO audit (ts, action, image_id, before, after, detail) "
            "SELECT ts, action, image_id, NULL, after, detail FROM new_audit"
        )
    return taken


def update_image(
    ws: Workspace, image_id: str, changes: dict[str, Any], action: str, before: Any, after: Any, detail: Any = None
) -> None:
    """Change catalog fields of one image and append its audit row, in one transaction."""
    unknown = set(changes) - set(IMAGE_COLUMNS)
    if unknown:
        raise ValueError(f"not catalog columns: {sorted(unknown)}")  # a programming error, not user input
    assignments = ", ".join(f"{column} = ?" for column in changes)
    with transaction(ws) as con:
        con.execute(f"UPDATE images SET {assignments} WHERE id = ?", [*changes.values(), image_id])
        audit(ws, action, image_id, before=before, after=after, detail=detail, con=con)


def record_failures(ws: Workspace, failures: Sequence[dict[str, Any]]) -> None:
    """Keep every failed source with its reason so the user can see it later."""
    if not failures:
        return
    with connect(ws) as con:
        con.executemany(
            "INSERT INTO gather_failures VALUES (?, ?, ?, ?, ?)",
            [[now(), f.get("kind"), f["source"], f.get("label"), f["reason"]] for f in failures],
        )


def images(ws: Workspace, status: str | None = "ok") -> pd.DataFrame:
    """The catalog as a DataFrame (only one status when given)."""
    with connect(ws, read_only=False) as con:
        if status is None:
            return con.execute("SELECT * FROM images ORDER BY label, added_at, id").df()
        return con.execute("SELECT * FROM images WHERE status = ? ORDER BY label, added_at, id", [status]).df()


class KnownImage(NamedTuple):
    """A catalog row as duplicate detection sees it."""

    id: str
    label: str
    status: str
    source: str | None


@dataclass(frozen=True)
class KnownKeys:
    """What the workspace already holds: catalog rows by content hash, and every URL fetched."""

    by_sha256: dict[str, list[KnownImage]]
    urls: set[str]


def known_keys(ws: Workspace) -> KnownKeys:
    """Every catalog row by sha256, and every URL already fetched."""
    shas: dict[str, list[KnownImage]] = {}
    with connect(ws) as con:
        for sha, *rest in con.execute("SELECT sha256, id, label, status, source FROM images ORDER BY id").fetchall():
            shas.setdefault(sha, []).append(KnownImage(*rest))
        urls = {r[0] for r in con.execute("SELECT url FROM images WHERE url IS NOT NULL").fetchall()}
    return KnownKeys(shas, urls)


def label_counts(ws: Workspace) -> dict[str, int]:
    with connect(ws) as con:
        rows = con.execute("SELECT label, count(*) FROM images WHERE status = 'ok' GROUP BY label ORDER BY label").fetchall()
    return {label: int(n) for label, n in rows}


def quarantined_count(ws: Workspace) -> int:
    with connect(ws) as con:
        return int(con.execute("SELECT count(*) FROM images WHERE status = 'quarantined'").fetchone()[0])


def audit_log(ws: Workspace, limit: int = 200) -> pd.DataFrame:
    with connect(ws) as con:
        return con.execute("SELECT * FROM audit ORDER BY seq DESC LIMIT ?", [limit]).df()


def failures(ws: Workspace, limit: int = 500) -> pd.DataFrame:
    with connect(ws) as con:
        return con.execute("SELECT * FROM gather_failures ORDER BY ts DESC LIMIT ?", [limit]).df()
