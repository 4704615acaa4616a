"""A realistic prediction log of any size, generated inside DuckDB (no row passes through Python), and the time the
pages' queries take over it.

    .venv/bin/python bench/loggen.py [--rows 10000000] [--workspace demo] [--keep]

Needs a workspace with a trained production model (default: a copy of a fresh `python -m core demo`, made in a
temporary data root). The generated rows: 30 days ending now; sources app, api (three replicas' worth of traffic)
and batch; every id, request id and hash distinct; a model change on day 20 after five days of the new version in
shadow (its predictions share the request and disagree on some); properties, confidence and the embedding drawn
with noise around the reference's own, the last 5 days drifting darker; an out-of-domain share; the policy's
referrals; the audit sample (2%); feedback on 5% of served predictions, right 90% of the time.

The rows are left as serving replicas leave them after `log compact`: the log's Delta table under logs/predictions/,
a day's rows in few files (replicas api-0, api-1, api-2, app, batch). Prints: the first ingest of the table into the
workspace database (log_ingest: what the first page after an upgrade, or after a new table, waits for); the first
build of the labelled requests; the time each page's query takes (cold: keeping its figures per day; warm): Monitor's
drift report (its windows, samples and tests), the accuracy estimates, the Overview's and the review queue's backlog
and first page (oldest and most valuable first), the rollout comparison, `monitor --json`'s summary in this process
and as the whole command (a fresh process: imports included); then one more day of traffic arriving (a day's rows in
commits of 10,000, with labels): its ingest and the summary after it; and the disk the log takes per million rows.
Asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.model import registry  # noqa: E402
from core.model.config import EMBED_DIM  # noqa: E402
from core.production import gate, labelled, prediction_log, review  # noqa: E402
from core.production.monitoring import accuracy, drift, queries, report  # noqa: E402
from core.workspace import log_table, store, workspaces  # noqa: E402

DAYS = 30
CHANGE_DAY = 20  # the new version takes over
SHADOW_DAYS = 5  # before it, the new version in shadow


def generate(ws: workspaces.Workspace, rows: int, old: str, new: str, seed: int = 0) -> float:
    """Insert `rows` served predictions (plus the shadow ones) and their feedback; returns seconds taken."""
    classes = list(registry.read_meta(ws, old)["classes"])
    dims = EMBED_DIM
    k = len(classes)
    t0 = time.perf_counter()
    with store.connect(ws) as con:
        con.execute(f"SELECT setseed({(seed % 1000) / 1000})")
        con.execute(
            f"""
            CREATE TEMP TABLE gen AS
            SELECT i, md5('p' || i || '-{seed}') AS id, md5('r' || i || '-{seed}') AS request,
                   now()::TIMESTAMP - INTERVAL 1 SECOND * CAST({DAYS * 86400} * (1 - i / {rows}) AS BIGINT) AS ts,
                   random() AS u_class, random() AS u_conf, random() AS u_ood, random() AS u_src, random() AS u_fb,
                   random() AS u_ok, random() AS n1, random() AS n2
            FROM range({rows}) t(i)
            """
        )
        day = "(date_diff('second', ts, now()::TIMESTAMP) / 86400.0)"  # days before now
        version = f"CASE WHEN {day} <= {DAYS - CHANGE_DAY} THEN '{new}' ELSE '{old}' END"
        normal = "sqrt(-2 * ln(greatest(n1, 1e-12))) * cos(2 * pi() * n2)"
        drift_dark = f"CASE WHEN {day} <= 5 THEN -0.01 * (5 - {day}) * 4 ELSE 0 END"
        confidence = f"greatest(1.0 / {k}, 1 - 0.6 * pow(u_conf, 3))"
        predicted = f"list_extract({classes!r}::VARCHAR[], 1 + CAST(floor(u_class * {k}) AS INTEGER))"
        probs = (
            f"list_transform(range({k}), lambda c: CASE WHEN c = CAST(floor(u_class * {k}) AS INTEGER) THEN {confidence} "
            f"ELSE (1 - {confidence}) / {k - 1} END)::FLOAT[]"
        )
        cols = ", ".join(prediction_log.COLUMNS)  # the log's columns, in the order each SELECT below gives them
        embedding = f"list_transform(range({dims}), lambda d: (random() - 0.5) * 2)::FLOAT[]"
        con.execute(
            f"""
            INSERT INTO predictions ({cols})
            SELECT id, ts, CASE WHEN u_src < 0.6 THEN 'api' WHEN u_src < 0.9 THEN 'app' ELSE 'batch' END, {version},
                   'img-' || i || '.jpg', sha256(id), 640 + CAST(n1 * 64 AS INTEGER), 480 + CAST(n2 * 48 AS INTEGER),
                   0.45 + 0.12 * {normal} + {drift_dark}, 0.2 + 0.05 * {normal}, 0.3 + 0.08 * {normal},
                   0.05 + 0.02 * {normal}, {probs}, {predicted}, {confidence}, -5 - 3 * u_conf, 1 - u_ood,
                   u_ood < 0.04, {embedding}, 'act on ' || {predicted}, 20 + 30 * u_conf, NULL, 'production', TRUE,
                   request, {confidence} < 0.5, u_fb > 0.98, 0.02
            FROM gen
            """
        )
        # the shadow days: the new version scored the same requests beside the old one, never served
        other = f"list_extract({classes!r}::VARCHAR[], 1 + (list_position({classes!r}::VARCHAR[], p.predicted) % {k}))"
        shadow_days = f"{day.replace('ts', 'p.ts')} BETWEEN {DAYS - CHANGE_DAY} AND {DAYS - CHANGE_DAY + SHADOW_DAYS}"
        con.execute(
            f"""
            INSERT INTO predictions ({cols})
            SELECT md5('s' || p.id), p.ts, p.source, '{new}', p.name, p.sha256, p.width, p.height, p.brightness,
                   p.contrast, p.saturation, p.sharpness, p.probs,
                   CASE WHEN g.u_ok < 0.08 THEN {other} ELSE p.predicted END,
                   p.confidence, p.energy, p.ood_score, p.ood, p.embedding, p.action, p.latency_ms, NULL, 'shadow', FALSE,
                   p.request_id, p.referred, p.audit, p.audit_p
            FROM predictions p JOIN gen g ON g.id = p.id
            WHERE p.model_version = '{old}' AND {shadow_days}
            """
        )
        wrong = f"list_extract({classes!r}::VARCHAR[], 1 + ((CAST(floor(g.u_class * {k}) AS INTEGER) + 1) % {k}))"
        con.execute(
            f"""
            INSERT INTO feedback (prediction_id, ts, label, source, reviewer)
            SELECT g.id, g.ts + INTERVAL 1 HOUR,
                   CASE WHEN g.u_ok < 0.9 THEN {predicted.replace("u_class", "g.u_class")} ELSE {wrong} END,
                   CASE WHEN g.u_fb > 0.98 THEN 'review' ELSE 'app' END, CASE WHEN g.u_fb > 0.98 THEN 'bench' END
            FROM gen g WHERE g.u_fb < 0.05 OR g.u_fb > 0.98
            """
        )
        con.execute("DROP TABLE gen")
    return time.perf_counter() - t0


def to_files(ws: workspaces.Workspace) -> float:
    """Move the generated predictions out of the database's table into the log's Delta table, a day's rows in few
    files (as `log compact` leaves them; api traffic spread over three replicas); the feedback, given on the
    analyst's pages, stays in its table. Returns seconds taken."""
    from deltalake import write_deltalake

    t0 = time.perf_counter()
    replica = "CASE WHEN source = 'api' THEN 'api-' || (hash(request_id) % 3) ELSE source END"
    with log_table.using(ws, "predictions", create=True):
        pass
    with store.connect(ws) as con:
        rows = con.sql(
            f"SELECT {log_table.select_sql('predictions')}, {replica} AS replica, strftime(ts, '%Y-%m-%d') AS date "
            "FROM predictions ORDER BY date"
        )
        write_deltalake(str(log_table.root(ws, "predictions")), rows.to_arrow_reader(), mode="append", partition_by=["date"])
        con.execute("DELETE FROM predictions")
        con.execute("CHECKPOINT")
    return time.perf_counter() - t0


def disk(ws: workspaces.Workspace) -> int:
    """Bytes the log's table takes (its files; the database's ingested copy is printed apart)."""
    return sum(p.stat().st_size for p in log_table.visible(ws, "predictions"))


def timed(label: str, fn: object, repeats: int = 2) -> None:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
    print(f"  {label}: {times[0]:.2f} s cold, {min(times[1:] or times):.2f} s warm")


def command(root: Path, runs: int = 3) -> None:
    """`python -m core monitor --json` as a user runs it: a fresh process each time (imports included)."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "core", "monitor", "--workspace", "log", "--json"], cwd=ROOT, check=True,
            env={**os.environ, workspaces.DATA_ROOT_ENV: str(root)}, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        times.append(time.perf_counter() - t0)
    print(f"  `python -m core monitor --json`, the whole command: {', '.join(f'{t:.2f}' for t in times)} s")


def live(ws: workspaces.Workspace, flt: queries.LogFilter, day_rows: int, labels: int = 2_000) -> None:
    """One more day of traffic: a day's rows (copies of logged rows with new ids, stamped within the last hour, as
    replicas write them) in commits of 10,000, and new labels on predictions of the last days; then the ingest, and
    the summary after it."""
    with store.connect(ws) as con:
        fresh = con.execute(
            f"SELECT * REPLACE (uuid()::VARCHAR AS id, NULL::VARCHAR AS request_id, "
            f"now()::TIMESTAMP - INTERVAL 1 SECOND * CAST(random() * 3600 AS INTEGER) AS ts) "
            f"FROM log_predictions USING SAMPLE {day_rows} ROWS"
        ).df()
        given = con.execute(
            f"SELECT id AS prediction_id, now()::TIMESTAMP AS ts, predicted AS label, 'api' AS source, NULL AS reviewer "
            f"FROM log_predictions WHERE ts > now() - INTERVAL 3 DAY USING SAMPLE {labels} ROWS"
        ).df()
    fresh = fresh[list(log_table.COLUMNS["predictions"])]
    t0 = time.perf_counter()
    for start in range(0, len(fresh), 10_000):
        log_table.append(ws, "predictions", fresh.iloc[start : start + 10_000], f"api-{start // 10_000 % 3}")
    log_table.append(ws, "feedback", given, "api-0")
    appended = time.perf_counter() - t0
    t0 = time.perf_counter()
    with store.connect(ws):
        pass
    print(f"one more day: {len(fresh):,} rows in {-(-len(fresh) // 10_000)} commits appended in {appended:.1f} s; "
          f"ingested in {time.perf_counter() - t0:.2f} s")  # fmt: skip
    t0 = time.perf_counter()
    report.summary(ws, flt)
    print(f"  monitor --json summary after it and {labels:,} new labels: "
          f"{time.perf_counter() - t0:.2f} s (then {timed_once(lambda: report.summary(ws, flt)):.2f} s)")  # fmt: skip


def timed_once(fn: object) -> float:
    t0 = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--workspace", help="an existing workspace with a trained production model (copied first)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data root and print where it is")
    args = parser.parse_args()
    source = workspaces.resolve(args.workspace).root if args.workspace else None  # under the data root it was given
    root = Path(tempfile.mkdtemp(prefix="loggen-"))
    os.environ[workspaces.DATA_ROOT_ENV] = str(root)
    if source is not None:
        shutil.copytree(source, root / "workspaces" / "log", ignore=shutil.ignore_patterns("*.lock"))
        ws = workspaces.resolve("log")
    else:
        from core.production import demo

        t0 = time.perf_counter()
        demo.prepare_demo("log", say=lambda _: None)
        ws = workspaces.resolve("log")
        print(f"demo workspace made in {time.perf_counter() - t0:.0f} s")
    old = registry.production_version(ws)
    new = old  # one version unless the workspace has another
    others = [v for v in registry.list_versions(ws)["version"] if v != old]
    if others:
        new = others[-1]
    before = disk(ws)
    took = generate(ws, args.rows, old, new) + to_files(ws)
    size = disk(ws) - before
    files = len(log_table.visible(ws, "predictions"))
    per_million = size / max(args.rows, 1) * 1e6 / 2**20
    print(f"{args.rows:,} served rows generated ({log_table.rows(ws, 'predictions'):,} in the log's table with shadow "
          f"and earlier rows, {files} files) in {took:.0f} s; {per_million:.0f} MiB per million rows")  # fmt: skip
    t0 = time.perf_counter()
    with store.connect(ws) as con:  # the first connection ingests the whole table
        total = con.execute("SELECT count(*) FROM log_predictions").fetchone()[0]
    print(f"the first ingest of the log's table into the database ({total:,} rows): {time.perf_counter() - t0:.1f} s; "
          f"database {ws.db_path.stat().st_size / 2**30:.2f} GiB")  # fmt: skip
    flt = queries.LogFilter(window="day", sources=("app", "api", "batch"))
    print(f"the pages' queries over {total:,} rows (each run twice: cold, then warm; cold includes keeping what is kept)")
    t0 = time.perf_counter()
    with store.connect(ws) as con:
        labelled.load(ws, con)
    print(f"  the labelled requests, first built (kept after): {time.perf_counter() - t0:.2f} s")
    timed("Monitor: drift report, 30 daily windows", lambda: drift.drift_report(ws, flt))
    timed("Monitor: accuracy estimates (audit, weighted, hard cases)", lambda: accuracy.accuracy(ws, flt))
    timed("Overview: predictions logged and the review backlog", lambda: (prediction_log.count(ws), review.backlog(ws)))
    timed("Review: backlog and the first page, oldest first", lambda: review.queue(ws, 6))
    timed("Review: backlog and the first page, most valuable first", lambda: review.queue(ws, 6, order="valuable"))
    if new != old:
        timed(f"Rollout: {new} against production on the same requests", lambda: gate.compare(ws, new))
    timed("monitor --json summary", lambda: report.summary(ws, flt))
    command(root)
    live(ws, flt, args.rows // DAYS)
    if args.keep:
        print(f"kept: {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
