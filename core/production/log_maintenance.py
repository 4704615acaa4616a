"""`python -m core log compact | status`: the log's tables optimized and vacuumed, and what the log holds.

Vacuum is the one step that deletes log files: a file goes only once no version of the retention names it (a reader
that listed it within that time can still read it), and only after an audit row names it (core.workspace.log_table).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import duckdb

from core.errors import UserError
from core.workspace import log_table, store
from core.workspace.paths import Workspace


def compact(
    ws: Workspace, retention_h: int = log_table.RETENTION_H, on_progress: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    """Optimize and vacuum both kinds' tables; returns what was done, per kind."""
    out: dict[str, Any] = {}
    for i, kind in enumerate(log_table.COLUMNS):

        def audited(files: list[str], kind: str = kind) -> None:
            store.audit(ws, "log_files_deleted", detail={"kind": kind, "files": files,
                        "why": f"vacuumed by `log compact`: no version of the last {retention_h} h names them"})  # fmt: skip

        done = log_table.compact(ws, kind, retention_h, before_delete=audited)
        out[kind] = {"files_in": done.files_in, "files_out": done.files_out, "files_deleted": done.removed,
                     "version": done.version}  # fmt: skip
        if on_progress:
            on_progress(i + 1, len(log_table.COLUMNS))
    figures = None
    if any(v["files_in"] or v["files_deleted"] for v in out.values()):
        store.audit(ws, "log_compacted", detail=out)
        figures = prepare_figures(ws) if any(v["files_in"] for v in out.values()) else None
    return {"compacted": out, "retention_h": retention_h, "status": status(ws), "figures": figures}


def prepare_figures(ws: Workspace) -> dict[str, Any]:
    """The Monitor's kept figures for its first view (day windows against production), computed now: a compaction
    renames every file it folds, so the first look after it would compute each of those days again."""
    from core.model import registry
    from core.production.monitoring import drift, queries

    if registry.production_version(ws) is None:
        return {"prepared": False, "why": "no model in production: nothing to measure drift against"}
    t0 = time.perf_counter()
    try:
        drift.drift_report(ws, queries.LogFilter(window="day", sources=queries.default_sources(ws)))
    except (UserError, duckdb.Error, OSError) as exc:  # only a head start: the Monitor computes them when opened
        return {"prepared": False, "why": str(exc).splitlines()[0][:300]}
    return {"prepared": True, "seconds": round(time.perf_counter() - t0, 2)}


def status(ws: Workspace) -> dict[str, Any]:
    """Files, bytes, rows and version of the log, per kind (the table's files and the database's table), and rows per
    replica."""
    out: dict[str, Any] = {}
    with store.connect(ws, read_only=True) as con:
        for kind, view in log_table.VIEWS.items():
            files = log_table.visible(ws, kind)
            size = sum(f.stat().st_size for f in files if f.exists())
            try:
                by_replica = dict(
                    con.execute(f"SELECT coalesce(replica, '(database)'), count(*) FROM {view} GROUP BY 1").fetchall()
                )
            except duckdb.Error as exc:  # a damaged file: check says which
                raise_damaged(ws, exc)
            out[kind] = {"files": len(files), "file_bytes": size, "rows": int(sum(by_replica.values())), "by_replica": by_replica,
                         "version": log_table.version(ws, kind)}  # fmt: skip
    return out


def raise_damaged(ws: Workspace, exc: Exception) -> None:
    raise UserError(
        f"A file of the prediction log cannot be read ({str(exc).splitlines()[0][:200]}): run "
        f"`python -m core check --workspace {ws.name} --repair` to move it to quarantine/log/."
    ) from exc
